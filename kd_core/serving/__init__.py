"""A saved model answering raw inputs: its serving description (:mod:`~kd_core.serving.description`) and the
:class:`~kd_core.serving.predictor.Predictor` that the MLflow ``pyfunc`` (and any other server) calls."""
