"""Pose search: a rigid 3D object whose SO(3) poses are marginalised, not encoded.

The model (one image channel)::

    R ~ Haar(SO(3)),      x | R ~ N(render_θ(R), σ² I),

the uniform prior on M = SO(3) (what ER's box prior becomes under the exact map) and a decoder that
only turns a learned object: ``points`` Gaussian surfels with positions, normals and albedos, lit
by one learned directional light with a learned ambient term, projected orthographically and
splatted with a soft z-buffer (:class:`SurfelObject`). Nothing but the rotation changes the picture,
so a pose that explains an image is a pose of the object.

Its log-likelihood is estimated by importance sampling with the prior as proposal (the IWAE bound
of Burda et al. 2016, arXiv:1509.00519, with q = p)::

    L_G(x) = log (1/G) Σ_j p(x | R_j),   R_j ~ Haar,     E[L_G(x)] ≤ log p(x),

rising to ``log p(x)`` as ``G`` grows. Training maximises ``L_G`` on fresh draws every step: a
stochastic EM over poses, as cryo-EM ab-initio reconstruction marginalises the unknown pose of
every particle over a grid (Punjani et al. 2017, cryoSPARC, doi:10.1038/nmeth.4169). The noise
scale is held above a floor that falls geometrically from ``sigma_start`` to ``sigma_end`` over
the first ``anneal`` of the steps, so the pose posterior starts broad and the object is built before it
sharpens. The pose read for an image is the posterior mode over ``search`` fixed Haar draws, and
the same draws give the reported bound ``L_search`` (computed in float64).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, DataError, UsageError
from ..manifolds.rotations import rotation_from_matrix


@dataclass
class PoseSearchConfig:
    """One pose-search run: the object (``points`` surfels), training (``steps`` of ``batch_size``
    images against ``grid`` fresh Haar draws, Adam ``lr``, the noise floor annealed from
    ``sigma_start`` to ``sigma_end`` over the first ``anneal`` of the steps) and reading (``search`` Haar draws,
    ``chunk`` rendered at a time)."""

    points: int = 64
    steps: int = 1500
    grid: int = 1024
    batch_size: int = 128
    lr: float = 0.01
    sigma_start: float = 0.5
    sigma_end: float = 0.03
    anneal: float = 0.6
    search: int = 20000
    chunk: int = 1000
    seed: int = 0

    def __post_init__(self):
        for name in ("points", "steps", "grid", "batch_size", "search", "chunk"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"pose search: {name} must be a positive integer, got {value!r}")
        for name in ("lr", "sigma_start", "sigma_end"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UsageError(f"pose search: {name} must be a positive number, got {value!r}")
        if not (isinstance(self.anneal, (int, float)) and 0 < self.anneal <= 1):
            raise UsageError(f"pose search: anneal must be in (0, 1], got {self.anneal!r}")

    def replace(self, **changes) -> "PoseSearchConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class SurfelObject(nn.Module):
    """``render(R)``: ``(G, 3, 3) -> (G, S·S)`` grey-level images of a learned object turned by
    ``R`` (object frame -> camera frame; the camera looks along +z, image up = +y).

    Surfel ``k`` at ``R p_k`` with normal ``R n_k`` is a Gaussian blob of one learned width; its
    shade is ``albedo_k (a + (1 - a) max(0, (R n_k)·l))``; a soft z-buffer (softmax of −6·depth,
    times a soft front-facing weight) mixes the shades at a pixel, and the coverage
    ``1 − exp(−2 Σ_k g_k)`` fades it to the black background. The blobs are separable in x and y,
    so a picture is two batched matrix products: O(G·K·S²)."""

    def __init__(self, size: int, points: int = 64):
        super().__init__()
        self.size = size
        self.points = nn.Parameter(0.4 * torch.randn(points, 3))
        self.normals = nn.Parameter(torch.randn(points, 3))
        self.albedo = nn.Parameter(torch.zeros(points))
        self.light = nn.Parameter(torch.tensor([0.0, 0.0, -1.0]))
        self.ambient = nn.Parameter(torch.tensor(0.0))
        self.log_width = nn.Parameter(torch.tensor(math.log(0.12)))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(0.5)))
        self.register_buffer("coords", (torch.arange(size) + 0.5) / size * 2 - 1)   # pixel centres

    def render(self, rotations: Tensor) -> Tensor:
        q = torch.einsum("gij,kj->gki", rotations, self.points)                # (G, K, 3)
        n = torch.einsum("gij,kj->gki", rotations, nn.functional.normalize(self.normals, dim=-1))
        a = torch.sigmoid(self.ambient)
        light = nn.functional.normalize(self.light, dim=0)
        shade = torch.sigmoid(self.albedo) * (a + (1 - a) * torch.relu(n @ light))   # (G, K)
        front = torch.softmax(-6.0 * q[..., 2], 1) * torch.sigmoid(-8.0 * n[..., 2])
        front = front / front.sum(1, keepdim=True)
        inv = 0.5 * torch.exp(-2 * self.log_width)
        gx = torch.exp(-inv * (self.coords - q[..., 0:1]) ** 2)                  # (G, K, S) columns
        gy = torch.exp(-inv * (-self.coords - q[..., 1:2]) ** 2).transpose(1, 2)  # (G, S, K) rows, top first
        cover = torch.bmm(gy, gx)
        num = torch.bmm(gy * (front * shade)[:, None, :], gx)
        den = torch.bmm(gy * front[:, None, :], gx)
        return ((1 - torch.exp(-2 * cover)) * num / (den + 1e-6)).reshape(len(rotations), -1)


def gaussian_log_likelihood(x: Tensor, images: Tensor, sigma: Tensor) -> Tensor:
    """``log N(x_b | images_j, σ² I)`` for every pair: ``(B, D), (G, D) -> (B, G)``, with
    ``|x − r|² = |x|² + |r|² − 2 x·r`` (one matrix product)."""
    d2 = x.pow(2).sum(-1)[:, None] + images.pow(2).sum(-1)[None] - 2 * x @ images.T
    dim = x.shape[-1]
    return -0.5 * d2.clamp_min(0) / sigma ** 2 - dim * torch.log(sigma) - 0.5 * dim * math.log(2 * math.pi)


def draw_rotations(n: int, *, seed: int, like: Tensor) -> Tensor:
    """``n`` Haar rotations drawn on the CPU from ``seed`` (the same on every device), on
    ``like``'s device and dtype."""
    return _haar(n, torch.Generator().manual_seed(seed)).to(device=like.device, dtype=like.dtype)


def _haar(n: int, gen: torch.Generator) -> Tensor:
    """Haar rotations from a CPU generator (QR of Gaussian matrices, sign-fixed), on the CPU."""
    return rotation_from_matrix(torch.randn(n, 3, 3, generator=gen, device="cpu"))


def check_images(x: Tensor, size: int, what: str = "images") -> Tensor:
    """``x`` as float ``(N, size²)``, refused by name when it is not one finite grey channel."""
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[1] != size * size:
        raise DataError(f"pose search needs {what} of shape (N, {size * size}) (one {size}×{size} "
                        f"grey channel), got {tuple(x.shape)}")
    if len(x) == 0:
        raise DataError(f"pose search: no {what}")
    if not torch.isfinite(x).all():
        raise DataError(f"pose search: {what} hold NaN or infinite values")
    return x.float()


def fit_pose_search(x: Tensor, size: int, config: PoseSearchConfig, *,
                    log: Callable[[str], None] | None = None) -> tuple[SurfelObject, list[dict]]:
    """Train a :class:`SurfelObject` on ``x`` (``(N, size²)`` grey levels) by maximising the
    prior-proposal bound ``L_grid`` (module docstring); returns the object and a history of
    ``{step, bound, sigma}`` every 100 steps."""
    x = check_images(x, size, "training images")
    torch.manual_seed(config.seed)
    model = SurfelObject(size, config.points).to(x.device)
    with torch.no_grad():
        model.log_sigma.fill_(math.log(config.sigma_start))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    floor_end = max(1, round(config.anneal * config.steps))
    history, t0 = [], time.perf_counter()
    for step in range(config.steps):
        idx = torch.randint(len(x), (min(config.batch_size, len(x)),), generator=gen,
                            device="cpu").to(x.device)
        rot = _haar(config.grid, gen).to(x.device)
        # the floor falls geometrically to sigma_end; below the learned scale it no longer acts
        floor = config.sigma_start * (config.sigma_end / config.sigma_start) ** min(1.0, step / floor_end)
        sigma = torch.clamp(model.log_sigma.exp(), min=floor)
        ll = gaussian_log_likelihood(x[idx], model.render(rot), sigma)
        bound = torch.logsumexp(ll, 1) - math.log(config.grid)
        loss = -bound.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == config.steps - 1:
            history.append({"step": step, "bound": float(bound.detach().mean()), "sigma": float(sigma.detach()),
                            "seconds": time.perf_counter() - t0})
            if log:
                log(f"pose search step {step}: bound {history[-1]['bound']:.1f}, σ {float(sigma):.3f}")
    return model, history


@torch.no_grad()
def search_poses(model: SurfelObject, x: Tensor, config: PoseSearchConfig, *,
                 seed: int | None = None) -> dict:
    """Each image's posterior mode over ``config.search`` Haar draws (``rotations``, N×3×3) and
    the prior-proposal bound on those draws, ``L_search(x)`` per image (``bound``; float64: a
    sum of thousands of pixel terms whose differences decide the mode), rendered ``chunk`` at a
    time."""
    x = check_images(x, model.size).to(model.coords.device).double()
    rot = draw_rotations(config.search, seed=config.seed + 1 if seed is None else seed, like=x)
    sigma = model.log_sigma.exp().double()
    best = torch.full((len(x),), -math.inf, dtype=torch.float64, device=x.device)
    arg = torch.zeros(len(x), dtype=torch.long, device=x.device)
    total = torch.full((len(x),), -math.inf, dtype=torch.float64, device=x.device)
    for start in range(0, config.search, config.chunk):
        r = rot[start:start + config.chunk]
        ll = gaussian_log_likelihood(x, model.render(r.float()).double(), sigma)
        top, i = ll.max(1)
        better = top > best
        best = torch.where(better, top, best)
        arg = torch.where(better, i + start, arg)
        total = torch.logaddexp(total, torch.logsumexp(ll, 1))
    return {"rotations": rot[arg], "bound": total - math.log(config.search),
            "mode_log_likelihood": best}


def save_pose_search(path: Path, model: SurfelObject, config: PoseSearchConfig) -> None:
    """The object's weights and config (a plain dict of tensors and numbers: loadable with
    ``weights_only=True``)."""
    torch.save({"state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "size": model.size, "config": config.to_dict()}, path)


def load_pose_search(path: Path) -> tuple[SurfelObject, PoseSearchConfig]:
    """Load what :func:`save_pose_search` wrote, safely (``weights_only=True``)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        config = PoseSearchConfig(**saved["config"])
        model = SurfelObject(int(saved["size"]), config.points)
        model.load_state_dict(saved["state"])
    except FileNotFoundError:
        raise CheckpointError(f"no pose-search checkpoint at {path}") from None
    except Exception as e:                       # corrupt, unsafe or another model's file
        raise CheckpointError(f"{path} is not a readable pose-search checkpoint: {e}") from None
    return model, config
