"""The domains of a multi-domain (IMM) run: ``NAME=TRAIN[,TEST]`` specs, loading, one shared tokenizer.

Each domain has three splits, as in the IMM paper's protocol:

* ``test``: the domain's own evaluation file when given (``NAME=TRAIN,TEST``), else a share
  ``test_fraction`` of the training contexts. Reported numbers are on it; no choice ever reads it;
* ``dev``: a validation set carved from the (remaining) training data, whole contexts:
  ``min(dev_questions, dev_fraction * |train|)`` questions (the paper: 300 per domain; a share
  of a small domain). Every choice (keep-the-best, a baseline's best epoch) is made on it;
* ``train``: the rest (at most ``max_train_examples`` questions, whole contexts).

Every domain model of IMM reads every other domain's features (``phi_i`` trains on the
mixture of the other domains, with the other models' outputs on *those same features* as
targets), so all domains are featurised with **one tokenizer**: trained on every domain's
training text for the preset models, the pretrained model's own otherwise.

The options, :class:`~kd_core.data.domain_settings.DataSettings`, are in
:mod:`kd_core.data.domain_settings` (no ``datasets``, no tokenizer: a job's ``--help`` reads them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedTokenizerFast

from kd_core.data.domain_settings import DataSettings
from kd_core.data.loaders import load_examples
from kd_core.data.split import carve_by_context, limit_by_context, split_by_context
from kd_core.data.synthetic import generate
from kd_core.io.errors import ConfigError
from kd_core.io.values import check_name
from kd_core.models.presets import is_preset
from kd_core.models.tokenizers import load_tokenizer, train_wordpiece_tokenizer


@dataclass(frozen=True)
class DomainSource:
    """Where one domain's data comes from: a training file and an optional test file."""

    name: str
    train: str
    test: str | None = None


def parse_domain(spec: str, data_root: str | None = None) -> DomainSource:
    """``"NAME=TRAIN[,TEST]"`` -> :class:`DomainSource`; relative paths are read under ``data_root``.

    ``hf:`` sources are left as they are.
    """
    name, sep, paths = str(spec).partition("=")
    name = name.strip()
    parts = [p.strip() for p in paths.split(",")] if sep else []
    if not name or not sep or not parts[0] or len(parts) > 2 or (len(parts) == 2 and not parts[1]):
        raise ConfigError("domains", str(spec), "expected NAME=TRAIN or NAME=TRAIN,TEST")
    check_name(name, "domains", str(spec))  # step folders are named from it

    def resolve(path: str) -> str:
        if data_root is None or path.startswith("hf:") or Path(path).is_absolute():
            return path
        return str(Path(data_root) / path)

    return DomainSource(name, resolve(parts[0]), resolve(parts[1]) if len(parts) == 2 else None)


def domain_sources(settings: DataSettings) -> list[DomainSource]:
    """The parsed ``--domain`` specs (names must be unique; at least two domains)."""
    sources = [parse_domain(spec, settings.data_root) for spec in settings.domains]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError("domains", "names", f"duplicate domain names in {names}")
    if sources and len(sources) < 2:
        raise ConfigError("domains", "count", "multi-domain transfer needs at least 2 domains")
    return sources


def _split(name: str, train: Dataset, test: Dataset | None, settings: DataSettings) -> DomainSplits:
    if test is None:
        train, test = split_by_context(train, settings.test_fraction, settings.seed)
    questions = min(settings.dev_questions, max(1, round(settings.dev_fraction * len(train))))
    train, dev = carve_by_context(train, questions, settings.seed + 1)
    if settings.max_train_examples is not None:
        train = limit_by_context(train, settings.max_train_examples, settings.seed)
    if settings.max_test_examples is not None:
        test = limit_by_context(test, settings.max_test_examples, settings.seed)
    if len(train) == 0 or len(test) == 0:
        raise ConfigError("domains", name, "has an empty train or test split")
    return DomainSplits(train, dev, test)


@dataclass(frozen=True)
class DomainSplits:
    """One domain's examples: ``train``, ``dev`` (validation: choices) and ``test`` (reported) (module doc)."""

    train: Dataset
    dev: Dataset
    test: Dataset

    def items(self) -> list[tuple[str, Dataset]]:
        return [("train", self.train), ("dev", self.dev), ("test", self.test)]


def load_domain_examples(settings: DataSettings) -> dict[str, DomainSplits]:
    """Every domain's splits (module doc), in the order given (the synthetic domains without specs)."""
    sources = domain_sources(settings)
    if not sources:
        if len(settings.synthetic_domains) < 2:
            raise ConfigError("domains", "synthetic_domains", "multi-domain transfer needs at least 2 domains")
        corpus = generate(n_per_domain=settings.synthetic_size, domains=settings.synthetic_domains,
                          seed=settings.seed)
        column = list(corpus["domain"])
        return {
            name: _split(name, corpus.select([i for i, d in enumerate(column) if d == name]), None, settings)
            for name in settings.synthetic_domains
        }
    return {
        s.name: _split(s.name, load_examples(s.train, domain=s.name),
                       load_examples(s.test, domain=s.name, split="validation") if s.test else None, settings)
        for s in sources
    }


def shared_tokenizer(settings: DataSettings, splits: Mapping[str, DomainSplits]) -> PreTrainedTokenizerFast:
    """One tokenizer for every domain (module doc), trained on the domains' training text only."""
    if is_preset(settings.model):
        texts: list[str] = []
        for domain in splits.values():
            texts += list(domain.train["context"]) + list(domain.train["question"])
        return train_wordpiece_tokenizer(texts, vocab_size=settings.vocab_size)
    return load_tokenizer(settings.model)
