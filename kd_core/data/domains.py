"""The domains of a multi-domain (IMM) run: ``NAME=TRAIN[,DEV]`` specs, loading, one shared tokenizer.

Every domain model of IMM reads every other domain's features (``phi_i`` trains on the
mixture of the other domains, with the other models' outputs on *those same features* as
targets), so all domains are featurised with **one tokenizer**: trained on every domain's
training text for the preset models, the pretrained model's own otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedTokenizerFast

from kd_core.data.features import FeatureConfig
from kd_core.data.loaders import load_examples
from kd_core.data.split import limit_by_context, split_by_context
from kd_core.data.synthetic import generate
from kd_core.errors import ConfigError
from kd_core.models import is_preset, load_tokenizer, train_wordpiece_tokenizer
from kd_core.options import option


@dataclass(frozen=True)
class DomainSource:
    """Where one domain's data comes from: a training file and an optional dev file."""

    name: str
    train: str
    dev: str | None = None


def parse_domain(spec: str, data_root: str | None = None) -> DomainSource:
    """``"NAME=TRAIN[,DEV]"`` -> :class:`DomainSource`; relative paths are read under ``data_root``.

    ``hf:`` sources are left as they are.
    """
    name, sep, paths = str(spec).partition("=")
    name = name.strip()
    parts = [p.strip() for p in paths.split(",")] if sep else []
    if not name or not sep or not parts[0] or len(parts) > 2 or (len(parts) == 2 and not parts[1]):
        raise ConfigError("domains", str(spec), "expected NAME=TRAIN or NAME=TRAIN,DEV")

    def resolve(path: str) -> str:
        if data_root is None or path.startswith("hf:") or Path(path).is_absolute():
            return path
        return str(Path(data_root) / path)

    return DomainSource(name, resolve(parts[0]), resolve(parts[1]) if len(parts) == 2 else None)


def as_names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """A tuple of names from a comma-separated string (command line) or a list (config file)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class DataSettings:
    """How domains are read: synthetic corpus or files, limits, split, tokenizer, windows (validated)."""

    domains: tuple[str, ...] = option((), "a domain and its data, NAME=TRAIN[,DEV] (SQuAD JSON, MRQA jsonl(.gz) "
                                      "or hf:NAME); repeat for each domain. Without DEV, dev is split off TRAIN by "
                                      "context. Default: the embedded synthetic domains", "data", alias="--domain",
                                      split=False)
    data_root: str | None = option(None, "folder that relative --domain paths are read from", "data")
    synthetic_domains: tuple[str, ...] = option(("sports", "medicine", "finance"), "synthetic domains", "data")
    synthetic_per_domain: int = option(150, "synthetic questions per domain", "data")
    max_train_examples: int | None = option(None, "keep at most this many training questions per domain (whole "
                                            "contexts)", "data")
    max_dev_examples: int | None = option(None, "keep at most this many dev questions per domain", "data")
    dev_fraction: float = option(0.2, "share of contexts split off as dev when DEV is absent", "data")
    model: str = option("tiny-bert", "every domain model: preset (tiny-bert, small-bert), HF id or local path",
                        "model")
    vocab_size: int = option(2000, "WordPiece vocabulary trained for preset models", "data")
    max_length: int = option(96, "tokens per window", "data")
    doc_stride: int = option(32, "overlap between windows, in tokens", "data")
    seed: int = option(0, "seed of data splits, initialisation and batch order", "data")

    def __post_init__(self) -> None:
        # One spec holds a comma itself (NAME=TRAIN,DEV), so a lone string is one domain.
        object.__setattr__(self, "domains", (self.domains,) if isinstance(self.domains, str) else
                           tuple(self.domains or ()))
        object.__setattr__(self, "synthetic_domains", as_names(self.synthetic_domains))
        if self.synthetic_per_domain < 4:
            raise ConfigError("domains", "synthetic_per_domain", f"must be >= 4, got {self.synthetic_per_domain}")
        for name in ("max_train_examples", "max_dev_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError("domains", name, f"must be >= 1, got {value}")
        if self.vocab_size < 100:
            raise ConfigError("domains", "vocab_size", f"must be >= 100, got {self.vocab_size}")
        FeatureConfig(self.max_length, self.doc_stride)  # validates the windows


def domain_sources(settings: DataSettings) -> list[DomainSource]:
    """The parsed ``--domain`` specs (names must be unique; at least two domains)."""
    sources = [parse_domain(spec, settings.data_root) for spec in settings.domains]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError("domains", "names", f"duplicate domain names in {names}")
    if sources and len(sources) < 2:
        raise ConfigError("domains", "count", "multi-domain transfer needs at least 2 domains")
    return sources


def _split(name: str, train: Dataset, dev: Dataset | None, settings: DataSettings) -> tuple[Dataset, Dataset]:
    if dev is None:
        train, dev = split_by_context(train, settings.dev_fraction, settings.seed)
    if settings.max_train_examples is not None:
        train = limit_by_context(train, settings.max_train_examples, settings.seed)
    if settings.max_dev_examples is not None:
        dev = limit_by_context(dev, settings.max_dev_examples, settings.seed)
    if len(train) == 0 or len(dev) == 0:
        raise ConfigError("domains", name, "has an empty train or dev split")
    return train, dev


def load_domain_examples(settings: DataSettings) -> dict[str, tuple[Dataset, Dataset]]:
    """``{domain: (train examples, dev examples)}`` in the order given (synthetic when no specs)."""
    sources = domain_sources(settings)
    if not sources:
        if len(settings.synthetic_domains) < 2:
            raise ConfigError("domains", "synthetic_domains", "multi-domain transfer needs at least 2 domains")
        corpus = generate(n_per_domain=settings.synthetic_per_domain, domains=settings.synthetic_domains,
                          seed=settings.seed)
        column = list(corpus["domain"])
        return {
            name: _split(name, corpus.select([i for i, d in enumerate(column) if d == name]), None, settings)
            for name in settings.synthetic_domains
        }
    return {
        s.name: _split(s.name, load_examples(s.train, domain=s.name),
                       load_examples(s.dev, domain=s.name, split="dev") if s.dev else None, settings)
        for s in sources
    }


def shared_tokenizer(settings: DataSettings, splits: Mapping[str, tuple[Dataset, Dataset]]) -> PreTrainedTokenizerFast:
    """One tokenizer for every domain (module doc)."""
    if is_preset(settings.model):
        texts: list[str] = []
        for train, _ in splits.values():
            texts += list(train["context"]) + list(train["question"])
        return train_wordpiece_tokenizer(texts, vocab_size=settings.vocab_size)
    return load_tokenizer(settings.model)
