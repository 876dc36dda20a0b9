"""Plain networks shared by every model, so that comparisons between latent spaces are fair."""
from __future__ import annotations

from typing import Sequence

from torch import nn


ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU}


class MLP(nn.Sequential):
    """``in -> [Linear -> ReLU] * len(hidden) -> Linear -> out``.

    Example::

        >>> MLP(100, [256, 256], 4)(torch.zeros(8, 100)).shape
        torch.Size([8, 4])
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, *,
                 activation: str = "relu", zero_last: bool = False):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        last = nn.Linear(width, out_dim)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        super().__init__(*layers)
        self.in_dim, self.out_dim, self.hidden = in_dim, out_dim, list(hidden)


def _conv_sizes(image_shape: Sequence[int], n_layers: int) -> tuple[int, int, int]:
    """``(C, H, W)`` checked: each of ``n_layers`` stride-2 convolutions halves H and W."""
    if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
        raise ValueError(f"image_shape must be (channels, height, width), got {list(image_shape)}")
    c, h, w = (int(s) for s in image_shape)
    step = 2 ** n_layers
    if h % step or w % step:
        raise ValueError(f"a conv network with {n_layers} stride-2 layers needs height and width "
                         f"divisible by {step}; got {h}×{w}")
    return c, h, w


class ConvEncoder(nn.Module):
    """Flat images ``(B, C·H·W) -> (B, out)``: stride-2 4×4 convolutions (``channels``), then an
    MLP head with ``hidden`` widths. The DCGAN-style encoder of most image VAEs."""

    def __init__(self, image_shape: Sequence[int], hidden: Sequence[int], out_dim: int, *,
                 channels: Sequence[int] = (32, 64), activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        c, h, w = _conv_sizes(image_shape, len(channels))
        self.image_shape = (c, h, w)
        layers: list[nn.Module] = []
        for ch in channels:
            layers += [nn.Conv2d(c, ch, 4, 2, 1), ACTIVATIONS[activation]()]
            c = ch
        self.convs = nn.Sequential(*layers)
        flat = c * (h >> len(channels)) * (w >> len(channels))
        self.head = MLP(flat, hidden, out_dim, activation=activation)
        self.in_dim, self.out_dim = c * h * w, out_dim

    def forward(self, x):
        lead = x.shape[:-1]
        y = self.convs(x.reshape(-1, *self.image_shape))
        return self.head(y.flatten(1)).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """``(…, in) -> (…, C·H·W)``: an MLP to a ``channels[-1] × H/2^L × W/2^L`` grid, then stride-2
    4×4 transposed convolutions back to the image (mirror of :class:`ConvEncoder`)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], image_shape: Sequence[int], *,
                 channels: Sequence[int] = (32, 64), activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        c, h, w = _conv_sizes(image_shape, len(channels))
        self.image_shape = (c, h, w)
        n = len(channels)
        self.grid = (int(channels[-1]), h >> n, w >> n)
        self.head = nn.Sequential(MLP(in_dim, hidden, self.grid[0] * self.grid[1] * self.grid[2],
                                      activation=activation), ACTIVATIONS[activation]())
        layers: list[nn.Module] = []
        widths = list(channels)[::-1] + [c]
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.ConvTranspose2d(a, b, 4, 2, 1))
            if i < n - 1:
                layers.append(ACTIVATIONS[activation]())
        self.deconvs = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, c * h * w

    def forward(self, m):
        lead = m.shape[:-1]
        y = self.head(m.reshape(-1, m.shape[-1])).reshape(-1, *self.grid)
        return self.deconvs(y).reshape(*lead, self.out_dim)
