"""Bring your own networks: a conv encoder and decoder written here, around the library's latent
layer, trained and evaluated by the library's engine on rotated handwritten digits.

    python examples/custom_networks.py [--steps 2000] [--copies 8] [--out runs/custom-digits]

The latent is ``S1xR4`` with a group-action encoder: the circle can carry the digit's angle, the
four Euclidean coordinates its style. Nothing below is specific to the library except the three
lines marked ``mv``: any encoder that outputs ``latent.param_dim`` numbers and any decoder that
reads ``latent.point_dim`` coordinates (and accepts leading sample dimensions) will do.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

import manifold_vae as mv
from manifold_vae.data.images import rotated_digits

SIDE = 16


class Encoder(nn.Module):
    """16×16 images -> raw latent parameters: two stride-2 convolutions and a linear head."""

    def __init__(self, out_features: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1), nn.ReLU(), nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * width * (SIDE // 4) ** 2, 256), nn.ReLU(),
            nn.Linear(256, out_features))

    def forward(self, x):
        return self.net(x.reshape(-1, 1, SIDE, SIDE)).reshape(*x.shape[:-1], -1)


class Decoder(nn.Module):
    """Points on the latent manifold -> pixel logits: a linear stem and two transposed convs."""

    def __init__(self, in_features: int, width: int = 32):
        super().__init__()
        self.width = width
        self.stem = nn.Sequential(nn.Linear(in_features, 256), nn.ReLU(),
                                  nn.Linear(256, 2 * width * (SIDE // 4) ** 2), nn.ReLU())
        self.up = nn.Sequential(nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
                                nn.ConvTranspose2d(width, 1, 4, 2, 1))

    def forward(self, m):
        h = self.stem(m.reshape(-1, m.shape[-1])).reshape(-1, 2 * self.width, SIDE // 4, SIDE // 4)
        return self.up(h).reshape(*m.shape[:-1], SIDE * SIDE)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--copies", type=int, default=8, help="rotated copies of each digit")
    ap.add_argument("--width", type=int, default=32, help="channels of the first convolution")
    ap.add_argument("--k", type=int, default=100, help="importance samples of the test IWAE")
    ap.add_argument("--out", default="runs/custom-digits")
    args = ap.parse_args(argv)

    data = rotated_digits(size=SIDE, copies=args.copies, seed=0)
    x, test = torch.from_numpy(data["x"]), torch.from_numpy(data["test"])

    latent = mv.ManifoldLatent("S1xR4", group_action=True)                       # mv
    model = mv.VAE(Encoder(latent.param_dim, args.width), latent,               # mv
                   Decoder(latent.point_dim, args.width), mv.BernoulliLikelihood(x.shape[1]))
    config = mv.FitConfig(steps=args.steps, batch_size=128, iwae_k=args.k)      # mv: the run
    result = mv.run_fit(config, x[~test], args.out, x_test=x[test], model=model, force=True)
    m = result.metrics
    print(f"test IWAE {m['test_iwae']:.2f} ± {m['test_iwae_stderr']:.2f} nats per image "
          f"(ELBO {m['test_elbo']:.2f}) after {args.steps} steps; run in {args.out}")
    return result


if __name__ == "__main__":
    main()
