"""The latent layer alone, in a plain PyTorch loop: no VAE class, no engine.

    python examples/plain_loop.py [--steps 3000]

Circle data in R^20; the model is two small MLPs around ``ManifoldLatent("S1")``, a learned noise
scale, and a hand-written ELBO and IWAE from the layer's pieces.
"""
import argparse
import math

import torch
from torch import nn

import manifold_vae as mv


def main(argv=None) -> dict:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--steps", type=int, default=3000)
    steps = args.parse_args(argv).steps
    torch.manual_seed(0)
    x = mv.ManifoldBenchmark("S1", dim=20, noise=0.1).sample(5000)[0]
    latent = mv.ManifoldLatent("S1", group_action=True)
    encoder = nn.Sequential(nn.Linear(20, 128), nn.ReLU(), nn.Linear(128, latent.param_dim))
    decoder = nn.Sequential(nn.Linear(latent.point_dim, 128), nn.ReLU(), nn.Linear(128, 20))
    log_sigma = nn.Parameter(torch.zeros(()))
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters(), log_sigma], lr=1e-3)

    def log_lik(x, m):                       # Gaussian, one learned scale
        r = (x - decoder(m)) / log_sigma.exp()
        return -0.5 * r.pow(2).sum(-1) - 20 * (log_sigma + 0.5 * math.log(2 * math.pi))

    for step in range(steps):
        xb = x[torch.randint(len(x), (256,))]
        out = latent(encoder(xb))                      # sample on M and closed-form KL
        elbo = log_lik(xb, out.point) - min(1.0, step / (0.2 * steps)) * out.kl
        opt.zero_grad()
        (-elbo.mean()).backward()
        opt.step()
    with torch.no_grad():                              # IWAE from the layer's pieces, K = 100
        s = latent.sample(encoder(x[:500]), 100)
        iwae = torch.logsumexp(log_lik(x[:500], s.point) + s.log_ratio, 0) - math.log(100)
    print(f"test IWAE {float(iwae.mean()):.3f} nats/example after {steps} steps")
    return {"iwae": float(iwae.mean())}


if __name__ == "__main__":
    main()
