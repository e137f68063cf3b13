"""The `fewstep` console script (also `python -m fewstep`): `fewstep KEY=VALUE ...` runs a job as `python run.py`
does; `fewstep solvers|schedules` lists what can be composed, with orders, NFE cost and options;
`fewstep dashboard --entity E --project P [--group SWEEP]` makes a W&B report of a sweep."""

from __future__ import annotations

import argparse
import inspect


def _options(fn) -> str:
    from fewstep.schedules import SCHEDULE_ARGUMENTS
    from fewstep.solvers import SOLVER_ARGUMENTS

    params = inspect.signature(fn).parameters.values()
    positional = {*SOLVER_ARGUMENTS, *SCHEDULE_ARGUMENTS}
    return ", ".join(f"{p.name}={p.default!r}" for p in params if p.name not in positional) or "-"


def solvers_table() -> str:
    from fewstep.solvers import SOLVERS

    lines = ["| solver | NFE per step | order | options | what it is |", "|---|---|---|---|---|"]
    for spec in SOLVERS.values():
        lines.append(f"| {spec.name} | {spec.nfe_per_step} | {spec.order} | {_options(spec.fn)} | {spec.summary} |")
    lines.append("")
    lines.append("Every solver also takes solver.afs=auto|true|false (analytical first step, saves 1 NFE) and")
    lines.append("solver.afs_prior=gaussian|reference. 2-NFE solvers reach odd NFE with AFS.")
    return "\n".join(lines)


def schedules_table() -> str:
    from fewstep.schedules import SCHEDULES
    from fewstep.schedules.registry import get_search, search_names

    lines = ["| schedule | options |", "|---|---|"]
    lines += [f"| {name} | {_options(fn)} |" for name, fn in SCHEDULES.items()]
    lines.append("| explicit | sigmas=[...] (strictly decreasing, inside the model's range; a final 0 denoises) |")
    for name in search_names():  # searched for the model: what each search does, and its options
        search = get_search(name)
        options = ", ".join(f"{k}={v!r}" for k, v in search.defaults.items())
        lines.append(f"| {name} | searched: {search.summary}. {options} |")
    return "\n".join(lines)


LISTINGS = ("solvers", "schedules", "dashboard")


def main(argv: list[str] | None = None) -> None:
    """`fewstep solvers|schedules|dashboard ...` lists; anything else (`fewstep solver=dpm schedule=gits nfe=5`,
    `-m ...`, `--help`) runs a job on the shipped configs, as `python run.py` does in a checkout."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in LISTINGS:
        from fewstep.app.command import hydra_main

        if argv is not None:
            sys.argv = [sys.argv[0], *argv]
        hydra_main()
        return
    parser = argparse.ArgumentParser(prog="fewstep", description="List what fewstep can compose.")
    parser.add_argument("what", choices=["solvers", "schedules", "dashboard"])
    parser.add_argument("--entity", help="dashboard: the W&B entity (user or team)")
    parser.add_argument("--project", help="dashboard: the W&B project the runs were logged to")
    parser.add_argument("--group", help="dashboard: one sweep (its folder name under outputs/multiruns/DATE/)")
    parser.add_argument("--output", default="wandb_dashboard.json", help="dashboard: the specification file offline")
    args = parser.parse_args(argv)
    if args.what == "dashboard":
        if not args.entity or not args.project:
            parser.error("dashboard needs --entity and --project")
        from fewstep.app.dashboard import main as dashboard

        dashboard(args.entity, args.project, args.group, args.output)
        return
    print(solvers_table() if args.what == "solvers" else schedules_table())


if __name__ == "__main__":
    main()
