"""Deterministic train/dev split by context (or any group), never by question.

Questions on one paragraph share its text, so a per-question split leaks the dev answers
into training. Here the unit is the group ``(domain, context)``: every group gets a rank from
a hash keyed with the seed, and the lowest-ranked groups form dev. The result therefore
depends only on the seed and on the set of groups, not on the order of the rows.

Why not scikit-learn's ``GroupShuffleSplit``: it draws whole groups too, but by a share of
groups only; the same seeded rank here also takes whole contexts up to a *question* budget
(:func:`limit_by_context`, :func:`carve_by_context`: IMM's dev sets, capped domains), which
no scikit-learn splitter does, and switching would change every split behind the results in
``bench/results``.
"""

from __future__ import annotations

import hashlib
import math
from numbers import Real

from datasets import Dataset

from kd_core.io.errors import ConfigError, DataError

_Group = tuple[str, str]  # (domain, context)


def split_by_context(ds: Dataset, dev_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split ``ds`` into ``(train, dev)`` so that all questions on one context land on one side.

    ``dev_fraction`` (strictly between 0 and 1) is the share of distinct contexts sent to dev,
    rounded and kept between 1 and ``n_contexts - 1`` so that both sides are non-empty. Rows
    keep their original order on each side. Fewer than two distinct contexts is a DataError.
    """
    _check_fraction(dev_fraction)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError("split", "seed", f"must be an integer, got {seed!r}")
    missing = {"domain", "context"} - set(ds.column_names)
    if missing:
        raise DataError("split", "columns", f"the dataset lacks the columns {sorted(missing)}")
    return split_by_groups(ds, list(zip(ds["domain"], ds["context"])), dev_fraction, seed)


def split_by_groups(ds: Dataset, groups: list[_Group], dev_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split ``ds`` into ``(train, dev)`` keeping rows of one group together.

    ``groups[i]`` is row ``i``'s group, a pair of strings (``(domain, context)`` for span QA,
    ``(task, sentence pair)`` for sentence tasks); otherwise as :func:`split_by_context`.
    """
    _check_fraction(dev_fraction)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError("split", "seed", f"must be an integer, got {seed!r}")
    if len(groups) != len(ds):
        raise ValueError(f"{len(groups)} groups for {len(ds)} rows")
    dev_groups = _dev_groups(set(groups), dev_fraction, seed)
    dev_rows = [i for i, group in enumerate(groups) if group in dev_groups]
    train_rows = [i for i, group in enumerate(groups) if group not in dev_groups]
    return ds.select(train_rows), ds.select(dev_rows)


def _check_fraction(dev_fraction: float) -> None:
    """Refuse a fraction that is not a real number strictly between 0 and 1."""
    if isinstance(dev_fraction, bool) or not isinstance(dev_fraction, Real):
        raise ConfigError("split", "dev_fraction", f"must be a number, got {dev_fraction!r}")
    if not (math.isfinite(dev_fraction) and 0 < dev_fraction < 1):
        raise ConfigError("split", "dev_fraction", f"must be strictly between 0 and 1, got {dev_fraction!r}")


def _dev_groups(groups: set[_Group], dev_fraction: float, seed: int) -> set[_Group]:
    """The ``round(n * dev_fraction)`` groups of lowest seeded rank (at least 1, at most n - 1)."""
    if len(groups) < 2:
        raise DataError("split", "contexts", f"need at least 2 distinct contexts to split, found {len(groups)}")
    n_dev = min(max(round(len(groups) * dev_fraction), 1), len(groups) - 1)
    ranked = sorted(groups, key=lambda group: (_rank(group, seed), group))
    return set(ranked[:n_dev])


def _rank(group: _Group, seed: int) -> bytes:
    """A seeded, platform-independent hash of one ``(domain, context)`` group."""
    domain, context = group
    payload = f"{seed}:{len(domain)}:{domain}{context}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(payload, digest_size=16).digest()


def same_text(context: str) -> str:
    """A context with its whitespace runs joined into single spaces: two copies of a paragraph compare equal."""
    return " ".join(context.split())


def limit_by_context(ds: Dataset, max_questions: int, seed: int) -> Dataset:
    """At most ``max_questions`` questions, taking whole contexts in seeded-hash order.

    Contexts are ranked as in :func:`split_by_context` and added while the total stays within
    ``max_questions`` (so every kept context keeps all its questions, and at least one context
    is kept); rows keep their original order.
    """
    if max_questions < 1:
        raise ConfigError("split", "max_questions", f"must be >= 1, got {max_questions}")
    if len(ds) <= max_questions:
        return ds
    groups = list(zip(ds["domain"], ds["context"]))
    counts: dict[_Group, int] = {}
    for group in groups:
        counts[group] = counts.get(group, 0) + 1
    kept: set[_Group] = set()
    total = 0
    for group in sorted(counts, key=lambda g: (_rank(g, seed), g)):
        if kept and total + counts[group] > max_questions:
            continue
        kept.add(group)
        total += counts[group]
    return ds.select([i for i, group in enumerate(groups) if group in kept])


def carve_by_context(ds: Dataset, questions: int, seed: int) -> tuple[Dataset, Dataset]:
    """``(rest, carved)``: at most ``questions`` questions of whole contexts taken out of ``ds``.

    Contexts are taken in the seeded-hash order of :func:`split_by_context` while the total stays
    within ``questions`` (at least one context, and never every one, so both sides are
    non-empty); rows keep their original order on each side. Fewer than two distinct contexts
    is a DataError.
    """
    if questions < 1:
        raise ConfigError("split", "questions", f"must be >= 1, got {questions}")
    groups = list(zip(ds["domain"], ds["context"]))
    counts: dict[_Group, int] = {}
    for group in groups:
        counts[group] = counts.get(group, 0) + 1
    if len(counts) < 2:
        raise DataError("split", "contexts", f"need at least 2 distinct contexts to split, found {len(counts)}")
    carved: set[_Group] = set()
    total = 0
    for group in sorted(counts, key=lambda g: (_rank(g, seed), g))[:-1]:
        if carved and total + counts[group] > questions:
            continue
        carved.add(group)
        total += counts[group]
    return (ds.select([i for i, g in enumerate(groups) if g not in carved]),
            ds.select([i for i, g in enumerate(groups) if g in carved]))
