"""Typed errors raised by the library; the command line turns them into one line and exit 2.

Every error carries three parts so that the message always reads
``<source>: <where>: <what>``: the file (or dataset, or option group) it came from,
the place inside it (an example id, a line number, an option name) and the problem.
Each part is redacted (:func:`kd_core.io.redaction.redact`) when the error is made, so an
error line never shows a credential it was given (``s3://KEY:SECRET@bucket/run`` reads
``s3://KEY:***@bucket/run``), wherever it is printed or logged.
"""

from __future__ import annotations

from kd_core.io.redaction import redact


class KDError(Exception):
    """Base class of every error this project raises on bad input or configuration."""

    def __init__(self, source: str, where: str, what: str) -> None:
        self.source = redact(str(source))
        self.where = redact(str(where))
        self.what = redact(str(what))
        super().__init__(f"{self.source}: {self.where}: {self.what}")

    def __reduce__(self) -> tuple[type[KDError], tuple[str, str, str]]:
        """Pickle by the three parts (an error raised in a Ray worker reaches the driver as itself)."""
        return type(self), (self.source, self.where, self.what)


class DataError(KDError):
    """Input data is malformed: bad JSON, wrong schema, empty fields, bad offsets, bad bytes."""


class ConfigError(KDError):
    """A hyperparameter or option is invalid (refused before any work starts)."""


class ModelError(KDError):
    """A model name or path cannot be resolved to a model."""


class StorageError(KDError):
    """The run directory cannot be written or read: full, read-only, not a directory, or its store refuses."""
