"""The IMM job end to end on a real local Ray and a real MLflow store; resume after a real kill; its CLI."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.imm import IMMJobConfig, main, run
from kd_core.data.domain_settings import DataSettings
from kd_core.data.domains import load_domain_examples
from kd_core.io.cli import run_cli
from tests.helpers import help_text, job_tree, logged_model_files, wait_for, write_squad_file
from tuning.config import SweepConfig
from tuning.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(synthetic_size=24, epochs=2, iterations=2, vocab_size=500, batch_size=8)
CLI_TINY = ["--synthetic-size", "24", "--epochs", "2", "--iterations", "2", "--vocab-size", "500",
            "--batch-size", "8"]


@pytest.fixture(scope="module")
def uninterrupted(ray_session, tmp_path_factory):
    """One uninterrupted job with two baselines and two extra evaluation files: its summary and its MLflow store.

    ``sports_test.json`` is a copy of sports' own test split, scored by the sports models;
    ``addsent.json`` an adversarial file (AddSent's layout) scored by the medicine models.
    """
    root = tmp_path_factory.mktemp("imm")
    uri = f"sqlite:///{root}/mlflow.db"
    sports_test = load_domain_examples(DataSettings(synthetic_size=24, vocab_size=500))["sports"].test
    copy = write_squad_file(root / "sports_test.json", sports_test)
    originals = [{**ex, "id": f"q{i}"} for i, ex in enumerate(list(sports_test)[:4])]  # SQuAD's ids have no '-'
    addsent = write_squad_file(root / "addsent.json", originals, "The river was found near the old mill.")
    summary = run(IMMJobConfig(**TINY, baselines=("single", "ft"), eval=(f"sports={copy}", f"medicine={addsent}"),
                               run_dir=str(root / "run"), tracking_uri=uri))
    return summary, uri


@pytest.mark.slow
def test_imm_job_end_to_end_with_mlflowjob_tree(uninterrupted):
    summary, uri = uninterrupted
    domains = ["sports", "medicine", "finance"]
    assert summary["method"] == "imm" and list(summary["iterations_f1"]) == domains
    for name in domains:
        history = summary["iterations_f1"][name]
        assert 2 <= len(history) <= 3
        assert summary["dev_f1"][name] == history[-1]
    assert summary["average_dev_f1"] == pytest.approx(sum(summary["dev_f1"].values()) / 3)
    assert summary["average_test_f1"] == pytest.approx(sum(summary["test_f1"].values()) / 3)
    assert set(summary["baselines"]) == {"single", "ft"} and set(summary["splits"]) == {"dev", "test", "eval"}
    # An extra file is scored by the domain's final model of each method: on a copy of its test split, its test F1.
    for method in ("imm", "single", "ft"):
        scores = summary if method == "imm" else summary["baselines"][method]
        assert summary["eval"]["sports_test.json"][method] == {"sports": pytest.approx(scores["test_f1"]["sports"])}
        assert set(summary["eval"]["addsent.json"][method]) == {"medicine"}
    assert set(summary["eval_adversarial"]) == {"addsent.json"}
    adversarial = summary["eval_adversarial"]["addsent.json"]["imm"]["medicine"]
    assert set(adversarial) == {"adversarial_f1", "adversarial_exact_match", "original_f1", "original_exact_match"}
    assert all(0 <= value <= 100 for value in adversarial.values())
    assert summary["baselines"]["single"]["dev_f1"] == {n: summary["iterations_f1"][n][0] for n in domains}
    for key in ("mlflow_run_id", "tracking_uri", "run_dir"):
        assert summary[key]
    run_dir = Path(summary["run_dir"])
    table = (run_dir / "summary_table.txt").read_text()
    assert table.startswith("F1") and "imm test" in table and "ft dev" in table
    for name, model_dir in summary["final_models"].items():
        assert not Path(model_dir).is_absolute() and (run_dir / model_dir / "model.safetensors").exists()
    # the kept model of each domain, copied (hard-linked) to models/imm/<domain>, named by the index
    assert summary["saved_models"] == {f"imm/{d}": str(run_dir / "models" / "imm" / d) for d in domains}
    index = json.loads((run_dir / "models/index.json").read_text())["models"]
    for d in domains:
        step = summary["final_steps"][d]
        assert index[f"imm/{d}"] == {"path": f"imm/{d}", "role": "imm", "step": step}
        saved = run_dir / "models/imm" / d / "model.safetensors"
        kept = run_dir / summary["final_models"][d] / "model.safetensors"
        assert saved.read_bytes() == kept.read_bytes() and saved.stat().st_ino == kept.stat().st_ino
    assert sorted(p.parent.name for p in (run_dir / "steps").glob("knowledge-*-0/knowledge.arrow")) == sorted(
        f"knowledge-{d}-0" for d in domains)

    client, parent, children = job_tree(uri, summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["method"] == "imm"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)} | {
        a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/similarity.png", "plots/f1_per_iteration.png", "summary_table.txt", "similarity.json",
            "methods_table.json"} <= artifacts
    assert parent.data.metrics["test/imm/average"] == pytest.approx(summary["average_test_f1"])
    assert parent.data.metrics["eval/sports_test.json/ft/sports"] == pytest.approx(
        summary["eval"]["sports_test.json"]["ft"]["sports"])
    assert parent.data.metrics["eval/addsent.json/imm/medicine/adversarial_f1"] == pytest.approx(
        adversarial["adversarial_f1"])
    averages = [m.value for m in client.get_metric_history(parent.info.run_id, "average_dev_f1")]
    assert len(averages) == len(summary["iterations_f1"]["sports"])

    assert all(r.info.status == "FINISHED" for r in children)
    steps = [r.data.tags["kd.step"] for r in children]
    assert len(steps) == len(set(steps))  # one run per step
    iterations = len(summary["iterations_f1"]["sports"])
    imm_runs = [r for r in children if r.data.tags["kd.method"] == "imm"]
    assert {(r.data.tags["kd.stage"], r.data.tags["kd.domain"]) for r in imm_runs} >= {
        (stage, d) for stage in ("initial", "knowledge", "phi", "theta", "select") for d in domains}
    assert len([r for r in children if r.data.tags["kd.method"] == "ft"]) == 11  # pre-training, tuning, test, 2 eval
    for child in imm_runs:
        iteration, domain, stage = int(child.data.tags["kd.iteration"]), child.data.tags["kd.domain"], child.data.tags["kd.stage"]
        assert iteration < iterations
        if stage in ("initial", "phi", "theta"):
            assert client.get_metric_history(child.info.run_id, "loss/ce")  # per-step losses from the worker
            assert "model/config.json" in logged_model_files(client, child)
        if stage == "theta":
            assert client.get_metric_history(child.info.run_id, "loss/mse")
        if stage == "select":
            assert child.data.metrics["primary"] == summary["iterations_f1"][domain][iteration]
    # The reported numbers are the test evaluations of each method's final model, which no choice read.
    for child in children:
        if child.data.tags.get("kd.stage") == "test":
            method, domain = child.data.tags["kd.method"], child.data.tags["kd.domain"]
            scores = summary if method == "imm" else summary["baselines"][method]
            assert child.data.metrics["primary"] == pytest.approx(scores["test_f1"][domain])
    # Keep-the-best, checked against each new model's own dev score as its training run logged it: after
    # iteration k the kept score is max(kept before, theta-k's), and theta-k is kept only when strictly better.
    theta = {(r.data.tags["kd.domain"], int(r.data.tags["kd.iteration"])): r.data.metrics[f"{r.data.tags['kd.domain']}.dev/f1"]
             for r in imm_runs if r.data.tags["kd.stage"] == "theta"}
    for d in domains:
        history = summary["iterations_f1"][d]
        for k in range(1, len(history)):
            assert history[k] == pytest.approx(max(history[k - 1], theta[d, k]))
            assert summary["kept"][d][k] == (theta[d, k] > history[k - 1])


@pytest.mark.slow
def test_a_killed_job_resumes_to_the_uninterrupted_result(uninterrupted, ray_session, tmp_path, capsys):
    expected, _ = uninterrupted
    address = ray_session.get_runtime_context().gcs_address
    run_dir, uri = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db"
    log = tmp_path / "killed.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            # IMM alone, one iteration: its numbers depend neither on the baselines nor on later iterations
            [sys.executable, "jobs/imm.py", *CLI_TINY, "--iterations", "1", "--baselines", "", "--run-dir",
             str(run_dir), "--tracking-uri", uri, "--address", address],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        # Kill the driver in the middle of iteration 1's transfers (a phi checkpoint is on disk).
        wait_for(lambda: any((run_dir / "steps").glob("phi-*-1/checkpoint/state.json")), proc, 300, log)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not (run_dir / "summary.json").exists()
    done_before = {p: p.stat().st_mtime_ns for p in (run_dir / "steps").rglob("result.json")}
    assert {p.parent.name for p in done_before} >= {"theta-sports-0", "theta-medicine-0", "theta-finance-0"}
    parent_id = json.loads((run_dir / "state.json").read_text())["parent_run_id"]

    # The new driver runs in this process (already on the cluster): the same main and exit codes.
    assert run_cli(main, ["--resume", str(run_dir), "--epochs", "3"]) == 2
    refused = capsys.readouterr().err
    assert "--epochs" in refused and "2.0" in refused
    assert run_cli(main, ["--resume", str(run_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the uninterrupted job's numbers up to iteration 1
    assert summary["iterations_f1"] == {d: f1[:2] for d, f1 in expected["iterations_f1"].items()}
    assert summary["kept"] == {d: kept[:2] for d, kept in expected["kept"].items()}
    assert summary["mlflow_run_id"] == parent_id  # the same parent run, reopened
    # Nothing completed was recomputed, and a transfer cut by the kill resumed from its checkpoint.
    assert set(summary["reused_steps"]) == {p.parent.name for p in done_before}
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in done_before.items())
    resumed_phi = [json.loads(p.read_text()) for p in (run_dir / "steps").glob("phi-*-1/result.json")
                   if p not in done_before]
    assert any(result["resumed_from_step"] > 0 for result in resumed_phi)

    _, parent, children = job_tree(uri, parent_id)
    assert parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in children)
    steps = [r.data.tags["kd.step"] for r in children]
    assert len(steps) == len(set(steps))


def test_help_lists_the_contract_options():
    text = help_text(main)
    for option in ("--domain", "--model", "--iterations", "--method", "--epochs", "--seed", "--run-dir",
                   "--tracking-uri", "--max-concurrency", "--resume", "--check", "--json", "--config",
                   "--no-similarity", "--no-kd1", "--no-kd2", "--data-root", "--lambda-schedule", "--baselines"):
        assert option in text


def test_check_validates_config_file_and_data_without_cluster_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "imm.yaml"
    config.write_text("synthetic_size: 12\nsynthetic_domains: [sports, travel]\nvocab_size: 300\n")
    assert run_cli(main, ["--config", str(config), "--iterations", "1", "--check"]) == 0
    assert "ok" in capsys.readouterr().out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, expected", [
    (["--iterations", "-1"], "--iterations"),
    (["--lambda-schedule", "cosine"], "--lambda-schedule"),
    (["--baselines", "single,bogus"], "--baselines"),
    (["--domain", "wiki"], "NAME=TRAIN"),
    (["--domain", "a=/nonexistent/a.json", "--domain", "b=/nonexistent/b.json"], "/nonexistent/a.json"),
    (["--tracking-uri", "file:///tmp/x"], "--tracking-uri"),
    (["--resume", "/nonexistent/run"], "state.json"),
    (["--eval", "missing.json"], "missing.json"),
    (["--eval", "travel=x.json"], "--eval"),
])
def test_bad_options_exit_2_with_one_line_before_cluster_work(tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)
    assert run_cli(main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and expected in err[0]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_imm_sweep_reuses_the_jobs_iteration_0_as_its_teachers(uninterrupted, tmp_path):
    job, uri = uninterrupted
    sweep = run_sweep(SweepConfig(method="imm", num_samples=2, job=TINY, knowledge_from=job["run_dir"],
                                  space={"iterations": {"choice": [1]}}, run_dir=str(tmp_path / "sweep"),
                                  tracking_uri=uri))
    assert sweep["teacher_passes"] == 0 and sweep["trials"] == 2 and sweep["failed"] == 0
    assert set(sweep["best_config"]) == {"lambda_schedule", "iterations"}
    assert sorted(p.name for p in Path(sweep["best_model"]).iterdir()) == sorted(job["iterations_f1"])
    _, parent, children = job_tree(uri, sweep["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    assert [r.data.tags["kd.role"] for r in children] == ["trial", "trial"]
    assert all(r.info.status == "FINISHED" for r in children)
