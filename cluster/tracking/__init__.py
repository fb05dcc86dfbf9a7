"""MLflow tracking shared by the jobs, the tuning code and the Ray workers.

* :mod:`~cluster.tracking.uris`: tracking URIs made absolute (and refused when unusable);
* :mod:`~cluster.tracking.runs`: :class:`RunRef` handles and the :class:`Tracker` (run trees
  tagged ``kd_job_id``, params, metrics, artifacts; safe in actors and trials);
* :mod:`~cluster.tracking.charts`: bar chart, grouped bar chart, heat map, line chart, scatter panels.
"""

from cluster.tracking.charts import bar_chart, grouped_bar_chart, heatmap, labelled_scatter, line_chart, scatter_panels
from cluster.tracking.runs import JOB_ID_TAG, RunRef, Tracker, flatten_params, mlflow_name
from cluster.tracking.uris import DEFAULT_DB_NAME, check_tracking_uri, default_tracking_uri, resolve_tracking_uri

__all__ = [
    "DEFAULT_DB_NAME", "JOB_ID_TAG", "RunRef", "Tracker", "bar_chart", "grouped_bar_chart", "check_tracking_uri", "default_tracking_uri",
    "flatten_params", "heatmap", "labelled_scatter", "line_chart", "mlflow_name", "resolve_tracking_uri", "scatter_panels",
]
