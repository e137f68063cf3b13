"""Sweep summaries: after `python run.py -m ...`, one table and one plot in the sweep directory.

`SweepSummary` is a Hydra callback (conf/hydra/default.yaml). It reads every job's metrics.json and writes
`summary.csv` (one row per job, every scalar metric), `summary.md` (rows solver x schedule, columns NFE, cells
the chosen metric) and `<metric>_vs_nfe.png`.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)


_TABLE_AXES = ("solver", "schedule", "nfe")


def _overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    return dict(item.split("=", 1) for item in OmegaConf.load(path) if "=" in item)


def collect(sweep_dir: Path) -> list[dict]:
    """One row per job; overrides that vary across the sweep (other than the table's axes) become a `variant`,
    so jobs that differ only in them (an Optuna sweep over schedule.coeff, say) stay apart."""
    jobs = []
    for path in sorted(Path(sweep_dir).glob("*/metrics.json")):
        metrics = {k: v for k, v in json.loads(path.read_text()).items() if not isinstance(v, list)}
        jobs.append((path.parent.name, metrics, _overrides(path.parent)))
    keys = {k for _, _, o in jobs for k in o if k not in _TABLE_AXES}
    varying = sorted(k for k in keys if len({o.get(k) for _, _, o in jobs}) > 1)
    return [{"job": name, "variant": " ".join(f"{k}={o.get(k)}" for k in varying), **metrics}
            for name, metrics, o in jobs]  # fmt: skip


def write_csv(rows: list[dict], path: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def pivot(rows: list[dict], metric: str) -> tuple[list[int], dict[tuple[str, str], dict[int, float]]]:
    table: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for row in rows:
        if metric in row:
            schedule = f"{row['schedule']} {row['variant']}".strip() if row.get("variant") else row["schedule"]
            table[(row["solver"], schedule)][int(row["nfe"])] = float(row[metric])
    nfes = sorted({nfe for cells in table.values() for nfe in cells})
    return nfes, dict(sorted(table.items()))


def markdown(nfes: list[int], table: dict, metric: str) -> str:
    lines = [
        f"{metric} (rows: solver / schedule, columns: NFE)",
        "",
        "| solver | schedule | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
        "|---|---|" + "---|" * len(nfes),
    ]
    for (solver, schedule), cells in table.items():
        values = [f"{cells[n]:.4g}" if n in cells else "" for n in nfes]
        lines.append(f"| {solver} | {schedule} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def plot(table: dict, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (solver, schedule), cells in table.items():
        nfes = sorted(cells)
        ax.plot(nfes, [cells[n] for n in nfes], marker="o", label=f"{solver} / {schedule}")
    ax.set(xlabel="NFE", ylabel=metric, yscale="log", title=f"{metric} vs NFE")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize(sweep_dir: str | Path, metric: str = "fd") -> Path | None:
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    if not rows:
        log.warning("no metrics.json under %s: no sweep summary", sweep_dir)
        return None
    write_csv(rows, sweep_dir / "summary.csv")
    nfes, table = pivot(rows, metric)
    (sweep_dir / "summary.md").write_text(markdown(nfes, table, metric))
    plot(table, metric, sweep_dir / f"{metric}_vs_nfe.png")
    print(markdown(nfes, table, metric), flush=True)
    print(f"sweep summary: {sweep_dir / 'summary.md'}", flush=True)
    return sweep_dir / "summary.md"


class SweepSummary(Callback):
    def __init__(self, metric: str = "fd"):
        self.metric = metric

    def on_multirun_end(self, config, **kwargs) -> None:
        summarize(config.hydra.sweep.dir, self.metric)
