"""Image data with a known symmetry: rotated handwritten digits and rendered 3D rotations.

Both datasets are written as one ``.npz`` (see :func:`save_image_dataset`) holding

- ``x``: ``N × (C·H·W)`` pixel intensities in [0, 1] (float32), rows are flattened images;
- ``image_shape``: ``(C, H, W)``;
- ``test``: boolean mask of the fixed test rows;
- labels: ``angle`` (radians, digits) and ``digit`` / ``source``, or ``rotation`` (N×3×3, renders).

``fit``'s default likelihood for both is Bernoulli with dynamic binarization (the intensities are
the pixel probabilities; training draws a fresh binary image every step, the test set is binarized
once with a fixed seed), the standard discrete likelihood of binarized-MNIST VAEs; the images
suite scores the grey levels themselves with the continuous Bernoulli (``--binarized``: Bernoulli).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..common.files import save_arrays
from ..errors import DataError
from ..manifolds.rotations import haar_rotations

IMAGE_KEYS = ("x", "image_shape", "test")


# ---------------------------------------------------------------------- rotated digits
def rotate_images(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate ``(N, C, H, W)`` images counter-clockwise by ``angles`` (radians) about their
    centre, bilinear interpolation, zero outside (one batched ``grid_sample``)."""
    c, s = torch.cos(angles), torch.sin(angles)
    # grid_sample maps output coordinates to input ones: the inverse rotation (y axis points down)
    theta = torch.stack([torch.stack([c, -s, torch.zeros_like(c)], -1),
                         torch.stack([s, c, torch.zeros_like(c)], -1)], -2)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


DIGIT_CONTRAST = (0.15, 0.60)     # intensities below the first map to 0, above the second to 1


def rotated_digits(*, size: int = 16, copies: int = 8, seed: int = 0,
                   test_fraction: float = 0.2) -> dict:
    """The 1797 scikit-learn digits (8×8, 16 grey levels), upsampled so the digit fills the
    central 3/4 of a ``size × size`` canvas (its corners stay inside when turned), each drawn
    ``copies`` times at independent uniform angles in [0, 2π).

    After the bilinear upsampling and rotation a fixed contrast ramp maps intensity ``v`` to
    ``clip((v - 0.15) / 0.45, 0, 1)``: without it most stroke pixels are grey (median 0.47) and a
    binarized digit is a scatter of dots; with it the strokes stay solid (the role thresholding
    plays for binarized MNIST).

    The split is by source digit (``test_fraction`` of the 1797, seeded): no test image is a
    rotated copy of a training image."""
    from sklearn.datasets import load_digits

    if size < 8 or size % 4:
        raise ValueError(f"size must be a multiple of 4 and at least 8, got {size}")
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}")
    digits = load_digits()
    base = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]   # (1797, 1, 8, 8)
    inner = size * 3 // 4
    base = F.interpolate(base, size=(inner, inner), mode="bilinear", align_corners=False)
    pad = (size - inner) // 2
    base = F.pad(base, (pad, size - inner - pad, pad, size - inner - pad))
    n_src = base.shape[0]
    gen = torch.Generator().manual_seed(seed)
    src = torch.arange(n_src).repeat_interleave(copies)
    angle = 2 * math.pi * torch.rand(len(src), generator=gen, dtype=torch.float64)
    lo, hi = DIGIT_CONTRAST
    images = ((rotate_images(base[src], angle.float()) - lo) / (hi - lo)).clamp(0, 1)
    test_src = torch.zeros(n_src, dtype=torch.bool)
    test_src[torch.randperm(n_src, generator=gen)[:round(test_fraction * n_src)]] = True
    return {"x": images.reshape(len(src), -1).numpy(), "image_shape": np.array([1, size, size]),
            "test": test_src[src].numpy(), "angle": angle.numpy(),
            "digit": digits.target[src.numpy()].astype(np.int64), "source": src.numpy()}


# ---------------------------------------------------------------------- rendered rotations
# a chain of five unit cubes (steps +x, +x, +y, +z): chiral, and no rotation maps it onto itself,
# so every orientation gives a different picture; each cube has its own grey level. Bright
# albedos and a strong ambient term keep the object solid after binarization (a dim object
# would turn into sparse dots and carry little information about its pose).
CUBES = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [2, 1, 0], [2, 1, 1]], dtype=np.float64)
ALBEDO = np.array([1.0, 0.8, 0.95, 0.85, 0.9])
AMBIENT = 0.55
LIGHT = np.array([-0.45, 0.55, -0.70]) / np.linalg.norm([-0.45, 0.55, -0.70])


def object_radius() -> float:
    centres = CUBES - CUBES.mean(0)
    corners = centres[:, None, :] + 0.5 * np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T
    return float(np.linalg.norm(corners, axis=-1).max())


def lambert_shade(cube: np.ndarray, face: np.ndarray, lambert: np.ndarray) -> np.ndarray:
    """The default shading: ``ALBEDO[cube] · (a + (1 - a) max(0, n·l))`` with ``a = AMBIENT``."""
    return ALBEDO[cube] * (AMBIENT + (1 - AMBIENT) * lambert)


def render(rotations: np.ndarray, *, size: int = 32, supersample: int = 2,
           chunk: int = 64, shade=lambert_shade) -> np.ndarray:
    """Grey-level images ``(N, size, size)`` in [0, 1] of the cube chain turned by ``rotations``
    (N×3×3, object frame -> camera frame), or ``(N, C, size, size)`` when ``shade`` gives ``C``
    channels.

    Orthographic camera looking along +z (image up = +y), ray casting against the cubes' slabs
    (the nearest hit wins: an exact z-buffer), Lambert shading ``albedo · (a + (1 - a) max(0,
    n·l))`` with ambient ``a = AMBIENT`` and a fixed light, ``supersample²`` rays per pixel
    averaged (anti-aliasing). ``shade(cube, face, lambert)`` colours the hit rays (``cube`` the
    cube's index, ``face`` ``2·axis + (outward sign > 0)`` in the object frame, ``lambert``
    ``max(0, n·l)``; arrays ``(n, P)``) and returns ``(n, P)`` or ``(n, P, C)``."""
    rotations = np.asarray(rotations, dtype=np.float64)
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3):
        raise ValueError(f"rotations must be N×3×3, got {rotations.shape}")
    centres = CUBES - CUBES.mean(0)
    r = 1.04 * object_radius()
    s = size * supersample
    coords = (np.arange(s) + 0.5) / s * 2 * r - r
    u, v = np.meshgrid(coords, -coords)                       # rows run top to bottom
    pix = np.stack([u.ravel(), v.ravel(), np.full(s * s, -10.0)], -1)    # (P, 3) ray origins
    lo, hi = centres - 0.5, centres + 0.5                     # (J, 3)
    out = None
    for start in range(0, len(rotations), chunk):
        rot = rotations[start:start + chunk]                  # (n, 3, 3)
        o = np.einsum("nji,pj->npi", rot, pix)                # R^T p: origins in the object frame
        d = rot[:, 2, :]                                      # R^T e_z: direction in the object frame
        d = np.where(np.abs(d) < 1e-12, 1e-12, d)[:, None, None, :]     # (n, 1, 1, 3)
        t1 = (lo[None, None] - o[:, :, None]) / d             # (n, P, J, 3)
        t2 = (hi[None, None] - o[:, :, None]) / d
        tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
        t_near, t_far = tmin.max(-1), tmax.min(-1)            # (n, P, J)
        hit = t_near <= t_far
        depth = np.where(hit, t_near, np.inf)
        j = depth.argmin(-1)                                  # nearest cube per ray
        any_hit = np.isfinite(np.take_along_axis(depth, j[..., None], -1)[..., 0])
        axis = np.take_along_axis(tmin.argmax(-1), j[..., None], -1)[..., 0]   # entry face
        sign = -np.sign(np.take_along_axis(d[:, 0, 0, :], axis, -1))           # (n, P)
        normal_cam = rot[np.arange(len(rot))[:, None], :, axis] * sign[..., None]  # R e_axis
        lambert = np.clip(normal_cam @ LIGHT, 0, None)
        value = shade(j, 2 * axis + (sign > 0), lambert)
        value = value.reshape(*any_hit.shape, -1)                 # (n, P, C)
        if out is None:
            out = np.empty((len(rotations), s * s, value.shape[-1]))
        out[start:start + chunk] = np.where(any_hit[..., None], value, 0.0)
    img = out.reshape(-1, size, supersample, size, supersample, out.shape[-1]).mean((2, 4))
    img = np.clip(img.transpose(0, 3, 1, 2), 0.0, 1.0)
    return img[:, 0] if img.shape[1] == 1 else img


def rendered_rotations(n: int, *, size: int = 32, seed: int = 0,
                       test_fraction: float = 0.1, shade=lambert_shade) -> dict:
    """``n`` renders at Haar-uniform rotations (seeded), the rotation kept as a label
    (``shade``: see :func:`render`)."""
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    if size < 8 or size % 4:
        raise ValueError(f"size must be a multiple of 4 and at least 8, got {size}")
    gen = torch.Generator().manual_seed(seed)
    rot = haar_rotations(n, 3, generator=gen, dtype=torch.float64).numpy()
    test = np.zeros(n, dtype=bool)
    test[torch.randperm(n, generator=gen)[:max(1, round(test_fraction * n))].numpy()] = True
    images = render(rot, size=size, shade=shade)
    channels = 1 if images.ndim == 3 else images.shape[1]
    return {"x": images.reshape(n, -1).astype(np.float32), "image_shape": np.array([channels, size, size]),
            "test": test, "rotation": rot}


# ---------------------------------------------------------------------- files
def save_image_dataset(path: str | os.PathLike, data: dict) -> Path:
    """Write an image dataset ``.npz``, compressed, whole or not at all (:func:`save_arrays`)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"image datasets are .npz files, got {path}")
    save_arrays(path, compressed=True, **data)
    return path


def load_image_dataset(path: str | os.PathLike) -> dict:
    """Read and check an image dataset ``.npz``; a clear :class:`DataError` for anything amiss."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.keys()}
    except ValueError as err:
        raise DataError(f"{path}: refused or unreadable ({str(err).splitlines()[0][:120]})") from None
    except Exception as err:   # corrupt zip, truncated file, ...
        raise DataError(f"{path}: unreadable image data file ({type(err).__name__})") from None
    missing = [k for k in IMAGE_KEYS if k not in data]
    if missing:
        raise DataError(f"{path}: not an image dataset (missing {', '.join(missing)}; make one with "
                        f"`manifold-vae data digits|renders`)")
    x, shape, test = data["x"], data["image_shape"], data["test"]
    if x.ndim != 2 or shape.shape != (3,) or int(np.prod(shape)) != x.shape[1]:
        raise DataError(f"{path}: x has shape {x.shape} but image_shape is {shape.tolist()}")
    if test.shape != (x.shape[0],) or test.dtype != bool:
        raise DataError(f"{path}: 'test' must be a boolean mask with one entry per row")
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise DataError(f"{path}: pixel values must be finite and in [0, 1]")
    if test.all() or not test.any():
        raise DataError(f"{path}: the test mask must select some rows but not all")
    return data


def is_image_dataset(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ``.npz`` carrying an ``image_shape`` (cheap: reads the zip index)."""
    path = Path(path)
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return "image_shape" in z.files
    except Exception:
        return False
