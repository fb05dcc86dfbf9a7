"""Small shared pieces for tests: hand-made examples, SQuAD files, a job's MLflow run tree, waiting on a job to kill
it, an S3 server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow

from kd_core.data.schema import examples_to_dataset
from kd_core.models.tokenizers import train_wordpiece_tokenizer

#: The kd job of the ``kd_job`` fixture (tests/conftest.py): tiny, two teachers.
KD_TINY = dict(synthetic_size=240, members=2, teacher_epochs=2, epochs=3, batch_size=16)


def example(id_: str, context: str, question: str, answer: str | None, domain: str = "toy") -> dict:
    """One example of the shared schema; ``answer=None`` makes it unanswerable."""
    answers = {"text": [], "answer_start": []} if answer is None else {"text": [answer], "answer_start": [context.index(answer)]}
    return {"id": id_, "domain": domain, "title": "", "context": context, "question": question,
            "answers": answers, "is_impossible": answer is None}


def write_squad_file(path: Path, examples: Iterable[dict], distractor: str | None = None) -> Path:
    """Examples written as a SQuAD v1.1 file, one paragraph each.

    With ``distractor``, an adversarial file in AddSent's layout: each question ``<id>`` also has a
    variant ``<id>-addsent`` whose context ends with that sentence.
    """
    paragraphs = []
    for ex in examples:
        answers = [{"text": t, "answer_start": s} for t, s in zip(ex["answers"]["text"], ex["answers"]["answer_start"])]
        paragraphs.append({"context": ex["context"], "qas": [{"id": ex["id"], "question": ex["question"],
                                                               "answers": answers}]})
        if distractor is not None:
            paragraphs.append({"context": f"{ex['context']} {distractor}",
                               "qas": [{"id": f"{ex['id']}-addsent", "question": ex["question"], "answers": answers}]})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "extra", "paragraphs": paragraphs}]}))
    return path


def toy_examples():
    return examples_to_dataset([
        example("q1", "Lyon Rovers won the super cup in 2003 after a long final.", "When did Lyon Rovers win the super cup?", "2003"),
        example("q2", "The dose of oxaprolin for adults is 200 mg per day.", "What dose of oxaprolin is given to adults?", "200 mg"),
        example("q3", "Nobody knows what the weather will be.", "Who won the cup?", None),
    ])


def toy_tokenizer(vocab_size: int = 200):
    ds = toy_examples()
    return train_wordpiece_tokenizer(list(ds["context"]) + list(ds["question"]), vocab_size=vocab_size)


def job_tree(uri: str, parent_id: str):
    """``(client, parent run, its children)``: every run tagged with the job's ``kd_job_id`` but the parent."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.kd_job_id = '{parent_id}'")
    return client, parent, [r for r in runs if r.info.run_id != parent_id]


def logged_model(client, run):
    """The one MLflow logged model whose source is ``run``."""
    models = client.search_logged_models([run.info.experiment_id], f"source_run_id = '{run.info.run_id}'")
    assert len(models) == 1, f"run {run.info.run_name} has {len(models)} logged models"
    return models[0]


def logged_model_files(client, run) -> set[str]:
    """The files of ``run``'s logged model's ``save_pretrained`` folder (``model/...``)."""
    model = logged_model(client, run)
    return {a.path.removeprefix("artifacts/") for a in client.list_logged_model_artifacts(model.model_id, "artifacts/model")}


@contextmanager
def mlflow_tracking(uri: str) -> Iterator[None]:
    """MLflow's process-global tracking URI set to ``uri`` for the block (``models:/`` URIs resolve there), then
    put back: loading a model sets it, and a later test must not inherit another test's store."""
    from mlflow.tracking._tracking_service import utils

    previous = utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def wait_for(condition, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    """Poll ``condition`` while the job ``proc`` runs; fail if the job ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"job ended before it could be killed:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


@dataclass(frozen=True)
class S3Server:
    """A real S3 API on 127.0.0.1 (moto's server) with one bucket: a job's ``uri``, its ``env``, a client ``fs``."""

    endpoint: str
    bucket: str
    env: dict[str, str]

    def uri(self, key: str, credentials: bool = False) -> str:
        """``s3://`` URI of ``key``; with ``credentials`` (moto's dummy ones) in it, for processes that do not
        have ``env`` (the test session's Ray workers)."""
        user = f"{self.env['AWS_ACCESS_KEY_ID']}:{self.env['AWS_SECRET_ACCESS_KEY']}@" if credentials else ""
        return f"s3://{user}{self.bucket}/{key}?endpoint_override={self.endpoint}&scheme=http&region=us-east-1"

    @property
    def fs(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http", access_key=self.env["AWS_ACCESS_KEY_ID"],
                                 secret_key=self.env["AWS_SECRET_ACCESS_KEY"], region=self.env["AWS_DEFAULT_REGION"])

    def keys(self, prefix: str) -> dict[str, int]:
        """Every object under ``prefix`` (``bucket/...`` paths) with its modification time in ns."""
        import pyarrow.fs as pafs

        found = self.fs.get_file_info(pafs.FileSelector(f"{self.bucket}/{prefix}", recursive=True, allow_not_found=True))
        return {info.path: info.mtime_ns for info in found if info.type == pafs.FileType.File}


@contextmanager
def s3_server(tmp: Path) -> Iterator[S3Server]:
    """Start ``moto_server`` on a free port with a bucket ``kd-runs`` (credentials are moto's dummy ones)."""
    import pyarrow.fs as pafs

    port = free_port()
    log = (tmp / "moto.log").open("w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp / "moto.log").read_text()
                time.sleep(0.2)
        pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", access_key="testing",
                          secret_key="testing", region="us-east-1", allow_bucket_creation=True).create_dir("kd-runs")
        yield S3Server(f"127.0.0.1:{port}", "kd-runs", env)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@contextmanager
def running_mlflow_server(root: Path) -> Iterator[int]:
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend and artifacts under ``root``), healthy, on the port it
    yields; stopped when the block ends."""
    import urllib.request

    port = free_port()
    log = root / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{root}/server.db",
             "--artifacts-destination", str(root / "artifacts")],
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        yield port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_processes_mentioning(text: str) -> None:
    """SIGKILL every process whose command line mentions ``text``, e.g. one throwaway Ray node's temp dir (``ray
    stop`` would stop every Ray cluster of the user; a graceful stop only costs time here), and wait for them."""
    import psutil

    victims = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in proc.info["cmdline"] or []):
                victims.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for proc in victims:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(victims, timeout=15)


def help_text(main) -> str:
    """What ``main(["--help"])`` prints (argparse exits 0 after printing), run in this process."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(["--help"])
        except SystemExit as done:
            assert done.code == 0, done.code
        else:
            raise AssertionError("--help did not exit")
    return out.getvalue()


def plain_and_project_logits(folder: Path, texts: list[str]):
    """``(plain, ours, id2label)``: a saved sentence classifier's logits on ``texts`` from plain ``transformers`` code
    (tokenizer and model from the folder, the window length its tokenizer says), and from the project's own
    featurisation and inference of the same texts."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    encoded = tokenizer(texts, truncation=True, max_length=tokenizer.model_max_length, padding=True, return_tensors="pt")
    with torch.no_grad():
        plain = model(**encoded).logits.numpy()

    from kd_core.data.features import FeatureConfig
    from kd_core.data.schema import sentences_to_dataset
    from kd_core.serving.description import task_from_description

    described = model.config.kd_serving
    task = task_from_description(described["task"])
    project_model, project_tokenizer = task.build_model(str(folder), 0, None)
    rows = sentences_to_dataset({"id": str(i), "task": task.name, "text_a": text, "text_b": ""}
                                for i, text in enumerate(texts))
    arrays = task.arrays(task.featurize(rows, project_tokenizer, FeatureConfig(**described["windows"])))
    ours = np.asarray(task.infer(project_model, arrays)["logits"])
    return plain, ours, model.config.id2label
