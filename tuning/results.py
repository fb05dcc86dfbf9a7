"""A sweep's results: per-trial table, the best trial (its model copied), CSV, plot and MLflow logging."""

from __future__ import annotations

import shutil
from typing import Any

from cluster.tracking import RunRef, Tracker, scatter_panels
from kd_core.io.run_store import RunStore
from tuning.config import Prepared, SweepConfig
from tuning.trials import TRIAL_OUTPUT


def summarise(config: SweepConfig, p: Prepared, grid: Any, store: RunStore, passes: int) -> dict[str, Any]:
    """The sweep's summary; the best trial's output model is copied to ``best/`` in the sweep's run directory."""
    trials = []
    for result in grid:
        history = result.metrics_dataframe
        values = [] if history is None or config.metric not in history else list(history[config.metric].dropna())
        trials.append({
            "trial_id": result.metrics.get("trial_id") if result.metrics else None,
            "config": {k: result.config[k] for k in p.space},
            "best": max(values) if values else None,
            "last": values[-1] if values else None,
            "reports": len(values),
            "error": str(result.error).splitlines()[0] if result.error else None,
            "path": result.path,
        })
    finished = [t for t in trials if t["best"] is not None]
    if not finished:
        errors = [t["error"] for t in trials if t["error"]]
        raise RuntimeError(f"no trial reported {config.metric}; first error: {errors[0] if errors else 'none'}")
    best = max(finished, key=lambda t: t["best"])
    output, best_dir = store.local_root / "trials" / best["trial_id"] / TRIAL_OUTPUT, store.local_root / "best"
    if store.pull(output):  # fetched from the store when the run directory is a URI
        shutil.copytree(output, best_dir)
        store.push(best_dir)
    return {
        "method": config.method, "metric": config.metric, "best_config": best["config"], "best_metric": best["best"],
        "best_trial": best["trial_id"], "best_model": store.location_of(best_dir), "trials": len(trials),
        "stopped_early": sum(1 for t in finished if t["reports"] < p.horizon(t["config"])), "failed": sum(1 for t in trials if t["error"]),
        "max_t": p.max_t, "teacher_passes": passes, "trial_results": trials,
    }


def log_results(tracker: Tracker, parent: RunRef, p: Prepared, summary: dict[str, Any], store: RunStore) -> None:
    rows = [{"trial_id": t["trial_id"], **t["config"], f"best_{summary['metric']}": t["best"],
             f"last_{summary['metric']}": t["last"], "reports": t["reports"], "error": t["error"] or ""}
            for t in summary["trial_results"]]
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(_csv(row[c]) for c in columns) for row in rows]
    table = store.local_root / "trials.csv"
    table.write_text("\n".join(lines) + "\n")
    store.push(table)
    tracker.log_artifact(parent, table)
    finished = [t for t in summary["trial_results"] if t["best"] is not None]
    points = {name: ([t["config"][name] for t in finished], [t["best"] for t in finished]) for name in p.space}
    log_x = [name for name, param in p.space.items() if param.kind == "loguniform"]
    tracker.log_figure(parent, scatter_panels(points, f"best {summary['metric']}",
                                              f"{summary['method']} sweep: {summary['trials']} trials", log_x),
                       "plots/metric_vs_hyperparameters.png")
    tracker.log_params(parent, {f"best/{k}": v for k, v in summary["best_config"].items()})
    tracker.log_metrics(parent, {f"best_{summary['metric']}": summary["best_metric"], "trials": summary["trials"],
                                 "teacher_passes": summary["teacher_passes"], "stopped_early": summary["stopped_early"]})
    tracker.log_dict(parent, summary, "summary.json")


def _csv(value: Any) -> str:
    text = "" if value is None else str(value)
    return f'"{text}"' if "," in text or '"' in text else text




def format_summary(summary: dict[str, Any]) -> str:
    metric = summary["metric"]
    lines = [f"{'trial':<12} {'config':<52} {'best ' + metric:>14} {'reports':>8}"]
    for t in sorted(summary["trial_results"], key=lambda t: -(t["best"] if t["best"] is not None else -1)):
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["config"].items())
        best = "failed" if t["best"] is None else f"{t['best']:.2f}"
        lines.append(f"{str(t['trial_id']):<12} {shown:<52} {best:>14} {t['reports']:>8}")
    lines.append(f"best {metric} {summary['best_metric']:.2f} with {summary['best_config']} "
                 f"(model in {summary['best_model']})")
    lines.append(f"{summary['trials']} trials, {summary['stopped_early']} stopped early by ASHA, "
                 f"teacher passes over the training data: {summary['teacher_passes']}")
    lines.append(f"MLflow run {summary['mlflow_run_id']} in {summary['tracking_uri']}")
    lines.append(f"run dir: {summary['run_dir']} ({summary['seconds']} s)")
    return "\n".join(lines)
