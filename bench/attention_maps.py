"""What A2D's attention maps cost: eager attention on every layer (before) against SDPA with a last-layer hook (now).

A2D distils the last layer's passage-to-question attention (:mod:`kd_core.models.forward`).
Before, any forward that needed it switched the model to eager attention and asked for
``output_attentions=True``, so every layer built and returned its ``[B, H, S, S]`` maps; now
the model stays on SDPA and the map is computed in float32 from the last layer's query and
key alone. Both are timed through the real code: **old** is
:func:`~kd_core.models.forward.eager_qa_forward` (the fallback kept for models without
query/key modules, on its own copy of the model, which it switches to eager), **new** is
:func:`~kd_core.models.forward.qa_forward`. On a preset-shaped BERT QA model (same weights
for both), a random batch of ``--batch-size`` windows of ``--lengths`` tokens (each padded
from a random real length in ``[3/4 S, S]``, questions of 8 to 32 tokens), one torch thread:

* **collect**: a teacher collecting knowledge with attention (eval mode, no gradients):
  old vs new, and ``plain``, the SDPA forward without attention (the floor);
* **train**: one training step of the A2D attention term (train mode,
  ``attention_mse_loss`` against a fixed target, forward + backward), old vs new.

Every repeat runs every variant once, interleaved (``--repeats`` times, medians; one warm-up
call each first); ratios are old / new and new / plain. The machine's load average before and after is
recorded (the run shares the machine). Prints one JSON object. Never run as a test.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import transformers  # noqa: E402

from kd_core.data.synthetic import generate  # noqa: E402
from kd_core.models.build import build_preset_model  # noqa: E402
from kd_core.models.forward import eager_qa_forward, qa_forward  # noqa: E402
from kd_core.models.tokenizers import train_wordpiece_tokenizer  # noqa: E402
from kd_core.objectives.losses import attention_mse_loss  # noqa: E402


def random_batch(batch_size: int, length: int, vocab_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``[CLS] question [SEP] passage [SEP] padding`` windows of random tokens (module doc)."""
    real = torch.randint(3 * length // 4, length + 1, (batch_size,), generator=generator)
    question = torch.randint(8, 33, (batch_size,), generator=generator)
    position = torch.arange(length).unsqueeze(0)
    attention_mask = position < real.unsqueeze(1)
    question_mask = (position >= 1) & (position <= question.unsqueeze(1))
    passage_mask = (position >= question.unsqueeze(1) + 2) & (position < real.unsqueeze(1) - 1)
    return {
        "input_ids": torch.randint(5, vocab_size, (batch_size, length), generator=generator) * attention_mask,
        "attention_mask": attention_mask.long(),
        "token_type_ids": (position >= question.unsqueeze(1) + 2).long() * attention_mask,
        "question_mask": question_mask,
        "passage_mask": passage_mask,
    }


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tiny-bert", "small-bert"])
    p.add_argument("--lengths", type=int, nargs="+", default=[384])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()  # other processes on the machine (the timings are side by side, not alone)
    examples = generate(n_per_domain=100)
    tokenizer = train_wordpiece_tokenizer(list(examples["context"]) + list(examples["question"]))
    generator = torch.Generator().manual_seed(0)

    results = []
    for name in args.models:
        for length in args.lengths:
            new_model = build_preset_model(name, tokenizer, seed=0, max_position=length)
            old_model = copy.deepcopy(new_model)  # eager_qa_forward switches its copy to eager attention
            batch = random_batch(args.batch_size, length, len(tokenizer), generator)
            q = int(batch["question_mask"].sum(1).max())
            target = torch.rand(args.batch_size, length, q, generator=generator)
            target = target / target.sum(-1, keepdim=True)

            def collect(forward: Callable, model: torch.nn.Module, questions: int) -> Callable[[], object]:
                def run() -> object:
                    model.eval()
                    with torch.no_grad():
                        return forward(model, batch, questions)

                return run

            def train_step(forward: Callable, model: torch.nn.Module) -> Callable[[], object]:
                def run() -> object:
                    model.train()
                    model.zero_grad(set_to_none=True)
                    out = forward(model, batch, q)
                    attention_mse_loss(out.attention, target, batch["passage_mask"]).mean().backward()

                return run

            variants = {
                "collect_old": collect(eager_qa_forward, old_model, q),
                "collect_new": collect(qa_forward, new_model, q),
                "plain": collect(qa_forward, new_model, 0),
                "train_old": train_step(eager_qa_forward, old_model),
                "train_new": train_step(qa_forward, new_model),
            }
            for run in variants.values():
                run()  # warm-up (and the old copy's switch to eager)
            old_out, new_out = variants["collect_old"](), variants["collect_new"]()
            times: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(args.repeats):
                for variant, run in variants.items():
                    times[variant].append(timed(run))
            median = {v: statistics.median(t) for v, t in times.items()}
            results.append({
                "model": name, "seq_len": length, "batch_size": args.batch_size, "question_tokens": q,
                "layers": new_model.config.num_hidden_layers, "heads": new_model.config.num_attention_heads,
                "hidden": new_model.config.hidden_size,
                "implementations": {"old": old_model.config._attn_implementation,
                                    "new": new_model.config._attn_implementation},
                "max_abs_difference_old_new_map": float((old_out.attention - new_out.attention).abs().max()),
                "median_s": median, "all_s": times,
                "ratios": {"collect_old_over_new": median["collect_old"] / median["collect_new"],
                           "collect_new_over_plain": median["collect_new"] / median["plain"],
                           "collect_old_over_plain": median["collect_old"] / median["plain"],
                           "train_old_over_new": median["train_old"] / median["train_new"]},
            })
    print(json.dumps({
        "benchmark": "attention_maps", "repeats": args.repeats, "threads": args.threads, "results": results,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {torch.get_num_threads()} torch threads",
        "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
        "torch": torch.__version__, "transformers": transformers.__version__,
        "command": "python bench/attention_maps.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
    }))


if __name__ == "__main__":
    main()
