"""kd_core.io.run_store against a real S3 API (moto's server on 127.0.0.1) and local paths."""

import json

import pytest

from kd_core.io.errors import StorageError
from kd_core.io.run_store import RunStore, clear_staging, is_uri
from tests.helpers import s3_server


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def store(s3, monkeypatch, request):
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    yield RunStore(s3.uri(f"runs/{request.node.name}"))
    clear_staging()


def _prefix(store: RunStore) -> str:
    """The store's run directory as a key prefix in the bucket."""
    return store.location.split("?")[0].removeprefix("s3://kd-runs/")


def test_uris_and_paths_are_told_apart():
    assert is_uri("s3://bucket/run") and is_uri("gs://b/r") and is_uri("file:///tmp/run") and is_uri("hdfs://nn/r")
    assert not is_uri("runs/imm") and not is_uri("/tmp/run") and not is_uri("C:/runs") and not is_uri("tiny-bert")


def test_a_local_store_is_the_folder_itself(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    path = store.local_root / "steps" / "a" / "result.json"
    assert store.local_root == tmp_path / "run" and store.location_of(path) == str(path)
    assert store.local(str(path)) == str(path) and store.local("tiny-bert") == "tiny-bert"
    # results name the run's files relative to it; absolute ones (older results, other runs) stay as they are
    assert store.name_of(path) == "steps/a/result.json" and store.resolve("steps/a/result.json") == str(path)
    assert store.resolve("/elsewhere/model") == "/elsewhere/model" and store.resolve("s3://b/x") == "s3://b/x"
    assert store.read_text(path) is None
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    store.push(path.parent)  # nothing to copy
    assert store.read_text(path) == "{}" and sorted(p.name for p in store.local_root.rglob("*")) == ["a", "result.json",
                                                                                                   "steps"]


def test_a_pushed_step_is_read_back_by_another_process_from_the_store(store, s3):
    step = store.local_root / "steps" / "teacher"
    (step / "model").mkdir(parents=True)
    (step / "model" / "model.safetensors").write_bytes(b"weights")
    (step / "result.json").write_text(json.dumps({"model_dir": store.name_of(step / "model")}))
    store.push(step)
    result_key = f"kd-runs/{_prefix(store)}/steps/teacher"
    assert set(s3.keys(_prefix(store))) == {f"{result_key}/result.json", f"{result_key}/model/model.safetensors"}

    first_staging = store.local_root
    clear_staging()  # as a fresh process (another node's worker): nothing local
    assert store.local_root != first_staging and not (store.local_root / "steps").exists()
    result = json.loads(store.read_text(store.local_root / "steps" / "teacher" / "result.json"))
    assert store.resolve(result["model_dir"]) == s3.uri(f"{_prefix(store)}/steps/teacher/model")
    model = store.local(store.resolve(result["model_dir"]))
    assert (store.local_root / "steps" / "teacher" / "model" / "model.safetensors").read_bytes() == b"weights"
    assert model == str(store.local_root / "steps" / "teacher" / "model")
    assert store.read_text(store.local_root / "steps" / "other" / "result.json") is None


def test_a_checkpoint_is_replaced_by_versions_and_dropped_when_done(store, s3):
    folder = store.local_root / "steps" / "student" / "checkpoint"
    folder.mkdir(parents=True)
    for step in (1, 2):
        (folder / "state.json").write_text(json.dumps({"step": step}))
        (folder / "model.safetensors").write_bytes(bytes([step]) * 10)
        store.push_version(folder)
    keys = s3.keys(_prefix(store))
    assert len([k for k in keys if k.endswith("checkpoint.latest")]) == 1
    assert len({k.split("checkpoint.versions/")[1].split("/")[0] for k in keys if "versions/" in k}) == 1  # old gone
    assert not [k for k in keys if ".partial" in k]

    clear_staging()
    folder = store.local_root / "steps" / "student" / "checkpoint"
    assert store.pull_version(folder)
    assert json.loads((folder / "state.json").read_text()) == {"step": 2}
    assert (folder / "model.safetensors").read_bytes() == bytes([2]) * 10
    store.drop_versions(folder)
    assert s3.keys(_prefix(store)) == {} and not store.pull_version(folder)


def test_remove_clears_the_store_and_the_staging_folder(store, s3):
    path = store.local_root / "steps" / "x" / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    store.push(path.parent)
    store.remove("steps")
    assert s3.keys(_prefix(store)) == {} and not (store.local_root / "steps").exists()


def test_an_unreachable_or_unknown_store_is_one_line(monkeypatch, s3):
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StorageError, match="not a file system URI pyarrow can open"):
        RunStore("s3://kd-runs/run?no_such_option=1")
    with pytest.raises(StorageError, match="no-such-bucket.*the store refused"):
        store = RunStore(f"s3://no-such-bucket/run?endpoint_override={s3.endpoint}&scheme=http")
        path = store.local_root / "state.json"
        path.write_text("{}")
        store.push(path)
    clear_staging()
