"""How a multi-domain (IMM) job reads its domains: :class:`DataSettings`, plain data, checked when built.

Nothing here reads data or imports ``datasets`` or a tokenizer, so a job's options are listed and
checked first; the reading, splitting and shared tokenizer are :mod:`kd_core.data.domains`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kd_core.data.synthetic import DOMAINS
from kd_core.data.windows import FeatureConfig
from kd_core.io.errors import ConfigError
from kd_core.io.options import option

#: The union of every domain's dev split (a model of all domains, e.g. IMM's ``mix``, chooses on it).
ALL_DEV = "all.dev"


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

    domains: tuple[str, ...] = option((), "a domain and its data, NAME=TRAIN[,TEST] (SQuAD JSON, MRQA jsonl(.gz) "
                                      "or hf:NAME); repeat for each domain. Without TEST, test is split off TRAIN by "
                                      "context. Default: the embedded synthetic domains", "data", alias="--domain",
                                      split=False, metavar="NAME=TRAIN[,TEST]")
    data_root: str | None = option(None, "folder that relative --domain paths are read from", "data")
    synthetic_domains: tuple[str, ...] = option(("sports", "medicine", "finance"), "synthetic domains", "data",
                                                choices=DOMAINS)
    synthetic_size: int = option(600, "synthetic questions per domain (at 150, a 24-question dev makes "
                                 "choices by noise)", "data")
    max_train_examples: int | None = option(None, "keep at most this many training questions per domain (whole "
                                            "contexts)", "data")
    max_test_examples: int | None = option(None, "keep at most this many test questions per domain", "data")
    test_fraction: float = option(0.2, "share of contexts split off as test when TEST is absent", "data")
    dev_questions: int = option(300, "validation (dev) questions carved from each domain's training data, whole "
                                "contexts; every choice is made on them (the paper: 300)", "data")
    dev_fraction: float = option(0.2, "at most this share of a domain's training questions goes to dev", "data")
    model: str = option("tiny-bert", "every domain model: preset (tiny-bert, small-bert), HF id or local path",
                        "model")
    vocab_size: int = option(2000, "WordPiece vocabulary trained for preset models", "data")
    max_length: int = option(96, "tokens per window", "data")
    doc_stride: int = option(32, "overlap between windows, in tokens", "data")
    max_query_length: int = option(64, "longest question kept, in tokens (longer ones are cut and counted)", "data")
    seed: int = option(0, "seed of data splits, initialisation and batch order", "data")

    def __post_init__(self) -> None:
        # One spec holds a comma itself (NAME=TRAIN,DEV), so a lone string is one domain.
        object.__setattr__(self, "domains", (self.domains,) if isinstance(self.domains, str) else
                           tuple(self.domains or ()))
        object.__setattr__(self, "synthetic_domains", as_names(self.synthetic_domains))
        if self.synthetic_size < 4:
            raise ConfigError("domains", "synthetic_size", f"must be >= 4, got {self.synthetic_size}")
        for name in ("max_train_examples", "max_test_examples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError("domains", name, f"must be >= 1, got {value}")
        if self.dev_questions < 1:
            raise ConfigError("domains", "dev_questions", f"must be >= 1, got {self.dev_questions}")
        for name in ("test_fraction", "dev_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError("domains", name, f"must be strictly between 0 and 1, got {getattr(self, name)}")
        if self.vocab_size < 100:
            raise ConfigError("domains", "vocab_size", f"must be >= 100, got {self.vocab_size}")
        self.windows  # validates the windows

    @property
    def windows(self) -> FeatureConfig:
        """The window settings of these options."""
        return FeatureConfig(self.max_length, self.doc_stride, self.max_query_length)
