"""What a job's data options are: :class:`DataOptions`, :class:`SpanQAData`, :class:`MultiTaskData`,
:class:`StudentsData`; plain data, checked when built.

Every field is an option of a job (``--help`` lists them) and nothing here reads data or imports
``datasets``, a tokenizer or torch at import (the task classes and the task definitions' readers
are imported by the checks that use them), so a job's options are listed and checked before any
of that loads. Reading the data they name, and the workspace built from it, is
:mod:`kd_core.engine.prepare` (its module doc describes each kind of data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kd_core.data.augment_settings import AugmentSettings
from kd_core.data.synthetic_sentences import SENTENCE_TASKS
from kd_core.data.windows import FeatureConfig
from kd_core.io.errors import ConfigError
from kd_core.io.options import option

if TYPE_CHECKING:
    from kd_core.tasks.definitions import TaskDef


@dataclass(frozen=True)
class DataOptions:
    """Where a job's examples come from and how they are split and tokenised (validated)."""

    task: str = option("sentiment", "embedded task", "data", choices=("span_qa", *SENTENCE_TASKS))
    train: str | None = option(None, "span_qa training file: SQuAD JSON, MRQA jsonl(.gz) or hf:NAME", "data")
    dev: str | None = option(None, "dev file (default: split off the training data by group)", "data")
    test: str | None = option(None, "test file (default: split off the training data by group)", "data")
    synthetic_size: int = option(900, "examples of the embedded task", "data")
    label_noise: float = option(0.1, "share of embedded classification labels replaced by another label", "data")
    dev_fraction: float = option(0.15, "share of the data split off as dev (choices are made on dev)", "data")
    test_fraction: float = option(0.15, "share of the data split off as test (reported numbers)", "data")
    max_length: int = option(64, "tokens per feature (window)", "data")
    doc_stride: int = option(16, "span QA: overlap between windows, in tokens", "data")
    max_query_length: int = option(64, "span QA: longest question kept, in tokens (longer ones are cut and "
                                   "counted)", "data")
    vocab_size: int = option(2000, "WordPiece vocabulary built for a preset teacher", "data")
    student_vocab_size: int | None = option(None, "a vocabulary of its own for a preset student (sentence tasks)",
                                            "data")
    seed: int = option(0, "seed of data splits, initialisation and batch order", "data")

    def __post_init__(self) -> None:
        from kd_core.tasks.synthetic import synthetic_task  # the task classes: not needed for --help

        synthetic_task(self.task)  # a known task
        if self.train is None and (self.dev is not None or self.test is not None):
            raise ConfigError("data", "train", "dev/test files need a training file")
        if self.train is not None and self.task != "span_qa":
            raise ConfigError("data", "train", f"files are read for span_qa only so far, not {self.task!r}")
        if self.synthetic_size < 20:
            raise ConfigError("data", "synthetic_size", f"must be >= 20, got {self.synthetic_size}")
        for name in ("dev_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 0.5:
                raise ConfigError("data", name, f"must be in (0, 0.5), got {getattr(self, name)}")
        for name in ("vocab_size", "student_vocab_size"):
            value = getattr(self, name)
            if value is not None and value < 100:
                raise ConfigError("data", name, f"must be >= 100, got {value}")
        if self.student_vocab_size is not None and self.task == "span_qa":
            raise ConfigError("data", "student_vocab_size", "span-QA knowledge is per token: the student must "
                              "share the teacher's tokenizer")
        self.windows  # validates the windows

    @property
    def windows(self) -> FeatureConfig:
        """The window settings of these options."""
        return FeatureConfig(self.max_length, self.doc_stride, self.max_query_length)


@dataclass(frozen=True)
class SpanQAData:
    """Span-QA data: files or the embedded corpus, test and dev splits by context, extra evaluation files (validated).

    ``test`` (reported numbers) is no choice's: the ``--test`` file, else a share ``test_fraction``
    of the training contexts, split off first; ``dev`` (every choice) is the ``--dev`` file, else a
    share ``dev_fraction`` of the training contexts, split off the rest. Training and dev
    questions whose context is also in a ``--test`` file are dropped (and counted on stderr):
    a test file must not leak into what trains or chooses.
    """

    train: str | None = option(None, "training data: SQuAD JSON, MRQA jsonl(.gz) or hf:NAME (default: the embedded "
                               "synthetic corpus)", "data")
    dev: str | None = option(None, "dev data, where every choice is made (default: split off the training data by "
                             "context)", "data")
    test: str | None = option(None, "test data, reported and read by no choice (default: split off the training data "
                              "by context)", "data")
    eval: tuple[str, ...] = option((), "extra SQuAD-format evaluation file", "data")
    synthetic_size: int = option(200, "synthetic questions per domain", "data")
    max_train_examples: int | None = option(None, "keep at most this many training questions (whole contexts, "
                                            "seeded)", "data")
    dev_fraction: float = option(0.2, "share of contexts split off as dev when --dev is absent", "data")
    test_fraction: float = option(0.2, "share of contexts split off as test when --test is absent", "data")
    vocab_size: int = option(2000, "WordPiece vocabulary trained for preset models", "data")
    max_length: int = option(96, "tokens per window", "data")
    doc_stride: int = option(32, "overlap between windows, in tokens", "data")
    max_query_length: int = option(64, "longest question kept, in tokens (longer ones are cut and counted)", "data")
    max_answer_length: int = option(30, "longest answer span, in tokens", "data")
    seed: int = option(0, "seed of data splits, initialisation and batch order", "data")

    def __post_init__(self) -> None:
        object.__setattr__(self, "eval", tuple(self.eval))
        checks = {"synthetic_size": self.synthetic_size >= 2, "vocab_size": self.vocab_size >= 100,
                  "max_answer_length": self.max_answer_length >= 1, "dev_fraction": 0 < self.dev_fraction < 1,
                  "test_fraction": 0 < self.test_fraction < 1,
                  "max_train_examples": self.max_train_examples is None or self.max_train_examples >= 1}
        for name, ok in checks.items():
            if not ok:
                raise ConfigError("data", name, f"invalid value {getattr(self, name)!r}")
        carved = (self.dev is None) * self.dev_fraction + (self.test is None) * self.test_fraction
        if self.train is None and (self.dev is not None or self.test is not None):
            raise ConfigError("data", "train", "dev/test files need a training file")
        if not carved < 0.9:
            raise ConfigError("data", "dev_fraction", f"dev and test together take {carved:.0%} of the training "
                              "contexts; at most 90%")
        names = [Path(path).name for path in self.eval]
        if len(set(names)) != len(names) or {"train", "dev", "test"} & set(names):
            raise ConfigError("data", "eval", f"evaluation files need distinct names other than train/dev/test: "
                              f"{names}")
        self.windows  # validates the windows

    @property
    def windows(self) -> FeatureConfig:
        """The window settings of these options."""
        return FeatureConfig(self.max_length, self.doc_stride, self.max_query_length)

    @property
    def eval_splits(self) -> list[str]:
        """The splits the extra evaluation files become (each named after its file)."""
        return [Path(path).name for path in self.eval]


@dataclass(frozen=True)
class MultiTaskData:
    """The tasks of a multi-task job: a definitions file, where its data lives, sizes and splits (validated)."""

    tasks: str = option("synthetic", "task definitions: a YAML file, or a shipped set: synthetic (embedded, the "
                        "default) or glue (needs --data-root)", "data")
    data_root: str | None = option(None, "folder the definitions' relative file paths are read from (default: the "
                                   "definitions file's folder)", "data")
    only: tuple[str, ...] = option((), "use only these tasks of the definitions file", "data")
    without_teacher: tuple[str, ...] = option((), "tasks that get no teacher, whatever their definition says", "data")
    max_train_examples: int | None = option(None, "keep at most this many training examples per task (a seeded "
                                            "sample)", "data")
    max_dev_examples: int | None = option(None, "keep at most this many dev examples per task", "data")
    max_test_examples: int | None = option(None, "keep at most this many test examples per task", "data")
    dev_fraction: float = option(0.15, "share of each task's training data split off as dev (choices)", "data")
    test_fraction: float = option(0.15, "synthetic tasks: share split off as test (reported numbers)", "data")
    max_length: int = option(40, "tokens per example (the embedded tasks need <= 40; GLUE: 128)", "data")
    vocab_size: int = option(2000, "WordPiece vocabulary built for preset models", "data")
    seed: int = option(0, "seed of data splits, initialisation and batch order", "data")

    def __post_init__(self) -> None:
        object.__setattr__(self, "only", tuple(self.only))
        object.__setattr__(self, "without_teacher", tuple(self.without_teacher))
        for name in ("max_train_examples", "max_dev_examples", "max_test_examples"):
            value = getattr(self, name)
            if value is not None and value < 10:
                raise ConfigError("data", name, f"must be >= 10, got {value}")
        for name in ("dev_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 0.5:
                raise ConfigError("data", name, f"must be in (0, 0.5), got {getattr(self, name)}")
        if self.vocab_size < 100:
            raise ConfigError("data", "vocab_size", f"must be >= 100, got {self.vocab_size}")
        FeatureConfig(self.max_length, 0)

    @property
    def definitions_file(self) -> Path:
        from kd_core.tasks.definitions import TASKS_DIR  # the definitions' readers: not needed for --help

        shipped = TASKS_DIR / f"{self.tasks}.yaml"
        return shipped if "/" not in self.tasks and shipped.is_file() else Path(self.tasks)

    def definitions(self) -> list[TaskDef]:
        from kd_core.tasks.definitions import load_task_defs

        return load_task_defs(self.definitions_file, self.only)


@dataclass(frozen=True)
class StudentsData:
    """The one task of a different-students job, its splits, tokenizers and transfer set (validated)."""

    task: str = option("sentiment", "the task, by name, in the definitions file", "data")
    tasks: str = option("synthetic", "task definitions: a YAML file, or a shipped set: synthetic (embedded, the "
                        "default) or glue (needs --data-root)", "data")
    data_root: str | None = option(None, "folder the definitions' relative file paths are read from", "data")
    synthetic_size: int | None = option(None, "examples of an embedded task (default: its definition's size)", "data")
    max_train_examples: int | None = option(None, "keep at most this many training examples (a seeded sample)", "data")
    max_dev_examples: int | None = option(None, "keep at most this many dev examples", "data")
    max_test_examples: int | None = option(None, "keep at most this many test examples", "data")
    dev_fraction: float = option(0.15, "share of the training data split off as dev (choices)", "data")
    test_fraction: float = option(0.15, "synthetic tasks: share split off as test (reported numbers)", "data")
    max_length: int = option(40, "tokens per example", "data")
    vocab_size: int = option(2000, "WordPiece vocabulary built for a preset teacher", "data")
    word_vocab_size: int = option(5000, "word vocabulary of the BiLSTM student (most frequent training words)", "data")
    augment: bool = option(False, "enlarge the transfer set with augmented copies labelled by the teacher only "
                           "(Tang et al. 2019)", "data")
    p_mask: float = option(0.1, "augmentation: probability that a word becomes [MASK]", "data")
    p_pos: float = option(0.1, "augmentation: probability that a word becomes another word of its tag", "data")
    p_ng: float = option(0.25, "augmentation: probability that a copy is cut to an n-gram", "data")
    n_iter: int = option(4, "augmentation: copies drawn per training example", "data")
    pos_lexicon: str | None = option(None, "augmentation: word<TAB>tag file (default: the embedded tasks' "
                                     "lexicon)", "data")
    seed: int = option(0, "seed of data splits, initialisation and batch order", "data")

    def __post_init__(self) -> None:
        self.multitask()
        self.augmentation()
        if self.synthetic_size is not None and self.synthetic_size < 20:
            raise ConfigError("data", "synthetic_size", f"must be >= 20, got {self.synthetic_size}")
        if self.word_vocab_size < 100:
            raise ConfigError("data", "word_vocab_size", f"must be >= 100, got {self.word_vocab_size}")

    def multitask(self) -> MultiTaskData:
        """The same data as a one-task :class:`MultiTaskData` (its readers and splits)."""
        return MultiTaskData(tasks=self.tasks, data_root=self.data_root, only=(self.task,),
                             max_train_examples=self.max_train_examples, max_dev_examples=self.max_dev_examples,
                             max_test_examples=self.max_test_examples, dev_fraction=self.dev_fraction,
                             test_fraction=self.test_fraction, max_length=self.max_length, vocab_size=self.vocab_size,
                             seed=self.seed)

    def augmentation(self) -> AugmentSettings:
        return AugmentSettings(p_mask=self.p_mask, p_pos=self.p_pos, p_ng=self.p_ng, n_iter=self.n_iter,
                               seed=self.seed)
