"""MLflow tracking shared by the jobs, the tuning code and the Ray workers.

* :mod:`~cluster.tracking.uris`: tracking URIs made absolute (and refused when unusable);
* :mod:`~cluster.tracking.runs`: :class:`RunRef` handles and the :class:`Tracker` (run trees
  tagged ``kd_job_id``, params, metrics, artifacts; safe in actors and trials);
* :mod:`~cluster.tracking.charts`: bar chart, grouped bar chart, heat map, line chart, scatter panels.

A name is imported from its submodule when it is first asked for (:func:`__getattr__`), so
``from cluster.tracking import check_tracking_uri`` loads neither MLflow nor matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Each public name and the submodule that defines it.
_HOMES = {
    **dict.fromkeys(("bar_chart", "grouped_bar_chart", "heatmap", "labelled_scatter", "line_chart", "scatter_panels"),
                    "charts"),
    **dict.fromkeys(("JOB_ID_TAG", "RunRef", "Tracker", "flatten_params", "mlflow_name"), "runs"),
    **dict.fromkeys(("DEFAULT_DB_NAME", "check_tracking_uri", "default_tracking_uri", "resolve_tracking_uri"), "uris"),
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """The public ``name`` from its submodule (imported on first use; module doc)."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
