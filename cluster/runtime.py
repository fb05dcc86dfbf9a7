"""Connecting to Ray and deciding where each model goes.

:func:`connect` joins the cluster a job was submitted to (``ray job submit`` sets
``RAY_ADDRESS``) or starts a local one, and hands every worker the environment it needs
(the absolute MLflow tracking URI, offline hub settings): plain settings through Ray's
``runtime_env``, credentials through :mod:`cluster.secrets` (Ray logs a ``runtime_env``). A
Ray address where nothing answers is refused first (:func:`check_address`): one line and exit
2 within :data:`ADDRESS_TIMEOUT_S`, not ``ray.init``'s retries (over two minutes with Ray 2.60).
Jobs and sweeps connect through :func:`connect_stoppable`, which puts the stop handlers of
:mod:`kd_core.io.stops` back over the ones ``ray.init`` installs (Ray's turned a SIGTERM into a
native dump and exit 134).

:func:`model_placement` gives each step worker one GPU when the cluster has at least one
per concurrently running model (a fraction otherwise: fractional GPUs are scheduling labels,
not isolation), else a CPU share; ``torch_threads`` is set to the CPUs one of the at most
``max_concurrency`` models running at once may use, so concurrent workers do not fight for
cores.

:func:`attach_lines` tells a user how to watch the job's cluster while it runs: the dashboard
address and the ``ray status --address ...`` command, with the token auth settings it needs.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import ray
from ray._raylet import AuthenticationMode, get_authentication_mode
from ray._raylet import Config as RayConfig

from cluster.progress import alive_nodes
from cluster.secrets import forget, publish, worker_env
from kd_core.io.errors import ConfigError
from kd_core.io.stops import Stopped, reclaim_signals

AUTH_MODE_ENV = "RAY_AUTH_MODE"
#: Passed on to every worker in Ray's ``runtime_env`` (which Ray logs and the dashboard shows): offline hub settings,
#: the MLflow client's TLS settings for a tracking server, the object store's region, endpoint and profile name, and
#: the path of a GCS key file (the file itself must be on every node). No credentials: those go through
#: :mod:`cluster.secrets` (:data:`cluster.secrets.SECRET_ENV`). (On a cloud cluster, instance roles / workload
#: identity are better than keys.)
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TOKENIZERS_PARALLELISM", "HF_HOME",
                 "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
                 "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL",
                 "GOOGLE_APPLICATION_CREDENTIALS")
#: Seconds :func:`check_address` waits for the Ray address to accept a connection.
ADDRESS_TIMEOUT_S = 5.0
#: The Ray Client server's port, when a ``ray://`` address names none.
RAY_CLIENT_PORT = 10001


@dataclass(frozen=True)
class Cluster:
    """The cluster a job joined: what a user needs to watch it (:func:`attach_lines`)."""

    started_here: bool  # a local cluster this process started (it stops with the job)
    address: str  # the GCS address, as ``ray status --address`` takes it
    dashboard_url: str | None  # ``http://host:port``, or None without a dashboard
    nodes: int  # alive nodes
    token_auth: bool


def connect(tracking_uri: str, address: str | None = None) -> Cluster | None:
    """Join (or start) a Ray cluster whose workers see ``MLFLOW_TRACKING_URI = tracking_uri``.

    A cluster started here has token auth on, as Ray 2.60 does for a new local cluster, but
    chosen here (``RAY_AUTH_MODE=token`` unless the user set a mode), so Ray does not warn that
    it chose it. Its dashboard listens on 127.0.0.1 only; its gRPC servers (GCS, raylet,
    workers) listen on every interface in Ray 2.60 and refuse callers without the token.
    Workers get :data:`FORWARDED_ENV` through ``runtime_env`` and the credentials through
    :mod:`cluster.secrets` (published here, once connected); ``address`` is checked first
    (:func:`check_address`). Returns the cluster joined, or None when this process was already
    connected (e.g. a test's session): then it is not this job's to describe (its workers have
    the environment they were started with).
    """
    if ray.is_initialized():
        return None
    check_address(address)
    env, secret = worker_env(os.environ, FORWARDED_ENV, tracking_uri)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    local = address is None and not os.environ.get("RAY_ADDRESS")
    if AUTH_MODE_ENV not in os.environ and (local or _token_available()):
        # A cluster started here gets token auth; an existing one is joined with its token when there is one
        # (`ray start --head` turns auth on when ~/.ray/auth_token exists, and a token-mode client also joins a
        # cluster without auth: measured with Ray 2.60 here), so --address needs no RAY_AUTH_MODE of the user.
        os.environ[AUTH_MODE_ENV] = "token"
        RayConfig.initialize("")  # Ray read its config at import: re-read it, as ray.init does when it turns auth on
    try:
        context = ray.init(address=address, runtime_env={"env_vars": env}, logging_level="WARNING",
                           log_to_driver=True)
    except ConnectionError as err:  # something answered at the address, but no Ray cluster (check_address's doc)
        source, target = _given_address(address)
        raise ConfigError(target or "ray", source, f"no Ray cluster answers there: {err}") from err
    publish(secret)
    url = context.dashboard_url or None
    if url and "://" not in url:
        url = f"http://{url}"
    return Cluster(started_here=local, address=context.address_info.get("gcs_address") or
                   ray.get_runtime_context().gcs_address, dashboard_url=url,
                   nodes=alive_nodes(ray.nodes()), token_auth=get_authentication_mode() == AuthenticationMode.TOKEN)


def check_address(address: str | None) -> None:
    """Refuse the Ray address ``address`` (else ``$RAY_ADDRESS``) as one :class:`ConfigError` when it is a dashboard's
    ``http(s)://`` address, or when nothing there accepts a TCP connection within :data:`ADDRESS_TIMEOUT_S`.

    ``ray.init`` would raise a traceback for the first and, for the second, retry for minutes (a GCS address) or 30 s
    (``ray://``). ``auto``, ``local`` and no address are Ray's to resolve. Something that accepts the connection
    but is no Ray cluster passes here; :func:`connect` turns ``ray.init``'s refusal of it into one line too (after
    Ray's own retries: about 20 s with Ray 2.60, measured against a port that answers HTTP/2 404s).
    """
    source, target = _given_address(address)
    if not target or target in ("auto", "local"):
        return
    if target.startswith(("http://", "https://")):
        raise ConfigError(target, source, "an http address is a dashboard's (for `ray job submit`); give the head's "
                          "GCS address host:6379, or ray://host:10001 for Ray Client")
    host, port = _host_port(target, source)
    try:
        socket.create_connection((host, port), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise ConfigError(target, source, f"no Ray cluster answers there ({reason}, waited at most "
                          f"{ADDRESS_TIMEOUT_S:g} s); is the cluster up and the port open from here?") from err


def _given_address(address: str | None) -> tuple[str, str | None]:
    """``(where it came from, the address)``: ``--address`` when given, else ``$RAY_ADDRESS`` (None when unset)."""
    return ("--address", address) if address is not None else ("RAY_ADDRESS", os.environ.get("RAY_ADDRESS"))


def _host_port(address: str, source: str) -> tuple[str, int]:
    """``(host, port)`` of a ``host:port`` or ``ray://host[:port]`` address (IPv6 hosts in brackets)."""
    rest = address.removeprefix("ray://").split("/", 1)[0]
    if rest.startswith("["):  # [v6 address]:port
        host, _, port = rest[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = rest.partition(":") if rest.count(":") == 1 else (rest, "", "")
    if not port and address.startswith("ray://"):
        port = str(RAY_CLIENT_PORT)
    if not port.isdigit() or not host:
        raise ConfigError(address, source, "expected host:port (the GCS address, e.g. 10.0.0.5:6379) or "
                          "ray://host:port")
    return host, int(port)


def _token_available() -> bool:
    """Whether this process has a Ray auth token: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser().is_file()


def ray_command() -> str:
    """``ray``, or the full path of this environment's ``ray`` when the one on PATH is another (or none)."""
    here = Path(sys.executable).with_name("ray")
    on_path = shutil.which("ray")
    if here.exists() and (on_path is None or Path(on_path).resolve() != here.resolve()):
        return str(here)
    return "ray"


def token_settings(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(env, where)``: the variables a ``ray`` command in another shell needs to reach a token-auth cluster, and
    where this job's token is (a file, or the ``RAY_AUTH_TOKEN`` variable; the token itself is never printed)."""
    environ = os.environ if environ is None else environ
    if environ.get("RAY_AUTH_TOKEN"):
        return ('RAY_AUTH_MODE=token RAY_AUTH_TOKEN="<the same token>"',
                "the job's RAY_AUTH_TOKEN variable (set the same in the other shell)")
    if environ.get("RAY_AUTH_TOKEN_PATH"):
        path = environ["RAY_AUTH_TOKEN_PATH"]
        return f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={path}", path
    return "RAY_AUTH_MODE=token", str(Path.home() / ".ray" / "auth_token")


def attach_lines(cluster: Cluster, ray_cli: str = "ray", environ: Mapping[str, str] | None = None) -> list[str]:
    """What a job prints (on stderr) once connected: which cluster, its dashboard, how to run ``ray status`` on it."""
    if cluster.started_here:
        lines = [f"Ray: started a local cluster for this job at {cluster.address} (it stops when the job ends)"]
    else:
        lines = [f"Ray: attached to the cluster at {cluster.address} ({cluster.nodes} node"
                 f"{'s' if cluster.nodes != 1 else ''} alive)"]
    env, where = token_settings(environ) if cluster.token_auth else ("", "")
    if cluster.dashboard_url:
        ask = f" (it asks for the token: paste {where if where.startswith('the ') else f'the contents of {where}'})"
        lines.append(f"  dashboard:  {cluster.dashboard_url}{ask if cluster.token_auth else ''}")
    lines.append(f"  status:     {env + ' ' if env else ''}{ray_cli} status --address {cluster.address}")
    if cluster.token_auth:
        lines.append(f"  token:      {where}; any ray command from another shell needs {env.split(' ', 1)[0]} too")
    return lines


def announce(cluster: Cluster | None, stream=None) -> None:
    """Print :func:`attach_lines` of ``cluster`` on ``stream`` (stderr), once; nothing for ``None``."""
    if cluster is not None:
        print("\n".join(attach_lines(cluster, ray_command())), file=stream if stream is not None else sys.stderr,
              flush=True)


@dataclass(frozen=True)
class Placement:
    """Ray resources of one step worker and the torch threads it uses."""

    num_cpus: float
    num_gpus: float
    torch_threads: int

    def actor_options(self) -> dict[str, float]:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}


def placement_for(resources: Mapping[str, float], num_models: int, max_concurrency: int) -> Placement:
    """Placement of each of ``num_models`` actors on a cluster with ``resources`` (module doc)."""
    cpus = float(resources.get("CPU", 1.0))
    gpus = float(resources.get("GPU", 0.0))
    running = max(1, min(num_models, max_concurrency))
    threads = max(1, math.floor(cpus / running))
    # Every actor must fit at once (they live for the whole stage): ask for a share, not a core.
    # Rounded down: 3 actors of round(2/3, 3) = 0.667 CPU would ask for 2.001 of 2 CPUs and one would never start.
    cpu_share = math.floor(1000 * min(1.0, cpus / max(1, num_models))) / 1000
    gpu_share = min(1.0, math.floor(1000 * gpus / num_models) / 1000) if gpus >= 1 else 0.0
    return Placement(num_cpus=cpu_share, num_gpus=gpu_share, torch_threads=threads)


def model_placement(num_models: int, max_concurrency: int) -> Placement:
    """:func:`placement_for` on the connected cluster's resources."""
    return placement_for(ray.cluster_resources(), num_models, max_concurrency)


def device_for_actor() -> str:
    """``cuda:0`` inside an actor that Ray gave a GPU (Ray sets CUDA_VISIBLE_DEVICES), else ``cpu``."""
    return "cuda:0" if ray.get_gpu_ids() else "cpu"


def connect_stoppable(tracking_uri: str, address: str | None) -> Cluster | None:
    """:func:`cluster.runtime.connect`, then the stop handlers put back over Ray's (:mod:`kd_core.io.stops`: Ray's
    SIGTERM handling printed a native stack dump and ended the driver with status 134).

    A SIGTERM while ``ray.init`` runs meets Ray's own handler there, ``sys.exit(15)``: that is a stop like any
    other, raised as :class:`~kd_core.io.stops.Stopped` once ``ray.shutdown()`` has stopped what the init started
    (as for a SIGINT there, which is already one).
    """
    try:
        cluster = connect(tracking_uri, address)
    except KeyboardInterrupt:
        ray.shutdown()
        raise
    except SystemExit as exit:
        if exit.code != signal.SIGTERM:
            raise
        ray.shutdown()
        raise Stopped(signal.SIGTERM) from None
    reclaim_signals()
    return cluster


def disconnect() -> None:
    """Leave the cluster :func:`connect_stoppable` joined: this job's published secrets are deleted first (they
    would stay in a cluster that outlives the job), then ``ray.shutdown()`` (a local cluster started here stops)."""
    forget()
    ray.shutdown()
