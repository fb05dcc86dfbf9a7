"""Trained models as MLflow *logged models*: listed under Models, linked to their run, servable.

Each model is an MLflow ``pyfunc`` (:mod:`cluster.tracking.pyfunc_model`, logged as code, with
``kd_core`` as its code) whose artifacts are the Hugging Face ``save_pretrained`` folder and
the serving description of :mod:`kd_core.serving`; its signature says which columns it reads
and writes. ``mlflow.pyfunc.load_model("models:/<model_id>")`` or ``mlflow models serve -m
models:/<model_id> --env-manager local`` answer tables of questions and contexts (span QA) or
texts (classification, regression). Only the client API is used (no process-global active run),
so the driver can log models of many runs. A model can also be registered under a name
(a new version of that registered model each time).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import LoggedModelOutput, Metric
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

import kd_core
from kd_core.serving.description import SERVING_FILE

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
#: What the model needs at load time (the packages ``kd_core.serving`` imports).
REQUIREMENTS = ("torch", "transformers", "tokenizers", "datasets", "numpy", "pandas", "pyarrow", f"mlflow=={mlflow.__version__}")


@contextmanager
def _quiet() -> Iterator[None]:
    """No INFO line and no copy progress bar per saved model (noise in a job's log that logs dozens)."""
    log = logging.getLogger("mlflow.pyfunc")
    level, bar = log.level, os.environ.get(_PROGRESS_BAR_ENV)
    log.setLevel(logging.WARNING)
    os.environ[_PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        log.setLevel(level)
        if bar is None:
            os.environ.pop(_PROGRESS_BAR_ENV, None)
        else:
            os.environ[_PROGRESS_BAR_ENV] = bar


def signature_for(task: Mapping[str, Any]) -> ModelSignature:
    """Input and output columns of a model of the described task (:mod:`kd_core.serving`'s module doc)."""
    kind = task["kind"]
    if kind == "span_qa":
        return ModelSignature(Schema([ColSpec("string", "question"), ColSpec("string", "context")]),
                              Schema([ColSpec("string", "answer"), ColSpec("double", "score")]))
    inputs = [ColSpec("string", "text"), ColSpec("string", "text_pair", required=bool(task.get("pair")))]
    if kind == "multitask":
        return ModelSignature(Schema([ColSpec("string", "task"), inputs[0], ColSpec("string", "text_pair", required=False)]),
                              Schema([ColSpec("string", "task"), ColSpec("string", "label", required=False),
                                      ColSpec("double", "probability", required=False),
                                      ColSpec("double", "score", required=False)]))
    if kind == "regression":
        return ModelSignature(Schema(inputs), Schema([ColSpec("double", "score")]))
    return ModelSignature(Schema(inputs), Schema([ColSpec("string", "label"), ColSpec("double", "probability")]))


def log_served_model(client: mlflow.MlflowClient, experiment_id: str, run_id: str, name: str, model_dir: str | Path,
                     description: Mapping[str, Any], input_example: Mapping[str, str],
                     tags: Mapping[str, str] | None = None, registered_name: str | None = None,
                     metrics: Mapping[str, float] | None = None, params: Mapping[str, str] | None = None) -> str:
    """Log ``model_dir`` as a pyfunc logged model of run ``run_id`` and one of its outputs; returns its model id
    (``models:/<id>``). ``metrics`` (e.g. its dev scores) and ``params`` are shown on the model's page too.

    ``input_example`` (one input row) is stored with the model, as the UI and serving docs show it.
    """
    logged = client.create_logged_model(experiment_id, name=name, source_run_id=run_id, tags=dict(tags or {}),
                                        model_type="pyfunc")
    try:
        with tempfile.TemporaryDirectory(prefix="kd-pyfunc-") as tmp:
            serving = Path(tmp) / SERVING_FILE
            serving.write_text(json.dumps(description, indent=1))
            saved = Path(tmp) / "model"
            with warnings.catch_warnings(), _quiet():
                # MLflow 3.17 compares the example's columns with a range (mlflow/models/utils.py,
                # _convert_dataframe_to_split_dict), which pandas 3 deprecates: MLflow's line, not ours.
                warnings.filterwarnings("ignore", message="Operation with range is deprecated", module="mlflow")
                mlflow.pyfunc.save_model(
                    str(saved), python_model=str(PYFUNC_CODE),
                    artifacts={"model": str(model_dir), "serving": str(serving)},
                    code_paths=[str(Path(kd_core.__file__).parent)], signature=signature_for(description["task"]),
                    input_example=pd.DataFrame([dict(input_example)]), pip_requirements=list(REQUIREMENTS),
                    mlflow_model=mlflow.models.Model(model_id=logged.model_id))
            client.log_model_artifacts(logged.model_id, str(saved))
    except BaseException:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, "READY")
    if params:
        client.log_model_params(logged.model_id, {k: str(v) for k, v in params.items()})
    if metrics:
        stamp = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0, model_id=logged.model_id)
                                          for k, v in metrics.items()])
    # The run's outputs name the model: its page lists it under "Logged models" (source_run_id alone does not).
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, 0)])
    if registered_name:
        # The logged model's own location as source: a models:/ source would be looked up in the process's
        # default store, not this client's.
        client.create_model_version(registered_name, logged.artifact_location, run_id=run_id, model_id=logged.model_id)
    return logged.model_id
