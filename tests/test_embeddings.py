"""Embeddings: exact maps' volume elements, pushed-forward densities, the learned WAE-MMD map."""
import math

import pytest
import torch

from manifold_vae.embeddings import (EmbedConfig, ExactEmbedding, embedding_quality,
                                     fit_learned_embedding, imq_mmd2, load_embedding,
                                     log_volume_element, pushforward_log_density, save_embedding)
from manifold_vae.errors import CheckpointError
from manifold_vae.manifolds import parse_latent


@pytest.mark.parametrize("spec", ["S1", "S2", "S3", "T2", "SO3"])
def test_pushforward_density_integrates_to_one(spec):
    # ∫_M p_M dvol = E_{m~U(M)}[p_M(m)] vol(M); with the exact map p_M(f(z)) = p_Z(z)/vol element,
    # and m = f(z) for z ~ U(box) is uniform, so the MC mean of p_M(f(z))·vol(M) estimates 1.
    # The volume element is constant, so the estimate is exact up to float error.
    m = parse_latent(spec)
    z = torch.rand(400, m.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    dens = pushforward_log_density(torch.zeros(400, dtype=torch.float64), ExactEmbedding(m), z).exp()
    assert float((dens * m.volume()).mean()) == pytest.approx(1.0, abs=1e-9)


def test_pushforward_density_of_a_non_uniform_hidden_distribution_integrates_to_one():
    # q = Beta(2, 5) on the circle's box: E_{m~U}[p_M(m)] · 2π = 1, estimated with uniform
    # samples on the circle mapped back to z (angle / 2π); MC tolerance 5 standard errors.
    m = parse_latent("S1")
    emb = ExactEmbedding(m)
    x = m.sample_uniform(200_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z = (torch.atan2(x[:, 1], x[:, 0]) % (2 * math.pi) / (2 * math.pi)).unsqueeze(-1)
    q = torch.distributions.Beta(torch.tensor(2.0, dtype=torch.float64), torch.tensor(5.0, dtype=torch.float64))
    log_pz = q.log_prob(z[:, 0].clamp(1e-12, 1 - 1e-12))
    dens = (log_pz - math.log(2 * math.pi)).exp()  # volume element of the circle map is 2π
    est = dens * m.volume()
    se = float(est.std()) / math.sqrt(len(est))
    assert abs(float(est.mean()) - 1.0) < 5 * se
    # the autograd volume element agrees with the constant used above
    torch.testing.assert_close(log_volume_element(emb, z[:100]), torch.full((100,), math.log(2 * math.pi),
                                                                           dtype=torch.float64))


@pytest.fixture(scope="module")
def learned_circle():
    emb, history = fit_learned_embedding(EmbedConfig(latent="S1", seed=0))
    return emb, history


def test_learned_circle_embedding_quality(learned_circle):
    emb, _ = learned_circle
    report = embedding_quality(emb, emb.manifold, seed=1)
    assert report["distance_mean"] < 0.02
    # MMD² of f#U(0,1) against U(S1) lies inside the null distribution of MMD² between two
    # uniform samples of the same size (20 repeats): indistinguishable at this sample size
    assert report["mmd"] <= report["mmd_null_max"]
    assert report["volume_element_mean"] == pytest.approx(2 * math.pi, rel=0.1)


def test_learned_embedding_save_load_round_trip(learned_circle, tmp_path):
    emb, _ = learned_circle
    save_embedding(emb, tmp_path / "e", report={"ok": 1})
    back = load_embedding(tmp_path / "e", expect="S1")
    z = torch.rand(10, 1)
    torch.testing.assert_close(back(z), emb(z))
    assert not any(p.requires_grad for p in back.parameters())
    with pytest.raises(CheckpointError, match="trained for S1"):
        load_embedding(tmp_path / "e", expect="S2")


def test_learned_embedding_is_frozen_inside_a_vae(learned_circle):
    from tests.helpers import build
    emb, _ = learned_circle
    model = build(10, "S1", embedding=emb)
    before = {k: v.clone() for k, v in emb.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = model.loss(torch.randn(32, 10))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in emb.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("spec", ["S2", "T2"])
def test_learned_embedding_runs_for_other_manifolds(spec):
    emb, history = fit_learned_embedding(EmbedConfig(latent=spec, steps=60, seed=0))
    assert emb(torch.rand(5, emb.manifold.dim)).shape == (5, emb.manifold.ambient_dim)
    assert all(math.isfinite(r["loss"]) for r in history)


def test_learned_embedding_of_a_product_with_euclidean_factors(tmp_path):
    """S1xR2: F is learned on the circle factor, the R2 factor keeps the identity map; the
    embedding saves, reloads and drives a VAE; the quality report is about the circle."""
    from tests.helpers import build
    from manifold_vae.embeddings import EmbedConfig, embedding_quality, fit_learned_embedding, load_embedding, save_embedding
    emb, _ = fit_learned_embedding(EmbedConfig(latent="S1xR2", steps=30))
    assert emb.learned_manifold.spec == "S1"
    z = torch.cat([torch.rand(50, 1), torch.randn(50, 2)], -1)
    m = emb(z)
    assert m.shape == (50, 4)
    torch.testing.assert_close(m[:, 2:], z[:, 1:])            # identity on R2
    torch.testing.assert_close(m[:, :2], emb.compact(z[:, :1]))
    report = embedding_quality(emb, emb.manifold)
    assert report["manifold"] == "S1"
    save_embedding(emb, tmp_path / "e", report=report)
    again = load_embedding(tmp_path / "e", expect="S1xR2")
    torch.testing.assert_close(again(z), m)
    model = build(8, "S1xR2", embedding=again, group_action=True, hidden=[16])
    model.loss(torch.randn(4, 8))["loss"].backward()
    with pytest.raises(ValueError, match="compact factor"):
        fit_learned_embedding(EmbedConfig(latent="R2", steps=5))


@pytest.fixture(scope="module")
def periodic_circle():
    emb, _ = fit_learned_embedding(EmbedConfig(latent="S1", seed=0, steps=800, periodic=[0]))
    return emb


def test_a_periodic_learned_map_has_no_seam_and_is_uniform(periodic_circle):
    """With the hidden coordinate read as a circle, F(0) = F(1) by construction, E reads an angle
    in [0, 1), and the WAE still pushes the uniform box onto the uniform circle (MMD inside its
    null distribution, mean distance small)."""
    emb = periodic_circle
    assert emb.decoder[0].in_features == 2 and emb.encoder[-1].out_features == 2
    torch.testing.assert_close(emb(torch.zeros(1, 1)), emb(torch.ones(1, 1)), atol=1e-5, rtol=0)
    m = emb.manifold.sample_uniform(500, generator=torch.Generator().manual_seed(1))
    z = emb.encode(m)
    assert z.shape == (500, 1) and float(z.min()) >= 0.0 and float(z.max()) < 1.0
    report = embedding_quality(emb, emb.manifold, seed=1)
    assert report["distance_mean"] < 0.05 and report["off_fraction"] < 0.01
    assert report["mmd"] <= report["mmd_null_max"]
    assert not report["problems"]


def test_a_periodic_learned_map_saves_and_reloads_with_its_circles(periodic_circle, tmp_path):
    save_embedding(periodic_circle, tmp_path / "e")
    back = load_embedding(tmp_path / "e", expect="S1")
    assert back.periodic == (0,)
    z = torch.rand(10, 1)
    torch.testing.assert_close(back(z), periodic_circle(z))


def test_a_learned_maps_periodic_coordinate_gets_a_wrapped_posterior():
    """An ER latent over a learned map with periodic coordinate 1 (of T2) reads two more raw
    numbers, an angle that shifts z₁ mod 1 — without a group action — and the shift changes
    neither z, the KL nor the log ratio of the IWAE weights; only the point moves."""
    from manifold_vae import ManifoldLatent
    from manifold_vae.embeddings import LearnedEmbedding

    torch.manual_seed(0)
    emb = LearnedEmbedding(parse_latent("T2"), [16], periodic=[1])
    plain = ManifoldLatent("T2", embedding=LearnedEmbedding(parse_latent("T2"), [16]))
    lat = ManifoldLatent("T2", embedding=emb)
    hidden = lat.hidden_space.param_dim
    assert lat.param_dim == hidden + 2 and plain.param_dim == hidden
    raw = torch.randn(3, lat.param_dim)
    raw[:, hidden:] = torch.tensor([-1.0, 0.0])              # angle π: half a turn
    unshifted = raw.clone()
    unshifted[:, hidden:] = torch.tensor([1.0, 0.0])
    torch.manual_seed(1)
    a = lat(raw)
    torch.manual_seed(1)
    b = lat(unshifted)
    assert torch.equal(a.z, b.z) and torch.equal(a.kl, b.kl)
    assert torch.equal(a.log_ratio, b.log_ratio)
    box = lat.to_box(a.z)
    moved = box.clone()
    moved[:, 1] = torch.remainder(box[:, 1] + 0.5, 1.0)
    torch.testing.assert_close(a.point, emb(moved))
    torch.testing.assert_close(b.point, emb(box))


def test_periodic_coordinates_are_checked_before_anything_is_written(tmp_path, capsys):
    from manifold_vae.cli import main
    from manifold_vae.models import ModelConfig
    from manifold_vae.errors import UsageError

    with pytest.raises(UsageError, match="embed_periodic shapes a map learned here"):
        ModelConfig(latent="T2", embed_periodic=[0]).validate()
    with pytest.raises(UsageError, match=r"distinct hidden coordinates in 0\.\.1"):
        ModelConfig(latent="T2", embedding="learned", embed_periodic=[2]).validate()
    assert main(["embed", "--latent", "K2", "--periodic", "0,0", "--out", str(tmp_path / "e")]) == 2
    assert main(["embed", "--latent", "K2", "--periodic", "x", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "--periodic must be distinct hidden coordinates in 0..1" in err
    assert "--periodic must be 'auto' or comma-separated integers" in err
    assert not (tmp_path / "e").exists()


def test_disk_coordinates_are_checked_before_anything_is_written(tmp_path, capsys):
    from manifold_vae.cli import main
    from manifold_vae.models import ModelConfig
    from manifold_vae.errors import UsageError

    with pytest.raises(UsageError, match="embed_disk shapes a map learned here"):
        ModelConfig(latent="RP2", embed_disk=[0, 1]).validate()
    with pytest.raises(UsageError, match="overlaps the periodic coordinates"):
        ModelConfig(latent="T3", embedding="learned", embed_disk=[0, 1],
                    embed_periodic=[1]).validate()
    for bad in ("0", "0,0", "0,2", "a,b"):
        assert main(["embed", "--latent", "RP2", "--disk", bad, "--out", str(tmp_path / "e")]) == 2
    assert main(["embed", "--latent", "RP2", "--disk", "0,1", "--periodic", "auto",
                 "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "--disk must be two distinct hidden coordinates [radial, angular] in 0..1" in err
    assert "--disk must be two comma-separated integers" in err
    assert "--periodic auto tries the disk itself" in err
    assert not (tmp_path / "e").exists()


def test_a_disk_reading_is_uniform_on_the_disk_and_wraps_its_angle():
    """``F`` reads a disk pair as ``sqrt(z_r)·(cos 2πz_a, sin 2πz_a)``: uniform on the unit disk
    (the share within radius 1/2 is 1/4, the mean of x² 1/4); ``E``'s output comes back in
    coordinate order, inside the box; the angular coordinate alone gets the ER latent's wrapped
    posterior; the gradient to z stays finite at the centre."""
    from manifold_vae.embeddings import LearnedEmbedding

    torch.manual_seed(0)
    emb = LearnedEmbedding(parse_latent("SO3"), [16], periodic=[0], disk=[2, 1])
    z = torch.rand(200_000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    feats = emb.features(z)
    assert feats.shape == (200_000, 4) and emb.decoder.in_dim == 4 and emb.encoder.out_dim == 5
    xy = feats[:, 2:]
    radius = xy.norm(dim=-1)
    # binomial and moment standard errors at n = 200,000 are at most 1e-3: 5e-3 is > 5 s.e.
    assert abs(float((radius < 0.5).double().mean()) - 0.25) < 5e-3
    assert abs(float(xy.pow(2).mean()) - 0.25) < 5e-3
    assert abs(emb.feature_variance() - (0.5 + 0.5 + 0.25 + 0.25) / 4) < 1e-12
    torch.testing.assert_close(radius, z[:, 2].sqrt())
    out = emb.encode(torch.randn(50, 9))
    assert out.shape == (50, 3) and bool(((out >= 0) & (out <= 1)).all())
    assert emb.wrapped_hidden == (0, 1) and emb.arch()["disk"] == [2, 1]
    rebuilt = LearnedEmbedding.from_arch("SO3", emb.arch())
    rebuilt.load_state_dict(emb.state_dict())
    torch.testing.assert_close(rebuilt(z[:5].float()), emb(z[:5].float()))
    at_centre = torch.tensor([[0.3, 0.5, 0.0]], requires_grad=True)   # sqrt' is infinite at 0
    emb(at_centre).sum().backward()
    assert bool(torch.isfinite(at_centre.grad).all())


def test_the_projective_plane_needs_a_disk_for_a_trusted_map(tmp_path):
    """The square pictures of RP2 have two corners of total angle π, which no smooth map with a
    constant volume element closes: at the default 2000 WAE steps the flat map is refused
    (measured: 19.7 % of the box off M, cv 0.34) and the disk map is trusted (3.3 %, cv 0.14)."""
    from manifold_vae.cli import main

    flat, disk = tmp_path / "flat", tmp_path / "disk"
    assert main(["embed", "--latent", "RP2", "--out", str(flat), "--quiet"]) == 1
    assert main(["embed", "--latent", "RP2", "--disk", "0,1", "--out", str(disk), "--quiet"]) == 0
    emb = load_embedding(disk)
    assert emb.disk == (0, 1) and not emb.report["problems"]
    assert emb.report["off_fraction"] < 0.05 and emb.report["volume_element_cv"] < 0.3


@pytest.mark.parametrize("spec,count,disks", [("S1", 2, 0), ("S1xR2", 2, 0), ("T2", 5, 1),
                                              ("K2", 5, 1), ("RP2", 5, 1), ("SO3", 10, 2),
                                              ("T4", 6, 0)])
def test_periodic_search_tries_every_choice_of_small_manifolds(spec, count, disks):
    from manifold_vae.embeddings.periodic import periodic_candidates

    tries = periodic_candidates(parse_latent(spec))
    assert len(tries) == count == len(set(tries)) and ((), ()) in tries
    periodic = [p for p, _ in tries]
    assert max(periodic, key=len) == tuple(range(len(max(periodic, key=len))))   # all, in order
    assert [d for _, d in tries if d] == [(0, 1)] * disks


def test_periodic_search_ranks_trusted_maps_first_then_by_folds_then_mmd():
    from manifold_vae.embeddings.periodic import rank_key

    def report(problems, off, mmd):
        return {"problems": problems, "off_fraction": off, "mmd": mmd, "mmd_null_mean": 0.0,
                "mmd_null_std": 1.0}
    ranked = sorted([report(["x"], 0.0, 0.0), report([], 0.04, 0.0), report([], 0.01, 5.0),
                     report([], 0.01, 1.0)], key=rank_key)
    assert [(bool(r["problems"]), r["off_fraction"], r["mmd"]) for r in ranked] == [
        (False, 0.01, 1.0), (False, 0.01, 5.0), (False, 0.04, 0.0), (True, 0.0, 0.0)]


def test_embed_periodic_auto_keeps_the_circle_periodic(tmp_path, capsys):
    """`embed --periodic auto` trains a map per choice and keeps the best: on the circle, the
    periodic map (a flat one must close up at the seam, which 200 steps do not teach it)."""
    import json

    from manifold_vae.cli import main

    out = tmp_path / "e"
    assert main(["embed", "--latent", "S1", "--periodic", "auto", "--steps", "200", "--out", str(out)]) == 0
    said = capsys.readouterr().err
    assert "flat:" in said and "periodic [0]:" in said and "kept periodic [0]" in said
    saved = json.loads((out / "report.json").read_text())
    assert [t["periodic"] for t in saved["periodic_search"]] == [[], [0]]
    assert load_embedding(out).periodic == (0,)
    assert not saved["report"]["problems"]


def test_reference_mmd_equals_the_training_estimate():
    """The evaluation estimate (cdist, per-scale sums) and the training one (one distance matrix,
    hand-written gradient) are two codes for the same U-statistic: equal in float64."""
    from manifold_vae.embeddings.mmd import imq_mmd2_loss

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(200, 3, generator=gen, dtype=torch.float64) + 0.2
    scales = [0.5, 1.0, 3.0]
    ref = imq_mmd2(x, y, scales)
    torch.testing.assert_close(imq_mmd2_loss(x, y, scales, with_y_term=True), ref)
    # by the formula, term by term
    def k(a, b):
        d = torch.cdist(a, b).pow(2)
        return sum(c / (c + d) for c in scales)
    n, m = len(x), len(y)
    naive = ((k(x, x).sum() - n * 3) / (n * (n - 1)) + (k(y, y).sum() - m * 3) / (m * (m - 1))
             - 2 * k(x, y).mean())
    torch.testing.assert_close(ref, naive)
