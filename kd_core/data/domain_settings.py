"""How a multi-domain (IMM) job reads its domains: :class:`DataSettings`, plain data, checked when built.

Nothing here reads data or imports ``datasets`` or a tokenizer, so a job's options are listed and
checked first; the reading, splitting and shared tokenizer are :mod:`kd_core.data.domains`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kd_core.data.synthetic import DOMAINS
from kd_core.data.windows import FeatureConfig
from kd_core.io.errors import ConfigError
from kd_core.io.options import option
from kd_core.io.values import SAFE_NAME

#: The union of every domain's dev split (a model of all domains, e.g. IMM's ``mix``, chooses on it).
ALL_DEV = "all.dev"


@dataclass(frozen=True)
class EvalFile:
    """One ``--eval`` file: where it is and the domains whose final models score it."""

    path: str
    domains: tuple[str, ...]

    @property
    def name(self) -> str:
        """The file's name: how the summary, the table and MLflow name its scores."""
        return Path(self.path).name


def eval_split(domain: str, file_name: str) -> str:
    """The split that domain ``domain``'s models are scored on for the ``--eval`` file ``file_name``."""
    return f"{domain}.eval.{file_name}"


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
    eval: tuple[str, ...] = option((), "an extra evaluation file, [DOMAIN=]FILE (SQuAD JSON or MRQA jsonl; an "
                                   "adversarial SQuAD file is also scored by Jia & Liang's rule): every method's "
                                   "final model of DOMAIN scores it, of every domain without DOMAIN=; repeat for each "
                                   "file", "data", split=False, metavar="[DOMAIN=]FILE")
    data_root: str | None = option(None, "folder that relative --domain and --eval paths are read from", "data")
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
        object.__setattr__(self, "eval", (self.eval,) if isinstance(self.eval, str) else tuple(self.eval or ()))
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
        self.eval_files()  # validates the evaluation files

    @property
    def domain_names(self) -> tuple[str, ...]:
        """The domains' names as given (``--domain`` specs' names, else the synthetic domains)."""
        if self.domains:
            return tuple(str(spec).partition("=")[0].strip() for spec in self.domains)
        return self.synthetic_domains

    def eval_files(self) -> list[EvalFile]:
        """The parsed ``--eval`` specs; relative paths are read under ``data_root``."""
        files: list[EvalFile] = []
        for spec in self.eval:
            domain, sep, rest = str(spec).partition("=")
            named = bool(sep) and SAFE_NAME.fullmatch(domain.strip()) is not None  # else '=' is part of the path
            path = (rest if named else str(spec)).strip()
            if not path:
                raise ConfigError("domains", "eval", f"expected [DOMAIN=]FILE, got {spec!r}")
            domains = (domain.strip(),) if named else self.domain_names
            unknown = [d for d in domains if d not in self.domain_names]
            if unknown:
                raise ConfigError("domains", "eval", f"{spec!r} names no domain of this job "
                                  f"({', '.join(self.domain_names)})")
            if self.data_root is not None and not Path(path).is_absolute():
                path = str(Path(self.data_root) / path)
            files.append(EvalFile(path, domains))
        names = [f.name for f in files]
        if len(set(names)) != len(names):
            raise ConfigError("domains", "eval", f"evaluation files need distinct file names: {names}")
        return files

    @property
    def windows(self) -> FeatureConfig:
        """The window settings of these options."""
        return FeatureConfig(self.max_length, self.doc_stride, self.max_query_length)
