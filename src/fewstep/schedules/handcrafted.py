"""Hand-crafted time schedules in the EDM/VE sigma parametrisation.

Each schedule is a pure function `(num_steps, sigma_min, sigma_max, **options) -> sigmas` returning
`num_steps + 1` float64 values, strictly decreasing from `sigma_max` to `sigma_min` (endpoints exact).
Stepping on to sigma = 0 is a sampling option (`denoise_to_zero`), not part of a schedule.
The formulas follow the GITS reference code (zju-pi/diff-sampler, `get_schedule`).
"""

from __future__ import annotations

import math

import torch

from fewstep.errors import FewstepError
from fewstep.models.denoiser import inside_range
from fewstep.models.flow import flow_sigma, flow_time
from fewstep.models.vp import vp_linear_betas


def check_range(num_steps: int, sigma_min: float, sigma_max: float) -> None:
    if int(num_steps) != num_steps or num_steps < 1:
        raise FewstepError(f"a schedule needs at least 1 step, got num_steps={num_steps}")
    if not (math.isfinite(sigma_min) and sigma_min > 0):
        raise FewstepError(
            f"sigma_min must be a positive number, got {sigma_min}; set model.sigma_min (EDM uses 0.002)"
        )
    if not (math.isfinite(sigma_max) and sigma_max > sigma_min):
        raise FewstepError(
            f"sigma_max must be larger than sigma_min={sigma_min}, got {sigma_max}; set model.sigma_max (EDM uses 80)"
        )


def _pin_endpoints(sigmas: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    sigmas[0], sigmas[-1] = sigma_max, sigma_min
    return sigmas


def _fractions(num_steps: int) -> torch.Tensor:
    return torch.arange(num_steps + 1, dtype=torch.float64) / num_steps


def polynomial(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM (Karras et al. 2022): uniform in sigma^(1/rho)."""
    check_range(num_steps, sigma_min, sigma_max)
    if not rho > 0:
        raise FewstepError(f"schedule.rho must be positive, got {rho}")
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + _fractions(num_steps) * (lo - hi)) ** rho
    return _pin_endpoints(sigmas, sigma_min, sigma_max)


def logsnr(num_steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Uniform in log-SNR = -2 log(sigma) (DPM-Solver's choice for small images)."""
    check_range(num_steps, sigma_min, sigma_max)
    log_sigmas = math.log(sigma_max) + _fractions(num_steps) * (math.log(sigma_min) - math.log(sigma_max))
    return _pin_endpoints(log_sigmas.exp(), sigma_min, sigma_max)


def vp_time(
    num_steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0, epsilon_s: float = 1e-3
) -> torch.Tensor:
    """Steps uniform in t^(1/rho) of the linear-beta VP-SDE whose sigma(t) spans [sigma_min, sigma_max].

    sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) with sigma(1) = sigma_max and
    sigma(epsilon_s) = sigma_min, as in the GITS reference code (and DPM-Solver's VP time schedules).
    """
    check_range(num_steps, sigma_min, sigma_max)
    if not 0 < epsilon_s < 1:
        raise FewstepError(f"schedule.epsilon_s (the VP end time) must lie in (0, 1), got {epsilon_s}")
    beta_d, beta_min = vp_linear_betas(sigma_min, sigma_max, epsilon_s)
    t = (1 + _fractions(num_steps) * (epsilon_s ** (1 / rho) - 1)) ** rho
    sigmas = torch.expm1(0.5 * beta_d * t**2 + beta_min * t).sqrt()
    return _pin_endpoints(sigmas, sigma_min, sigma_max)


def time_uniform(num_steps: int, sigma_min: float, sigma_max: float, epsilon_s: float = 1e-3) -> torch.Tensor:
    """Uniform in VP time t (DPM-Solver's choice for large images)."""
    return vp_time(num_steps, sigma_min, sigma_max, rho=1.0, epsilon_s=epsilon_s)


def time_quadratic(num_steps: int, sigma_min: float, sigma_max: float, epsilon_s: float = 1e-3) -> torch.Tensor:
    """Uniform in sqrt(t) of VP time (DDIM's quadratic skip)."""
    return vp_time(num_steps, sigma_min, sigma_max, rho=2.0, epsilon_s=epsilon_s)


def discrete_betas(beta_start: float, beta_end: float, beta_schedule: str, num_train_timesteps: int) -> torch.Tensor:
    """The betas of a DDPM / latent-diffusion training schedule (diffusers' `linear` and `scaled_linear`)."""
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    raise FewstepError(f"schedule.beta_schedule must be linear or scaled_linear, got {beta_schedule!r}")


def discrete(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0, beta_start: float = 0.00085,
             beta_end: float = 0.012, beta_schedule: str = "scaled_linear",
             num_train_timesteps: int = 1000) -> torch.Tensor:  # fmt: skip
    """Uniform in t^(1/rho) over a discrete-time model's own timesteps t (fractional t interpolates log sigma):
    the GITS reference code's `discrete` schedule for latent diffusion (defaults: Stable Diffusion 1.x)."""
    check_range(num_steps, sigma_min, sigma_max)
    if not rho > 0:
        raise FewstepError(f"schedule.rho must be positive, got {rho}")
    abar = torch.cumprod(1 - discrete_betas(beta_start, beta_end, beta_schedule, int(num_train_timesteps)), 0)
    log_table = (0.5 * ((1 - abar) / abar).log()).tolist()
    low, high = math.exp(log_table[0]), math.exp(log_table[-1])
    if not inside_range(sigma_min, sigma_max, (low, high)):
        raise FewstepError(
            f"schedule=discrete: these betas ({beta_schedule}, {beta_start} -> {beta_end}, {num_train_timesteps} "
            f"steps) span sigma in [{low:.6g}, {high:.6g}], but the model's range is [{sigma_min:g}, {sigma_max:g}]; "
            "set schedule.beta_* (or schedule.base_options for GITS) to the model's training schedule"
        )
    t_of = _interpolator(log_table, list(range(len(log_table))))
    t_max, t_min = t_of(math.log(sigma_max)), t_of(math.log(sigma_min))
    t = (t_max ** (1 / rho) + _fractions(num_steps) * (t_min ** (1 / rho) - t_max ** (1 / rho))) ** rho
    log_sigma_of = _interpolator(list(range(len(log_table))), log_table)
    sigmas = torch.tensor([math.exp(log_sigma_of(float(v))) for v in t], dtype=torch.float64)
    return _pin_endpoints(sigmas, sigma_min, sigma_max)


def _interpolator(xs: list[float], ys: list[float]):
    """Piecewise-linear y(x) on increasing xs, clamped at the ends."""
    import bisect

    def f(x: float) -> float:
        i = min(max(bisect.bisect_left(xs, x), 1), len(xs) - 1)
        w = min(max((x - xs[i - 1]) / (xs[i] - xs[i - 1]), 0.0), 1.0)
        return ys[i - 1] + w * (ys[i] - ys[i - 1])

    return f


def validate_sigmas(sigmas, sigma_min: float | None = None, sigma_max: float | None = None) -> torch.Tensor:
    """Check a user-given sigma list: finite, positive, strictly decreasing, inside the model's range.

    A final 0 is allowed and means "step to zero" (the last step is then a denoising step).
    """
    try:
        values = [float(s) for s in sigmas]
    except (TypeError, ValueError):
        raise FewstepError(f"explicit sigmas must be numbers, got {list(sigmas)}") from None
    if len(values) < 2:
        raise FewstepError(f"an explicit schedule needs at least 2 sigmas (one step), got {values}")
    body = values[:-1] if values[-1] == 0 else values
    bad = [s for s in values if not math.isfinite(s) or s < 0]
    if bad or any(s <= 0 for s in body):
        raise FewstepError(f"explicit sigmas must be finite and positive (only a final 0 allowed), got {values}")
    for a, b in zip(values, values[1:], strict=False):
        if not b < a:
            raise FewstepError(f"explicit sigmas must be strictly decreasing, but {a} is followed by {b}: {values}")
    if sigma_max is not None and not inside_range(body[0], body[0], (0.0, sigma_max)):
        raise FewstepError(
            f"explicit schedule starts at {body[0]}, above the model's sigma_max={sigma_max}; "
            "lower the first sigma or set model.sigma_max"
        )
    if sigma_min is not None and not inside_range(body[-1], body[-1], (sigma_min, math.inf)):
        raise FewstepError(
            f"explicit schedule reaches {body[-1]}, below the model's sigma_min={sigma_min}; "
            "raise the last positive sigma, end with 0 to denoise, or set model.sigma_min"
        )
    return torch.tensor(values, dtype=torch.float64)


def beta(num_steps: int, sigma_min: float, sigma_max: float, alpha: float = 0.6, beta: float = 0.6,
         space: str = "vp_time", epsilon_s: float = 1e-3) -> torch.Tensor:  # fmt: skip
    """Beta sampling (Lee et al. 2024, "Beta Sampling is All You Need"): steps at the Beta(alpha, beta) quantiles
    of uniform fractions (the default Beta(0.6, 0.6) puts them at both ends). `space="vp_time"`: quantiles of the
    time t of the linear-beta VP whose sigma(t) spans the range (the paper's timesteps; with alpha = beta = 1 this is
    time_uniform); `space="sigma"`: linear in sigma, as diffusers' `use_beta_sigmas` computes it."""
    import numpy as np
    import scipy.stats

    check_range(num_steps, sigma_min, sigma_max)
    for name, value in (("alpha", alpha), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
            raise FewstepError(f"schedule.{name} (of the Beta distribution) must be a positive number, got {value!r}")
    quantiles = [float(scipy.stats.beta.ppf(u, alpha, beta)) for u in 1 - np.linspace(0, 1, num_steps + 1)]
    if space == "sigma":
        sigmas = torch.tensor([sigma_min + q * (sigma_max - sigma_min) for q in quantiles], dtype=torch.float64)
    elif space == "vp_time":
        if not 0 < epsilon_s < 1:
            raise FewstepError(f"schedule.epsilon_s (the VP end time) must lie in (0, 1), got {epsilon_s}")
        beta_d, beta_min = vp_linear_betas(sigma_min, sigma_max, epsilon_s)
        t = epsilon_s + torch.tensor(quantiles, dtype=torch.float64) * (1 - epsilon_s)
        sigmas = torch.expm1(0.5 * beta_d * t**2 + beta_min * t).sqrt()
    else:
        raise FewstepError(f"schedule.space must be vp_time or sigma, got {space!r}")
    return _pin_endpoints(sigmas, sigma_min, sigma_max)


def kl_optimal(num_steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """The KL-optimal schedule of Align Your Steps (Sabour et al. 2024, for data of a single point; ComfyUI's
    `kl_optimal`): uniform in arctan(sigma)."""
    check_range(num_steps, sigma_min, sigma_max)
    t = _fractions(num_steps)
    sigmas = torch.tan((1 - t) * math.atan(sigma_max) + t * math.atan(sigma_min))
    return _pin_endpoints(sigmas, sigma_min, sigma_max)


def flux_mu(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5,
            max_shift: float = 1.15) -> float:  # fmt: skip
    """Flux's resolution-dependent shift mu: linear in the number of latent patches, from `base_shift` at
    `base_seq_len` to `max_shift` at `max_seq_len` (diffusers' `calculate_shift`; 1024x1024 is 4096 patches)."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * slope + base_shift - slope * base_seq_len


def flow_shift_factor(shift: float = 1.0, mu: float | None = None) -> float:
    """The factor a flow's time shift multiplies sigma = t / (1 - t) by. SD3's shift t -> s t / (1 + (s - 1) t) is
    sigma -> s sigma; Flux's t -> e^mu / (e^mu + 1/t - 1) is sigma -> e^mu sigma (diffusers' exponential time shift;
    its linear one, mu / (mu + 1/t - 1), is shift = mu)."""
    if mu is not None:
        if isinstance(mu, bool) or not isinstance(mu, int | float) or not math.isfinite(mu):
            raise FewstepError(f"schedule.mu (Flux's time shift) must be a number or null, got {mu!r}")
        if shift != 1.0:
            raise FewstepError(f"schedule.shift={shift} and schedule.mu={mu} both shift the times: set one (shift for "
                               "SD3, mu for Flux) and leave the other at its default")  # fmt: skip
        return math.exp(mu)
    if isinstance(shift, bool) or not isinstance(shift, int | float) or not (math.isfinite(shift) and shift > 0):
        raise FewstepError(f"schedule.shift (the flow's time shift, SD3 uses 3.0) must be a positive number, got "
                           f"{shift!r}")  # fmt: skip
    return float(shift)


def flow(num_steps: int, sigma_min: float, sigma_max: float, shift: float = 1.0, mu: float | None = None
         ) -> torch.Tensor:  # fmt: skip
    """A rectified flow's schedule (diffusers' FlowMatchEulerDiscreteScheduler): uniform in the flow's time
    t = sigma / (1 + sigma) before its time shift, then shifted by SD3's `shift` or Flux's `mu` (see
    `flow_shift_factor`): steps uniform in u = t(sigma / s) between the range's ends, so the ends stay exact."""
    check_range(num_steps, sigma_min, sigma_max)
    factor = flow_shift_factor(shift, mu)
    u_high, u_low = flow_time(sigma_max / factor), flow_time(sigma_min / factor)
    u = u_high + _fractions(num_steps) * (u_low - u_high)
    return _pin_endpoints(factor * flow_sigma(u), sigma_min, sigma_max)


# Align Your Steps (Sabour et al. 2024): the published 10-step sigmas, optimised for each model. Two versions
# were published and differ in the third decimal for SD 1.5 and SDXL: NVIDIA's how-to page (full precision, the last
# one the model's sigma_min; ComfyUI's) and the project page's 3-decimal table (diffusers' AysSchedules, which ends
# with 0: a final step to zero, fewstep's denoise_to_zero). `table=sd15` is the former, `sd15_diffusers` the latter.
AYS_TABLES = {
    "sd15": [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
             0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582],
    "sdxl": [14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582],
    "svd": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002],
    "sd15_diffusers": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.0291671582],
    "sdxl_diffusers": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.38, 0.234, 0.113, 0.0291671582],
}  # fmt: skip
AYS_MODELS = {"sd15": "Stable Diffusion 1.5", "sdxl": "SDXL", "svd": "Stable Video Diffusion",
              "sd15_diffusers": "Stable Diffusion 1.5 (diffusers)", "sdxl_diffusers": "SDXL (diffusers)"}  # fmt: skip
AYS_RANGE_RTOL = 0.01  # a model's configured range matches a table's when both ends agree to 1% (configs round)


def ays(num_steps: int, sigma_min: float, sigma_max: float, table: str = "sd15") -> torch.Tensor:
    """Align Your Steps: the published table of the model it was optimised for (`table`: sd15, sdxl, svd and the
    diffusers versions sd15_diffusers, sdxl_diffusers; see `AYS_TABLES`), at
    other step counts log-linearly interpolated as the paper's how-to does. Only for a model whose sigma range is
    the table's (the steps were optimised for that model, not for its range); the ends are the model's own."""
    import numpy as np

    check_range(num_steps, sigma_min, sigma_max)
    if table not in AYS_TABLES:
        raise FewstepError(f"schedule.table must be one of {sorted(AYS_TABLES)}, got {table!r}")
    published = AYS_TABLES[table]
    high, low = published[0], published[-1]
    if not all(math.isclose(a, b, rel_tol=AYS_RANGE_RTOL) for a, b in ((high, sigma_max), (low, sigma_min))):
        ranges: dict = {}
        for key, values in AYS_TABLES.items():
            ranges.setdefault(f"{values[0]:.4g} -> {values[-1]:.4g}", []).append(key)
        tables = "; ".join(f"{', '.join(keys)}: sigma {span}" for span, keys in ranges.items())
        raise FewstepError(f"schedule=ays: the {AYS_MODELS[table]} table spans sigma {high:g} -> {low:g}, but this "
                           f"model's range is [{sigma_min:g}, {sigma_max:g}]; the published tables are {tables}; for "
                           "another model use a search (schedule=gits, schedule=oss) or another schedule")  # fmt: skip
    if num_steps + 1 == len(published):
        sigmas = torch.tensor(published, dtype=torch.float64)
    else:
        xs = np.linspace(0, 1, len(published))
        log_sigmas = np.interp(np.linspace(0, 1, num_steps + 1), xs, np.log(published[::-1]))
        sigmas = torch.tensor(np.exp(log_sigmas)[::-1].copy(), dtype=torch.float64)
    return _pin_endpoints(sigmas, sigma_min, sigma_max)  # the table's ends are the model's range, as configured
