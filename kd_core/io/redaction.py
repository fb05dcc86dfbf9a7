"""Credentials taken out of text before it is printed, saved or logged: :func:`redact`.

Run directories and tracking URIs may carry credentials (``s3://KEY:SECRET@bucket/run``,
``https://user:password@mlflow.example``, ``s3://bucket/run?secret_key=...``). Every line a
job prints about them, ``state.json``, the MLflow params and tags and ``summary.json`` hold
:func:`redact`'s form instead, in which each secret reads ``***``:

* the password of any ``scheme://user:password@host`` (the user stays: it says which key);
* a user-only token ``scheme://TOKEN@host`` for ``s3``, ``gs``, ``gcs``, ``http`` and ``https``;
* the value of a secret query parameter (``secret_key=``, ``access_key=``, ``session_token=``,
  ``password=``, ``token=``, any name containing ``secret``, ``password`` or ``token``...) after
  ``?``, ``&`` or ``;``.

A password ends at the first ``@`` (URIs must percent-encode one inside it as ``%40``) or at
whitespace or a quote; it may hold ``/`` (AWS secret keys do). Redacting is idempotent, and a
redacted text can never be used as the original: a resumed job takes the credentials again
from the option given again or the environment (:func:`restore`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

#: What a secret reads as once redacted.
MASK = "***"
#: ``scheme://user:password@``: the password, up to the first ``@`` (module doc).
_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s'\"?#]*:)(?P<secret>[^@\s'\"]*)@")
#: ``scheme://TOKEN@host`` for the schemes where a user-only part is a token.
_TOKEN = re.compile(r"(?P<head>\b(?:s3|gs|gcs|https?)://)(?P<secret>[^:@/\s'\"?#]+)@", re.IGNORECASE)
#: ``?name=value`` (or ``&``, ``;``) whose name says it holds a secret.
_QUERY = re.compile(r"(?P<head>[?&;](?:[\w.-]*(?:secret|password|passwd|token)[\w.-]*|access_key|account_key|api_key"
                    r"|apikey|pwd|sig|credentials?)=)(?P<secret>[^&;#\s'\"]*)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every credential it names as ``***`` (module doc)."""
    for pattern in (_PASSWORD, _TOKEN, _QUERY):
        text = pattern.sub(_masked, text)
    return text


def _masked(match: re.Match[str]) -> str:
    """The matched text with its ``secret`` group (when not empty) as :data:`MASK`."""
    rest = match.group(0)[match.end("secret") - match.start():]
    return f"{match['head']}{MASK if match['secret'] else ''}{rest}"


def redact_strings(value: Any) -> Any:
    """``value`` (JSON-like: mappings, lists, tuples, strings, numbers) with every string in it :func:`redact` ed."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_strings(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_strings(item) for item in value)
    return value


def holds_credentials(value: Any) -> bool:
    """Whether ``value`` is a string that names credentials, real or already redacted (a redacted one cannot be used
    as it is): :func:`redact` would change it were each ``***`` a real secret."""
    if not isinstance(value, str):
        return False
    unmasked = value.replace(MASK, "x")
    return redact(unmasked) != unmasked


def masked(value: Any) -> bool:
    """Whether ``value`` is a redacted string, one from which :func:`redact` took credentials."""
    return holds_credentials(value) and redact(value) == value


def restore(saved: str, candidates: Iterable[str | None]) -> str | None:
    """The first of ``candidates`` whose redacted form is ``saved`` (a redacted value): the real value again, or
    ``None`` when none of them is it."""
    return next((c for c in candidates if isinstance(c, str) and redact(c) == saved), None)
