"""What whole-word answers (kd_core.evaluation.decode.whole_words) do to EM and F1, measured both ways on the same spans.

    python bench/whole_words.py [--data FILE ...] [--run-dir RUN] [--out bench/results/whole_words.json]

Two measurements, each decoding the very same token spans with the passage's characters as
they are (the old rule) and widened to whole words (the new one):

* **gold spans** of real data files (``--data``): every labelled window's gold token span, with
  a WordPiece tokenizer trained on the file as the presets are (``--vocab-size``); a
  token-exact answer that the widening changes, e.g. "1990" inside "1990s", loses EM here, so
  this is the widening's cost on answers a model got right;
* **predictions** of every model of a finished span-QA job (``--run-dir``, e.g. of
  ``jobs/a2d.py``): the best span per example over its dev split's windows, as the job scores it.

Prints one JSON object and writes it to ``--out`` with the machine, versions and command.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402

from kd_core.data.features import FeatureConfig, featurize  # noqa: E402
from kd_core.data.loaders import load_examples  # noqa: E402
from kd_core.evaluation.decode import best_character_spans, whole_words  # noqa: E402
from kd_core.evaluation.predict import references_of, window_log_probabilities  # noqa: E402
from kd_core.evaluation.squad_metrics import squad_scores  # noqa: E402
from kd_core.io.config_files import RENAMED  # noqa: E402
from kd_core.models.tokenizers import train_wordpiece_tokenizer  # noqa: E402

DEFAULT_DATA = ["../shared/data/squad11/xquad.en.json", "../shared/data/mrqa_domains/squad_mrqa/SQuAD.jsonl.gz"]


def both_ways(contexts: dict[str, str], spans: dict[str, tuple[int, int]]) -> tuple[dict[str, str], dict[str, str], int]:
    """Per example, the text of its character span as it is and widened to whole words; how many differ."""
    raw = {i: contexts[i][a:b] for i, (a, b) in spans.items()}
    wide = {i: contexts[i][slice(*whole_words(contexts[i], a, b))] for i, (a, b) in spans.items()}
    return raw, wide, sum(raw[i] != wide[i] for i in spans)


def scores(raw: dict[str, str], wide: dict[str, str], changed: int, references: dict[str, list[str]]) -> dict:
    before, after = squad_scores(raw, references), squad_scores(wide, references)
    return {"examples": len(raw), "answers_changed": changed,
            "exact_match": {"as_cut": before["exact_match"], "whole_words": after["exact_match"]},
            "f1": {"as_cut": before["f1"], "whole_words": after["f1"]}}


def gold_spans(path: str, vocab_size: int, windows: FeatureConfig, limit: int) -> dict:
    examples = load_examples(path)
    examples = examples.select(range(min(limit, len(examples))))
    tokenizer = train_wordpiece_tokenizer(list(examples["context"]) + list(examples["question"]), vocab_size=vocab_size)
    features = featurize(examples, tokenizer, windows)
    contexts = dict(zip(examples["id"], examples["context"]))
    spans: dict[str, tuple[int, int]] = {}
    for row in features:
        s, e = row["start_position"], row["end_position"]
        if s > 0 and row["example_id"] not in spans:
            spans[row["example_id"]] = (row["offsets"][s][0], row["offsets"][e][1])
    references = {i: r for i, r in references_of(examples).items() if i in spans}
    return {"file": path, "vocab_size": vocab_size, **scores(*both_ways(contexts, spans), references)}


def predictions(run_dir: Path) -> dict:
    """Every saved model of the job, on its dev split (re-read from the job's own workspace inputs)."""
    from transformers import AutoModelForQuestionAnswering

    from kd_core.serving.description import task_from_description

    state = json.loads((run_dir / "state.json").read_text())
    from kd_core.engine.prepare import SpanQAData, build_span_workspace

    saved = {RENAMED.get(k, k): v for k, v in state["options"].items()}  # a run made before a rename
    options = {k: v for k, v in saved.items() if k in SpanQAData.__dataclass_fields__}
    ws = build_span_workspace(SpanQAData(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}),
                              state["options"]["teacher_model"], state["options"]["student_model"], str(run_dir / "tmp"))
    index = json.loads((run_dir / "models/index.json").read_text())["models"]
    out = {}
    for key, entry in index.items():
        folder = run_dir / "models" / entry["path"]
        model = AutoModelForQuestionAnswering.from_pretrained(folder).eval()
        task = task_from_description(model.config.kd_serving["task"])
        examples = ws.examples("dev")
        features, arrays = ws.features("teacher", "dev")
        outputs = task.infer(model, arrays)
        start = window_log_probabilities(outputs["start_logits"], arrays["span_mask"])
        end = window_log_probabilities(outputs["end_logits"], arrays["span_mask"])
        spans = best_character_spans(features["example_id"], features["offsets"], start, end, arrays["passage_mask"],
                                     task.max_answer_length)  # what the job scores, before the widening
        chosen = {i: span for i, (_, span) in spans.items() if span is not None}
        contexts = dict(zip(examples["id"], examples["context"]))
        references = {i: r for i, r in references_of(examples).items() if i in chosen}
        out[key] = scores(*both_ways(contexts, chosen), references)
    return {"run_dir": str(run_dir), "split": "dev", "models": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="*", default=DEFAULT_DATA, help="real span-QA files (gold spans)")
    parser.add_argument("--limit", type=int, default=3000, help="examples read per file")
    parser.add_argument("--vocab-size", type=int, default=2000, help="WordPiece vocabulary trained per file (the jobs' default)")
    parser.add_argument("--run-dir", help="a finished span-QA job whose saved models' dev predictions to decode")
    parser.add_argument("--out", default=str(ROOT / "bench/results/whole_words.json"))
    args = parser.parse_args()
    windows = FeatureConfig(max_length=384, doc_stride=128)
    started = time.time()
    result = {
        "bench": "whole_words", "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", *sys.argv]),
        "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "gold_spans": [gold_spans(path, args.vocab_size, windows, args.limit) for path in args.data
                       if Path(path).exists()],
        "predictions": predictions(Path(args.run_dir)) if args.run_dir else None,
    }
    result["seconds"] = round(time.time() - started, 1)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
