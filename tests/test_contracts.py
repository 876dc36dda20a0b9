"""Contract tests: every latent family and every distribution through the same generic tests.

The registries below are built from the library's own registries — every manifold the latent-spec
grammar names (``example_specs``) in every posterior family that can live on it, with and without
a group action, in both hidden spaces — never from a hand-kept list of cases. Statistical checks
use fixed seeds and tolerances of a few standard errors of the Monte Carlo estimate (said at each).
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from manifold_vae import ManifoldLatent
from manifold_vae.distributions import (BoxBeta, ConcatIndependent, HypersphericalUniform,
                                        PowerSpherical, VonMisesFisher, log_sphere_volume)
from manifold_vae.embeddings import LearnedEmbedding
from manifold_vae.latents import FAMILIES, LatentSpec
from manifold_vae.likelihoods import LIKELIHOODS
from manifold_vae.likelihoods.continuous_bernoulli import SQUEEZE
from manifold_vae.manifolds import example_specs, parse_latent


def latent_cases() -> list[tuple[str, dict]]:
    """``(spec, options)`` for every family on every registry manifold it can live on."""
    cases = []
    for spec in example_specs():
        m = parse_latent(spec)
        cases.append((spec, {}))
        if m.has_group:
            cases.append((spec, {"group_action": True}))
        if "box" in m.hidden_kinds:        # the hidden space the default does not pick
            other = "box" if LatentSpec(spec).hidden == "normal" else "normal"
            cases.append((spec, {"compact_hidden": other, "group_action": m.has_group}))
        for family, info in FAMILIES.items():
            if info.sphere_only and spec.startswith("S") and spec[1:].isdigit():
                cases.append((f"{family}:{spec}", {}))
    cases.append(("S1", {"embedding": "learned"}))        # a learned f (untrained weights)
    cases.append(("T2xR1", {"embedding": "learned", "group_action": True}))
    return cases


CASES = latent_cases()
IDS = [s + "".join(f"-{k}" for k, v in o.items() if v) for s, o in CASES]


def make_latent(spec: str, options: dict) -> ManifoldLatent:
    torch.manual_seed(0)
    options = dict(options)
    if options.pop("embedding", "exact") == "learned":
        return ManifoldLatent(spec, embedding=LearnedEmbedding(parse_latent(spec), [16]), **options)
    return ManifoldLatent(spec, **options)


def raw_for(latent: ManifoldLatent, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return (scale * torch.randn(*shape, latent.param_dim,
                                generator=torch.Generator().manual_seed(1))).requires_grad_(True)


def test_the_registry_covers_every_family_and_form():
    families = {s.split(":")[0] if ":" in s else "er" for s, _ in CASES}
    assert families == set(FAMILIES)
    assert {s for s, _ in CASES} >= set(example_specs())


@pytest.mark.parametrize("spec,options", CASES, ids=IDS)
def test_shapes_support_and_finite_gradients(spec, options):
    """One sample per example on M with the KL per example; K samples with their log-ratios;
    leading batch dims broadcast; every raw output gets a finite gradient."""
    latent = make_latent(spec, options)
    m = latent.manifold
    raw = raw_for(latent, 2, 5)
    out = latent(raw)
    assert out.point.shape == (2, 5, latent.point_dim) and out.kl.shape == (2, 5)
    assert out.log_ratio.shape == (2, 5) and out.z.shape[:2] == (2, 5)
    if latent.spec.embedding == "exact":        # a learned f only nearly reaches M
        ok, reason = m.check_point(out.point.detach(), atol=1e-3)
        assert ok, reason
    (out.point.sum() + out.kl.sum()).backward()
    assert torch.isfinite(raw.grad).all()
    k = latent.sample(raw.detach()[0], 7)
    assert k.point.shape == (7, 5, latent.point_dim) and k.log_ratio.shape == (7, 5)
    assert torch.isfinite(k.log_ratio).all() and torch.isfinite(k.kl).all()
    assert latent.mean_point(raw.detach()[0]).shape == (5, latent.point_dim)
    q = latent.posterior(raw.detach()[0])
    assert q.expand(torch.Size([3, 5])).batch_shape == (3, 5)


@pytest.mark.parametrize("spec,options", CASES, ids=IDS)
def test_closed_form_kl_matches_monte_carlo(spec, options):
    """KL(q||p) = E_q[log q(z) - log p(z)] = E_q[-log_ratio]: the closed form against the mean of
    4000 draws, within 5 standard errors of that mean (plus 1e-3 for float32 rounding)."""
    latent = make_latent(spec, options)
    raw = raw_for(latent, 3, scale=0.5).detach()
    torch.manual_seed(2)
    with torch.no_grad():
        s = latent.sample(raw, 4000)
        mc = -s.log_ratio.double()
    se = mc.std(0) / math.sqrt(4000)
    assert ((mc.mean(0) - s.kl.double()).abs() < 5 * se + 1e-3).all(), (mc.mean(0), s.kl, se)


@pytest.mark.parametrize("spec,options", CASES, ids=IDS)
def test_every_allocation_follows_the_input_device(spec, options):
    """With the default device set to ``meta``, every tensor the layer creates without looking at
    its inputs lands on ``meta`` and the arithmetic with the CPU inputs fails (or the outputs come
    out on ``meta``): so this test fails on a CPU-only machine whenever an allocation ignores the
    device — the check CI can run without a GPU."""
    latent = make_latent(spec, options)
    raw = raw_for(latent, 4)
    with torch.device("meta"):
        out = latent(raw)
        (out.point.sum() + out.kl.sum() + out.log_ratio.sum()).backward()
        k = latent.sample(raw.detach(), 3)
        tensors = [out.point, out.kl, out.log_ratio, k.point, k.log_ratio, k.kl,
                   latent.mean_point(raw.detach()), latent.kl(raw.detach()), raw.grad]
    assert all(t.device.type == "cpu" for t in tensors)


# ---------------------------------------------------------------------- distributions
_MADE: list[torch.Tensor] = []      # the leaf parameters of the distribution made last


def _leaf(values) -> torch.Tensor:
    t = torch.tensor(values).requires_grad_(True)
    _MADE.append(t)
    return t


def _unit(rows) -> torch.Tensor:
    return _leaf(torch.nn.functional.normalize(torch.tensor(rows), dim=-1).tolist())


def _box(n, shape, g):
    return torch.rand(n, *shape, generator=g)


def _sphere(n, shape, g):
    return torch.nn.functional.normalize(torch.randn(n, *shape, generator=g), dim=-1)


def _uniform_box(d: int):
    return Independent(torch.distributions.Uniform(torch.zeros(d), torch.ones(d)), 1)


SPHERE3 = math.exp(log_sphere_volume(3))
LOC3 = [[0.6, 0.0, 0.8], [0.0, -1.0, 0.0]]
# name: (make -> distribution on fresh leaf parameters, uniform sampler of the support or None,
#        volume of the support, prior for the KL or None)
DISTS = {
    "BoxBeta": (lambda: BoxBeta(_leaf([0.7, 3.0, 20.0]), _leaf([1.5, 2.0, 9.0])), _box, 1.0,
                lambda: torch.distributions.Uniform(torch.zeros(3), torch.ones(3))),
    "Independent(BoxBeta)": (lambda: Independent(BoxBeta(_leaf([0.7, 3.0]), _leaf([1.5, 2.0])), 1),
                             _box, 1.0, lambda: _uniform_box(2)),
    "ConcatIndependent": (lambda: ConcatIndependent([
        Independent(BoxBeta(_leaf([2.0]), _leaf([5.0])), 1),
        Independent(Normal(_leaf([0.3]), _leaf([0.5])), 1)]), None, None,
        lambda: ConcatIndependent([_uniform_box(1), Independent(Normal(torch.zeros(1),
                                                                       torch.ones(1)), 1)])),
    "VonMisesFisher": (lambda: VonMisesFisher(_unit(LOC3), _leaf([2.0, 15.0])), _sphere, SPHERE3,
                       lambda: HypersphericalUniform(3)),
    "PowerSpherical": (lambda: PowerSpherical(_unit(LOC3), _leaf([2.0, 15.0])), _sphere, SPHERE3,
                       lambda: HypersphericalUniform(3)),
    "HypersphericalUniform": (lambda: HypersphericalUniform(3, batch_shape=(2,)), _sphere, SPHERE3,
                              None),
}


@pytest.mark.parametrize("name", list(DISTS))
def test_distribution_shapes_and_expand(name):
    d = DISTS[name][0]()
    x = d.sample((4,))
    assert x.shape == (4, *d.batch_shape, *d.event_shape)
    assert d.log_prob(x).shape == (4, *d.batch_shape)
    e = d.expand(torch.Size([5, *d.batch_shape]))
    assert e.batch_shape == (5, *d.batch_shape) and e.sample().shape[:1] == (5,)


@pytest.mark.parametrize("name", [n for n, c in DISTS.items() if c[1] is not None])
def test_density_integrates_to_one(name):
    """E_{u ~ U(support)}[q(u)] · vol(support) = 1 with 40000 uniform points, within 5 standard
    errors of that Monte Carlo mean."""
    make, uniform, volume, _ = DISTS[name]
    d = make()
    u = uniform(40000, (*d.batch_shape, *d.event_shape), torch.Generator().manual_seed(3))
    with torch.no_grad():
        w = d.log_prob(u).double().exp() * volume
    se = w.std(0) / math.sqrt(len(w))
    assert ((w.mean(0) - 1).abs() < 5 * se + 1e-3).all(), (w.mean(0), se)


@pytest.mark.parametrize("name", [n for n, c in DISTS.items() if c[3] is not None])
def test_distribution_kl_matches_monte_carlo(name):
    """The registered closed-form KL to the prior against E_q[log q - log p] (4000 draws, 5 s.e.)."""
    make, _, _, prior = DISTS[name]
    torch.manual_seed(4)
    d, p = make(), prior()
    with torch.no_grad():
        x = d.sample((4000,))
        mc = (d.log_prob(x) - p.log_prob(x)).double()
        kl = kl_divergence(d, p).double()
    se = mc.std(0) / math.sqrt(4000)
    assert ((mc.mean(0) - kl).abs() < 5 * se + 1e-3).all(), (mc.mean(0), kl, se)


@pytest.mark.parametrize("name", [n for n, c in DISTS.items() if c[3] is not None])
def test_distribution_samples_and_kl_carry_finite_gradients(name):
    make, _, _, prior = DISTS[name]
    _MADE.clear()
    d = make()
    leaves = list(_MADE)
    assert leaves and d.has_rsample
    torch.manual_seed(5)
    (d.rsample((16,)).sum() + kl_divergence(d, prior()).sum()).backward()
    assert all(leaf.grad is not None and torch.isfinite(leaf.grad).all() for leaf in leaves)


# ---------------------------------------------------------------------- likelihoods
def _all_observations(name: str, d: int) -> tuple[torch.Tensor, float]:
    """Every observation of a likelihood's support on a grid (with the cell volume): all binary
    vectors for Bernoulli, a fine grid of the support for the continuous Bernoulli ([0, 1]^d in
    its squeezed coordinates), of R^d for the Gaussian."""
    if name == "bernoulli":
        grid = torch.tensor([[(i >> j) & 1 for j in range(d)] for i in range(2 ** d)], dtype=torch.float32)
        return grid, 1.0
    if name == "continuous-bernoulli":     # midpoint rule on the squeeze's preimage of [0, 1]^d
        lo = -SQUEEZE / (1 - 2 * SQUEEZE)
        t = lo + (1 - 2 * lo) * (torch.arange(400) + 0.5) / 400
        return torch.cartesian_prod(*[t] * d).reshape(-1, d), ((1 - 2 * lo) / 400) ** d
    t = torch.linspace(-6, 6, 241)
    return torch.cartesian_prod(*[t] * d).reshape(-1, d), float(t[1] - t[0]) ** d


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_likelihood_shapes_normalization_and_device(name):
    """Every registered likelihood: log p(x|m) per example with leading sample dims, a density
    that sums (or integrates, on a grid to ±6: the mass beyond is below 1e-6) to 1 over its
    support, finite gradients, and nothing allocated off the inputs' device."""
    lik = LIKELIHOODS[name](2)
    params = (0.3 * torch.randn(4, 3, lik.param_dim, generator=torch.Generator().manual_seed(6))
              ).requires_grad_(True)
    x = torch.rand(3, 2).round()
    with torch.device("meta"):
        lp = lik.log_prob(lik.transform(x), params)
        lp.sum().backward()
    assert lp.shape == (4, 3) and lp.device.type == "cpu" and torch.isfinite(params.grad).all()
    grid, cell = _all_observations(name, 2)
    with torch.no_grad():
        total = (lik.log_prob(lik.transform(grid), params[0, 0].expand_as(grid)).double().exp()
                 * cell).sum()
    assert float(total) == pytest.approx(1.0, abs=2e-3)
