"""A small U-Net with EDM preconditioning (Karras et al. 2022, Table 1), trained by `task=train`.

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))
    c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2),   c_noise = ln(sigma) / 4,          sd = sigma_data.

Checkpoints are plain dicts (`format`, `config`, `state_dict`) that load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from fewstep.errors import FewstepError
from fewstep.models.denoiser import sigma_column

CHECKPOINT_FORMAT = "fewstep-edm-unet-v1"
WEIGHTS_DIR = Path(__file__).parent / "weights"  # models shipped with the package (trained by task=train)


class FourierEmbedding(nn.Module):
    """Random Fourier features of the noise level (fixed frequencies, kept in the state dict)."""

    def __init__(self, channels: int, scale: float = 16.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(channels // 2, generator=torch.Generator().manual_seed(0)) * scale)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * c_noise[:, None] * self.freqs[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the noise embedding added in between (as a per-channel scale and shift)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(h)


class UNet(nn.Module):
    """F(x, c_noise): one ResBlock per level, 2x down/up-sampling between levels, skip connections.

    `channels` per level, e.g. (32, 64, 64): 28x28 -> 14x14 -> 7x7, 8x8 -> 4x4 -> 2x2.
    """

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (32, 64, 64), emb_dim: int = 128,
                 groups: int = 8):  # fmt: skip
        super().__init__()
        channels = tuple(int(c) for c in channels)
        self.embed = nn.Sequential(FourierEmbedding(emb_dim), nn.Linear(emb_dim, emb_dim), nn.SiLU(),
                                   nn.Linear(emb_dim, emb_dim))  # fmt: skip
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        previous = channels[0]
        for c in channels:
            self.down.append(ResBlock(previous, c, emb_dim, groups))
            previous = c
        self.middle = ResBlock(previous, previous, emb_dim, groups)
        self.up = nn.ModuleList()
        for c in reversed(channels):
            self.up.append(ResBlock(previous + c, c, emb_dim, groups))
            previous = c
        self.head = nn.Sequential(nn.GroupNorm(min(groups, previous), previous), nn.SiLU(),
                                  nn.Conv2d(previous, in_channels, 3, padding=1))  # fmt: skip
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.embed(c_noise)
        h = self.stem(x)
        skips = []
        for level, block in enumerate(self.down):
            if level:
                h = F.avg_pool2d(h, 2, ceil_mode=True)
            h = block(h, emb)
            skips.append(h)
        h = self.middle(h, emb)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-2:] != skip.shape[-2:]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), emb)
        return self.head(h)


class EDMPrecond(nn.Module):
    """D(x, sigma) from a raw network F by the EDM preconditioning (see the module docstring)."""

    def __init__(self, net: nn.Module, sigma_data: float = 0.5, sigma_range: tuple[float, float] = (0.002, 80.0)):
        super().__init__()
        self.net = net
        self.sigma_data = float(sigma_data)
        self.sigma_range = (float(sigma_range[0]), float(sigma_range[1]))

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        sigma = sigma_column(sigma, x.shape[0], torch.float32, x.device).reshape(-1, 1, 1, 1)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
        c_in = 1 / (sigma**2 + sd2).sqrt()
        c_noise = sigma.log().flatten() / 4
        weight = next(self.net.parameters(), None)  # float32, or half/bf16 under trainer.precision=16-true
        dtype = weight.dtype if weight is not None else torch.float32
        out = self.net((c_in * x).to(dtype), c_noise.to(dtype))
        return (c_skip * x + c_out * out).to(x.dtype)


class FlowVelocity(nn.Module):
    """A rectified flow's velocity v(x_t, t) = F(x_t, t) for x_t = (1 - t) x0 + t eps (`objective: flow`): the network
    as it is, the flow's time t in [0, 1] as its noise label (x_t's scale stays within [sd, 1] without
    preconditioning)."""

    def __init__(self, net: nn.Module, sigma_range: tuple[float, float] = (0.002, 999.0)):
        super().__init__()
        self.net = net
        self.sigma_range = (float(sigma_range[0]), float(sigma_range[1]))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        weight = next(self.net.parameters(), None)
        dtype = weight.dtype if weight is not None else torch.float32
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(x_t.shape[0])
        return self.net(x_t.to(dtype), t.to(dtype)).to(x_t.dtype)


OBJECTIVES = ("edm", "flow")


def build_unet(config: dict) -> EDMPrecond | FlowVelocity:
    """The network a checkpoint config describes (`in_channels`, `channels`, `emb_dim`, ...): EDM-preconditioned,
    or a flow's velocity for `objective: flow` (see `load_unet` for its denoiser)."""
    net = UNet(int(config["in_channels"]), tuple(config["channels"]), int(config.get("emb_dim", 128)),
               int(config.get("groups", 8)))  # fmt: skip
    sigma_range = tuple(config.get("sigma_range", (0.002, 80.0)))
    objective = config.get("objective", "edm")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r}")
    if objective == "flow":
        model = FlowVelocity(net, sigma_range)
    else:
        model = EDMPrecond(net, float(config.get("sigma_data", 0.5)), sigma_range)
    if config.get("image_shape"):
        model.image_shape = tuple(int(d) for d in config["image_shape"])
    return model


def checkpoint(model: nn.Module, config: dict, extra: dict | None = None) -> dict:
    """A weights-only-loadable dict: tensors, numbers, strings and lists only."""
    return {"format": CHECKPOINT_FORMAT, "config": dict(config), "state_dict": model.state_dict(), **(extra or {})}


def resolve_weights(path: str | Path, option: str) -> Path:
    """The file `path` names: a bare name that is not a local file names a model shipped with fewstep."""
    from fewstep.models.hub import resolve_pretrained

    shipped = WEIGHTS_DIR / str(path)
    path = shipped if Path(path).name == str(path) and not Path(path).exists() and shipped.is_file() else path
    return resolve_pretrained(path, option)


def load_unet(path: str | Path, map_location: str = "cpu"):
    """A fewstep U-Net checkpoint (from `task=train`), loaded with weights_only=True, in eval mode, as a denoiser
    D(x, sigma) (a flow model through `flow_denoiser`). A bare file name that is not a local file names a model
    shipped with fewstep (e.g. unet_mnist5k.pt, flow_mnist5k.pt)."""
    model = load_unet_checkpoint(path, map_location)[0]
    if isinstance(model, FlowVelocity):
        from fewstep.models.flow import flow_denoiser

        return flow_denoiser(model, sigma_range=model.sigma_range)
    return model


def load_unet_checkpoint(path: str | Path, map_location: str = "cpu",
                         option: str = "model.denoiser.path") -> tuple[EDMPrecond, dict]:  # fmt: skip
    """`load_unet`, with the checkpoint dict it was built from (config, extras such as images_seen)."""
    path = resolve_weights(path, option)
    if path.is_dir():
        raise FewstepError(f"model.path={path} is a directory; give the .pt file written by task=train")
    blob = read_checkpoint(path, map_location)
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise FewstepError(
            f"{path} is not a fewstep U-Net checkpoint (expected format {CHECKPOINT_FORMAT!r}); for a diffusers "
            "UNet2DModel folder use model=ddpm_cifar10 model.denoiser.path=DIR (and its sigma range), for EDM "
            "pickles model=edm_pickle"
        )
    try:
        model = build_unet(blob["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise FewstepError(
            f"{path}: its config lacks or mangles {err} (needs in_channels, channels, ...); the checkpoint was not "
            "written by task=train, or was edited: re-train it"
        ) from None
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as err:
        raise FewstepError(f"{path}: the weights do not match the network its config describes ({err})") from err
    return model.eval().requires_grad_(False), blob


def read_checkpoint(path: Path, map_location: str = "cpu"):
    """torch.load with weights_only=True; an empty, damaged or code-carrying file gets an error naming it."""
    if path.is_file() and path.stat().st_size == 0:
        raise FewstepError(f"checkpoint {path} is empty (0 bytes): its download or its writing was cut short; "
                           "download it again or re-train it")  # fmt: skip
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as err:
        raise FewstepError(f"checkpoint {path} does not exist") from err
    except Exception as err:  # truncated zip, garbage bytes, or a pickle that needs code (weights_only refuses)
        from fewstep.utils.storage import first_line, refused_pickled_code

        if refused_pickled_code(err):
            raise FewstepError(
                f"checkpoint {path} holds pickled code, which fewstep does not run (weights are read with "
                "weights_only=True). EDM .pkl files: model=edm_pickle with model.denoiser.allow_pickle=true, only "
                "for files you trust"
            ) from None
        raise FewstepError(
            f"checkpoint {path} could not be read as weights ({first_line(err)}). "
            "It is damaged (re-download or re-train it) or holds pickled code, which fewstep does not run "
            "(EDM .pkl files: model=edm_pickle with model.denoiser.allow_pickle=true, only for files you trust)"
        ) from err
