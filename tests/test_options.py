"""Command-line options generated from config dataclasses: types, booleans, lists, aliases, errors."""

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs.a2d import A2DJobConfig
from jobs.imm import IMMJobConfig
from kd_core.io.config_files import build_config, read_config_file
from kd_core.io.errors import ConfigError
from kd_core.io.options import add_options, config_from_cli, option


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


@pytest.mark.parametrize("name", ["imm_mrqa_domains.yaml", "a2d_xquad.yaml"])
def test_shipped_config_files_are_valid_options_of_their_job(name):
    """A renamed option or a value of the wrong type in a shipped config file fails here, not in a user's run."""
    path = Path(__file__).resolve().parents[1] / "configs" / name
    job = {"imm": IMMJobConfig, "a2d": A2DJobConfig}[name.split("_")[0]]
    values = read_config_file(path)
    config = build_config(job, values, {}, str(path))
    assert {key: getattr(config, key) for key in values} == {
        key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
