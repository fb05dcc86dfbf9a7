"""cluster/configs: the ray up cluster, the KubeRay RayCluster (and its NetworkPolicy) and RayJob, their secrets and
image agree with the project."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from jobs.imm import parser as imm_parser

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "cluster" / "configs"
IMAGE_ROOT = "/home/ray/kd-ray/"  # where the Dockerfile puts the repository


def _ray_pin() -> str:
    pin = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin, "pyproject.toml pins ray[...]==X.Y.Z"
    return pin.group(1)


def _load(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((CONFIGS / name).read_text()) if doc]


def _one(name: str, kind: str) -> dict:
    """The one document of ``kind`` in the config file ``name``."""
    (doc,) = [doc for doc in _load(name) if doc["kind"] == kind]
    return doc


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def _env(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _secret_ref(value: object) -> tuple[str, str]:
    assert isinstance(value, dict), f"{value!r} is not read from a secret"
    ref = value["secretKeyRef"]
    return ref["name"], ref["key"]


def _secrets() -> dict[str, set[str]]:
    return {doc["metadata"]["name"]: set(doc["stringData"]) for doc in _load("kuberay-secrets.yaml")
            if doc["kind"] == "Secret"}


def test_the_image_is_built_from_the_pinned_ray_and_turns_token_auth_on():
    dockerfile = (CONFIGS / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:([0-9.]+)-py311-gpu$", dockerfile, re.M)
    assert base and base.group(1) == _ray_pin()
    assert f"WORKDIR {IMAGE_ROOT.rstrip('/')}" in dockerfile and "RAY_AUTH_MODE=token" in dockerfile
    assert "torch==2.13.0" in dockerfile


def test_ray_up_cluster_has_one_gpu_per_worker_token_auth_and_a_local_dashboard():
    (config,) = _load("ray-up-gpu.yaml")
    for key in ("cluster_name", "max_workers", "provider", "auth", "docker", "available_node_types", "head_node_type",
                "head_start_ray_commands", "worker_start_ray_commands", "file_mounts"):
        assert key in config, key
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers and all(t["resources"]["GPU"] == 1 and t["max_workers"] >= 1 for t in workers)
    assert config["max_workers"] >= max(t["max_workers"] for t in workers)
    assert config["provider"]["type"] in ("aws", "gcp", "azure", "local")
    head = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "--dashboard-host=127.0.0.1" in head
    assert all("RAY_AUTH_MODE=token" in c for c in config["worker_start_ray_commands"] if c.startswith("RAY"))
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert "~/.ray/auth_token" in config["file_mounts"]


def test_kuberay_cluster_pins_ray_gives_each_worker_one_gpu_and_reads_every_credential_from_secrets():
    cluster = _one("kuberay-raycluster.yaml", "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    spec = cluster["spec"]
    assert spec["rayVersion"] == _ray_pin()
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    groups = spec["workerGroupSpecs"]
    assert groups
    secrets = _secrets()
    pods = [head["template"]] + [g["template"] for g in groups]
    for pod in pods:
        for container in _containers(pod):
            env = _env(container)
            assert env["RAY_AUTH_MODE"] == "token"
            for name in ("RAY_AUTH_TOKEN", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                secret, key = _secret_ref(env[name])
                assert key in secrets[secret], f"{name}: secret {secret} has no key {key}"
            assert env["KD_RESULTS_DIR"] == "/mnt/results"
            assert any(m["mountPath"] == "/mnt/results" for m in container["volumeMounts"])
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for container in _containers(group["template"]):
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    for container in _containers(head["template"]):
        assert "nvidia.com/gpu" not in container["resources"]["limits"]


def test_kuberay_job_submits_imm_to_that_cluster_with_the_token():
    job = _one("kuberay-rayjob.yaml", "RayJob")
    cluster = _one("kuberay-raycluster.yaml", "RayCluster")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    assert spec["shutdownAfterJobFinishes"] is False and spec["activeDeadlineSeconds"] > 0
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "SidecarMode")
    (submitter,) = _containers(spec["submitterPodTemplate"])
    env = _env(submitter)
    assert env["RAY_AUTH_MODE"] == "token" and _secret_ref(env["RAY_AUTH_TOKEN"]) == ("kd-ray-token", "token")
    yaml.safe_load(spec["runtimeEnvYAML"])  # a YAML document itself
    python, script, *args = shlex.split(spec["entrypoint"])
    assert python == "python" and script.startswith(IMAGE_ROOT)
    local = ROOT / script.removeprefix(IMAGE_ROOT)
    assert local == ROOT / "jobs" / "imm.py" and local.exists()
    options = imm_parser().parse_args(args)  # the entrypoint's options are the job's own
    assert options.json and options.experiment == "imm-k8s"


@pytest.mark.parametrize("name", ["ray-up-gpu.yaml", "kuberay-raycluster.yaml", "kuberay-rayjob.yaml"])
def test_no_credential_is_written_into_a_config(name):
    text = (CONFIGS / name).read_text()
    assert not re.search(r"(?i)(password|token)\s*:\s*[A-Za-z0-9_\-]{12,}", text)
    assert "stringData" not in text


def test_kuberay_head_has_no_ray_client_port_unless_added_back():
    cluster = _one("kuberay-raycluster.yaml", "RayCluster")
    (head,) = _containers(cluster["spec"]["headGroupSpec"]["template"])
    assert {p["containerPort"] for p in head["ports"]} == {6379, 8265}
    assert "ray-client-server-port" not in cluster["spec"]["headGroupSpec"]["rayStartParams"]
    comments = "\n".join(line for line in (CONFIGS / "kuberay-raycluster.yaml").read_text().splitlines()
                         if line.lstrip().startswith("#"))
    assert "{containerPort: 10001, name: client}" in comments and "{port: 10001, protocol: TCP}" in comments


def test_kuberay_network_policy_lets_in_only_the_cluster_and_on_8265_its_submitters():
    cluster = _one("kuberay-raycluster.yaml", "RayCluster")
    policy = _one("kuberay-raycluster.yaml", "NetworkPolicy")
    job = _one("kuberay-rayjob.yaml", "RayJob")
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    own = {"ray.io/cluster": cluster["metadata"]["name"]}
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": own} and spec["policyTypes"] == ["Ingress"]
    assert all(rule.get("from") for rule in spec["ingress"])  # no rule lets in every source
    everything = [rule for rule in spec["ingress"] if "ports" not in rule]
    assert everything == [{"from": [{"podSelector": {"matchLabels": own}}]}]  # every port: the cluster's own pods only
    (submitters,) = [rule for rule in spec["ingress"] if "ports" in rule]
    assert submitters["ports"] == [{"port": 8265, "protocol": "TCP"}]
    sources = submitters["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kd-ray-users"}}} in sources
    (pods,) = [s["podSelector"]["matchLabels"] for s in sources if "podSelector" in s]
    labels = job["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    assert pods.items() <= labels.items()  # the RayJob's submitter is let in


def test_the_mlflow_secret_names_an_https_server():
    (mlflow_secret,) = [doc for doc in _load("kuberay-secrets.yaml") if doc["metadata"]["name"] == "kd-ray-mlflow"]
    assert mlflow_secret["stringData"]["tracking-uri"].startswith("https://")
    assert "http://" not in (CONFIGS / "kuberay-secrets.yaml").read_text()
