"""Metrics as tables a reader takes in at a glance: the run's metrics, and the closing comparison of the run's
schedule with its baseline and the floor (the reference solution)."""

from __future__ import annotations


def number(value, digits: int = 4) -> str:
    """A float with `digits` significant figures (whole numbers from 10^digits up, never an exponent there);
    anything else as it is."""
    if not isinstance(value, float):
        return str(value)
    return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"


def with_std(metrics: dict, key: str, digits: int = 4) -> str:
    """`value ± std` when `<key>_std` is there, else the value; empty when the key is absent."""
    if key not in metrics:
        return ""
    std = metrics.get(f"{key}_std")
    return number(metrics[key], digits) + (f" ± {number(std, 2)}" if std is not None else "")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def metrics_table(metrics: dict) -> str:
    """Every scalar metric, one row each, `_std` folded into its metric as `± std`."""
    rows = []
    for key, value in metrics.items():
        if isinstance(value, list | dict) or (key.endswith("_std") and key[: -len("_std")] in metrics):
            continue
        rows.append([key, with_std(metrics, key) if isinstance(value, float) else str(value)])
    return markdown_table(["metric", "value"], rows)


def run_table(metrics: dict) -> str:
    """The closing comparison: the baseline schedule, the run's schedule, other searches' schedules
    (`eval.also_search`) and the floor (the reference solution) on the same seeds."""
    columns = {"fid": f"FID ({metrics.get('features')}) ± std", "kid": "KID ± std",
               "fid_vs_reference": "FID vs reference", "truncation_error": "truncation error ± s.e."}  # fmt: skip
    keys = [key for key in columns if key in metrics]  # what this run measured

    def row(name: str, prefix: str) -> list[str]:
        return [name, *(with_std(metrics, f"{prefix}{key}") or "-" for key in keys)]

    rows = []
    if "baseline_schedule" in metrics:
        rows.append(row(f"{metrics['baseline_schedule']} (baseline)", "baseline_"))
    rows.append(row(str(metrics.get("schedule", "")), ""))
    rows.extend(row(name, f"{name}_") for name in metrics.get("also_searched", []))
    if "reference" in metrics:  # against itself: no distance to the reference, no truncation error
        floor = {"fid_vs_reference": "0", "truncation_error": "0"}
        rows.append([f"floor: {metrics['reference']}",
                     *(floor.get(key) or with_std(metrics, f"{key}_reference") or "-" for key in keys)])  # fmt: skip
    header = ["schedule", *(columns[key] for key in keys)]
    title = (f"{metrics.get('solver')} at NFE {metrics.get('nfe')}, {metrics.get('num_samples')} samples "
             f"(seeds {metrics.get('seed', 0)}..{metrics.get('seed', 0) + metrics.get('num_samples', 1) - 1}), "
             f"{metrics.get('model')} on {metrics.get('dataset')}")  # fmt: skip
    return f"\n{title}\n" + markdown_table(header, rows)


def panel_title(metrics: dict, name: str, prefix: str) -> str:
    """`name: FID x ± s, truncation error t` for a sample grid."""
    keys = [key for key in ("fid", "truncation_error") if prefix + key in metrics]
    parts = [f"{key} {with_std(metrics, prefix + key)}" for key in keys]
    return f"{name}: " + ", ".join(parts) if parts else name
