"""Several sentence tasks read by one model: MT-DNN's multi-task student (Liu et al. 2019).

A :class:`MultiTask` is made of sentence tasks (:mod:`kd_core.tasks.sentence`, the
*parts*). Its examples are the parts' examples in one set, told apart by their ``task``
column; each feature carries ``task_index``, the position of its task among the parts. The
model is a :class:`~kd_core.models.multihead.BertForMultiTask` (a shared encoder, one head per
part) and every loss term is the part's own term applied to the part's rows:

* ``hard``: the part's gold-label loss (cross-entropy, or squared error for regression);
* ``soft``: for a row whose task has a teacher, the part's soft loss (cross-entropy to the
  ensemble's averaged probabilities at ``tau``, with ``tau^2``; regression: squared error to
  the members' mean); for a row whose task has **no** teacher, the hard loss again. So the
  step objective ``(1 - alpha) hard + alpha soft`` is the paper's average of hard and soft
  losses on tasks with a teacher and the hard loss alone (weight 1) on tasks without one.

Knowledge is collected per part (a teacher is a single-task model on a view of the
workspace, :meth:`kd_core.engine.workspace.Workspace.view`) and gathered into the
multi-task rows by :meth:`gather_knowledge` (each part's table read for that part's rows): ``teacher_logits`` ``[F, N, C_max]`` and
``teacher_values`` ``[F, N]`` (zeros for rows of other tasks) and ``has_teacher`` ``[F]``.
A multi-task model's own knowledge is not collected as one table: collect per part.

Scores are every part's metrics as ``<task>/<metric>`` plus ``average``, the mean over
parts of each part's primary metric (GLUE's score is such a mean), the primary metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from datasets import Dataset, concatenate_datasets
from transformers import PreTrainedTokenizerFast

from kd_core.data.features import FeatureConfig
from kd_core.io.errors import ConfigError
from kd_core.models.presets import PRESETS, is_preset
from kd_core.models.tokenizers import load_tokenizer
from kd_core.tasks.base import Outputs, ids_fingerprint
from kd_core.tasks.sentence import INPUT_COLUMNS, SentenceOutput, SentenceTask

if TYPE_CHECKING:  # torch and the model code load where a model is built or trained, not in a driver
    from torch import Tensor
    from transformers import PreTrainedModel

    from kd_core.objectives.terms import Term

AVERAGE = "average"


class MultiTask(SentenceTask):
    """Sentence tasks read by one multi-head model (module doc).

    As a sentence task it reads pairs (a single-sentence part's ``text_b`` is empty) and has
    ``C_max`` outputs; features, groups, texts and batched inference are the sentence task's.
    """

    kind = "multitask"
    input_columns = (*INPUT_COLUMNS, "task_index")

    def __init__(self, parts: Sequence[SentenceTask], with_teacher: Sequence[str] = (), name: str = "multitask") -> None:
        names = [part.name for part in parts]
        if not parts:
            raise ConfigError(name, "tasks", "a multi-task set needs at least one task")
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise ConfigError(name, "tasks", f"task {twice!r} is listed twice")
        super().__init__(name, True, max(part.num_outputs for part in parts), AVERAGE)
        self.parts = {part.name: part for part in parts}
        self.index = {part.name: i for i, part in enumerate(parts)}
        unknown = [t for t in with_teacher if t not in self.parts]
        if unknown:
            raise ConfigError(name, "with_teacher", f"no task {unknown[0]!r}")
        #: The tasks that get a teacher ensemble (a recipe's business; recorded with the set).
        self.with_teacher = tuple(t for t in self.parts if t in with_teacher)

    def part(self, name: str) -> SentenceTask:
        if name not in self.parts:
            raise ConfigError(self.name, "task", f"no task {name!r}; have {', '.join(self.parts)}")
        return self.parts[name]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tasks": [part.describe() for part in self.parts.values()],
                "with_teacher": list(self.with_teacher)}

    # ------------------------------------------------------------------ data

    def _rows(self, examples: Dataset) -> dict[str, list[int]]:
        rows: dict[str, list[int]] = {name: [] for name in self.parts}
        for i, task in enumerate(examples["task"]):
            if task not in rows:
                raise ConfigError(self.name, f"example {examples[i]['id']!r}", f"unknown task {task!r}")
            rows[task].append(i)
        return rows

    def data_fingerprint(self, examples: Dataset) -> str:
        return ids_fingerprint(examples, ("id", "task", "text_a", "text_b"))

    # ------------------------------------------------------------------ features and models

    def featurize(self, examples: Dataset, tokenizer: PreTrainedTokenizerFast, windows: FeatureConfig) -> Dataset:
        """Each part's features of its examples (grouped by part, in part order), with ``task_index``."""
        pieces = []
        for name, rows in self._rows(examples).items():
            if rows:
                features = self.parts[name].featurize(examples.select(rows), tokenizer, windows)
                pieces.append(features.add_column("task_index", [self.index[name]] * len(rows)))
        if not pieces:
            raise ConfigError(self.name, "examples", "no examples of any task")
        return concatenate_datasets(pieces)

    def task_heads(self) -> dict[str, int]:
        return {name: part.num_outputs for name, part in self.parts.items()}

    def build_model(self, source: str, seed: int,
                    tokenizer: PreTrainedTokenizerFast | None) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
        """A preset multi-head BERT with ``tokenizer``'s vocabulary, or a saved / pretrained BERT's encoder."""
        import torch
        from transformers import BertConfig

        from kd_core.models.multihead import BertForMultiTask, load_multitask_model, multitask_config

        if is_preset(source):
            if tokenizer is None:
                raise ConfigError("models", source, "a preset model needs a tokenizer trained on the data")
            base = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **PRESETS[source])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return BertForMultiTask(multitask_config(base, self.task_heads())), tokenizer
        return load_multitask_model(source, seed, self.task_heads()), tokenizer or load_tokenizer(source)

    def forward(self, model: PreTrainedModel, batch: Mapping[str, Any], question_tokens: int = 0) -> SentenceOutput:
        from kd_core.models.forward import model_inputs

        return SentenceOutput(model(**model_inputs(batch), task_index=batch["task_index"]))

    def infer(self, model: PreTrainedModel, arrays: Mapping[str, np.ndarray], batch_size: int = 64) -> Outputs:
        """``logits`` ``[F, C_max]``: each row's task head, left-aligned (a regression value in column 0)."""
        return {"logits": self._logits(model, arrays, batch_size)}

    # ------------------------------------------------------------------ per-part views of outputs

    def _part_rows(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: np.flatnonzero(arrays["task_index"] == self.index[name]) for name in self.parts}

    def _part_outputs(self, name: str, logits: np.ndarray) -> Outputs:
        part = self.parts[name]
        if part.kind == "regression":
            return {"value": logits[:, 0]}
        return {"logits": logits[:, :part.num_outputs]}

    def ensemble(self, members: Sequence[Outputs], arrays: Mapping[str, np.ndarray]) -> Outputs:
        """Each part's ensemble (mean of probabilities; mean value) on its rows."""
        combined = np.zeros_like(members[0]["logits"])
        for name, rows in self._part_rows(arrays).items():
            merged = self.parts[name].ensemble([self._part_outputs(name, m["logits"][rows]) for m in members], {})
            values = merged["value"][:, None] if "value" in merged else merged["logits"]
            combined[rows, :values.shape[1]] = values
        return {"logits": combined}

    # ------------------------------------------------------------------ knowledge

    def collect(self, model: PreTrainedModel, features: Dataset, arrays: Mapping[str, np.ndarray],
                **options: Any) -> pa.Table:
        raise ConfigError(self.name, "collect", "knowledge of a multi-task set is collected per task: give the "
                          "collect step a task")

    def merge(self, tables: Sequence[pa.Table], examples: Dataset, features: Dataset,
              arrays: Mapping[str, np.ndarray], **options: Any) -> pa.Table:
        raise ConfigError(self.name, "merge", "knowledge of a multi-task set is merged per task: give the merge "
                          "step a task")

    def knowledge_arrays(self, table: pa.Table, features: Dataset) -> dict[str, np.ndarray]:
        raise ConfigError(self.name, "knowledge", "a multi-task set reads one table per task (gather_knowledge)")

    def gather_knowledge(self, tables: Mapping[str, pa.Table], features: Dataset) -> dict[str, np.ndarray]:
        """Each part's merged table read for that part's rows of ``features`` (module doc)."""
        rows_of = {name: np.flatnonzero(np.asarray(features["task_index"]) == self.index[name]) for name in self.parts}
        parts = {name: self.part(name).knowledge_arrays(table, features.select(rows_of[name]))
                 for name, table in tables.items()}
        members = {int(k["teacher_logits" if "teacher_logits" in k else "teacher_values"].shape[1])
                   for k in parts.values()}
        if len(members) > 1:
            raise ConfigError(self.name, "knowledge", f"teachers of the tasks have different member counts {members}")
        n = members.pop() if members else 1
        size = len(features)
        gathered = {"teacher_logits": np.zeros((size, n, self.num_outputs), np.float32),
                    "teacher_values": np.zeros((size, n), np.float32), "has_teacher": np.zeros(size, bool)}
        for name, knowledge in parts.items():
            rows = rows_of[name]
            if "teacher_logits" in knowledge:
                gathered["teacher_logits"][rows, :, :knowledge["teacher_logits"].shape[2]] = knowledge["teacher_logits"]
            else:
                gathered["teacher_values"][rows] = knowledge["teacher_values"]
            gathered["has_teacher"][rows] = True
        return gathered

    # ------------------------------------------------------------------ objectives

    def _per_part(self, terms: Mapping[int, tuple[Term, SentenceTask]], out: SentenceOutput, b: Mapping[str, Tensor],
                  fallback: Mapping[int, Term] | None = None) -> Tensor:
        """Per-example losses: each row gets its part's term (rows without a teacher: ``fallback``)."""
        import torch

        loss = out.logits.new_zeros(out.logits.shape[0])
        for index, (term, part) in terms.items():
            rows = b["task_index"] == index
            if not bool(rows.any()):
                continue
            sub = {key: value[rows] for key, value in b.items()}
            if "teacher_logits" in sub:
                sub["teacher_logits"] = sub["teacher_logits"][..., :part.num_outputs]
            sub_out = SentenceOutput(out.logits[rows][:, :part.num_outputs])
            value = term.fn(sub_out, sub)
            if fallback is not None:
                value = torch.where(sub["has_teacher"].bool(), value, fallback[index].fn(sub_out, sub))
            loss = loss.index_put((torch.nonzero(rows).squeeze(1),), value)
        return loss

    def hard_term(self) -> Term:
        """Each row's part's gold-label loss (cross-entropy or squared error; 0 without a gold label)."""
        from kd_core.objectives.terms import Term

        terms = {self.index[name]: (part.hard_term(), part) for name, part in self.parts.items()}
        return Term("hard", lambda out, b: self._per_part(terms, out, b))

    def soft_term(self, tau: float) -> Term:
        """Each row's part's soft loss where its task has a teacher, else its hard loss (module doc)."""
        from kd_core.objectives.terms import Term

        terms = {self.index[name]: (part.soft_term(tau), part) for name, part in self.parts.items()}
        hard = {self.index[name]: part.hard_term() for name, part in self.parts.items()}
        return Term("soft", lambda out, b: self._per_part(terms, out, b, fallback=hard), needs_knowledge=True,
                    requires=("has_teacher", "teacher_logits", "teacher_values"))

    # ------------------------------------------------------------------ evaluation

    def scores(self, examples: Dataset, features: Dataset, arrays: Mapping[str, np.ndarray],
               outputs: Outputs) -> dict[str, float]:
        """``<task>/<metric>`` for every part with rows here, and their primaries' mean ``average``."""
        scores: dict[str, float] = {}
        primaries = []
        for name, rows in self._part_rows(arrays).items():
            if not len(rows):
                continue
            part = self.parts[name]
            sub_arrays = {key: value[rows] for key, value in arrays.items()}
            part_scores = part.scores(examples, features.select(rows), sub_arrays,
                                      self._part_outputs(name, outputs["logits"][rows]))
            scores |= {f"{name}/{metric}": value for metric, value in part_scores.items()}
            primaries.append(part_scores[part.primary_metric])
        scores[AVERAGE] = float(np.mean(primaries))
        return scores
