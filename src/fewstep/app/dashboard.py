"""`python -m fewstep dashboard --entity E --project P [--group SWEEP]`: a W&B report of a sweep, built with the
wandb-workspaces library: FID (and its standard error) and truncation error against NFE with one line per
solver x schedule, the runs' schedule tables, their sample grids side by side, and a parallel-coordinates panel
(for Optuna sweeps over a schedule's settings). Online it saves the report and prints its URL; offline
(WANDB_MODE=offline or disabled, or no API key) it writes the report's specification to a JSON file instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path


def build_report(entity: str, project: str, group: str | None = None):
    import wandb_workspaces.reports.v2 as wr

    from fewstep.schedules.registry import search_names

    filters = f"Config('sweep_group') == '{group}'" if group else ""
    runs = wr.Runset(entity=entity, project=project, name=group or "all runs", filters=filters,
                     groupby=["solver.name", "schedule.name"])  # fmt: skip
    nfe = wr.Config("nfe")

    def against_nfe(metric: str, title: str):
        return wr.LinePlot(title=title, x=nfe, y=[wr.SummaryMetric(metric)], groupby_aggfunc="mean",
                           groupby_rangefunc="stderr", legend_template="${solver.name} ${schedule.name}")  # fmt: skip

    return wr.Report(
        project=project, entity=entity, title=f"fewstep: {group or project}",
        description="Few-step samplers compared: one line per solver x schedule (a multirun sweep of run.py).",
        blocks=[
            wr.H1("Quality against NFE"),
            wr.P("FID on images quantised as EDM scores them, its bootstrap standard error, and the truncation "
                 "error (mean L2 to the model's reference solution from the same noise)."),
            wr.PanelGrid(runsets=[runs], panels=[
                against_nfe("fid", "FID against NFE"), against_nfe("fid_std", "FID standard error against NFE"),
                against_nfe("truncation_error", "Truncation error against NFE"),
            ]),
            wr.H1("Schedules and samples"),
            wr.PanelGrid(runsets=[runs], panels=[
                wr.WeavePanelSummaryTable(table_name="schedule"),
                wr.MediaBrowser(title="Sample grids (same seeds)", media_keys=["samples"], num_columns=4),
                wr.MediaBrowser(title="Searched schedules", media_keys=search_names(), num_columns=4),
            ]),
            wr.H1("Settings against FID (Optuna sweeps)"),
            wr.PanelGrid(runsets=[runs], panels=[
                wr.ParallelCoordinatesPlot(title="Settings against FID", columns=[
                    wr.ParallelCoordinatesPlotColumn(metric=wr.Config(key))
                    for key in ("nfe", "schedule.coeff", "schedule.num_warmup")
                ] + [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric("fid"))]),
            ]),
        ],
    )  # fmt: skip


def specification(value):
    """A report as plain JSON values, every block and panel named by its type."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: specification(getattr(value, f.name)) for f in dataclasses.fields(value)
                  if not f.name.startswith("_")}  # fmt: skip
        return {"type": type(value).__name__, **fields}
    if isinstance(value, list | tuple):
        return [specification(v) for v in value]
    if isinstance(value, dict):
        return {str(k): specification(v) for k, v in value.items()}
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


def offline_reason() -> str | None:
    mode = os.environ.get("WANDB_MODE", "")
    if mode in ("offline", "disabled", "dryrun"):
        return f"WANDB_MODE={mode}"
    from fewstep.app.loggers import wandb_offline_reason

    return wandb_offline_reason({})


def main(entity: str, project: str, group: str | None, output: str) -> Path | str:
    report = build_report(entity, project, group)
    reason = offline_reason()
    if reason is None:
        report.save()
        print(f"report: {report.url}", flush=True)
        return report.url
    path = Path(output)
    from fewstep.utils.storage import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(specification(report), indent=1).encode())
    print(f"W&B is offline ({reason}): the report's specification is in {path}; run the same command online "
          "to save it", flush=True)  # fmt: skip
    return path
