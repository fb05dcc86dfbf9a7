"""Building a job's workspace: examples of a task, train/dev/test splits, teacher and student tokenizers.

Five kinds of data (the options of four are in :mod:`kd_core.engine.data_options`, the
domains' in :mod:`kd_core.data.domain_settings`: plain data that ``--help`` reads without
this module): :class:`DataOptions` (any task; train/dev/test), :class:`SpanQAData`
(the A2D job's span-QA data: train/dev/test plus extra evaluation files, each file a split of its
own named after the file), the domains of a multi-domain job
(:class:`~kd_core.data.domain_settings.DataSettings`: splits ``<domain>.train``, ``<domain>.dev``
(validation carved from the training data), ``<domain>.test``, ``<domain>.eval.<file>`` for every
extra evaluation file the domain's models score, and ``all.dev``, the union of the dev splits; one
tokenizer for all), the tasks of a multi-task job
(:class:`MultiTaskData`: a task definitions file, :mod:`kd_core.tasks.definitions`; splits
``<task>.train/dev/test`` and ``train/dev/test`` holding every task), and the one task of a
different-students job (:class:`StudentsData`: a task of a definitions file, a word-level
tokenizer ``words`` for a BiLSTM, and optionally the split ``transfer``: the training split
plus augmented copies without labels).

Data is the embedded synthetic set of the task (``span_qa`` or a sentence task of
:mod:`kd_core.data.synthetic_sentences`) or, for span QA, files in any supported format.
Splits are by the task's group (a context, a sentence pair), seeded: the test split first,
then dev from the rest, unless files give them. Dev is for choices, test for reported
numbers.

Tokenizers: ``teacher`` is trained on the training text for a preset teacher (else the
teacher model's own); ``student`` is the same object unless the student reads its own
(``student_vocab_size`` for a preset student, or a pretrained student with another
vocabulary), which only example-keyed tasks allow: span-QA knowledge is per token position.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from datasets import Dataset, concatenate_datasets
from transformers import PreTrainedTokenizerFast

from kd_core.data.augment import augment, embedded_lexicon, read_lexicon, transfer_set
from kd_core.data.domain_settings import ALL_DEV, DataSettings, eval_split
from kd_core.data.domains import load_domain_examples, shared_tokenizer
from kd_core.data.features import FeatureConfig
from kd_core.data.loaders import load_examples
from kd_core.data.split import limit_by_context, same_text
from kd_core.data.synthetic import generate
from kd_core.data.synthetic_sentences import generate_task
from kd_core.engine.data_options import DataOptions, MultiTaskData, SpanQAData, StudentsData
from kd_core.engine.workspace import Workspace
from kd_core.io.errors import ConfigError
from kd_core.models.presets import is_preset
from kd_core.models.tokenizers import load_tokenizer, train_word_tokenizer, train_wordpiece_tokenizer
from kd_core.tasks.base import Task
from kd_core.tasks.definitions import TaskDef, read_task_file, synthetic_examples
from kd_core.tasks.multitask import MultiTask
from kd_core.tasks.span_qa import SpanQATask
from kd_core.tasks.synthetic import synthetic_task

SPAN_DOMAINS = ("sports", "medicine", "finance")


def build_span_workspace(options: SpanQAData, teacher_model: str, student_model: str,
                         run_dir: str | Path) -> Workspace:
    """The workspace of a span-QA job (:class:`SpanQAData`), featurised; bad data or options raise here.

    Extra evaluation files are read first (they are the likeliest to be mistyped).
    """
    extra = {name: load_examples(path) for name, path in zip(options.eval_splits, options.eval)}
    task = SpanQATask(max_answer_length=options.max_answer_length)
    if options.train is None:
        train = generate(n_per_domain=options.synthetic_size, seed=options.seed)
    else:
        train = load_examples(options.train)
    dev_share = options.dev_fraction
    if options.test is None:
        train, test = task.split(train, options.test_fraction, options.seed)
        dev_share /= 1 - options.test_fraction  # dev_fraction is a share of all the training contexts
    else:
        test = load_examples(options.test, split="test")
        train = without_contexts_of(train, test, options.train or "the training data")
    if options.dev is None:
        train, dev = task.split(train, dev_share, options.seed + 1)
    else:
        dev = load_examples(options.dev, split="validation")
        if options.test is not None:
            dev = without_contexts_of(dev, test, options.dev)
    if options.max_train_examples is not None:
        train = limit_by_context(train, options.max_train_examples, options.seed)
    splits = {"train": train, "dev": dev, "test": test, **extra}
    for name, rows in splits.items():
        if len(rows) == 0:
            raise ConfigError("data", name, "split is empty")
    tokenizers = tokenizers_for(task, train, teacher_model, student_model, options.vocab_size)
    ws = Workspace(task, splits, tokenizers, options.windows, str(run_dir))
    ws.check_features()
    return ws


def without_contexts_of(examples: Dataset, test: Dataset, source: str) -> Dataset:
    """``examples`` without the questions whose context (:func:`~kd_core.data.split.same_text`) is also a test
    context; one stderr line says how many were dropped."""
    held_out = {same_text(context) for context in test["context"]}
    keep = [i for i, context in enumerate(examples["context"]) if same_text(context) not in held_out]
    if len(keep) == len(examples):
        return examples
    print(f"data: dropped {len(examples) - len(keep)} of {len(examples)} questions of {source} whose context is in "
          f"the test file", file=sys.stderr, flush=True)
    return examples.select(keep)


def build_domain_workspace(data: DataSettings, max_answer_length: int, tokenizer_name: str,
                           run_dir: str | Path) -> Workspace:
    """The workspace of a multi-domain job (module doc), featurised; bad data or options raise here.

    Extra evaluation files are read first (they are the likeliest to be mistyped); each becomes
    the split :func:`~kd_core.data.domain_settings.eval_split` of every domain that scores it (one
    object under several names, featurised once per name).
    """
    extra = {file.name: (file, load_examples(file.path, split="validation")) for file in data.eval_files()}
    by_domain = load_domain_examples(data)
    tokenizer = shared_tokenizer(data, by_domain)
    splits = {f"{name}.{part}": examples for name, domain in by_domain.items() for part, examples in domain.items()}
    splits[ALL_DEV] = concatenate_datasets([domain.dev for domain in by_domain.values()])
    for name, (file, examples) in extra.items():
        if len(examples) == 0:
            raise ConfigError(file.path, "eval", "has no questions")
        splits |= {eval_split(domain, name): examples for domain in file.domains}
    ws = Workspace(SpanQATask(max_answer_length=max_answer_length), splits, {tokenizer_name: tokenizer},
                   data.windows, str(run_dir))
    ws.check_features()
    return ws


def load_splits(options: DataOptions, task: Task) -> dict[str, Dataset]:
    """``{"train", "dev", "test"}`` examples (module doc)."""
    if options.train is not None:
        train = load_examples(options.train)
        test = load_examples(options.test, split="test") if options.test else None
        dev = load_examples(options.dev, split="validation") if options.dev else None
    elif options.task == "span_qa":
        train = generate(n_per_domain=max(2, options.synthetic_size // len(SPAN_DOMAINS)), domains=SPAN_DOMAINS,
                         seed=options.seed)
        dev = test = None
    else:
        train = generate_task(options.task, options.synthetic_size, options.seed, options.label_noise)
        dev = test = None
    if test is None:
        train, test = task.split(train, options.test_fraction, options.seed)
    if dev is None:
        train, dev = task.split(train, options.dev_fraction / (1 - options.test_fraction), options.seed + 1)
    return {"train": train, "dev": dev, "test": test}


def teacher_tokenizer(task: Task, train: Dataset, teacher_model: str, vocab_size: int) -> PreTrainedTokenizerFast:
    """A WordPiece vocabulary trained on ``train`` for a preset teacher, else the teacher model's own tokenizer."""
    if is_preset(teacher_model):
        return train_wordpiece_tokenizer(task.texts(train), vocab_size=vocab_size)
    return load_tokenizer(teacher_model)


def tokenizers_for(task: Task, train: Dataset, teacher_model: str, student_model: str, vocab_size: int,
                   student_vocab_size: int | None = None) -> dict[str, PreTrainedTokenizerFast]:
    """``{"teacher": ..., "student": ...}`` (module doc)."""
    teacher = teacher_tokenizer(task, train, teacher_model, vocab_size)
    if student_vocab_size is not None:
        if not is_preset(student_model):
            raise ConfigError("data", "student_vocab_size", "only a preset student gets a vocabulary built here")
        student = train_wordpiece_tokenizer(task.texts(train), vocab_size=student_vocab_size)
    elif is_preset(student_model):
        student = teacher
    else:
        student = load_tokenizer(student_model)
        if task.key == "feature_id" and student.get_vocab() != teacher.get_vocab():
            raise ConfigError("data", student_model, "span-QA teacher and student must share one tokenizer")
    return {"teacher": teacher, "student": student}


def build_workspace(options: DataOptions, teacher_model: str, student_model: str, run_dir: str | Path) -> Workspace:
    """The workspace of a teacher -> student job (module doc), featurised; bad data or options raise here."""
    task = synthetic_task(options.task)
    splits = load_splits(options, task)
    for name, examples in splits.items():
        if len(examples) == 0:
            raise ConfigError("data", name, "split is empty")
    tokenizers = tokenizers_for(task, splits["train"], teacher_model, student_model, options.vocab_size,
                                options.student_vocab_size)
    ws = Workspace(task, splits, tokenizers, options.windows, str(run_dir))
    ws.check_features()
    return ws


def _sample(rows: Dataset, limit: int | None, seed: int) -> Dataset:
    """At most ``limit`` rows, a seeded sample kept in file order."""
    if limit is None or len(rows) <= limit:
        return rows
    return rows.select(sorted(np.random.default_rng(seed).choice(len(rows), limit, replace=False).tolist()))


def task_splits(definition: TaskDef, data: MultiTaskData, task: Task) -> dict[str, Dataset]:
    """``{"train", "dev", "test"}`` of one task (:mod:`kd_core.tasks.definitions`: test held out, dev from train)."""
    root = Path(data.data_root) if data.data_root else data.definitions_file.parent
    if definition.synthetic is not None:
        train, test = task.split(synthetic_examples(definition, data.seed), data.test_fraction, data.seed)
    else:
        assert definition.train is not None
        train = read_task_file(definition, definition.train, root, "train")
        held_out = definition.test or definition.dev
        assert held_out is not None
        test = read_task_file(definition, held_out, root, "test")
    train, dev = task.split(train, data.dev_fraction / (1 - data.test_fraction if definition.synthetic else 1),
                            data.seed + 1)
    splits = {"train": _sample(train, data.max_train_examples, data.seed),
              "dev": _sample(dev, data.max_dev_examples, data.seed),
              "test": _sample(test, data.max_test_examples, data.seed)}
    for name, rows in splits.items():
        if len(rows) < 2:
            raise ConfigError("data", f"{definition.name}.{name}", f"split has {len(rows)} examples; needs >= 2")
    return splits


def build_multitask_workspace(data: MultiTaskData, teacher_model: str, student_model: str,
                              run_dir: str | Path) -> Workspace:
    """The workspace of a multi-task job (module doc), featurised; bad definitions or data raise here."""
    definitions = data.definitions()
    unknown = [name for name in data.without_teacher if name not in [d.name for d in definitions]]
    if unknown:
        raise ConfigError("data", "without_teacher", f"no task {unknown[0]!r} in {data.definitions_file}")
    parts = [definition.task() for definition in definitions]
    task = MultiTask(parts, with_teacher=[d.name for d in definitions
                                          if d.teacher and d.name not in data.without_teacher])
    splits: dict[str, Dataset] = {}
    for definition, part in zip(definitions, parts):
        splits |= {f"{definition.name}.{name}": rows for name, rows in task_splits(definition, data, part).items()}
    for name in ("train", "dev", "test"):
        splits[name] = concatenate_datasets([splits[f"{d.name}.{name}"] for d in definitions])
    tokenizers = tokenizers_for(task, splits["train"], teacher_model, student_model, data.vocab_size)
    ws = Workspace(task, splits, tokenizers, FeatureConfig(data.max_length, 0), str(run_dir))
    ws.check_features()
    return ws


def build_students_workspace(data: StudentsData, teacher_model: str, run_dir: str | Path) -> Workspace:
    """A one-task workspace with tokenizers ``teacher`` and ``words`` (a BiLSTM's) and, with ``augment``,
    the split ``transfer`` (train plus its augmented copies, without labels); bad data raises here."""
    multitask = data.multitask()
    (definition,) = multitask.definitions()
    if data.synthetic_size is not None and definition.synthetic is not None:
        definition = replace(definition, size=data.synthetic_size)
    task = definition.task()
    if task.kind not in ("classification", "regression"):
        raise ConfigError("data", "task", f"the students job reads sentence tasks, not {task.kind}")
    splits = task_splits(definition, multitask, task)
    if data.augment:
        lexicon = read_lexicon(data.pos_lexicon) if data.pos_lexicon else embedded_lexicon()
        splits["transfer"] = transfer_set(splits["train"], augment(splits["train"], data.augmentation(), lexicon,
                                                                   task.pair))
    tokenizers = {"teacher": teacher_tokenizer(task, splits["train"], teacher_model, data.vocab_size),
                  "words": train_word_tokenizer(task.texts(splits["train"]), vocab_size=data.word_vocab_size)}
    ws = Workspace(task, splits, tokenizers, FeatureConfig(data.max_length, 0), str(run_dir))
    ws.check_features()
    return ws
