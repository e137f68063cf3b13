"""Sweep summaries: after `python run.py -m ...`, a table, plots and a sample comparison in the sweep directory.

`SweepSummary` is a Hydra callback (conf/hydra/default.yaml). It reads every job's metrics.json and writes
- `summary.csv`: one row per job, every scalar metric;
- `summary.md`: per metric of `sweep.metrics` (default fid, truncation_error) a table with rows solver / schedule,
  columns NFE, cells `value ± std` (the job's `<metric>_std`; the mean ± std over jobs where several share a cell),
  the best of each column in bold, a floor row (the reference solution), and a caption naming the sample count,
  the feature space, the model and the dataset;
- `<metric>_vs_nfe.png`: one colour per solver, one line style per schedule, the floor as a line;
- `samples_compare.png`: one row per job, the same first seeds, so schedules are compared by eye.
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
from collections import defaultdict
from pathlib import Path

from hydra.experimental.callback import Callback

from fewstep.app.reporting import number
from fewstep.utils.storage import atomic_write_bytes

log = logging.getLogger(__name__)

_TABLE_AXES = ("solver", "schedule", "nfe")
LABELS = {
    "fid": "FID",
    "fd": "FD (pixels)",
    "kid": "KID",
    "truncation_error": "truncation error (mean L2 to the reference solution)",
    "fid_vs_reference": "FID to the reference solution",
}


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
    for path in sorted(Path(sweep_dir).glob("*/metrics.json"), key=lambda p: _job_number(p.parent.name)):
        metrics = {k: v for k, v in json.loads(path.read_text()).items() if not isinstance(v, list)}
        jobs.append((path.parent.name, metrics, _overrides(path.parent)))
    keys = {k for _, _, o in jobs for k in o if k not in _TABLE_AXES}
    varying = sorted(k for k in keys if len({o.get(k) for _, _, o in jobs}) > 1)
    return [{"job": name, "variant": " ".join(f"{k}={o.get(k)}" for k in varying), **metrics}
            for name, metrics, o in jobs]  # fmt: skip


def _job_number(name: str) -> tuple[int, str]:
    head = name.split("_", 1)[0]
    return (int(head), name) if head.isdigit() else (1 << 30, name)


def write_csv(rows: list[dict], path: Path) -> None:
    import io

    columns = list(dict.fromkeys(k for row in rows for k in row))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode())


def _row_label(row: dict) -> tuple[str, str]:
    schedule = f"{row['schedule']} {row['variant']}".strip() if row.get("variant") else row["schedule"]
    return row["solver"], schedule


def pivot(rows: list[dict], metric: str) -> tuple[list[int], dict[tuple[str, str], dict[int, tuple[float, float]]]]:
    """(NFEs, {(solver, schedule): {nfe: (value, std)}}): a job's value and `<metric>_std` (NaN when absent), or the
    mean and std over the jobs that share a cell."""
    cells: dict[tuple[str, str], dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if metric in row and row[metric] not in ("", None):
            cells[_row_label(row)][int(row["nfe"])].append(row)
    table = {}
    for label, by_nfe in cells.items():
        table[label] = {}
        for nfe, jobs in by_nfe.items():
            values = [float(job[metric]) for job in jobs]
            if len(values) == 1:
                table[label][nfe] = (values[0], float(jobs[0].get(f"{metric}_std", "nan") or "nan"))
            else:
                table[label][nfe] = (statistics.fmean(values), statistics.stdev(values))
    nfes = sorted({nfe for cells_ in table.values() for nfe in cells_})
    return nfes, dict(sorted(table.items()))


def floor(rows: list[dict], metric: str) -> dict[int, tuple[float, float]]:
    """Per NFE, the reference solution's value of the metric (`<metric>_reference`); 0 for the truncation error,
    which is measured against it."""
    found: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        if metric == "truncation_error" and metric in row:
            found[int(row["nfe"])].append((0.0, float("nan")))
        elif f"{metric}_reference" in row:
            std = row.get(f"{metric}_reference_std", "nan")
            found[int(row["nfe"])].append((float(row[f"{metric}_reference"]), float(std if std != "" else "nan")))
    return {nfe: (statistics.fmean(v for v, _ in pairs), pairs[0][1]) for nfe, pairs in found.items()}


def _cell(value: float, std: float) -> str:
    return number(value) + ("" if std != std else f" ± {number(std, 2)}")  # std != std: NaN, no spread known


def markdown(nfes: list[int], table: dict, metric: str, floors: dict | None = None, caption: str = "") -> str:
    lines = [f"**{LABELS.get(metric, metric)}** (rows: solver / schedule, columns: NFE; lower is better, the best of "
             "each column in bold)", ""]  # fmt: skip
    lines += ["| solver | schedule | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
    best = {n: min((cells[n][0] for cells in table.values() if n in cells), default=None) for n in nfes}
    for (solver, schedule), cells in table.items():
        values = []
        for n in nfes:
            text = _cell(*cells[n]) if n in cells else ""
            values.append(f"**{text}**" if n in cells and len(table) > 1 and cells[n][0] == best[n] else text)
        lines.append(f"| {solver} | {schedule} | " + " | ".join(values) + " |")
    if floors:
        lines.append("| floor | reference solution | " + " | ".join(_cell(*floors[n]) if n in floors else ""
                                                                      for n in nfes) + " |")  # fmt: skip
    if caption:
        lines += ["", caption]
    return "\n".join(lines) + "\n"


def describe(rows: list[dict]) -> str:
    """The caption: sample count, feature space, model and dataset (each listed once, or all that occur)."""

    def values(key: str) -> str:
        found = list(dict.fromkeys(str(row[key]) for row in rows if key in row and row[key] != ""))
        return "/".join(found) if found else "?"

    return (f"{values('num_samples')} samples per job (seeds from {values('seed')}), FID in the {values('features')} "
            f"feature space, model {values('model')} on {values('dataset')}; ± is the bootstrap standard error of "
            "the FID, the standard error of the mean truncation error, the std over subsets of KID.")  # fmt: skip


def plot(table: dict, metric: str, path: Path, floors: dict | None = None, title: str = "") -> None:
    from matplotlib.ticker import ScalarFormatter

    from fewstep.app.plots import pyplot, save_figure

    plt = pyplot()
    solvers = list(dict.fromkeys(solver for solver, _ in table))
    schedules = list(dict.fromkeys(schedule for _, schedule in table))
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    all_nfes = sorted({n for cells in table.values() for n in cells})
    spacing = min((b - a for a, b in zip(all_nfes, all_nfes[1:], strict=False)), default=1)
    for k, ((solver, schedule), cells) in enumerate(table.items()):
        nfes = sorted(cells)
        dodge = (k - (len(table) - 1) / 2) * 0.12 * spacing / max(len(table), 1)  # error bars side by side
        values = [cells[n][0] for n in nfes]
        errors = [0 if cells[n][1] != cells[n][1] else cells[n][1] for n in nfes]
        ax.errorbar([n + dodge for n in nfes], values, yerr=errors, marker="o", ms=4, capsize=3,
                    label=f"{solver} / {schedule}", color=f"C{solvers.index(solver) % 10}",
                    linestyle=styles[schedules.index(schedule) % len(styles)])  # fmt: skip
    positive_floor = [v for v, _ in (floors or {}).values() if v > 0]
    if positive_floor:
        ax.axhline(statistics.fmean(positive_floor), color="k", lw=1, alpha=0.6, label="floor (reference solution)")
    ax.set(xlabel="NFE", ylabel=LABELS.get(metric, metric), yscale="log", title=title or f"{metric} vs NFE")
    ax.set_xticks(all_nfes)  # the NFEs of the sweep, as integers
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.legend(fontsize=8, ncol=2 if len(table) > 6 else 1)
    ax.grid(alpha=0.3, which="both")
    save_figure(fig, path, dpi=110)


def compare_samples(sweep_dir: Path, rows: list[dict], path: Path, count: int = 10) -> Path | None:
    """One row per job (in job order), the same first `count` seeds of each, labelled solver / schedule / NFE."""
    from fewstep.app.plots import image_grid, pyplot, save_figure
    from fewstep.app.shards import ShardStore

    strips = []
    for row in rows:
        stores = sorted((sweep_dir / row["job"] / "samples").glob("*/"))
        if not stores:
            continue
        first = int(row.get("seed", 0) or 0)
        wanted = list(range(first, first + min(count, int(row.get("num_samples", count)))))
        try:
            images = ShardStore(stores[0]).load(wanted)
        except Exception as err:  # a job that failed half-way: leave its row out, say so
            log.warning("samples_compare: no samples for %s (%s)", row["job"], err)
            continue
        label = f"{row['solver']} / {row['schedule']} {row.get('variant', '')}".strip() + f" / NFE {row['nfe']}"
        strips.append((label, image_grid(images, nrow=len(wanted))))
    if not strips:
        return None
    height, width = strips[0][1].shape[:2]
    scale = 7.0 / width
    fig, axes = pyplot().subplots(len(strips), 1, figsize=(9.5, len(strips) * height * scale + 0.3), squeeze=False)
    for ax, (label, strip) in zip(axes[:, 0], strips, strict=True):
        ax.imshow(strip, cmap="gray" if strip.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.subplots_adjust(left=0.28, right=0.99, top=0.99, bottom=0.01, hspace=0.08)
    return save_figure(fig, path, dpi=110, tight=False)


def summarize(sweep_dir: str | Path, metrics: list[str] | tuple[str, ...] = ("fid", "truncation_error")) -> Path | None:
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    if not rows:
        log.warning("no metrics.json under %s: no sweep summary", sweep_dir)
        return None
    write_csv(rows, sweep_dir / "summary.csv")
    caption = describe(rows)
    sections = []
    for metric in metrics:
        nfes, table = pivot(rows, metric)
        if not table:
            log.warning("sweep summary: no job reports %r", metric)
            continue
        floors = floor(rows, metric)
        sections.append(markdown(nfes, table, metric, floors))
        space = describe_space(rows, metric)
        plot(table, metric, sweep_dir / f"{metric}_vs_nfe.png", floors, f"{LABELS.get(metric, metric)} vs NFE{space}")
    text = "\n".join(sections) + f"\n{caption}\n"
    atomic_write_bytes(sweep_dir / "summary.md", text.encode())
    compare_samples(sweep_dir, rows, sweep_dir / "samples_compare.png")
    print(text, flush=True)
    print(f"sweep summary: {sweep_dir / 'summary.md'}", flush=True)
    return sweep_dir / "summary.md"


def describe_space(rows: list[dict], metric: str) -> str:
    if not metric.startswith(("fid", "kid")):
        return ""
    spaces = list(dict.fromkeys(str(row["features"]) for row in rows if row.get("features")))
    return f" ({'/'.join(spaces)} features)" if spaces else ""


class SweepSummary(Callback):
    def __init__(self, metrics: list[str] | None = None):
        self.metrics = list(metrics) if metrics else None

    def on_multirun_end(self, config, **kwargs) -> None:
        metrics = self.metrics or list(config.get("sweep", {}).get("metrics") or ["fid", "truncation_error"])
        summarize(config.hydra.sweep.dir, metrics)
