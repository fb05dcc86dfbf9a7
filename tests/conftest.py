"""Test session set-up: no model hub (only local files), quiet and reproducible."""

import os

# Read at import time by huggingface_hub / datasets: set before anything imports them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no ~/.ray/auth_token for the local test cluster
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray cluster for the whole test session (2 CPUs, like this machine)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024**2, logging_level="ERROR",
             log_to_driver=False, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def kd_job(ray_session, tmp_path_factory):
    """``(summary, tracking URI)`` of one finished kd job (``tests.helpers.KD_TINY``), shared by the kd job's tests
    and the sweep that reuses a job's teachers."""
    from jobs.kd import KDJobConfig, run
    from tests.helpers import KD_TINY

    root = tmp_path_factory.mktemp("kd")
    uri = f"sqlite:///{root}/mlflow.db"
    return run(KDJobConfig(**KD_TINY, run_dir=str(root / "run"), tracking_uri=uri, register_as="kd-test")), uri
