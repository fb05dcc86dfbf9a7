"""Tasks as data: a YAML file of sentence-task definitions (MT-DNN's task list) and the readers of their files.

A definitions file holds ``tasks:``, a list of entries (see ``kd_core/data/tasks/*.yaml``):

```yaml
tasks:
  - name: rte                     # letters, digits, _ and -; unique
    kind: classification          # or regression
    pair: true                    # two texts (text_a, text_b) or one
    labels: [entailment, not_entailment]   # classification: the label set, as written in the files
    metrics: [accuracy]           # the first is the primary metric (selection, sweeps, averages)
    teacher: true                 # whether the task gets a teacher ensemble
    train: RTE/train.tsv          # a TSV file (relative to the data root) or hf:NAME[:CONFIG]
    dev: RTE/dev.tsv              # the held-out file: it becomes the *test* split (GLUE hides its test labels)
    header: true                  # TSV: whether the first line names the columns
    columns: {text_a: sentence1, text_b: sentence2, label: label}  # names (with a header) or 0-based indices
  - name: stsb
    kind: regression
    score_range: [0, 5]           # regression: the scores the files may hold (optional; scores are always finite)
  - name: sentiment
    synthetic: sentiment          # an embedded synthetic task instead of files (size, label_noise)
    size: 600
```

Splits per task: ``test`` is the ``dev`` file (or ``test:`` when given; for a synthetic task,
a share split off by sentence group), ``dev`` (for every choice) is split off the training
data by sentence group, ``train`` is the rest. Every problem is refused with one line naming
the file, the task or line and the problem (:class:`~kd_core.io.errors.ConfigError` for the
definitions, :class:`~kd_core.io.errors.DataError` for data files).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from datasets import Dataset

from kd_core.data.schema import sentences_to_dataset
from kd_core.data.synthetic_sentences import SENTENCE_TASKS, generate_task
from kd_core.evaluation.sentence_metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from kd_core.io.errors import ConfigError, DataError
from kd_core.io.yaml_files import load_yaml
from kd_core.tasks.sentence import ClassificationTask, RegressionTask, SentenceTask

TASKS_DIR = Path(__file__).parents[1] / "data" / "tasks"  # the shipped definition files (data, beside the vocabularies)
KINDS = ("classification", "regression")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_KEYS = {"name", "kind", "pair", "labels", "metrics", "teacher", "train", "dev", "test", "header", "columns",
         "synthetic", "size", "label_noise", "score_range"}


@dataclass(frozen=True)
class TaskDef:
    """One task definition (module doc), validated at construction."""

    name: str
    kind: str
    pair: bool = False
    labels: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    teacher: bool = True
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    header: bool = True
    columns: dict[str, str | int] = field(default_factory=dict)
    synthetic: str | None = None
    size: int = 600
    label_noise: float = 0.1
    score_range: tuple[float, float] | None = None  # regression: the scores a file may hold (STS-B: [0, 5])
    source: str = "tasks"  # the definitions file, for messages

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(self.source, where, "name must start with a letter and hold letters, digits, _ or -")
        if self.kind not in KINDS:
            raise ConfigError(self.source, where, f"unknown kind {self.kind!r}; known: {', '.join(KINDS)}")
        known = CLASSIFICATION_METRICS if self.kind == "classification" else REGRESSION_METRICS
        object.__setattr__(self, "metrics", tuple(self.metrics) or (known[0],))
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))
        unknown = [m for m in self.metrics if m not in known]
        if unknown:
            raise ConfigError(self.source, where, f"unknown {self.kind} metric {unknown[0]!r}; known: {', '.join(known)}")
        if self.kind == "classification" and (len(self.labels) < 2 or len(set(self.labels)) != len(self.labels)):
            raise ConfigError(self.source, where, f"a classification task needs >= 2 distinct labels, got "
                              f"{list(self.labels)}")
        if self.kind == "regression" and self.labels:
            raise ConfigError(self.source, where, "a regression task has no labels")
        if self.score_range is not None:
            low, high = (float(v) for v in self.score_range)
            if self.kind != "regression" or not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ConfigError(self.source, where, f"score_range is [low, high] with low < high, for a regression "
                                  f"task; got {list(self.score_range)}")
            object.__setattr__(self, "score_range", (low, high))
        if self.synthetic is not None:
            info = SENTENCE_TASKS.get(self.synthetic)
            if info is None:
                raise ConfigError(self.source, where, f"unknown synthetic task {self.synthetic!r}; known: "
                                  f"{', '.join(SENTENCE_TASKS)}")
            if (info.kind, info.pair) != (self.kind, self.pair) or (self.labels and self.labels != info.labels):
                raise ConfigError(self.source, where, f"synthetic {self.synthetic} is {info.kind}, pair={info.pair}, "
                                  f"labels {list(info.labels)}")
            if self.size < 20 or not 0 <= self.label_noise < 1:
                raise ConfigError(self.source, where, "size must be >= 20 and label_noise in [0, 1)")
            return
        if self.train is None or (self.dev is None and self.test is None):
            raise ConfigError(self.source, where, "needs a train file and a dev (held-out) file, or synthetic:")
        needed = {"text_a", "label" if self.kind == "classification" else "score"} | ({"text_b"} if self.pair else set())
        if not any(str(path).startswith("hf:") for path in (self.train, self.dev, self.test) if path):
            missing = sorted(needed - set(self.columns))
            if missing:
                raise ConfigError(self.source, where, f"columns: missing {', '.join(missing)}")

    def task(self) -> SentenceTask:
        """The task object (its primary metric is the first of ``metrics``)."""
        if self.kind == "classification":
            return ClassificationTask(self.name, self.labels, pair=self.pair, primary_metric=self.metrics[0])
        return RegressionTask(self.name, pair=self.pair, primary_metric=self.metrics[0])


def load_task_defs(path: str | Path, only: Sequence[str] = ()) -> list[TaskDef]:
    """The definitions in ``path`` (module doc); with ``only``, those tasks, in the file's order."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "tasks", "no such task definitions file")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except yaml.YAMLError as err:
        raise ConfigError(str(path), "yaml", f"cannot parse: {str(err).splitlines()[0]}") from err
    entries = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(str(path), "tasks", "needs a non-empty list 'tasks:'")
    defs: list[TaskDef] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "name" not in entry or "kind" not in entry:
            raise ConfigError(str(path), f"tasks[{index}]", "each task needs at least a name and a kind")
        extra = sorted(set(entry) - _KEYS)
        if extra:
            raise ConfigError(str(path), f"task {entry['name']!r}", f"unknown key {extra[0]!r}")
        if any(d.name == entry["name"] for d in defs):
            raise ConfigError(str(path), f"task {entry['name']!r}", "is listed twice")
        for key, value in entry.items():
            wrong = _entry_type_problem(key, value)
            if wrong:
                raise ConfigError(str(path), f"task {entry['name']!r}", f"{key}: {wrong}")
        defs.append(TaskDef(**entry, source=str(path)))
    if only:
        names = [d.name for d in defs]
        unknown = [name for name in only if name not in names]
        if unknown:
            raise ConfigError(str(path), "tasks", f"no task {unknown[0]!r}; have {', '.join(names)}")
        defs = [d for d in defs if d.name in only]
    return defs


#: What each key of an entry holds, as YAML reads it: a type (or types), or "names" for a list of strings.
_ENTRY_TYPES: dict[str, Any] = {
    "name": str, "kind": str, "pair": bool, "labels": "names", "metrics": "names", "teacher": bool,
    "train": str, "dev": str, "test": str, "header": bool, "columns": dict, "synthetic": str, "size": int,
    "label_noise": (float, int), "score_range": "numbers",
}


def _entry_type_problem(key: str, value: Any) -> str | None:
    """Why ``value`` cannot be the entry's ``key`` (``size: many``, ``labels: np`` — a string, not a list), or
    ``None``. Booleans are no numbers here (YAML reads ``size: yes`` as ``True``)."""
    kind = _ENTRY_TYPES[key]
    if value is None and key in ("train", "dev", "test", "synthetic"):
        return None
    if kind == "names":
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
            return f"expected a list of names, e.g. [a, b], got {value!r}"
        return None
    if kind == "numbers":
        if not isinstance(value, list) or len(value) != 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
            return f"expected [low, high], two finite numbers, got {value!r}"
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return f"expected {_TYPE_NAMES[kinds[0]]}, got {value!r}"
    if not isinstance(value, kinds):
        return f"expected {_TYPE_NAMES[kinds[0]]}, got {value!r}"
    if key == "columns" and not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in value.values()):
        return f"expected column names or 0-based indices, got {value!r}"
    return None


_TYPE_NAMES = {str: "a string", bool: "true or false", dict: "a mapping", int: "an integer", float: "a number"}


def _resolve(location: str, root: Path) -> str:
    if location.startswith("hf:"):
        return location
    path = Path(location) if Path(location).is_absolute() else root / location
    if not path.is_file():
        raise DataError(str(path), "file", "no such file")
    return str(path)


def read_task_file(definition: TaskDef, location: str, root: Path, split: str) -> Dataset:
    """The examples of one split file of ``definition`` (TSV or ``hf:NAME[:CONFIG]``), validated."""
    resolved = _resolve(location, root)
    if resolved.startswith("hf:"):
        return _read_hf(definition, resolved, split)
    return _read_tsv(definition, Path(resolved), split)


def _column_index(definition: TaskDef, header: list[str] | None, path: Path) -> dict[str, int]:
    indices = {}
    for role, column in definition.columns.items():
        if isinstance(column, int):
            indices[role] = column
        elif header is not None and column in header:
            indices[role] = header.index(column)
        else:
            raise DataError(str(path), "header", f"no column {column!r} for {role} (header: {header})")
    return indices


def _record(definition: TaskDef, values: Mapping[str, Any], where: str, source: str, example_id: str) -> dict[str, Any]:
    """One example of the sentence schema from a row's ``text_a``/``text_b``/``label``/``score`` values."""
    text_a = str(values.get("text_a") or "").strip()
    text_b = str(values.get("text_b") or "").strip() if definition.pair else ""
    if not text_a or (definition.pair and not text_b):
        raise DataError(source, where, "empty text")
    record: dict[str, Any] = {"id": example_id, "task": definition.name, "domain": definition.name,
                              "text_a": text_a, "text_b": text_b}
    if definition.kind == "classification":
        label = str(values.get("label")).strip()
        if label not in definition.labels:
            raise DataError(source, where, f"label {label!r} is not in the label set {list(definition.labels)}")
        record["label"] = definition.labels.index(label)
    else:
        try:
            score = float(values.get("score"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise DataError(source, where, f"score {values.get('score')!r} is not a number") from None
        if not math.isfinite(score):
            raise DataError(source, where, f"score {values.get('score')!r} is not a finite number")
        if definition.score_range is not None and not definition.score_range[0] <= score <= definition.score_range[1]:
            low, high = definition.score_range
            raise DataError(source, where, f"score {score:g} is outside the task's score_range [{low:g}, {high:g}]")
        record["score"] = score
    return record


def _tsv_text(path: Path) -> str:
    """The file's text (UTF-8, an optional byte-order mark); a byte that is not UTF-8 is one line naming its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataError(str(path), f"line {line}", f"byte {data[err.start]:#04x} is not UTF-8 (save the file as "
                        f"UTF-8)") from None


def _read_tsv(definition: TaskDef, path: Path, split: str) -> Dataset:
    """The examples of a TSV file. Every row has as many fields as the first (the header, when there is one): a
    row with more or fewer is refused, not read by position, since its fields would land in the wrong columns."""
    rows = list(csv.reader(io.StringIO(_tsv_text(path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows[0] if definition.header and rows else None
    body = rows[1:] if header is not None else rows
    indices = _column_index(definition, header, path)
    width = max(indices.values()) + 1
    fields = len(header) if header is not None else next((len(row) for row in body if any(c.strip() for c in row)),
                                                          width)
    records = []
    for number, row in enumerate(body, start=2 if header is not None else 1):
        if not any(cell.strip() for cell in row):
            continue
        where = f"line {number}"
        if len(row) < width:
            raise DataError(str(path), where, f"has {len(row)} columns, needs at least {width}")
        if len(row) != fields:
            raise DataError(str(path), where, f"has {len(row)} tab-separated fields, the "
                            f"{'header' if header is not None else 'first row'} has {fields} (a stray tab?)")
        values = {role: row[index] for role, index in indices.items()}
        records.append(_record(definition, values, where, str(path), f"{definition.name}-{split}-{number}"))
    if not records:
        raise DataError(str(path), "file", "holds no examples")
    return sentences_to_dataset(records)


def _read_hf(definition: TaskDef, location: str, split: str) -> Dataset:
    """``hf:NAME[:CONFIG]`` through ``datasets.load_dataset`` (a hub name, or a local folder of data files)."""
    from datasets import load_dataset

    name, _, config = location.removeprefix("hf:").partition(":")
    hf_split = {"train": "train", "dev": "validation", "test": "test"}[split]
    try:
        rows = load_dataset(name, config or None, split=hf_split)
    except Exception as err:  # datasets raises many kinds (missing, offline, bad config)
        raise DataError(location, hf_split, f"cannot load: {str(err).splitlines()[0] if str(err) else err}") from err
    columns = {role: str(column) for role, column in definition.columns.items()} or \
        {"text_a": "sentence1" if definition.pair else "sentence", "text_b": "sentence2",
         "label" if definition.kind == "classification" else "score": "label"}
    missing = [c for role, c in columns.items() if c not in rows.column_names and (role != "text_b" or definition.pair)]
    if missing:
        raise DataError(location, hf_split, f"no column {missing[0]!r} (has {rows.column_names})")
    records = []
    for index, row in enumerate(rows):
        values = {role: row.get(column) for role, column in columns.items()}
        if definition.kind == "classification" and isinstance(values.get("label"), int):
            label = values["label"]
            values["label"] = definition.labels[label] if 0 <= label < len(definition.labels) else label
        records.append(_record(definition, values, f"row {index}", location, f"{definition.name}-{split}-{index}"))
    return sentences_to_dataset(records)


def synthetic_examples(definition: TaskDef, seed: int) -> Dataset:
    """The embedded synthetic examples of ``definition`` (ids and ``task`` named after the definition)."""
    assert definition.synthetic is not None
    rows = generate_task(definition.synthetic, definition.size, seed, definition.label_noise)
    return sentences_to_dataset({**row, "id": f"{definition.name}-{row['id']}", "task": definition.name,
                                 "domain": definition.name} for row in rows.to_list())
