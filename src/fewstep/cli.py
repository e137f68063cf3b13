"""`python -m fewstep solvers|schedules`: what can be composed, with orders, NFE cost and options;
`python -m fewstep dashboard --entity E --project P [--group SWEEP]`: a W&B report of a sweep."""

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
    from fewstep.schedules.gits import DEFAULTS
    from fewstep.schedules.oss import DEFAULTS as OSS_DEFAULTS

    lines = ["| schedule | options |", "|---|---|"]
    lines += [f"| {name} | {_options(fn)} |" for name, fn in SCHEDULES.items()]
    lines.append("| explicit | sigmas=[...] (strictly decreasing, inside the model's range; a final 0 denoises) |")
    lines.append(f"| gits | {', '.join(f'{k}={v!r}' for k, v in DEFAULTS.items())} |")
    lines.append(f"| oss | {', '.join(f'{k}={v!r}' for k, v in OSS_DEFAULTS.items())} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
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
        from fewstep.dashboard import main as dashboard

        dashboard(args.entity, args.project, args.group, args.output)
        return
    print(solvers_table() if args.what == "solvers" else schedules_table())


if __name__ == "__main__":
    main()
