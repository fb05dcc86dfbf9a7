"""The MLflow ``pyfunc`` of a distilled model, logged as code ("models from code": nothing pickled).

MLflow runs this file when the model is loaded (``mlflow.pyfunc.load_model``, ``mlflow models
serve``); ``set_model`` hands it the model object. ``kd_core`` travels with the model as code,
so loading needs the project's dependencies, not the project. The model's artifacts are the
``save_pretrained`` folder (``model``) and its serving description (``serving``,
:mod:`kd_core.serving`).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from kd_core.serving.predictor import Predictor


class DistilledModel(PythonModel):
    """A table of inputs in, a table of answers out (:class:`kd_core.serving.predictor.Predictor`)."""

    def load_context(self, context: PythonModelContext) -> None:
        self.predictor = Predictor.load(context.artifacts["model"], context.artifacts["serving"])

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        rows = [{k: v for k, v in row.items() if not (isinstance(v, float) and pd.isna(v))}
                for row in pd.DataFrame(model_input).to_dict("records")]
        return pd.DataFrame(self.predictor.predict(rows))


mlflow.models.set_model(DistilledModel())
