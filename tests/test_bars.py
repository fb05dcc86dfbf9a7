"""No featurisation bars from library code: a pyfunc prediction and a worker's step print none (driver lines stay)."""

import pickle

import pytest
from datasets import Dataset
from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

from kd_core.data.domains import DataSettings
from kd_core.engine.execute import execute
from kd_core.engine.prepare import build_domain_workspace
from kd_core.engine.steps import EvaluateStep
from kd_core.io.bars import no_progress_bars
from kd_core.serving.description import serving_description
from kd_core.serving.predictor import Predictor


def _bar(text: str) -> bool:
    return "%|" in text or "featurize" in text or "Map" in text


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    settings = DataSettings(synthetic_domains=("sports", "finance"), synthetic_size=8, vocab_size=400)
    return build_domain_workspace(settings, 30, "shared", tmp_path_factory.mktemp("bars"))


@pytest.fixture(autouse=True)
def bars_on():
    """Bars on, as in a fresh worker or model server (another test may have turned them off)."""
    was = are_progress_bars_disabled()
    enable_progress_bars()
    yield
    if was:
        disable_progress_bars()


def test_a_datasets_map_draws_a_bar_unless_in_no_progress_bars(capfd):
    rows = Dataset.from_dict({"x": list(range(8))})
    rows.map(lambda batch: batch, batched=True, desc="featurize")
    assert _bar(capfd.readouterr().err)  # the control: this capture sees bars
    with no_progress_bars():
        with no_progress_bars():  # nested
            rows.map(lambda batch: batch, batched=True, desc="featurize")
        rows.map(lambda batch: batch, batched=True, desc="featurize")
    assert not _bar(capfd.readouterr().err)
    assert not are_progress_bars_disabled()  # back on after the block: the caller's choice is kept
    disable_progress_bars()
    with no_progress_bars():
        pass
    assert are_progress_bars_disabled()  # and off stays off


def test_a_pyfunc_prediction_prints_no_featurize_bar(ws, tmp_path, capfd):
    model, tokenizer = ws.task.build_model("tiny-bert", 0, ws.tokenizer("shared"))
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    predictor = Predictor(tmp_path / "model", serving_description(ws.task, ws.windows))
    capfd.readouterr()
    example = ws.examples("sports.dev")[0]
    answers = predictor.predict([{"question": example["question"], "context": example["context"]}] * 3)
    err = capfd.readouterr().err
    assert len(answers) == 3 and not _bar(err), err


def test_a_workers_step_featurising_its_split_prints_no_bar(ws, capfd):
    received = pickle.loads(pickle.dumps(ws))  # as a worker gets it: without the driver's features
    capfd.readouterr()
    result = execute(EvaluateStep("eval-bars", ("tiny-bert",), "shared", split="finance.dev"), received)
    err = capfd.readouterr().err
    assert result["kind"] == "evaluate" and not _bar(err), err
