"""Command-line options generated from config dataclasses: types, booleans, lists, aliases, errors."""

import argparse
import dataclasses
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs.a2d import A2DJobConfig
from jobs.imm import IMMJobConfig
from kd_core.io.cli import run_cli
from kd_core.io.config_files import RENAMED, build_config, read_config_file
from kd_core.io.errors import ConfigError
from kd_core.io.options import add_options, config_from_cli, option, user_value
from kd_core.methods.registry import METHODS
from tuning.config import SweepConfig, job_parser


@dataclass(frozen=True)
class Example:
    top_k: int = option(4, "spans kept", "model")
    tau: float | None = option(None, "temperature", "model")
    learning_rate: float = option(1e-3, "peak rate", alias="--lr")
    no_kd: bool = option(False, "skip knowledge")
    baseline: bool = option(True, "train the baseline")
    domains: tuple[str, ...] = option((), "domain names")
    name: str = option("run", "a name")

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError("example", "top_k", f"must be >= 1, got {self.top_k}")


def _parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_options(parser, Example)
    return config_from_cli(Example, parser.parse_args(argv))


def test_every_field_is_an_option_with_its_type_and_default():
    assert _parse([]) == Example()
    config = _parse(["--top-k", "7", "--tau", "2.5", "--lr", "0.01", "--no-kd", "--no-baseline",
                     "--domains", "a,b", "--domains", "c", "--name", "x"])
    assert config == Example(top_k=7, tau=2.5, learning_rate=0.01, no_kd=True, baseline=False,
                             domains=("a", "b", "c"), name="x")


def test_a_config_file_is_overridden_by_the_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("top_k: 3\nname: from-file\ndomains: [p, q]\n")
    config = _parse(["--config", str(path), "--name", "cli"])
    assert (config.top_k, config.name, config.domains) == (3, "cli", ("p", "q"))
    path.write_text("domains: p, q\n")  # a tuple written as one string, as on the command line (also --set)
    assert _parse(["--config", str(path)]).domains == ("p", "q")
    path.write_text("learning_rate: 5e-5\ntau: 1E2\n")  # YAML 1.1 reads a float without a dot as a string
    config = _parse(["--config", str(path)])
    assert (config.learning_rate, config.tau) == (5e-5, 100.0)
    for word in ("hot", "inf", "1e"):
        path.write_text(f"tau: {word}\n")
        with pytest.raises(ConfigError, match=f"tau: expected a number, got '{word}'"):
            _parse(["--config", str(path)])
    path.write_text("top_kk: 3\n")
    with pytest.raises(ConfigError, match="top_kk: unknown option"):
        _parse(["--config", str(path)])


def test_errors_name_the_option_as_the_user_writes_it():
    with pytest.raises(ConfigError) as err:
        _parse(["--top-k", "0"])
    assert str(err.value) == "example: --top-k: must be >= 1, got 0"
    with pytest.raises(SystemExit):
        _parse(["--top-k", "many"])  # argparse refuses a non-integer itself


@pytest.mark.parametrize("name", ["imm_mrqa_domains.yaml", "a2d_xquad.yaml", "a2d_paper.yaml", "a2d_squad_xquad.yaml"])
def test_shipped_config_files_are_valid_options_of_their_job(name):
    """A renamed option or a value of the wrong type in a shipped config file fails here, not in a user's run."""
    path = Path(__file__).resolve().parents[1] / "configs" / name
    job = {"imm": IMMJobConfig, "a2d": A2DJobConfig}[name.split("_")[0]]
    values = read_config_file(path)
    config = build_config(job, values, {}, str(path))
    assert {key: getattr(config, key) for key in values} == {
        key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}


JOB_NAMES = ("a2d", "imm", "kd", "mtdnn", "students", "sweep", "distill")
#: One option name per idea (README "Options"): the idea's option, the spellings it replaced, the jobs that have it.
VOCABULARY = [
    ("--alpha", ("--kd-weight",), {"a2d", "distill", "kd", "mtdnn", "students"}),
    ("--members", ("--teachers",), {"a2d", "distill", "kd", "mtdnn"}),
    ("--fine-tune-epochs", ("--finetune-epochs",), {"imm", "mtdnn"}),
    ("--max-concurrency", ("--max-concurrent",), {"a2d", "imm", "kd", "mtdnn", "students", "sweep"}),
    ("--baseline", ("--vanilla", "--no-vanilla", "--compare"), {"a2d", "distill", "kd", "mtdnn", "students"}),
    ("--no-baseline", (), {"a2d", "distill", "kd", "mtdnn", "students"}),
    ("--synthetic-size", ("--synthetic-per-domain",), {"a2d", "distill", "imm", "kd", "students"}),
    ("--student-layers", ("--distil-layers",), {"a2d", "distill", "students"}),
    ("--test", ("--test-file",), {"a2d", "distill", "kd"}),
    ("--eval", ("--eval-file", "--extra-eval"), {"a2d", "distill", "imm"}),
    ("--test-fraction", ("--test-share",), {"a2d", "distill", "imm", "kd", "mtdnn", "students"}),
    ("--dev-fraction", ("--dev-share",), {"a2d", "distill", "imm", "kd", "mtdnn", "students"}),
]


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in parser._actions for name in action.option_strings}


def _job(name: str):
    return importlib.import_module(f"jobs.{name}")


@pytest.mark.parametrize("name", JOB_NAMES)
def test_every_job_spells_each_idea_with_the_one_option_name(name):
    options = _options(_job(name).parser())
    for new, old, jobs in VOCABULARY:
        assert (new in options) == (name in jobs), (name, new)
        assert not options & set(old), (name, options & set(old))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_sweep_takes_each_method_s_settings_as_its_job_spells_them(method):
    """Every fixed setting the sweep accepts is an option of the method's job, with the same name."""
    sweep_own = _options(_job("sweep").parser())
    job = _options(_job(method).parser())
    fixed = _options(job_parser(method))
    assert fixed and fixed <= job
    assert not fixed & sweep_own  # none is shadowed by a sweep option (imm's --method is --set method=...)


def test_renamed_config_keys_point_at_options_that_exist():
    configs = [_job(name).JOB.config_class for name in METHODS] + [_job("distill").DistillConfig, SweepConfig]
    fields = {f.name for config in configs for f in dataclasses.fields(config)}
    for old, new in RENAMED.items():
        assert new in fields and old not in fields, (old, new)


def test_an_old_config_key_is_one_line_naming_the_new_one_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for job, text, expected in [("a2d", "kd_weight: 0.5\n", "x.yaml: kd_weight: is now `alpha`"),
                                ("kd", "teachers: 2\n", "x.yaml: teachers: is now `members`"),
                                ("imm", "finetune_epochs: 1\n", "x.yaml: finetune_epochs: is now `fine_tune_epochs`"),
                                ("mtdnn", "vanilla: false\n", "x.yaml: vanilla: is now `baseline`"),
                                ("students", "distil_layers: [0]\n", "x.yaml: distil_layers: is now `student_layers`"),
                                ("sweep", "max_concurrent: 2\n", "x.yaml: max_concurrent: is now `max_concurrency`"),
                                ("sweep", "job: {synthetic_per_domain: 8}\n",
                                 "sweep.job: synthetic_per_domain: is now `synthetic_size`"),
                                ("distill", "tua: 1\n", "x.yaml: tua: unknown option; known: ")]:
        Path("x.yaml").write_text(text)
        assert run_cli(_job(job).main, ["--config", "x.yaml", "--check"]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: ") and expected in errors[0], errors
    for job, argv, expected in [("distill", ["--compare"], "options: --compare: is now --baseline"),
                                ("mtdnn", ["--no-vanilla"], "options: --no-vanilla: is now --no-baseline"),
                                ("a2d", ["--kd-weight", "0"], "options: --kd-weight: is now --alpha")]:
        assert run_cli(_job(job).main, [*argv, "--check"]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert errors == [f"error: {expected}"], errors
    assert not Path("runs").exists() and not Path("mlflow.db").exists()


def test_help_lists_choices_and_defaults_as_a_user_writes_them(monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")  # one line per option: no wrapping inside a default
    helps = {name: _job(name).parser().format_help() for name in JOB_NAMES}
    expected = {
        "a2d": ["--confusing {question,window}", "(default: question)", "--baseline, --no-baseline",
                "(student-no-kd) (default: true)", "--alpha X", "(default: 1.0)", "--teacher-model MODEL",
                "--eval FILE[,FILE...]", "(default: none)", "--stagewise, --no-stagewise"],
        "imm": ["--baselines {single,mix,ft,mft,ms-ft,ms-mft,bam}[,...]", "(default: single,ft)",
                "--method {imm,single,mix,ft,mft,ms-ft,ms-mft,bam}", "(default: sports,medicine,finance)",
                "--no-kd1 ", "--domains NAME=TRAIN[,TEST]"],
        "kd": ["--task {span_qa,sentiment,entailment,rating,similarity,preference}", "(default: 0.5)",
               "--members N", "(default: tiny-bert-1l)"],
        "mtdnn": ["--teacher-multitask, --no-teacher-multitask", "--baseline, --no-baseline"],
        "students": ["--students {layers,scratch,bilstm}[,...]", "(default: layers,scratch,bilstm)",
                     "--loss {soft,mse,hard}", "--student-layers N[,N...]"],
        "sweep": ["--method {kd,a2d,imm,mtdnn,students}", "--search {random,grid,optuna}", "(default: random)",
                  "--max-concurrency N", "--members 3"],
        "distill": ["--baseline, --no-baseline", "(default: false)"],
    }
    for name, text in helps.items():
        for piece in expected[name]:
            assert piece in text, (name, piece)
        defaults = re.findall(r"\(default: ([^)]*)\)", text)
        assert defaults and not [d for d in defaults if re.search(r"None|True|False|^[(']", d)], (name, defaults)
        assert "--no-no-" not in text
    assert helps["mtdnn"].count("--no-teacher-multitask") == 2  # the usage line and the option, once each
    assert [user_value(v) for v in (None, True, False, ("squad", "news"), (), 0.5, 2e-5, "")] == [
        "none", "true", "false", "squad,news", "none", "0.5", "2e-05", "''"]
