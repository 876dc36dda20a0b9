"""Generic property tests over one registry of manifolds (seeded, float64 where it matters)."""
import math

import pytest
import torch

from manifold_vae.embeddings import ExactEmbedding, volume_element
from manifold_vae.manifolds import (Circle, Euclidean, Product, circle_angle, example_specs,
                                    parse_latent)

from .stats import ks_critical, ks_uniform, mmd_permutation_pvalue

# every manifold the spec registry names (each form's examples and some products)
ALL = example_specs()
COMPACT = [s for s in ALL if parse_latent(s).compact]


def uniform_coordinates(manifold, x):
    """Map points of U(M) to coordinates that are i.i.d. U(0,1) (angles / 2π per circle factor)."""
    cols = []
    for f, part in zip(manifold.factors(), torch.split(x, [f.ambient_dim for f in manifold.factors()], -1)):
        assert isinstance(f, Circle), "extend this helper when adding manifolds"
        cols.append(circle_angle(part) / (2 * math.pi))
    return torch.stack(cols, -1)


@pytest.mark.parametrize("spec", ALL)
def test_spec_round_trip_and_dimensions(spec):
    m = parse_latent(spec)
    assert m.spec == spec
    assert len(m.hidden_kinds) == m.dim
    z = torch.rand(5, m.dim)
    assert m.exact_map(z).shape == (5, m.ambient_dim)


@pytest.mark.parametrize("spec", COMPACT)
def test_uniform_samples_lie_on_manifold(spec, gen):
    m = parse_latent(spec)
    x = m.sample_uniform(1000, generator=gen, dtype=torch.float64)
    ok, reason = m.check_point(x)
    assert ok, reason
    bad = x * 1.1
    ok, reason = m.check_point(bad)
    assert not ok and "lies" in reason


def test_exact_circle_map_pushes_uniform_to_uniform(gen):
    # KS test of the angle at alpha = 1e-3 with a fixed seed
    m = parse_latent("S1")
    z = torch.rand(20000, 1, generator=gen, dtype=torch.float64)
    u = uniform_coordinates(m, m.exact_map(z))
    assert ks_uniform(u[:, 0]) < ks_critical(len(u))


@pytest.mark.parametrize("spec", COMPACT)
def test_exact_map_pushes_uniform_to_uniform(spec, gen):
    # two-sample MMD permutation test (fixed seed) of f(U(box)) against the manifold's own
    # independent uniform sampler (normalized Gaussians, Haar QR): p > 0.01 (200 permutations,
    # so the smallest possible p is 1/201 and the test can fail)
    m = parse_latent(spec)
    z = torch.rand(800, m.dim, generator=gen, dtype=torch.float64)
    x = m.exact_map(z)
    assert m.check_point(x)[0]
    assert mmd_permutation_pvalue(x, m.sample_uniform(800, generator=gen, dtype=torch.float64)) > 1e-2


def test_the_test_detects_a_non_uniform_map(gen):
    m = parse_latent("S2")
    x = m.exact_map(torch.rand(800, 2, generator=gen, dtype=torch.float64) ** 1.5)
    assert mmd_permutation_pvalue(x, m.sample_uniform(800, generator=gen, dtype=torch.float64)) < 1e-2  # p = 1/201


@pytest.mark.parametrize("spec", COMPACT)
def test_exact_map_volume_element_is_constant_vol_m(spec, gen):
    m = parse_latent(spec)
    z = torch.rand(200, m.dim, generator=gen, dtype=torch.float64)
    vol = volume_element(ExactEmbedding(m), z)
    # closed-form maps: to rounding; maps through a tabulated inverse CDF: to the table's accuracy
    rtol = getattr(m, "volume_element_rtol", 1e-9)
    torch.testing.assert_close(vol, torch.full_like(vol, m.volume()), rtol=rtol, atol=0)


def test_circle_volume_is_two_pi():
    assert Circle().volume() == pytest.approx(2 * math.pi)


@pytest.mark.parametrize("spec", COMPACT)
def test_group_action_preserves_uniform_distribution(spec, gen):
    m = parse_latent(spec)
    x = m.sample_uniform(800, generator=gen, dtype=torch.float64)
    g = m.group_element(torch.randn(1, m.group_param_dim, generator=gen, dtype=torch.float64))
    y = m.act(g, x)
    assert m.check_point(y)[0]
    assert mmd_permutation_pvalue(y, m.sample_uniform(800, generator=gen, dtype=torch.float64)) > 1e-2


@pytest.mark.parametrize("spec", [s for s in COMPACT if set(s.split("x")) <= {"S1"}])
def test_group_action_keeps_points_on_manifold_and_preserves_uniform(spec, gen):
    m = parse_latent(spec)
    x = m.sample_uniform(20000, generator=gen, dtype=torch.float64)
    g = m.random_group_element(20000, generator=gen, dtype=torch.float64)
    y = m.act(g, x)
    ok, reason = m.check_point(y)
    assert ok, reason
    u = uniform_coordinates(m, y)
    for j in range(u.shape[-1]):
        assert ks_uniform(u[:, j]) < ks_critical(len(u))
    # a fixed group element also preserves uniformity (the prior is invariant)
    g1 = m.group_element(torch.randn(1, m.group_param_dim, generator=gen, dtype=torch.float64))
    u1 = uniform_coordinates(m, m.act(g1, x))
    assert ks_uniform(u1[:, 0]) < ks_critical(len(u1))


@pytest.mark.parametrize("spec", [s for s in ALL if "x" not in s and parse_latent(s).has_group])
def test_group_elements_are_rotations(spec, gen):
    m = parse_latent(spec)
    g = m.group_matrix(m.group_element(torch.randn(100, m.group_param_dim, generator=gen, dtype=torch.float64)))
    k = g.shape[-1]
    eye = torch.eye(k, dtype=torch.float64).expand(100, k, k)
    torch.testing.assert_close(g @ g.transpose(-1, -2), eye)
    torch.testing.assert_close(torch.linalg.det(g), torch.ones(100, dtype=torch.float64))


@pytest.mark.parametrize("spec,vol", [("S1", 2 * math.pi), ("S2", 4 * math.pi), ("S3", 2 * math.pi ** 2),
                                      ("T2", (2 * math.pi) ** 2), ("SO3", 16 * math.sqrt(2) * math.pi ** 2)])
def test_volumes(spec, vol):
    assert parse_latent(spec).volume() == pytest.approx(vol)


def test_circle_action_matches_rotation_matrix(gen):
    c = Circle()
    g = c.group_element(torch.randn(10, 2, generator=gen, dtype=torch.float64))
    x = c.sample_uniform(10, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(c.act(g, x), (c.group_matrix(g) @ x.unsqueeze(-1)).squeeze(-1))


def test_group_element_is_finite_at_zero_input():
    p = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    g = Circle().group_element(p)
    g.sum().backward()
    assert torch.isfinite(g).all() and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("spec", COMPACT)
def test_batched_equals_looped(spec, gen):
    m = parse_latent(spec)
    z = torch.rand(7, m.dim, generator=gen, dtype=torch.float64)
    p = torch.randn(7, m.group_param_dim, generator=gen, dtype=torch.float64)
    batched = m.act(m.group_element(p), m.exact_map(z))
    looped = torch.cat([m.act(m.group_element(p[i:i + 1]), m.exact_map(z[i:i + 1])) for i in range(7)])
    torch.testing.assert_close(batched, looped)
    # broadcasting of K importance samples against a batch of group elements
    zk = torch.rand(3, 7, m.dim, generator=gen, dtype=torch.float64)
    out = m.act(m.group_element(p), m.exact_map(zk))
    assert out.shape == (3, 7, m.ambient_dim)
    torch.testing.assert_close(out[1], m.act(m.group_element(p), m.exact_map(zk[1])))


@pytest.mark.parametrize("spec", COMPACT)
def test_gradcheck_exact_map_and_action(spec, gen):
    m = parse_latent(spec)
    z = torch.rand(4, m.dim, generator=gen, dtype=torch.float64, requires_grad=True)
    p = torch.randn(4, m.group_param_dim, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z, p: m.act(m.group_element(p), m.exact_map(z)), (z, p))


@pytest.mark.parametrize("spec", COMPACT)
def test_fused_training_composition_equals_unfused(spec, gen):
    """``act_on_exact`` (the circle's fused node) gives the values and gradients of g·f(z),
    also when the hidden samples carry a leading sample dimension (K, B, d) over g of shape (B,)."""
    m = parse_latent(spec)
    z = torch.rand(3, 5, m.dim, generator=gen, dtype=torch.float64, requires_grad=True)
    p = torch.randn(5, m.group_param_dim, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 5, m.ambient_dim, generator=gen, dtype=torch.float64)
    for params in (p, None):
        fused = m.act_on_exact(z, params)
        plain = m.exact_map(z) if params is None else m.act(m.group_element(params), m.exact_map(z))
        torch.testing.assert_close(fused, plain)
        inputs = (z, p) if params is not None else (z,)
        g_fused = torch.autograd.grad((fused * w).sum(), inputs)
        g_plain = torch.autograd.grad((plain * w).sum(), inputs)
        for a, b in zip(g_fused, g_plain):
            torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda z, p: m.act_on_exact(z, p), (z[0], p))


@pytest.mark.parametrize("bad", ["S0", "T0", "T0x", "R0", "R-1", "S1xx", "", "Q3", "s1", "S1xR0", "SO4", "SO2"])
def test_invalid_specs_list_valid_forms(bad):
    with pytest.raises(ValueError, match="Valid forms"):
        parse_latent(bad)


def test_products_act_factor_by_factor(gen):
    m = parse_latent("S1xR2")
    assert isinstance(m, Product) and m.hidden_kinds == ("box", "euclidean", "euclidean")
    assert m.group_param_dim == 2
    z = torch.cat([torch.rand(5, 1, generator=gen), torch.randn(5, 2, generator=gen)], -1)
    p = torch.randn(5, 2, generator=gen)
    x = m.act(m.group_element(p), m.exact_map(z))
    torch.testing.assert_close(x[:, 2:], z[:, 1:])  # the Euclidean factor is untouched
    torch.testing.assert_close(x[:, :2].norm(dim=-1), torch.ones(5))


def test_euclidean_has_no_uniform_or_group():
    r = Euclidean(2)
    with pytest.raises(ValueError):
        r.sample_uniform(3)
    assert not r.has_group and r.has_exact_map and not r.has_chart


def test_capabilities_are_declared():
    """What a manifold has is declared by its class, not found out by trying."""
    assert parse_latent("S2").has_quadrature and not parse_latent("S3").has_quadrature
    assert parse_latent("SO3").has_chart and not parse_latent("S2").has_chart
    assert parse_latent("S1xR2").has_group and parse_latent("S1xR2").has_exact_map
    assert not parse_latent("R1xR2").has_group
    assert parse_latent("T4").has_exact_map and not parse_latent("T4").has_quadrature


def test_product_prior_with_euclidean_factor(gen):
    """The prior of a product samples each factor's own (uniform or standard normal)."""
    x = parse_latent("S1xR1").sample_prior(4000, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(x[:, :2].norm(dim=-1), torch.ones(4000, dtype=torch.float64))
    # the R1 coordinate is N(0, 1): its variance within 5 standard errors (se ≈ sqrt(2/n))
    assert abs(float(x[:, 2].var()) - 1) < 5 * math.sqrt(2 / 4000)


def test_so3_chart_round_trip_and_quaternions(gen):
    from manifold_vae.manifolds.so3 import matrix_to_quaternion
    from manifold_vae.manifolds.rotations import quaternion_to_matrix
    m = parse_latent("SO3")
    c = m.sample_uniform(50, generator=gen, dtype=torch.float64)
    v = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    v = v * (3.0 * torch.rand(50, 1, generator=gen, dtype=torch.float64) / v.norm(dim=-1, keepdim=True))
    x = m.chart_exp(c, v)
    ok, reason = m.check_point(x)
    assert ok, reason
    torch.testing.assert_close(m.chart_log(c, x), v)      # |v| < π: the chart is injective
    r = m.as_matrix(x)
    torch.testing.assert_close(quaternion_to_matrix(matrix_to_quaternion(r)), r)


def test_so3_chart_density_is_the_uniform_measure(gen):
    # E_{y~U(SO3)}[N(log_c y; 0, s²I) / p_U(log_c y)] = ∫ N = 1 (s = 0.5: mass beyond θ=π is
    # negligible); Monte Carlo with 1e5 uniform points, tolerance 5 standard errors of the mean
    m = parse_latent("SO3")
    y = m.sample_uniform(100_000, generator=gen, dtype=torch.float64)
    c = m.sample_uniform(1, generator=gen, dtype=torch.float64).expand_as(y)
    v = m.chart_log(c, y)
    s = 0.5
    log_n = -0.5 * v.pow(2).sum(-1) / s**2 - 3 * math.log(s) - 1.5 * math.log(2 * math.pi)
    w = (log_n - m.chart_log_uniform_density(v)).exp()
    assert abs(float(w.mean()) - 1) < 5 * float(w.std()) / math.sqrt(len(w))
