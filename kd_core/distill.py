"""Single-process A2D distillation: teacher -> knowledge table -> student, in one process.

``python -m kd_core.distill`` runs the whole path of DESIGN.md on one machine without Ray
or MLflow: examples (the embedded synthetic corpus by default, or ``--train``/``--dev``
files in any supported format), features, a teacher trained with span cross-entropy, its
knowledge written once as Parquet, and a student trained with A2D's joint objective
``L = CE + tau^2 KD + gamma ANS + delta ATT``. With ``--compare`` the same student is also
trained without knowledge (the baseline). The student is saved in ``save_pretrained`` form.

The pieces (:func:`prepare_data`, :func:`teacher_knowledge`, :func:`train_student`) are
what the distributed jobs in ``cluster/`` place on Ray actors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from kd_core.batches import feature_arrays
from kd_core.cli import print_summary, run_cli
from kd_core.config_files import config_from_args
from kd_core.data.features import FeatureConfig, featurize
from kd_core.data.loaders import load_examples
from kd_core.data.split import split_by_context
from kd_core.data.synthetic import generate
from kd_core.errors import ConfigError
from kd_core.knowledge.span import KnowledgeConfig, knowledge_arrays, member_knowledge, merge_knowledge
from kd_core.knowledge.table import write_knowledge
from kd_core.models import (
    count_parameters, is_preset, keep_first_layers, load_qa_model, save_model, train_wordpiece_tokenizer,
)
from kd_core.objectives import A2DConfig, a2d_objective
from kd_core.predict import evaluate_qa, references_of
from kd_core.train import TrainConfig, train


@dataclass(frozen=True)
class DistillConfig:
    """Everything a single-process distillation run needs; validated at construction."""

    train: str | None = None
    dev: str | None = None
    synthetic_per_domain: int = 200
    dev_fraction: float = 0.2
    teacher_model: str = "tiny-bert"
    student_model: str = "tiny-bert-1l"
    student_layers: int | None = None
    vocab_size: int = 2000
    tau: float = 2.0
    gamma: float = 0.3
    delta: float = 0.1
    top_k: int = 4
    teacher_epochs: float = 8.0
    epochs: float = 4.0
    batch_size: int = 16
    learning_rate: float = 2e-3
    max_length: int = 96
    doc_stride: int = 32
    max_answer_length: int = 30
    seed: int = 0
    run_dir: str = "runs/distill"
    no_kd: bool = False
    compare: bool = False

    def __post_init__(self) -> None:
        if self.synthetic_per_domain < 2:
            raise ConfigError("distill", "synthetic_per_domain", f"must be >= 2, got {self.synthetic_per_domain}")
        if self.teacher_epochs < 0:
            raise ConfigError("distill", "teacher_epochs", f"must be >= 0, got {self.teacher_epochs}")
        if self.max_answer_length < 1:
            raise ConfigError("distill", "max_answer_length", f"must be >= 1, got {self.max_answer_length}")
        if self.student_layers is not None and self.student_layers < 1:
            raise ConfigError("distill", "student_layers", f"must be >= 1, got {self.student_layers}")
        if self.vocab_size < 100:
            raise ConfigError("distill", "vocab_size", f"must be >= 100, got {self.vocab_size}")
        # The sub-configs validate the rest and raise ConfigError naming the field.
        _ = (self.a2d, self.features, self.knowledge)
        self.student_training()

    @property
    def a2d(self) -> A2DConfig:
        return A2DConfig(self.tau, self.gamma, self.delta, self.top_k)

    @property
    def features(self) -> FeatureConfig:
        return FeatureConfig(self.max_length, self.doc_stride)

    @property
    def knowledge(self) -> KnowledgeConfig:
        return KnowledgeConfig(self.top_k, self.max_answer_length, with_attention=self.delta > 0)

    def student_training(self, seed_offset: int = 0) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
                           seed=self.seed + seed_offset)

    def teacher_training(self) -> TrainConfig:
        return TrainConfig(epochs=self.teacher_epochs, batch_size=self.batch_size,
                           learning_rate=self.learning_rate, seed=self.seed)


@dataclass
class PreparedData:
    """Examples and features of both splits, with the tokenizer that made the features."""

    tokenizer: PreTrainedTokenizerFast
    train_examples: Dataset
    dev_examples: Dataset
    train_features: Dataset
    dev_features: Dataset
    train_arrays: dict[str, np.ndarray]
    dev_arrays: dict[str, np.ndarray]


def load_splits(config: DistillConfig) -> tuple[Dataset, Dataset]:
    """Train and dev examples: files if given (dev split off by context if absent), else synthetic."""
    if config.train is None:
        examples = generate(n_per_domain=config.synthetic_per_domain, seed=config.seed)
        return split_by_context(examples, config.dev_fraction, config.seed)
    train_examples = load_examples(config.train)
    if config.dev is None:
        return split_by_context(train_examples, config.dev_fraction, config.seed)
    return train_examples, load_examples(config.dev)


def shared_tokenizer(config: DistillConfig, train_examples: Dataset) -> PreTrainedTokenizerFast:
    """The one tokenizer teacher and student share: trained on the data for presets, else the model's."""
    if is_preset(config.teacher_model):
        texts = list(train_examples["context"]) + list(train_examples["question"])
        return train_wordpiece_tokenizer(texts, vocab_size=config.vocab_size)
    return load_qa_model(config.teacher_model, seed=config.seed)[1]


def prepare_data(config: DistillConfig) -> PreparedData:
    """Load, split, tokenise and featurise (see :class:`PreparedData`)."""
    train_examples, dev_examples = load_splits(config)
    tokenizer = shared_tokenizer(config, train_examples)
    train_features = featurize(train_examples, tokenizer, config.features)
    dev_features = featurize(dev_examples, tokenizer, config.features)
    return PreparedData(tokenizer, train_examples, dev_examples, train_features, dev_features,
                        feature_arrays(train_features), feature_arrays(dev_features))


def build_model(name: str, data: PreparedData, seed: int) -> PreTrainedModel:
    """A model named ``name`` that reads ``data``'s features (same vocabulary as the tokenizer)."""
    model, tokenizer = load_qa_model(name, seed=seed, tokenizer=data.tokenizer)
    if tokenizer.get_vocab() != data.tokenizer.get_vocab():
        raise ConfigError("distill", name, "teacher and student must share one tokenizer (vocabularies differ)")
    return model


def merge_member_tables(tables: Sequence[pa.Table], data: PreparedData) -> pa.Table:
    """Merge member knowledge tables over ``data``'s training features into the ensemble table."""
    contexts = dict(zip(data.train_examples["id"], data.train_examples["context"]))
    references = references_of(data.train_examples)
    example_ids = data.train_features["example_id"]
    return merge_knowledge(tables, data.train_arrays, [contexts[e] for e in example_ids],
                           data.train_features["offsets"], [references[e] for e in example_ids])


def teacher_knowledge(teacher: PreTrainedModel, data: PreparedData, config: KnowledgeConfig) -> pa.Table:
    """The merged (one-member) knowledge table of ``teacher`` over the training features."""
    member = member_knowledge(teacher, data.train_arrays, data.train_features["feature_id"], config, progress=True)
    return merge_member_tables([member], data)


def initial_student(config: DistillConfig, data: PreparedData) -> PreTrainedModel:
    """The untrained student: ``student_model``, cut to its first ``student_layers`` layers if set."""
    student = build_model(config.student_model, data, seed=config.seed + 1)
    return keep_first_layers(student, config.student_layers) if config.student_layers else student


def train_student(
    config: DistillConfig, data: PreparedData, knowledge: dict[str, np.ndarray] | None, desc: str
) -> tuple[PreTrainedModel, dict[str, float]]:
    """Train a fresh student (A2D objective with knowledge, plain CE without) and evaluate it on dev."""
    student = initial_student(config, data)
    arrays = {**data.train_arrays, **knowledge} if knowledge is not None else data.train_arrays
    train(student, arrays, a2d_objective(config.a2d, use_knowledge=knowledge is not None),
          config.student_training(seed_offset=1), desc=desc)
    scores, _ = evaluate_qa(student, data.dev_examples, data.dev_features, data.dev_arrays, config.max_answer_length)
    return student, scores


def run_distillation(config: DistillConfig) -> dict[str, Any]:
    """The whole pipeline (module doc); returns the summary."""
    started = time.perf_counter()
    run_dir = Path(config.run_dir).resolve()
    data = prepare_data(config)
    teacher = build_model(config.teacher_model, data, seed=config.seed)
    if config.teacher_epochs > 0:
        train(teacher, data.train_arrays, a2d_objective(config.a2d, use_knowledge=False),
              config.teacher_training(), desc="teacher")
    teacher_scores, _ = evaluate_qa(teacher, data.dev_examples, data.dev_features, data.dev_arrays, config.max_answer_length)
    summary: dict[str, Any] = {
        "teacher_f1": teacher_scores["f1"], "teacher_em": teacher_scores["exact_match"],
        "teacher_parameters": count_parameters(teacher),
        "train_examples": len(data.train_examples), "dev_examples": len(data.dev_examples),
        "train_features": len(data.train_features),
    }
    knowledge = None
    if not config.no_kd:
        table = teacher_knowledge(teacher, data, config.knowledge)
        path = write_knowledge(table, run_dir / "knowledge.parquet")
        knowledge = knowledge_arrays(table, data.train_features["feature_id"])
        summary["knowledge_bytes_per_feature"] = path.stat().st_size / len(data.train_features)
        summary["confusing_answer_share"] = float((knowledge["confusing_start"] >= 0).mean())
    student, scores = train_student(config, data, knowledge, desc="student" if knowledge is None else "student+kd")
    summary.update(student_f1=scores["f1"], student_em=scores["exact_match"], student_parameters=count_parameters(student))
    if config.compare and knowledge is not None:
        _, baseline = train_student(config, data, None, desc="student (no kd)")
        summary.update(no_kd_student_f1=baseline["f1"], no_kd_student_em=baseline["exact_match"])
    save_model(student, data.tokenizer, run_dir / "student")
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=1))
    summary.update(run_dir=str(run_dir), seconds=round(time.perf_counter() - started, 1))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def add_distillation_options(p: argparse.ArgumentParser) -> None:
    """The options every A2D-style command shares; each maps to a :class:`DistillConfig` field."""
    p.add_argument("--config", help="YAML or JSON file of options (command-line options override it)")
    p.add_argument("--train", help="training data: SQuAD JSON, MRQA jsonl(.gz) or hf:NAME (default: synthetic)")
    p.add_argument("--dev", help="dev data (default: split off the training data by context)")
    p.add_argument("--synthetic-per-domain", type=int, help="synthetic questions per domain")
    p.add_argument("--dev-fraction", type=float, help="share of contexts split off as dev when --dev is absent")
    p.add_argument("--teacher-model", help="preset (tiny-bert, small-bert, tiny-bert-1l), HF id or local path")
    p.add_argument("--student-model", help="preset, HF id or local path")
    p.add_argument("--student-layers", type=int, help="keep only the student model's first K layers (shallower student)")
    p.add_argument("--vocab-size", type=int, help="WordPiece vocabulary trained for preset models")
    p.add_argument("--tau", type=float, help="temperature of the soft targets (default 2)")
    p.add_argument("--gamma", type=float, help="weight of the answer-margin loss (default 0.3)")
    p.add_argument("--delta", type=float, help="weight of the attention MSE (default 0.1)")
    p.add_argument("--top-k", type=int, help="teacher spans kept per feature (default 4)")
    p.add_argument("--teacher-epochs", type=float, help="teacher training epochs (0: use the model as is)")
    p.add_argument("--epochs", type=float, help="student training epochs")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", "--lr", type=float, dest="learning_rate")
    p.add_argument("--max-length", type=int, help="tokens per window")
    p.add_argument("--doc-stride", type=int, help="overlap between windows, in tokens")
    p.add_argument("--max-answer-length", type=int, help="longest answer span, in tokens")
    p.add_argument("--seed", type=int)
    p.add_argument("--run-dir", help="where knowledge, models and the summary go")
    p.add_argument("--no-kd", action="store_true", default=None, help="train the student without knowledge")
    p.add_argument("--check", action="store_true", help="validate options and data, then exit")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line at the end")


def parser() -> argparse.ArgumentParser:
    """Command-line options; every :class:`DistillConfig` field can be overridden."""
    p = argparse.ArgumentParser(
        prog="python -m kd_core.distill",
        description="Single-process A2D distillation (teacher -> knowledge -> student) on one machine.",
    )
    add_distillation_options(p)
    p.add_argument("--compare", action="store_true", default=None, help="also train the student without knowledge")
    return p


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable table of the run."""
    rows = [("teacher", summary["teacher_f1"], summary["teacher_parameters"]),
            ("student", summary["student_f1"], summary["student_parameters"])]
    if "no_kd_student_f1" in summary:
        rows.append(("student without kd", summary["no_kd_student_f1"], summary["student_parameters"]))
    lines = [f"{'model':<20} {'dev F1':>7} {'params':>9}"]
    lines += [f"{name:<20} {f1:>7.2f} {params:>9,}" for name, f1, params in rows]
    if "knowledge_bytes_per_feature" in summary:
        lines.append(f"knowledge: {summary['knowledge_bytes_per_feature']:.0f} bytes/feature, "
                     f"{100 * summary['confusing_answer_share']:.0f}% of features have a confusing answer")
    lines.append(f"run dir: {summary['run_dir']} ({summary['seconds']} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = config_from_args(DistillConfig, args)
    if args.check:
        prepare_data(config)
        print("ok: options and data are valid")
        return 0
    summary = run_distillation(config)
    print_summary(summary, format_summary(summary), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
