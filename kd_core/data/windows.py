"""How examples are cut into windows: :class:`FeatureConfig`, plain data (no ``datasets``, no tokenizer).

Job options hold one and check it when they are built, before anything is read; the
featurisation that uses it is :mod:`kd_core.data.features`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kd_core.io.errors import ConfigError


@dataclass(frozen=True)
class FeatureConfig:
    """Window settings. ``doc_stride`` is the overlap between consecutive windows, in tokens;
    ``max_query_length`` the longest question kept, in tokens (longer ones are cut; span QA)."""

    max_length: int = 192
    doc_stride: int = 64
    max_query_length: int = 64

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ConfigError("features", "max_length", f"must be >= 8, got {self.max_length}")
        if self.max_query_length < 1:
            raise ConfigError("features", "max_query_length", f"must be >= 1, got {self.max_query_length}")
        if not 0 <= self.doc_stride < self.max_length:
            raise ConfigError(
                "features", "doc_stride", f"must be in [0, max_length={self.max_length}), got {self.doc_stride}"
            )
