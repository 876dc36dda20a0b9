"""Variants of the renders experiment that were measured and not kept: each changes one thing
(the data or one training term), then trains and scores exactly as ``renders_pose.py`` does.

    python benchmarks/renders_variants.py faces --as-suite --steps 1000 --seed 1 --threads 2
    python benchmarks/renders_variants.py colour --as-suite --steps 1000 --seed 1 --threads 2
    python benchmarks/renders_variants.py sleep --as-suite --steps 1000 --seed 1 --threads 2
    python benchmarks/renders_variants.py matched-turn --as-suite --steps 1000 --seed 1 --threads 2

Every argument after the variant's name is ``renders_pose.py``'s. Each variant caches its own
data under ``/tmp/renders-<variant>`` unless ``--out`` is given (the suite's cache is keyed by
its settings, not by the renderer, so a shared ``--out`` would mix datasets).

* ``faces``: each of the object's six face directions its own albedo (0.15–0.95) instead of one
  albedo per cube: faces of clearly different brightness (the issue's first suggestion).
* ``colour``: three colour channels, each cube its own hue, Lambert shading as before; the splat
  decoder then carries a colour per point.
* ``sleep``: a label-free cycle term (weight ``SLEEP_WEIGHT``, 10): the decoder renders its
  object at Haar-random rotations (other coordinates from a standard normal), and the encoder's
  best hypothesis must read the rotation back (``1 − cos`` of the geodesic angle, through the
  decoder's rotation head frozen: gradients to the encoder only; the wake–sleep idea of Hinton et al. 1995 applied to the pose).
* ``matched-turn``: the turn-consistency term matched across hypotheses — the turned image's
  best hypothesis against the turn of the original's chosen one — instead of every hypothesis
  against itself (the suite's term, which the hypotheses cannot satisfy: ``turn_residuals``).
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import renders_pose  # noqa: E402

import manifold_vae.experiments.suites.images as image_suite  # noqa: E402
import manifold_vae.models.vae as vae_module  # noqa: E402
from manifold_vae.data import images  # noqa: E402
from manifold_vae.manifolds.rotations import haar_rotations  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from manifold_vae.manifolds.rotations import rotation_from_6d  # noqa: E402
from manifold_vae.models.equivariance import rotation_turn_consistency  # noqa: E402

FACE_ALBEDO = np.array([0.95, 0.30, 0.75, 0.45, 0.60, 0.15])    # by face = 2·axis + (sign > 0)
CUBE_COLOURS = np.array([[0.95, 0.25, 0.20], [0.20, 0.85, 0.30], [0.25, 0.35, 0.95],
                         [0.95, 0.85, 0.20], [0.80, 0.30, 0.85]])
SLEEP_WEIGHT = float(os.environ.get("SLEEP_WEIGHT", "10"))


def face_shade(cube, face, lambert):
    return FACE_ALBEDO[face] * (images.AMBIENT + (1 - images.AMBIENT) * lambert)


def colour_shade(cube, face, lambert):
    return CUBE_COLOURS[cube] * (images.AMBIENT + (1 - images.AMBIENT) * lambert)[..., None]


def sleep_term(model, x: torch.Tensor) -> torch.Tensor:
    """Mean over ``len(x)`` decoder renders at Haar-random rotations of ``1 − cos φ``, ``φ`` the
    angle between the rotation the decoder turned by and the one its best hypothesis reads."""
    b = x.shape[0]
    if model.latent.manifold.factors()[0].spec != "SO3":
        raise ValueError("the sleep term draws the latent's first factor as SO(3)")
    with torch.no_grad():
        rot = haar_rotations(b, 3, dtype=x.dtype).to(x.device)
        rest = torch.randn(b, model.latent.point_dim - 9, dtype=x.dtype, device=x.device)
        m = torch.cat([rot.reshape(b, 9), rest], -1)
        target = model.decoder.rotation(m)
        drawn = model.likelihood.mean(model.decoder(m)).clamp(0, 1).to(x.dtype)
    every = model.candidates(model.raw(model.likelihood.observe(drawn)).float())
    head = model.decoder.head                    # read through a frozen head: the encoder learns
    read = rotation_from_6d(F.linear(model.latent.mean_point(every), head.weight.detach(),
                                     head.bias.detach()))                 # (C, b, 3, 3)
    cos_phi = ((read * target).sum((-2, -1)) - 1) / 2
    return (1 - cos_phi).min(0).values.mean()


def matched_turn_consistency(model, x: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """Per example ``min_c 1 − cos φ(R_c(rot_α x), R_z(α) R_chosen(x))``."""
    rotation = model.decoder.rotation
    b = x.shape[0]
    chosen = model.chosen(model.likelihood.observe(x), raw)
    r = rotation(model.latent.mean_point(model.candidates(raw)))[chosen, torch.arange(b, device=x.device)]

    def every_head(obs):                                                  # (C, b, 3, 3)
        return rotation(model.latent.mean_point(model.candidates(model.raw(obs).float())))
    return rotation_turn_consistency(every_head, x, r, model.image_shape,
                                     observe=model.likelihood.observe).min(0).values


def apply(variant: str) -> None:
    """Patch the library for ``variant`` (this process only)."""
    if variant in ("faces", "colour"):
        shade = face_shade if variant == "faces" else colour_shade
        image_suite.rendered_rotations = functools.partial(images.rendered_rotations, shade=shade)
    elif variant == "sleep":
        plain = vae_module.VAE.loss

        def loss(self, x, kl_weight=1.0):
            out = plain(self, x, kl_weight)
            if self.training and SLEEP_WEIGHT > 0:
                sleep = sleep_term(self, x)
                out["loss"] = out["loss"] + SLEEP_WEIGHT * sleep
                out["sleep"] = sleep.detach()
            return out
        vae_module.VAE.loss = loss
    elif variant == "matched-turn":
        vae_module.VAE._turn_consistency = matched_turn_consistency
    else:
        raise SystemExit(f"unknown variant {variant!r}: faces, colour, sleep or matched-turn")


VARIANTS = ("faces", "colour", "sleep", "matched-turn")

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in VARIANTS:
        raise SystemExit(f"usage: renders_variants.py {{{','.join(VARIANTS)}}} [renders_pose.py options]")
    variant = sys.argv.pop(1)
    apply(variant)
    if not any(a == "--out" or a.startswith("--out=") for a in sys.argv):
        sys.argv += ["--out", f"/tmp/renders-{variant}"]
    renders_pose.main()
