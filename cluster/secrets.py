"""Credentials to a job's Ray workers through a channel Ray writes to no log or file.

Ray 2.60 writes a job's ``runtime_env``, its ``env_vars`` included, into the session's
``logs/runtime_env_agent.log`` (mode 0644, under Ray's world-writable temp dir: measured here,
a kd job's ``AWS_SECRET_ACCESS_KEY`` was in it before this module) and shows it in the
dashboard; ``tests/test_secrets.py`` checks that a job now writes none anywhere. So :func:`cluster.runtime.connect`
splits what workers need (:func:`worker_env`):

* plain settings (:data:`cluster.runtime.FORWARDED_ENV`: offline hub, TLS settings, the AWS
  region and endpoint, the path ``GOOGLE_APPLICATION_CREDENTIALS`` names, the tracking URI
  when it holds no credentials) go in ``runtime_env`` as before;
* credentials (:data:`SECRET_ENV`, and a tracking URI with ``user:password@`` or a token,
  :func:`kd_core.io.redaction.holds_credentials`) are :func:`publish` ed once by the driver
  into the cluster's GCS key-value store, under a key of the job's own Ray job id. Every
  worker entry point (:class:`cluster.worker.StepWorker`, Ray Train's worker loop in
  :mod:`cluster.data_parallel`, a Tune trial in :mod:`tuning.trials`) calls :func:`receive`
  first, which sets them in its ``os.environ`` before it touches MLflow or the store. A
  worker Ray restarts reads them again.

``state.json`` holds options redacted (:mod:`kd_core.io.redaction`); :func:`with_credentials`
gives a resumed job the real values again, and :func:`ray_storage` keeps a URI's credentials out
of the storage paths Ray Train and Tune print.

The key lives in the GCS's memory (in Redis too with KubeRay's GCS fault tolerance); the
driver deletes it when it exits (:func:`forget`), and a killed driver's key stays until the
cluster stops. A job joined to a cluster it was already connected to (a test's session)
publishes nothing: its workers have the environment they were started with. Whoever may call the GCS (the Ray token's holders) can read it, as they can run any
code on the cluster's nodes anyway (docs/security.md).
"""

from __future__ import annotations

import atexit
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import ray
from ray.experimental import internal_kv

from kd_core.io.errors import ConfigError
from kd_core.io.options import flag
from kd_core.io.redaction import holds_credentials, masked, restore
from kd_core.io.run_store import is_uri

#: Credentials a worker may need (the object store's, the MLflow client's): never in ``runtime_env`` (module doc).
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
              "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
#: The key-value namespace of the published secrets; each job's key is its Ray job id.
NAMESPACE = "kd_ray_secrets"


def worker_env(environ: Mapping[str, str], plain_names: Iterable[str],
               tracking_uri: str) -> tuple[dict[str, str], dict[str, str]]:
    """``(plain, secret)``: the variables of ``environ`` named in ``plain_names`` and in :data:`SECRET_ENV`, with
    ``MLFLOW_TRACKING_URI = tracking_uri`` in the first unless it holds credentials (module doc)."""
    plain = {name: environ[name] for name in plain_names if name in environ}
    secret = {name: environ[name] for name in SECRET_ENV if name in environ}
    (secret if holds_credentials(tracking_uri) else plain)[TRACKING_URI_ENV] = tracking_uri
    return plain, secret


def with_credentials(saved: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """A resumed job's ``saved`` options (``state.json``'s, redacted) with each value whose credentials were taken
    out made whole again: the value ``given`` again on the command line, or for the tracking URI
    ``$MLFLOW_TRACKING_URI``, when its redacted form is the saved one (:func:`kd_core.io.redaction.restore`).

    The run directory is left as saved (a resumed job's is the one ``--resume`` names). Raises:
        ConfigError: naming the option, when neither is given.
    """
    whole = dict(saved)
    for key, value in saved.items():
        if key == "run_dir" or not masked(value):
            continue
        real = restore(value, [given.get(key), os.environ.get(TRACKING_URI_ENV) if key == "tracking_uri" else None])
        if real is None:
            raise ConfigError("--resume", flag(key), f"the run was made with {value!r}, whose credentials are not "
                              f"saved: give {flag(key)} again" + (f" (or set {TRACKING_URI_ENV})"
                                                                  if key == "tracking_uri" else ""))
        whole[key] = real
    return whole


def ray_storage(location: str | Path) -> dict[str, Any]:
    """Ray Train's and Tune's storage options for the run directory folder ``location``: a local folder (absolute), or
    a URI's file system and its path in it, so the credentials a URI may hold are in no path Ray prints or saves."""
    if not is_uri(location):
        return {"storage_path": str(Path(location).resolve())}
    filesystem, path = pafs.FileSystem.from_uri(str(location))
    return {"storage_path": path, "storage_filesystem": filesystem}


def _key() -> str:
    return ray.get_runtime_context().get_job_id()


def publish(secret: Mapping[str, str]) -> None:
    """Put ``secret`` where this job's workers :func:`receive` it (the driver, once connected); deleted at exit."""
    if not secret:
        return
    internal_kv._internal_kv_put(_key(), json.dumps(dict(secret)), overwrite=True, namespace=NAMESPACE)
    atexit.register(forget)  # runs before Ray's own shutdown at exit (registered at import, so later)


def forget() -> None:
    """Delete this job's published secrets (while still connected)."""
    if ray.is_initialized():
        internal_kv._internal_kv_del(_key(), namespace=NAMESPACE)


def receive() -> None:
    """Set the secrets this job's driver published in this worker's ``os.environ`` (none published: nothing)."""
    if not internal_kv._internal_kv_initialized():
        return
    published = internal_kv._internal_kv_get(_key(), namespace=NAMESPACE)
    if published:
        os.environ.update(json.loads(published))
