"""Section `heldout`: every hand-crafted schedule and every search on denoisers the searches were not developed on.

Denoisers: two Gaussian mixtures in 64-D drawn from a seed (exact posterior means, full covariances; a new seed per
run unless --heldout-seed), the digits KDE, the mnist5k KDE, with --heldout-unet the shipped U-Net and with
--heldout-flow the shipped rectified flow (flow_mnist5k, over [0.002, 999], with schedule=flow at shift 1 and 3 among
the hand-crafted schedules; --heldout-only NAME ... keeps the denoisers named). For every
deterministic solver (--solvers) at every NFE (--nfes): the truncation error (mean L2 to a Heun-100 reference from
the same noise, --heldout-samples seeds 0..N-1) of each range-free hand-crafted schedule, GITS, oss and ld3 (at
their shipped defaults, or with --heldout-searches the searches and settings named, e.g. oss:polish=32), each
search's ratio to the best hand-crafted schedule of the cell with the paired per-seed standard error of the
difference, and each search's cost (model evaluations in GITS reference warm-ups of 256 x 60, seconds). GITS's
warm-up is shared by a denoiser's cells (cached): its cost is counted in the cell that ran it, and
a schedule reused from the cache (GITS's cells with the same step count) costs nothing in its cell.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

import torch

SEARCHES = ("gits", "oss", "ld3")


def search_variant(text: str) -> str:
    """A search as `--heldout-searches` names it: a registered search, optionally with settings after a colon
    (`oss:polish=32,polish_batch=4`); checked here, so that a typo is one line before any work."""
    method, settings = parse_variant(text)
    from fewstep.schedules.registry import get_search

    try:
        get_search(method).settings(settings)
    except Exception as error:  # argparse turns it into one usage line
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def parse_variant(text: str) -> tuple[str, dict]:
    import yaml

    method, _, rest = text.partition(":")
    settings = {}
    for item in filter(None, rest.split(",")):
        key, equals, value = item.partition("=")
        if not equals:
            raise argparse.ArgumentTypeError(f"{text!r}: settings are key=value, e.g. oss:polish=32")
        settings[key.strip()] = yaml.safe_load(value)
    return method, settings


EDM_RANGE = (0.002, 80.0)
FLOW_RANGE = (0.002, 999.0)  # the flow configs' (t_max = 0.999)
FLOW_SCHEDULES = {"flow": {}, "flow shift 3": {"shift": 3.0}}  # hand-crafted schedules of flows, beside RANGE_FREE


def heldout_denoisers(seed: int, unet: bool, flow: bool = False, only: tuple[str, ...] = ()) -> list[tuple]:
    """(name, denoiser, data for the AFS prior's moments, sigma range, extra hand-crafted schedules) of each
    held-out denoiser: the mixtures and KDEs, unet_mnist5k with `unet`, flow_mnist5k with `flow`; `only` (names)
    keeps those alone, the learned ones included."""
    from fewstep.data import digits, mnist5k
    from fewstep.models import KDEDenoiser, load_unet
    from fewstep.models.mixture import GaussianMixtureDenoiser

    def mixture(offset: int):
        found = GaussianMixtureDenoiser.random(seed + offset, components=8, shape=(1, 8, 8))
        moments = found.sample(2000, torch.Generator().manual_seed(seed)).float()
        return found, moments, EDM_RANGE, {}

    data = mnist5k()
    makers = {
        f"mixture (seed {seed})": lambda: mixture(0),
        f"mixture (seed {seed + 1})": lambda: mixture(1),
        "digits KDE": lambda: (lambda small: (KDEDenoiser(small), small, EDM_RANGE, {}))(digits().images),
        "mnist5k KDE": lambda: (KDEDenoiser(data.images), data.images, EDM_RANGE, {}),
        "unet_mnist5k": lambda: (load_unet("unet_mnist5k.pt"), data.images, EDM_RANGE, {}),
        "flow_mnist5k": lambda: (load_unet("flow_mnist5k.pt"), data.images, FLOW_RANGE, FLOW_SCHEDULES),
    }
    unknown = sorted(set(only) - set(makers))
    if unknown:
        raise SystemExit(f"--heldout-only {' '.join(unknown)}: the held-out denoisers are {', '.join(makers)}")
    learned = {"unet_mnist5k": unet, "flow_mnist5k": flow}
    chosen = [name for name in makers if (name in only if only else learned.get(name, True))]
    return [(name, *makers[name]()) for name in chosen]


def heldout(solvers, nfes, num_samples: int = 256, seed: int | None = None, unet: bool = False, flow: bool = False,
            only: tuple[str, ...] = (), searches: tuple[str, ...] = SEARCHES) -> None:  # fmt: skip
    import fewstep
    from fewstep.schedules import RANGE_FREE, make_schedule, polynomial
    from fewstep.schedules.oss.method import paired_difference
    from fewstep.solvers import SOLVERS, plan_steps

    seed = int(time.time()) % 100_000 if seed is None else int(seed)
    seeds = list(range(num_samples))
    print(f"\n## Held-out denoisers: hand-crafted schedules and searches ({num_samples} samples, truncation error to "
          f"a Heun-100 reference; mixtures from seed {seed})\n")  # fmt: skip
    summary = []
    for name, denoiser, data, (low, high), extra in heldout_denoisers(seed, unet, flow, tuple(only)):
        shape = tuple(data.shape[1:])
        cache, seen = tempfile.mkdtemp(prefix="fewstep-heldout-"), set()
        reference = fewstep.sample(denoiser, "heun", polynomial(100, low, high), seeds, shape=shape)
        print(f"\n### {name}\n")
        print("| solver | NFE | best hand-crafted | " + " | ".join(f"{s} / best (diff ± SE)" for s in searches)
              + " | " + " | ".join(f"{s} cost (warm-ups, s)" for s in searches) + " |")  # fmt: skip
        print("|---|---|---|" + "---|" * (2 * len(searches)))
        for solver in solvers:
            spec = SOLVERS[solver]
            for nfe in nfes:
                plan = plan_steps(spec, nfe)
                prior = {"afs_prior": "gaussian", "afs_data": data} if plan.afs else {}

                def errors(sigmas, solver=solver, prior=prior, denoiser=denoiser, shape=shape, reference=reference):
                    samples = fewstep.sample(denoiser, solver, sigmas, seeds, shape=shape, **prior)
                    return (samples - reference).flatten(1).double().norm(dim=1)

                hand = {h: errors(make_schedule(h, plan.num_steps, low, high)) for h in RANGE_FREE}
                hand.update({h: errors(make_schedule("flow", plan.num_steps, low, high, **options))
                             for h, options in extra.items()})  # fmt: skip
                best = min(hand, key=lambda h: float(hand[h].mean()))
                cells = {}
                for label in searches:  # a record reused from this run's cache cost nothing in this cell
                    method, settings = parse_variant(label)
                    started = time.perf_counter()
                    schedule = fewstep.search_schedule(denoiser, shape=shape, nfe=nfe, solver=solver, method=method,
                                                       afs_data=data, cache_dir=cache, cache_key=name,
                                                       sigma_min=low, sigma_max=high, **settings)  # fmt: skip
                    seconds = time.perf_counter() - started
                    record = schedule.record
                    reused = record.get("schedule_key") in seen
                    seen.add(record.get("schedule_key"))
                    spent = 0 if reused else record.get("evaluations", float("nan"))
                    alone = record.get("evaluations", float("nan")) + record.get("teacher_reused", 0)
                    unit = record.get("gits_reference_evaluations", 15360)
                    polished = bool((record.get("polish") or {}).get("taken"))  # oss:polish=N left the grid
                    model = record.get("model_seconds") if not reused else None  # the search's own, not the cache's
                    overhead = record["seconds"] / model if model else float("nan")  # its wall time / model time
                    cells[label] = (errors(schedule.sigmas), spent / unit, seconds, alone / unit, polished, overhead)
                row = {"denoiser": name, "solver": solver, "nfe": nfe, "best": best}
                texts = []
                for method, (err, cost, seconds, alone, polished, overhead) in cells.items():
                    against = paired_difference(err, hand[best])
                    diff, se = against["difference"], against["se"]
                    ratio = float(err.mean()) / float(hand[best].mean())
                    row[method] = (ratio, diff, se, cost, seconds, alone, polished, overhead)
                    texts.append(f"{ratio:.2f} ({diff:+.3f} ± {se:.3f}){' **loss**' if diff > 2 * se else ''}"
                                 + (" polished" if polished else ""))  # fmt: skip
                others = [label for label in cells if label != "ld3"]
                if "ld3" in cells and others:  # ld3 against the best of the other searches, seed by seed
                    other = min(others, key=lambda m: float(cells[m][0].mean()))
                    versus = paired_difference(cells["ld3"][0], cells[other][0])
                    row["ld3_vs_search"] = (versus["difference"], versus["se"])
                summary.append(row)
                costs = " | ".join(f"{row[m][3]:.2f}, {row[m][4]:.0f}" for m in searches)
                print(f"| {solver} | {nfe} | {best} {float(hand[best].mean()):.3f} | " + " | ".join(texts)
                      + f" | {costs} |", flush=True)  # fmt: skip
        report([r for r in summary if r["denoiser"] == name], name, searches)
    print("\n### All denoisers\n")
    report(summary, "all", searches)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}, max {max(values):.2f}" if values else "nan"


def goals(rows: list[dict], method: str, losses: list, ratios: list, costs: list, overheads: list) -> str:
    """The issue's goals for a search over all cells, each with its measured value and met / not met."""
    checks = [(f"no loss ({len(losses)} of {len(rows)})", not losses),
              (f"median ratio <= 0.5 ({statistics.median(ratios):.2f})", statistics.median(ratios) <= 0.5)]
    if costs:
        checks += [(f"cost in the sweep median <= 1 ({statistics.median(costs):.2f})", statistics.median(costs) <= 1),
                   (f"and max <= 2 ({max(costs):.2f})", max(costs) <= 2)]
    if overheads:
        checks.append((f"wall time <= 1.3 x model time on the mnist5k KDE (max {max(overheads):.2f})",
                       max(overheads) <= 1.3))
    return f"- goals for {method}: " + "; ".join(f"{text} {'met' if met else 'NOT met'}" for text, met in checks)


def report(rows: list[dict], label: str, searches: tuple[str, ...] = SEARCHES) -> None:
    """Per search: the median and worst ratio to the best hand-crafted schedule, the cells it loses (more than two
    paired standard errors), its median and largest cost; and where ld3 beats the best other search."""
    for method in searches:
        ratios = [r[method][0] for r in rows]
        losses = [f"{r['solver']} {r['nfe']}" + ("" if label != "all" else f" ({r['denoiser']})") for r in rows
                  if r[method][1] > 2 * r[method][2]]  # fmt: skip
        costs = [r[method][3] for r in rows if math.isfinite(r[method][3])]
        alone = [r[method][5] for r in rows if math.isfinite(r[method][5])]
        print(f"- {label}: {method} / best hand-crafted: median {statistics.median(ratios):.2f}, worst "
              f"{max(ratios):.2f}; loses (> 2 SE) in {len(losses)} of {len(rows)} cells{': ' if losses else ''}"
              f"{', '.join(losses)}; cost in the sweep median {spread(costs)} GITS warm-ups (one search alone, "
              f"its teacher run: {spread(alone)})"
              + (f"; polished off the grid in {sum(r[method][6] for r in rows)} cells"
                 if parse_variant(method)[1].get("polish") else ""))  # fmt: skip
        overheads = [r[method][7] for r in rows if math.isfinite(r[method][7])]
        if overheads:  # the searches that time their model calls (oss)
            print(f"- {label}: {method} wall time / the time its model calls took: median {spread(overheads)}")
        if label == "all":  # the wall-time goal is on the mnist5k KDE, whose calls are not negligible
            print(goals(rows, method, losses, ratios, costs,
                        [r[method][7] for r in rows if r["denoiser"] == "mnist5k KDE" and math.isfinite(r[method][7])]))
    others = [method for method in searches if method != "ld3"]
    if "ld3" not in searches or not others:
        return
    better = [r for r in rows if r["ld3"][1] < min(r[method][1] for method in others)]
    clearly = [r for r in better if -r["ld3_vs_search"][0] > 2 * r["ld3_vs_search"][1]]
    print(f"- {label}: ld3 below every other search ({', '.join(others)}) in {len(better)} of {len(rows)} cells"
          + (": " + ", ".join(f"{r['solver']} {r['nfe']}" for r in better) if better and len(better) <= 12 else "")
          + f"; by more than two paired standard errors (against the best of the others, seed by seed) in "
          f"{len(clearly)}" + (": " + ", ".join(f"{r['solver']} {r['nfe']}" for r in clearly) if clearly else "")
          + (" (goal: the best other search at least as good as ld3 in every cell: "
             + ("met)" if not clearly else "NOT met)") if label == "all" else ""))  # fmt: skip
