"""What a task is: everything shape-specific about one kind of data, behind one interface.

A :class:`Task` owns how examples become features (and which columns those have), how a
model with the task's head is built and how its output is read, which knowledge a teacher
writes and how members' knowledge merges, the loss terms against gold labels and against a
teacher, decoding, the metrics with one *primary metric* (the number selection and sweeps
use), and the grouping key that keeps train/dev splits honest. Nothing outside a task asks
"is this QA?": the engine, the recipes and the jobs call these methods.

A task module imports no torch and no model code at import: the methods that build, run or
train a model import theirs when called. Only steps on workers call them, so a job's driver,
which builds tasks and features, never loads torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from datasets import Dataset
from transformers import PreTrainedTokenizerFast

from kd_core.data.features import FeatureConfig
from kd_core.data.split import split_by_groups
from kd_core.io.errors import ConfigError
from kd_core.knowledge.manifest import fingerprint

if TYPE_CHECKING:  # torch: the driver builds tasks and features without it
    from transformers import PreTrainedModel

    from kd_core.objectives.terms import Term

Outputs = dict[str, np.ndarray]


class Task(ABC):
    """One task (module doc). Subclasses set ``name``, ``kind``, ``key`` and ``primary_metric``."""

    name: str
    kind: str
    #: The knowledge key column: ``feature_id`` (per window) or ``example_id`` (per example).
    key: str
    primary_metric: str

    # ------------------------------------------------------------------ data

    @abstractmethod
    def group_keys(self, examples: Dataset) -> list[tuple[str, str]]:
        """Per example, the group that must stay on one side of a split (a context, a sentence pair)."""

    def split(self, examples: Dataset, dev_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
        """``(train, dev)`` with every group on one side (:func:`~kd_core.data.split.split_by_groups`)."""
        return split_by_groups(examples, self.group_keys(examples), dev_fraction, seed)

    @abstractmethod
    def texts(self, examples: Dataset) -> list[str]:
        """The text a preset model's vocabulary is built from."""

    @abstractmethod
    def data_fingerprint(self, examples: Dataset) -> str:
        """A hash of what the examples are (ids and texts), recorded in knowledge manifests."""

    # ------------------------------------------------------------------ features and models

    @abstractmethod
    def featurize(self, examples: Dataset, tokenizer: PreTrainedTokenizerFast, windows: FeatureConfig) -> Dataset:
        """One or more feature rows per example, with ``feature_id`` and ``example_id`` columns."""

    def truncated(self, examples: Dataset, tokenizer: PreTrainedTokenizerFast, windows: FeatureConfig) -> int:
        """How many examples :meth:`featurize` cuts beyond what windows cover (span QA: questions longer than
        ``windows.max_query_length``); 0 for a task that cuts none."""
        return 0

    @abstractmethod
    def arrays(self, features: Dataset) -> dict[str, np.ndarray]:
        """The model-facing columns of ``features`` (inputs and gold labels) as aligned arrays."""

    @abstractmethod
    def build_model(self, source: str, seed: int,
                    tokenizer: PreTrainedTokenizerFast | None) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
        """A model with this task's head: a preset (with ``tokenizer``'s vocabulary), a hub id or a path."""

    @abstractmethod
    def forward(self, model: PreTrainedModel, batch: Mapping[str, Any], question_tokens: int = 0) -> Any:
        """The model's output on a batch, in the form this task's loss terms read.

        ``question_tokens > 0`` asks for attention maps too (span QA's attention term).
        """

    @abstractmethod
    def infer(self, model: PreTrainedModel, arrays: Mapping[str, np.ndarray], batch_size: int = 64) -> Outputs:
        """The model's raw outputs over every feature row, as arrays (eval mode, no gradients)."""

    @abstractmethod
    def ensemble(self, members: Sequence[Outputs], arrays: Mapping[str, np.ndarray]) -> Outputs:
        """Outputs of an ensemble of ``members`` (decoded like one model's)."""

    # ------------------------------------------------------------------ knowledge

    #: Keyword settings :meth:`collect` takes (a collect step's ``options``).
    collect_options: tuple[str, ...] = ()

    @abstractmethod
    def collect(self, model: PreTrainedModel, features: Dataset, arrays: Mapping[str, np.ndarray],
                **options: Any) -> pa.Table:
        """One teacher's knowledge table over ``features``, keyed by :attr:`key` (``options``: :attr:`collect_options`)."""

    #: Keyword settings :meth:`merge` takes (a merge step's ``options``).
    merge_options: tuple[str, ...] = ()

    @abstractmethod
    def merge(self, tables: Sequence[pa.Table], examples: Dataset, features: Dataset,
              arrays: Mapping[str, np.ndarray], **options: Any) -> pa.Table:
        """Members' tables over the same rows merged into the table students train on (``options``: :attr:`merge_options`)."""

    @abstractmethod
    def knowledge_arrays(self, table: pa.Table, features: Dataset) -> dict[str, np.ndarray]:
        """Training columns from a merged table, aligned with ``features``' rows."""

    # ------------------------------------------------------------------ parts (multi-task sets)

    def part(self, name: str) -> Task:
        """The task ``name`` of a multi-task set (:mod:`kd_core.tasks.multitask`); a single task has none."""
        raise ConfigError(self.name, "task", f"task {self.name!r} is not a multi-task set; it has no task {name!r}")

    def gather_knowledge(self, tables: Mapping[str, pa.Table], features: Dataset) -> dict[str, np.ndarray]:
        """Several parts' tables (by part name) read into a multi-task set's rows (a single task has no parts)."""
        raise ConfigError(self.name, "knowledge", f"task {self.name!r} reads one knowledge table, got tables of "
                          f"{', '.join(tables)}")

    # ------------------------------------------------------------------ objectives

    @abstractmethod
    def hard_term(self) -> Term:
        """The loss against gold labels."""

    @abstractmethod
    def soft_term(self, tau: float) -> Term:
        """The loss against the (ensemble-averaged) teacher at temperature ``tau``."""

    def term(self, kind: str, tau: float = 1.0) -> Term:
        """The loss term ``kind`` of a train step's objective: ``hard``, ``soft`` or one of the task's own."""
        if kind == "hard":
            return self.hard_term()
        if kind == "soft":
            return self.soft_term(tau)
        raise ConfigError(self.name, "objective", f"task kind {self.kind} has no loss term {kind!r}")

    # ------------------------------------------------------------------ evaluation

    @abstractmethod
    def scores(self, examples: Dataset, features: Dataset, arrays: Mapping[str, np.ndarray],
               outputs: Outputs) -> dict[str, float]:
        """Every metric of the task (percent), the primary one included, from outputs over ``features``."""

    def evaluate(self, model: PreTrainedModel, examples: Dataset, features: Dataset,
                 arrays: Mapping[str, np.ndarray], batch_size: int = 64) -> dict[str, float]:
        """:meth:`scores` of ``model``'s outputs."""
        return self.scores(examples, features, arrays, self.infer(model, arrays, batch_size))

    def describe(self) -> dict[str, Any]:
        """Name, kind, key and primary metric (for manifests, params and summaries)."""
        return {"name": self.name, "kind": self.kind, "key": self.key, "primary_metric": self.primary_metric}


def ids_fingerprint(examples: Dataset, columns: Sequence[str]) -> str:
    """:func:`~kd_core.knowledge.manifest.fingerprint` over ``columns`` of every example, row by row."""
    values = [examples[c] for c in columns]
    return fingerprint(str(v) for row in zip(*values) for v in row)
