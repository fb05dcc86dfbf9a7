"""The single-process distillation from the command line, end to end, and its bad-input behaviour."""

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForQuestionAnswering

from jobs.distill import main
from kd_core.io.cli import run_cli
from kd_core.knowledge.span import knowledge_metadata
from kd_core.knowledge.table import read_knowledge

TINY = ["--synthetic-size", "12", "--teacher-epochs", "1", "--epochs", "1", "--vocab-size", "400"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python jobs/distill.py ARGS`` in ``cwd``, run in this process (the same ``main`` and exit codes, without
    an interpreter start-up per call; ``test_help`` runs the real command)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(main, list(args))
    return subprocess.CompletedProcess(["jobs/distill.py", *args], code, out.getvalue(), err.getvalue())


def test_distillation_end_to_end_all_four_a2d_terms(tmp_path):
    # bf16 autocast (it runs on CPU too), two micro-batches per optimizer step, length-grouped batches
    # and both students keep their best of 2 epochs on dev
    result = run(*TINY, "--baseline", "--json", "--run-dir", str(tmp_path / "run"), "--precision", "bf16",
                 "--accumulate-steps", "2", "--group-by-length", "--keep-best", "--epochs", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("teacher_f1", "student_f1", "student_no_kd_f1", "knowledge_bytes_per_feature", "run_dir"):
        assert key in summary
    assert 0 <= summary["student_f1"] <= 100
    curves = summary["students_epochs"]
    for name, f1 in (("student", summary["student_f1"]), ("student-no-kd", summary["student_no_kd_f1"])):
        curve = curves[name]["dev_f1"]
        assert len(curve) == 2 and curve[curves[name]["kept_epoch"] - 1] == f1 == max(curve)
    assert summary["student_parameters"] < summary["teacher_parameters"]
    run_dir = Path(summary["run_dir"])
    table = read_knowledge(run_dir / "steps/knowledge/knowledge.arrow")
    assert {"start_logits", "confusing_start", "attention"} <= set(table.column_names)
    assert knowledge_metadata(table)["members"] == 1
    assert AutoModelForQuestionAnswering.from_pretrained(run_dir / "steps/student/model").config.num_hidden_layers == 1
    assert "teacher" in result.stdout and "student without kd" in result.stdout
    student = json.loads((run_dir / "steps/student/result.json").read_text())
    rows = json.loads((run_dir / "steps/knowledge/result.json").read_text())["rows"]
    assert student["precision"] == "bf16" and student["steps"] == 2 * math.ceil(rows / (16 * 2))  # 2 epochs, batch 16, 2 micro
    again = run(*TINY, "--run-dir", str(run_dir), "--check", cwd=tmp_path)  # the finished run is not wiped silently
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"error: {run_dir}: run directory: holds a job (steps, summary.json); pass --overwrite to replace it, or use "
        "another run directory"]
    assert run(*TINY, "--run-dir", str(run_dir), "--check", "--overwrite", cwd=tmp_path).returncode == 0


def test_config_file_with_override_and_check(tmp_path):
    config = tmp_path / "distill.yaml"
    config.write_text("tau: 3.0\nsynthetic_size: 12\nmax_length: 64\n")
    result = run("--config", str(config), "--max-length", "80", "--check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert not (tmp_path / "runs").exists()  # --check does no work


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--tau", "0"], "a2d: --tau: must be > 0"),
        (["--gamma", "-1"], "a2d: --gamma: must be >= 0"),
        (["--top-k", "0"], "a2d: --top-k: must be >= 1"),
        (["--precision", "fp8"], "compute: --precision: must be one of auto, bf16, fp16, fp32"),
        (["--accumulate-steps", "0"], "compute: --accumulate-steps: must be an integer >= 1"),
        (["--max-length", "12", "--doc-stride", "2"], "smaller than the question"),
        (["--teacher-model", "no-such-org/no-such-model"], "no-such-org/no-such-model: from_pretrained"),
    ],
)
def test_invalid_options_give_one_error_line_and_exit_2(tmp_path, args, expected):
    line = _one_error_line(run(*TINY, *args, "--check", cwd=tmp_path))
    assert expected in line


def test_bad_data_file_and_config_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "1.1", "data": [')
    assert "bad.json" in _one_error_line(run("--train", str(bad), "--check", cwd=tmp_path))
    config = tmp_path / "c.yaml"
    config.write_text("tua: 2\n")
    assert "c.yaml: tua: unknown option" in _one_error_line(run("--config", str(config), "--check", cwd=tmp_path))
    assert not (tmp_path / "runs").exists()


def test_help():
    result = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "jobs" / "distill.py"), "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "--teacher-model" in result.stdout


def test_kd_core_imports_neither_ray_nor_mlflow():
    import kd_core

    root = Path(kd_core.__file__).parent
    modules = sorted("kd_core." + ".".join(p.relative_to(root).with_suffix("").parts) for p in root.rglob("*.py")
                     if p.name != "__init__.py")
    assert "kd_core.engine.execute" in modules and "kd_core.tasks.sentence" in modules
    code = (f"import sys, {', '.join(modules)};"
            "print(sorted(m for m in ('ray', 'mlflow') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
