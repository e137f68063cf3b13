"""Section `flow`: rectified-flow models through fewstep's wrapper (not in the default run; minutes here).

1. The start. Flow samplers start at t = 1 (sigma infinite); fewstep starts at sigma_max, from x = sigma_max eps.
   - The Gaussian fit of each dataset (closed-form ODE): the exact sample from t = 1 is mean + std eps; the table
     gives the mean L2 distance of the exact solution from sigma_max (the start's error alone).
   - The KDE's flow: Euler on diffusers' own SD3 schedule (shift 3, 4 and 8 steps, last step to t = 0, as
     FlowMatchEulerDiscreteScheduler runs it from t = 1) against the same schedule with its first time moved to
     t(sigma_max), from the same noise; beside it, that Euler's truncation error (against a 200-step Heun from
     sigma 1e7, i.e. t = 1 - 1e-7).
2. Solvers and schedules on flows: the truncation error (mean L2 to the 1e7-start reference, --flow-samples
   samples) of every deterministic solver at NFE 6 and 10 with schedule=flow (shift 1 and 3) and polynomial, all
   over [0.002, 999], on the KDE flows of digits and mnist5k, and on the shipped flow_mnist5k when it is there.
"""

from __future__ import annotations

import torch
from timing import DETERMINISTIC

from fewstep.data import digits, mnist5k, seeded_noise
from fewstep.models import GaussianDenoiser, KDEDenoiser
from fewstep.models.flow import DenoiserFlow, flow_denoiser, flow_sigma
from fewstep.schedules import flow, polynomial
from fewstep.solvers import SOLVERS, Sampler, euler, get_solver, plan_steps

STARTS = (80.0, 999.0, 1e4)
REFERENCE_START = 1e7


def mean_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).flatten(1).norm(dim=1).mean())


def reference(denoiser, noise: torch.Tensor) -> torch.Tensor:
    """A 200-step Heun from sigma 1e7 (t = 1 - 1e-7) to 0.002, float64."""
    return SOLVERS["heun"].fn(denoiser, noise.double() * REFERENCE_START, polynomial(200, 0.002, REFERENCE_START))


def start_table(name: str, images: torch.Tensor, noise: torch.Tensor) -> None:
    gaussian = GaussianDenoiser.fit(images)
    exact = gaussian.mean + gaussian.var.sqrt() * noise.double()
    row = [f"{s:g}: {mean_l2(gaussian.ode_solution(noise.double() * s, s, 0.0), exact):.2e}" for s in STARTS]
    print(f"{name} Gaussian fit, start error (mean L2) at sigma_max " + ", ".join(row))
    kde = KDEDenoiser(images, dtype="float64")
    velocity = DenoiserFlow(kde)
    ref = reference(flow_denoiser(velocity), noise)
    for steps in (4, 8):
        u = torch.linspace(1.0, 3 * 0.001 / (1 + 2 * 0.001), steps, dtype=torch.float64)  # diffusers' SD3 default
        times = torch.cat([3 * u / (1 + 2 * u), torch.zeros(1, dtype=torch.float64)])
        x_t = noise.double()  # from t = 1: the first velocity is eps - mean (D at infinite sigma is the data mean)
        mean = kde.center.reshape(1, *noise.shape[1:])
        for k, (t, t_next) in enumerate(zip(times[:-2], times[1:-1], strict=True)):
            v = noise.double() - mean if k == 0 else velocity(x_t, t.expand(len(x_t)))
            x_t = x_t + (t_next - t) * v
        from_one = x_t / (1 - times[-2])  # the state at the last positive time, as x
        row = []
        for start in STARTS:
            sigmas = flow_sigma(times[:-1]).clone()
            sigmas[0] = start
            x = euler(flow_denoiser(DenoiserFlow(KDEDenoiser(images))), noise * start, sigmas)
            row.append(f"{start:g}: {mean_l2(x, from_one):.2e}")
        print(f"{name} KDE flow, Euler on SD3's {steps}-step schedule: truncation error {mean_l2(from_one, ref):.3f};"
              f" started at sigma_max instead of t = 1, distance " + ", ".join(row))  # fmt: skip


def solver_table(name: str, denoiser64, denoiser, noise: torch.Tensor, solvers, nfes=(6, 10)) -> None:
    ref = reference(denoiser64, noise)
    seeds = torch.arange(len(noise))
    for solver in solvers:
        spec = get_solver(solver)
        for nfe in nfes:
            plan = plan_steps(spec, nfe, afs=False)
            steps = plan.num_steps
            cells = {"flow": flow(steps, 0.002, 999.0), "flow shift 3": flow(steps, 0.002, 999.0, shift=3.0),
                     "polynomial": polynomial(steps, 0.002, 999.0)}  # fmt: skip
            row = []
            for label, sigmas in cells.items():
                with torch.no_grad():
                    x = Sampler(spec, sigmas, {}, None)(denoiser, noise, seeds)
                row.append(f"{label} {mean_l2(x, ref):8.3f}")
            print(f"{name:14s} {solver:8s} NFE {nfe:2d}: " + "  ".join(row), flush=True)


def flow_models(samples: int = 64, solvers=tuple(DETERMINISTIC)) -> None:
    print("\n## Flow models: the start at t = 1, and solvers on flows (docs/models.md)")
    sets = {"digits": digits(), "mnist5k": mnist5k()}
    for name, data in sets.items():
        start_table(name, data.images, seeded_noise(torch.arange(samples), data.shape))
    for name, data in sets.items():
        noise = seeded_noise(torch.arange(samples), data.shape)
        solver_table(f"{name} KDE flow", flow_denoiser(DenoiserFlow(KDEDenoiser(data.images, dtype="float64"))),
                     flow_denoiser(DenoiserFlow(KDEDenoiser(data.images))), noise, solvers)  # fmt: skip
    from fewstep.models.unet import WEIGHTS_DIR, load_unet

    if (WEIGHTS_DIR / "flow_mnist5k.pt").is_file():
        model = load_unet("flow_mnist5k.pt")
        noise = seeded_noise(torch.arange(samples), sets["mnist5k"].shape)
        solver_table("flow_mnist5k", model, model, noise, solvers)


def shift_transfer(samples: int = 128, solvers=("euler", "ipndm"), nfes=(5, 8), searches=("gits", "oss")) -> None:
    """Does a searched schedule survive a resolution shift? SD3 and Flux shift sigma by about sqrt(pixel ratio)
    when the resolution changes (shift 2 from 28x28 to 56x56). With exact denoisers at two resolutions, the KDE flow
    of mnist5k and of mnist5k upsampled bilinearly to 56x56 (a single-resolution network such as flow_mnist5k has no
    second resolution to move to): the truncation error at 56x56 of a schedule searched at 28x28 and scaled by 2 (and
    3), against one searched at 56x56 and the best hand-crafted schedule there (schedules over [0.004, 1998], the
    28x28 range [0.002, 999] scaled by 2)."""
    import tempfile

    import fewstep
    from fewstep.models.flow import kde_flow
    from fewstep.schedules import RANGE_FREE, make_schedule

    data = mnist5k()
    upsampled = torch.nn.functional.interpolate(data.images, scale_factor=2, mode="bilinear").clamp(-1, 1)
    small, large = kde_flow(data.images), kde_flow(upsampled)
    low, high = 0.002, 999.0
    seeds = list(range(samples))
    shape = tuple(upsampled.shape[1:])
    reference = fewstep.sample(large, "heun", polynomial(100, 2 * low, 2 * high), seeds, shape=shape)
    print(f"\n## Shift transfer: mnist5k KDE flows at 28x28 and at 56x56 (bilinear), {samples} samples; truncation "
          "error at 56x56 (schedules over [0.004, 1998])\n")  # fmt: skip
    print("| solver | NFE | search | searched at 56 | searched at 28, x2 | searched at 28, x3 | best hand-crafted |")
    print("|---|---|---|---|---|---|---|")
    caches = {28: tempfile.mkdtemp(prefix="fewstep-shift-"), 56: tempfile.mkdtemp(prefix="fewstep-shift-")}
    for solver in solvers:
        spec = get_solver(solver)
        for nfe in nfes:
            plan = plan_steps(spec, nfe, afs=False)

            def error(sigmas, solver=solver):
                x = fewstep.sample(large, solver, sigmas, seeds, shape=shape)
                return (x - reference).flatten(1).double().norm(dim=1).mean().item()

            hand = {h: error(make_schedule(h, plan.num_steps, 2 * low, 2 * high)) for h in RANGE_FREE}
            hand.update({f"flow shift {s}": error(flow(plan.num_steps, 2 * low, 2 * high, shift=s)) for s in (1, 2, 3)})
            best = min(hand, key=hand.get)
            for method in searches:
                at_56 = fewstep.search_schedule(large, shape=shape, nfe=nfe, solver=solver, method=method, afs=False,
                                                sigma_min=2 * low, sigma_max=2 * high, cache_dir=caches[56],
                                                cache_key="kde56")  # fmt: skip
                at_28 = fewstep.search_schedule(small, shape=tuple(data.shape), nfe=nfe, solver=solver, method=method,
                                                afs=False, sigma_min=low, sigma_max=high, cache_dir=caches[28],
                                                cache_key="kde28")  # fmt: skip
                moved = {s: error(at_28.sigmas * s) for s in (2, 3)}
                print(f"| {solver} | {nfe} | {method} | {error(at_56.sigmas):.3f} | {moved[2]:.3f} | {moved[3]:.3f} | "
                      f"{best} {hand[best]:.3f} |", flush=True)  # fmt: skip
