"""YAML as users write it: safe loading (no object construction) and no key given twice.

PyYAML's ``safe_load`` keeps the last of two equal keys of a mapping, so a config file that
sets ``tau: 2`` and further down ``tau: 4`` silently runs with 4. :func:`load_yaml` reads with
a ``SafeLoader`` that refuses a repeated key with one line naming the file, the key and the
line where it is repeated.
"""

from __future__ import annotations

from typing import Any

import yaml

from kd_core.io.errors import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """A ``SafeLoader`` whose mappings refuse a key given twice (module doc)."""

    source = "yaml"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: SafeLoader's own error says so
                break
            if repeated:
                raise ConfigError(self.source, f"line {key_node.start_mark.line + 1}",
                                  f"key {key!r} is given twice (the earlier value would be dropped)")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str) -> Any:
    """The YAML document ``text`` of the file ``source``, safely loaded, with no mapping key repeated; a repeated key
    is a :class:`ConfigError` (``<source>: line N: key 'x' is given twice ...``), a syntax error is left to the
    caller as PyYAML's ``YAMLError``."""
    loader = _UniqueKeyLoader(text)
    loader.source = str(source)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
