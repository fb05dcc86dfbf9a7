"""The shared value checks: no NaN or infinity in a config, no YAML key twice, names safe for folders."""

from dataclasses import dataclass

import pytest
import yaml

from jobs.kd import KDJobConfig
from kd_core.evaluation.squad_files import load_na_scores
from kd_core.io.config_files import read_config_file
from kd_core.io.errors import ConfigError, DataError
from kd_core.io.values import check_finite, check_name
from kd_core.io.yaml_files import load_yaml
from kd_core.training.loop import TrainConfig


@dataclass(frozen=True)
class Settings:
    tau: float = 2.0
    epochs: int = 3
    weights: tuple[float, ...] = (1.0, 0.5)
    name: str = "nan"  # a string that spells nan is a name, not a number


@pytest.mark.parametrize("field, value", [("tau", float("nan")), ("tau", float("inf")), ("tau", -float("inf")),
                                          ("weights", (1.0, float("nan")))])
def test_a_non_finite_number_is_refused_naming_its_field(field, value):
    with pytest.raises(ConfigError) as err:
        check_finite(Settings(**{field: value}), "kd")
    assert (err.value.source, err.value.where) == ("kd", field) and "must be a finite number" in err.value.what


def test_finite_values_and_strings_pass():
    check_finite(Settings(tau=1e300, epochs=10**12, weights=(), name="inf"), "kd")


@pytest.mark.parametrize("build", [lambda: TrainConfig(learning_rate=float("nan")),
                                   lambda: TrainConfig(epochs=float("inf")),
                                   lambda: KDJobConfig(alpha=float("nan")),
                                   lambda: KDJobConfig(tau=float("nan"))])
def test_configs_built_from_python_refuse_nan_that_their_range_checks_would_pass(build):
    """``nan > 0`` and ``nan < 0`` are both false: without the shared check NaN passed such range checks."""
    with pytest.raises(ConfigError, match="must be a finite number"):
        build()


def test_a_yaml_key_given_twice_is_refused_with_its_line_also_when_nested():
    assert load_yaml("tau: 2\nspace:\n  tau: [1, 2]\n", "f.yaml") == {"tau": 2, "space": {"tau": [1, 2]}}
    with pytest.raises(ConfigError) as err:
        load_yaml("tau: 2\nspace:\n  alpha: 1\n  alpha: 2\n", "f.yaml")
    assert str(err.value) == "f.yaml: line 4: key 'alpha' is given twice (the earlier value would be dropped)"
    with pytest.raises(ConfigError, match="line 3: key 'a'"):
        load_yaml("- {a: 1, b: 2}\n- {a: 1,\n   a: 3}\n", "f.yaml")


def test_the_yaml_loader_stays_safe():
    with pytest.raises(yaml.YAMLError):
        load_yaml("!!python/object/apply:os.system ['true']\n", "f.yaml")


@pytest.mark.parametrize("name", ["sports", "squad_v1.1", "news-2", "A"])
def test_safe_names_pass(name):
    assert check_name(name, "domains", name) == name


@pytest.mark.parametrize("name", ["a/b", "..", "a..b", ".hidden", "my domain", "", "x\n", "é"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(ConfigError, match="is not a usable name"):
        check_name(name, "domains", name)


def test_a_json_config_file_refuses_a_key_given_twice(tmp_path):
    path = tmp_path / "kd.json"
    path.write_text('{"tau": 2, "space": {"alpha": 1, "alpha": 2}}')
    with pytest.raises(ConfigError) as err:
        read_config_file(path)
    assert (err.value.where, err.value.what) == ("alpha", "is given twice (the earlier value would be dropped)")


def test_no_answer_scores_must_be_finite(tmp_path):
    path = tmp_path / "na.json"
    path.write_text('{"q1": 0.5, "q2": NaN}')  # Python's json reads NaN
    with pytest.raises(DataError, match="id q2: expected a finite number, got nan"):
        load_na_scores(path)
