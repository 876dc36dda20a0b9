"""ELBO/IWAE estimators and the true-likelihood ceiling."""
import math

import pytest
import torch

from manifold_vae import ManifoldBenchmark
from manifold_vae.errors import UsageError
from tests.helpers import build
from manifold_vae.evaluation import evaluate, per_example_bounds, true_log_likelihood
from manifold_vae.evaluation.ceiling import _log_gauss_mixture


@pytest.fixture(scope="module")
def bench_data():
    bench = ManifoldBenchmark("S1", dim=20, noise=0.1, seed=3)
    x, m = bench.sample(300)
    return bench, x, m


@pytest.mark.parametrize("latent,ga", [("S1", True), ("S1", False), ("R2", False)])
def test_iwae_above_elbo_and_non_decreasing_in_k(bench_data, latent, ga):
    _, x, _ = bench_data
    torch.manual_seed(0)
    model = build(x.shape[1], latent, group_action=ga, hidden=[32])
    model.likelihood.set_data_transform(x.mean(0), x.std())
    bounds = []
    for k in (1, 10, 100):
        elbo, iwae = per_example_bounds(model, x, k=k, generator_seed=k)
        assert torch.isfinite(iwae).all()
        assert float(iwae.mean()) >= float(elbo.mean()) - 1e-9
        bounds.append(iwae)
    # E[IWAE_K] is non-decreasing in K: each mean may fall below the one of fewer samples only by
    # the noise of the paired per-example difference (3 standard errors)
    for small, large in zip(bounds, bounds[1:]):
        d = large - small
        assert float(d.mean()) >= -3 * float(d.std()) / math.sqrt(len(d))


def test_iwae_with_one_sample_equals_elbo_estimate(bench_data):
    _, x, _ = bench_data
    model = build(x.shape[1], "S1", hidden=[16])
    elbo, iwae = per_example_bounds(model, x, k=1)
    torch.testing.assert_close(elbo, iwae)


def test_evaluate_reports_standard_errors(bench_data):
    _, x, _ = bench_data
    model = build(x.shape[1], "R1", hidden=[16])
    ev = evaluate(model, x, k=5)
    assert ev["n"] == 300 and ev["k"] == 5
    assert ev["iwae_stderr"] == pytest.approx(float(ev["per_example_iwae"].std()) / math.sqrt(300))


def test_evaluation_is_batched_consistently(bench_data):
    # chunking over examples must not change the result (same RNG stream per chunk is not
    # required, so compare a deterministic model: posterior evaluated at K=1 with a fixed seed)
    _, x, _ = bench_data
    model = build(x.shape[1], "S1", group_action=True, hidden=[16])
    e1, i1 = per_example_bounds(model, x[:50], k=20, max_rows=20 * 50, generator_seed=0)
    e2, i2 = per_example_bounds(model, x[:50], k=20, max_rows=20 * 50, generator_seed=0)
    torch.testing.assert_close(i1, i2)


@pytest.mark.parametrize("latent,ga", [("S1", True), ("R2", False)])
def test_decoder_passes_within_a_chunk_leave_the_log_weights_unchanged(bench_data, latent, ga,
                                                                        monkeypatch):
    # on a CPU the decoder runs over a few importance samples at a time; the same draws must give
    # the same log-weights as one pass over the whole chunk (12 rows: 2 samples of 5 rows per pass,
    # the last pass 1 sample)
    from manifold_vae.models import vae as vae_module
    _, x, _ = bench_data
    torch.manual_seed(0)
    model = build(x.shape[1], latent, group_action=ga, hidden=[16]).eval()
    with torch.no_grad():
        torch.manual_seed(1)
        whole = model.log_weights(x[:5], 31)
        monkeypatch.setattr(vae_module, "CPU_DECODER_PASS_ROWS", 12)
        torch.manual_seed(1)
        passes = model.log_weights(x[:5], 31)
    assert passes.shape == (31, 5)
    torch.testing.assert_close(passes, whole)


def test_quadrature_ceiling_converges_as_grid_refines(bench_data):
    bench, x, _ = bench_data
    levels = []
    for level in range(6, 15):
        pts, log_w = bench.manifold.quadrature(level)
        levels.append(_log_gauss_mixture(x.double(), bench.mean(pts), log_w, bench.noise))
    diffs = [float((b - a).abs().max()) for a, b in zip(levels, levels[1:])]
    assert diffs[-1] < 1e-6
    assert all(b < a for a, b in zip(diffs, diffs[1:]))  # refines monotonically (2nd order: ReLU kinks)
    ll, err = true_log_likelihood(bench, x, tol=1e-6)
    assert err < 1e-6
    torch.testing.assert_close(ll, levels[-1], atol=1e-5, rtol=0)


def test_quadrature_ceiling_agrees_with_monte_carlo(bench_data):
    # log E_{m~U} N(x; g(m), σ²I) by plain Monte Carlo over 2e5 uniform points: agreement within
    # the MC error (delta method: se of the log-mean ≈ se(mean)/mean), 5 standard errors
    bench, x, _ = bench_data
    ll, _ = true_log_likelihood(bench, x[:20])
    g = torch.Generator().manual_seed(0)
    m = bench.manifold.sample_uniform(200_000, generator=g, dtype=torch.float64)
    mu = bench.mean(m)
    d = x.shape[1]
    xx = x[:20].double()
    logp = (-((xx[:, None, :] - mu[None]) ** 2).sum(-1) / (2 * bench.noise**2)
            - 0.5 * d * math.log(2 * math.pi * bench.noise**2))
    mx = logp.max(1, keepdim=True).values
    w = (logp - mx).exp()
    mc = (w.mean(1).log() + mx[:, 0])
    se = w.std(1) / math.sqrt(w.shape[1]) / w.mean(1)
    assert ((mc - ll).abs() < 5 * se + 1e-6).all()


def test_no_ceiling_without_noise():
    bench = ManifoldBenchmark("S1", dim=5, noise=0.0)
    x, _ = bench.sample(10)
    with pytest.raises(ValueError, match="noise"):
        true_log_likelihood(bench, x)


def test_model_likelihood_is_in_data_units(bench_data):
    # scaling the data by c and the model's transform by c changes log p by exactly -D log c
    _, x, _ = bench_data
    torch.manual_seed(0)
    model = build(x.shape[1], "S1", group_action=True, hidden=[16])
    model.likelihood.set_data_transform(x.mean(0), x.std())
    _, i1 = per_example_bounds(model, x, k=10, generator_seed=0)
    c = 3.0
    model.likelihood.set_data_transform(c * x.mean(0), c * x.std())
    _, i2 = per_example_bounds(model, c * x, k=10, generator_seed=0)
    torch.testing.assert_close(i2, i1 - x.shape[1] * math.log(c), rtol=0, atol=1e-3)


def test_so3_importance_ceiling_agrees_with_converged_quadrature():
    # broad posterior (D=10, σ=0.3), where Sobol quadrature converges: the importance-sampling
    # ceiling must agree per example within 4 of its own (delta-method) standard errors
    bench = ManifoldBenchmark("SO3", dim=10, noise=0.3, seed=0)
    x, _ = bench.sample(8)
    quad, q_err = true_log_likelihood(bench, x, method="quadrature", max_level=17, tol=1e-3)
    assert q_err < 1e-3
    ll, se, info = true_log_likelihood(bench, x, method="importance", return_info=True)
    assert "importance" in info["method"]
    assert se < 0.1
    assert ((ll - quad).abs() < 4 * se + q_err).all()


def test_auto_ceiling_uses_importance_sampling_on_so3_and_quadrature_on_s2():
    for spec, method in [("SO3", "importance"), ("S2", "quadrature")]:
        bench = ManifoldBenchmark(spec, dim=10, noise=0.3, seed=0)
        x, _ = bench.sample(4)
        *_, info = true_log_likelihood(bench, x, return_info=True, tol=1e-2)
        assert method in info["method"]
    with pytest.raises(ValueError, match="unknown ceiling method"):
        true_log_likelihood(bench, x, method="grid")


def test_euclidean_benchmark_ceiling_agrees_with_monte_carlo():
    # R1 and R2 data (standard normal latents): the trapezoid ceiling against plain Monte Carlo
    # over 2e5 prior draws, 5 standard errors (delta method), on broad posteriors
    for spec in ("R1", "R2"):
        bench = ManifoldBenchmark(spec, dim=6, noise=0.3, seed=0)
        x, m = bench.sample(10)
        assert m.shape == (10, int(spec[1]))
        ll, err = true_log_likelihood(bench, x, tol=1e-5)
        assert err < 1e-5
        g = torch.Generator().manual_seed(0)
        mu = bench.mean(torch.randn(200_000, int(spec[1]), generator=g, dtype=torch.float64))
        logp = (-((x.double()[:, None, :] - mu[None]) ** 2).sum(-1) / (2 * bench.noise**2)
                - 0.5 * x.shape[1] * math.log(2 * math.pi * bench.noise**2))
        mx = logp.max(1, keepdim=True).values
        w = (logp - mx).exp()
        mc = w.mean(1).log() + mx[:, 0]
        se = w.std(1) / math.sqrt(w.shape[1]) / w.mean(1)
        assert ((mc - ll).abs() < 5 * se + 1e-6).all()


@pytest.mark.parametrize("latent", ["SO3", "T2", "S1xR2"])
def test_centred_posterior_leaves_the_location_to_the_group_action(latent):
    """Centred: every Beta mean is ½ whatever the input, the latent point still moves with x
    (through g), and the IWAE bound stays finite; without a group action it is refused."""
    from tests.helpers import build
    torch.manual_seed(0)
    model = build(12, latent, group_action=True, centred_posterior=True, hidden=[16]).eval()
    x = torch.randn(5, 12)
    q = model.latent.posterior(model.encoder(model.likelihood.transform(x)))
    box = torch.tensor([k == "box" for k in model.manifold.hidden_kinds])
    assert torch.allclose(q.mean[:, box], torch.full_like(q.mean[:, box], 0.5), atol=1e-6)
    m = model.embed(x)
    assert (m - m[0]).abs().max() > 1e-3                        # g(x) moves the point
    assert torch.isfinite(model.log_weights(x, 4)).all()
    model.loss(x)["loss"].backward()
    with pytest.raises(UsageError, match="group action"):
        build(12, latent, centred_posterior=True)


@pytest.mark.parametrize("latent,ga", [("S1", True), ("S2", True), ("S10", False), ("S1xR2", True),
                                       ("T2", False)])
def test_normal_hidden_space_elbo_matches_its_log_weights(latent, ga):
    """compact_hidden='normal': z ~ N(μ, σ²), prior N(0, 1), m = g · f(Φ(z)). The training loss's
    closed-form-KL ELBO and the mean of the K=1 importance log-weights (Monte Carlo KL from the
    same posterior and prior densities) estimate the same number. Both are means of 4000 draws
    with about the same spread, so their difference has standard error ≈ √2·se (se: that of the
    log-weights' mean); they must agree within 4·1.5·se (fixed seeds)."""
    torch.manual_seed(0)
    model = build(12, latent, group_action=ga, compact_hidden="normal", hidden=[16]).eval()
    assert model.latent.hidden_space.kinds == ("euclidean",) * model.manifold.dim
    x = torch.randn(3, 12)
    lw = model.log_weights(x, 4000)                               # (K, B)
    torch.manual_seed(1)
    elbo = torch.stack([model.loss(x[i:i + 1].expand(4000, 12))["elbo"] for i in range(3)])
    se = lw.std(0) / math.sqrt(4000)
    assert ((lw.mean(0) - elbo).abs() < 4 * 1.5 * se).all(), (lw.mean(0), elbo, se)
    # Φ pushes the prior N(0, 1) onto the box's U(0, 1): the sample the embedding sees is inside
    u = model.latent.to_box(torch.randn(1000, model.manifold.dim) * 5)
    assert ((u > 0) & (u < 1))[:, [k == "box" for k in model.manifold.hidden_kinds]].all()
    out = model.train().loss(x)
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_normal_hidden_space_bad_input():
    from manifold_vae.errors import UsageError
    from manifold_vae.training.config import FitConfig
    with pytest.raises(UsageError, match="compact_hidden"):
        build(12, "S2", compact_hidden="gauss")
    with pytest.raises(UsageError, match="compact_hidden"):
        build(12, "vmf:S2", compact_hidden="normal")
    with pytest.raises(UsageError, match="compact_hidden"):
        FitConfig(compact_hidden="gauss").validate()


def test_init_concentration_sets_the_starting_beta_width():
    """init_concentration κ₀: where the encoder outputs 0 the Beta posterior has a + b = κ₀
    (2: the uniform prior); the fused training path and the evaluation path agree on it."""
    from manifold_vae.errors import UsageError
    from manifold_vae.training.config import FitConfig
    torch.manual_seed(0)
    for k0 in (2.0, 50.0):
        model = build(12, "T2", group_action=True, init_concentration=k0, hidden=[16]).eval()
        last = model.encoder[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
        q = model.latent.posterior(model.encoder(torch.randn(4, 12)))
        beta = q.base_dist
        torch.testing.assert_close(beta.concentration1 + beta.concentration0,
                                   torch.full((4, 2), k0))
        # the training loss's closed-form KL is the KL of that posterior: 0 for the uniform
        kl = model.loss(torch.randn(4, 12))["kl"]
        expected = 0.0 if k0 == 2.0 else 2 * float(torch.distributions.kl_divergence(
            torch.distributions.Beta(torch.tensor(k0 / 2), torch.tensor(k0 / 2)),
            torch.distributions.Uniform(0.0, 1.0)))
        assert float(kl) == pytest.approx(expected, abs=1e-4)
    with pytest.raises(UsageError, match="init_concentration"):
        build(12, "S1", init_concentration=0.5)
    with pytest.raises(UsageError, match="init_concentration"):
        FitConfig(init_concentration=0.5).validate()
