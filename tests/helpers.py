"""Small shared builders for tests: a tokenizer trained on a few sentences and hand-made examples."""

from __future__ import annotations

from kd_core.data.schema import examples_to_dataset
from kd_core.models import train_wordpiece_tokenizer


def example(id_: str, context: str, question: str, answer: str | None, domain: str = "toy") -> dict:
    """One example of the shared schema; ``answer=None`` makes it unanswerable."""
    answers = {"text": [], "answer_start": []} if answer is None else {"text": [answer], "answer_start": [context.index(answer)]}
    return {"id": id_, "domain": domain, "title": "", "context": context, "question": question,
            "answers": answers, "is_impossible": answer is None}


def toy_examples():
    return examples_to_dataset([
        example("q1", "Lyon Rovers won the super cup in 2003 after a long final.", "When did Lyon Rovers win the super cup?", "2003"),
        example("q2", "The dose of oxaprolin for adults is 200 mg per day.", "What dose of oxaprolin is given to adults?", "200 mg"),
        example("q3", "Nobody knows what the weather will be.", "Who won the cup?", None),
    ])


def toy_tokenizer(vocab_size: int = 200):
    ds = toy_examples()
    return train_wordpiece_tokenizer(list(ds["context"]) + list(ds["question"]), vocab_size=vocab_size)
