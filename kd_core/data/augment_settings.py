"""The transfer-set augmentation's hyperparameters (:mod:`kd_core.data.augment`), plain data checked when built.

No ``datasets`` here: a job's options hold an :class:`AugmentSettings` before anything is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from kd_core.io.errors import ConfigError
from kd_core.io.options import option


@dataclass(frozen=True)
class AugmentSettings:
    """The augmentation's hyperparameters (module doc), validated at construction."""

    p_mask: float = option(0.1, "probability that a word becomes the mask token", "augment")
    p_pos: float = option(0.1, "probability that a word becomes another word of its POS tag", "augment")
    p_ng: float = option(0.25, "probability that an augmented example is cut to an n-gram", "augment")
    n_iter: int = option(4, "augmentation draws per original example (Tang et al.: 20 on small data)",
                         "augment")
    max_ngram: int = option(5, "largest n of the n-gram sampling", "augment")
    seed: int = option(0, "seed of the augmentation draws", "augment")

    def __post_init__(self) -> None:
        for name in ("p_mask", "p_pos", "p_ng"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError("augment", name, f"must be a probability in [0, 1], got {value!r}")
        if self.p_mask + self.p_pos > 1:
            raise ConfigError("augment", "p_pos", f"p_mask + p_pos must be <= 1, got {self.p_mask} + {self.p_pos}")
        for name in ("n_iter", "max_ngram"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError("augment", name, f"must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError("augment", "seed", f"must be an integer, got {self.seed!r}")
