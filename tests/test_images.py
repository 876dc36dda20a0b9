"""Image data (rotated digits, rendered rotations), conv networks with a Bernoulli likelihood,
the recovery metrics, and the image suite end to end on tiny settings."""
import itertools
import json
import math

import numpy as np
import pytest
import torch

from manifold_vae.cli import main
from manifold_vae.data.images import (ALBEDO, AMBIENT, CUBES, LIGHT, object_radius, load_image_dataset,
                                      render, rendered_rotations, rotate_images, rotated_digits,
                                      save_image_dataset)
from manifold_vae.evaluation.alignment import (align_angles, align_rotations, haar_angle_cdf,
                                               held_out_rotation_errors,
                                               rotation_distance_agreement,
                                               best_relative_reflection, relative_angle_correlation,
                                               relative_angle_errors, relative_angle_summary,
                                               same_source_pairs,
                                               fisher_lee_correlation)
from manifold_vae.manifolds.rotations import haar_rotations
from manifold_vae.errors import UsageError
from tests.helpers import build
from manifold_vae.likelihoods import fixed_binarization


# ---------------------------------------------------------------------- data
def test_rotate_images_quarter_turn_is_counterclockwise_rot90():
    img = torch.rand(3, 1, 8, 8)
    turned = rotate_images(img, torch.full((3,), math.pi / 2))
    # numpy's rot90 turns a displayed image counter-clockwise (row 0 at the top)
    expected = torch.from_numpy(np.rot90(img.numpy(), 1, axes=(2, 3)).copy())
    assert torch.allclose(turned, expected, atol=1e-5)


def test_rotated_digits_split_by_source_and_labels():
    d = rotated_digits(size=16, copies=2, seed=3)
    assert d["x"].shape == (1797 * 2, 256) and d["x"].dtype == np.float32
    assert d["x"].min() >= 0 and d["x"].max() <= 1
    assert set(d["source"][d["test"]]).isdisjoint(d["source"][~d["test"]])
    assert abs(d["test"].mean() - 0.2) < 0.01
    assert d["angle"].min() >= 0 and d["angle"].max() < 2 * math.pi
    # two copies of one source differ by exactly their angle difference (up to interpolation)
    again = rotated_digits(size=16, copies=2, seed=3)
    assert np.array_equal(again["x"], d["x"])              # seeded


def test_render_identity_pose_matches_lambert_shading():
    size = 32
    img = render(np.eye(3)[None], size=size)[0]
    centres = CUBES - CUBES.mean(0)
    r = 1.04 * object_radius()
    u, v = centres[0, 0], centres[0, 1]                     # cube 0: nothing in front of it
    col, row = int((u + r) / (2 * r) * size), int((r - v) / (2 * r) * size)
    expected = ALBEDO[0] * (AMBIENT + (1 - AMBIENT) * max(0.0, -LIGHT[2]))   # its face normal is -z
    assert img[row, col] == pytest.approx(expected, abs=1e-9)
    assert img[0, 0] == 0.0                                 # background


def test_renders_tell_every_orientation_apart():
    """No rotation maps the object onto itself: poses more than 20° apart never look alike."""
    rot = haar_rotations(60, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
    img = render(rot, size=32).reshape(60, -1)
    for i, j in itertools.combinations(range(60), 2):
        angle = np.degrees(np.arccos(np.clip((np.trace(rot[i].T @ rot[j]) - 1) / 2, -1, 1)))
        if angle > 20:
            assert np.abs(img[i] - img[j]).mean() > 0.01, (i, j, angle)


def test_image_dataset_roundtrip_and_bad_files(tmp_path):
    d = rendered_rotations(40, size=16, seed=1)
    path = save_image_dataset(tmp_path / "r.npz", d)
    back = load_image_dataset(path)
    assert np.array_equal(back["rotation"], d["rotation"]) and back["image_shape"].tolist() == [1, 16, 16]
    from manifold_vae.errors import DataError
    bad = dict(d, x=d["x"] * 2)
    np.savez(tmp_path / "range.npz", **bad)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_image_dataset(tmp_path / "range.npz")
    np.savez(tmp_path / "shape.npz", **dict(d, image_shape=np.array([1, 8, 8])))
    with pytest.raises(DataError, match="image_shape"):
        load_image_dataset(tmp_path / "shape.npz")
    np.savez(tmp_path / "keys.npz", x=d["x"])
    with pytest.raises(DataError, match="missing"):
        load_image_dataset(tmp_path / "keys.npz")
    (tmp_path / "corrupt.npz").write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="unreadable"):
        load_image_dataset(tmp_path / "corrupt.npz")


# ---------------------------------------------------------------------- model
def test_bernoulli_likelihood_is_normalized_over_all_binary_images():
    torch.manual_seed(0)
    model = build(16, "S1xR1", likelihood="bernoulli", network="conv", image_shape=[1, 4, 4],
                hidden=[8], conv_channels=[4, 8]).eval()
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=16)))       # all 65536 images
    m = model.embed(torch.rand(1, 16)).expand(len(x), -1)
    with torch.no_grad():
        total = torch.logsumexp(model.likelihood.log_prob(x, model.decoder(m)).double(), 0)
    assert float(total) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("latent,ga,network", [("S1xR2", True, "conv"), ("SO3xR1", True, "conv"),
                                               ("vmf:S3", False, "conv"), ("R3", False, "conv"),
                                               ("S1xR2", True, "conv-rotate"), ("R3", False, "conv-rotate"),
                                               ("SO3xR1", True, "splat"), ("R4", False, "splat")])
def test_image_model_trains_and_evaluates(latent, ga, network):
    torch.manual_seed(0)
    model = build(256, latent, group_action=ga, likelihood="bernoulli", network=network,
                image_shape=[1, 16, 16], hidden=[32], conv_channels=[8, 16])
    x = torch.rand(6, 256)
    out = model.loss(x)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.encoder.convs[0].weight.grad.abs().sum() > 0
    lw = model.eval().log_weights(torch.bernoulli(x), 5)
    assert lw.shape == (5, 6) and torch.isfinite(lw).all()


def test_dynamic_binarization_only_while_training():
    torch.manual_seed(0)
    model = build(16, "S1", likelihood="bernoulli", network="conv", image_shape=[1, 4, 4],
                hidden=[8], conv_channels=[4, 8])
    x = torch.full((64, 16), 0.5)
    a, b = model.loss(x)["reconstruction"], model.loss(x)["reconstruction"]
    assert a != b                                            # a fresh binary image each call
    xb = fixed_binarization(x, seed=0)
    assert set(xb.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(xb, fixed_binarization(x, seed=0)) and torch.equal(fixed_binarization(xb, 5), xb)
    # mean 0.5 per pixel: 1024 draws, s.e. 1/64; 4 s.e.
    assert abs(float(xb.mean()) - 0.5) < 4 / 64


def test_rotating_decoder_is_equivariant_to_quarter_turns():
    """Turning the latent's first two coordinates by 90° turns the decoded image by 90°."""
    from manifold_vae.models.networks import RotatingConvDecoder
    torch.manual_seed(0)
    dec = RotatingConvDecoder(5, [32], [1, 16, 16], channels=[8, 16])
    m = torch.randn(4, 5)
    turned = m.clone()
    turned[:, 0], turned[:, 1] = -m[:, 1], m[:, 0]
    a, b = dec(m).reshape(4, 1, 16, 16), dec(turned).reshape(4, 1, 16, 16)
    assert torch.allclose(torch.rot90(a, 1, dims=(2, 3)), b, atol=1e-5)
    # the same rotation convention as the data: rotate_images by +90° is rot90(k=1)
    assert torch.allclose(rotate_images(a, torch.full((4,), math.pi / 2)), b, atol=1e-5)


@pytest.mark.parametrize("latent,ga,order,heads", [("S1xR4", True, 4, 1), ("S1xR4", True, 2, 1),
                                                   ("R5", False, 4, 1), ("vmf:S5", False, 2, 1),
                                                   ("S1xR4", True, 4, 3)])
def test_symmetrized_encoder_turns_its_vector_with_the_image(latent, ga, order, heads):
    """Turning the image by 2π/n turns the latent-angle 2-vector (of every hypothesis) by 2π/n;
    nothing else changes."""
    torch.manual_seed(0)
    model = build(256, latent, group_action=ga, likelihood="bernoulli", network="conv-rotate",
                  image_shape=[1, 16, 16], hidden=[32], conv_channels=[8, 16], encoder_symmetry=order,
                  hypotheses=heads)
    assert type(model.encoder).__name__ == "SymmetrizedEncoder"
    x = torch.rand(3, 256)
    a = model.encoder(x)
    b = model.encoder(torch.rot90(x.reshape(3, 1, 16, 16), 4 // order, dims=(2, 3)).reshape(3, 256))
    t = 2 * math.pi / order
    slots = model.encoder.vectors
    assert slots == [h * model.latent.param_dim + model.latent.turning_slot() for h in range(heads)]
    for i in slots:
        va = a[:, i:i + 2]
        turned = torch.stack([math.cos(t) * va[:, 0] - math.sin(t) * va[:, 1],
                              math.sin(t) * va[:, 0] + math.cos(t) * va[:, 1]], -1)
        assert torch.allclose(turned, b[:, i:i + 2], atol=1e-6)
    keep = [j for j in range(a.shape[1]) if not any(j in (i, i + 1) for i in slots)]
    assert torch.allclose(a[:, keep], b[:, keep], atol=1e-6)


def test_symmetrized_encoder_is_skipped_without_a_turning_output():
    model = build(256, "S1xR4", likelihood="bernoulli", network="conv-rotate", image_shape=[1, 16, 16],
                hidden=[32], conv_channels=[8, 16], encoder_symmetry=4)
    assert type(model.encoder).__name__ == "ConvEncoder"      # ER without group action


def test_splat_decoder_turns_its_object_with_the_latent_rotation():
    from manifold_vae.models.networks import SplatDecoder
    torch.manual_seed(0)
    dec = SplatDecoder(10, [16], [1, 16, 16], points=8)
    m = torch.randn(5, 10)
    rot = dec.rotation(m)
    assert torch.allclose(rot.transpose(1, 2) @ rot, torch.eye(3).expand(5, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(5), atol=1e-5)
    out = dec(m)
    out.sum().backward()
    assert out.shape == (5, 256) and dec.points.grad.abs().sum() > 0 and dec.head.weight.grad.abs().sum() > 0


def test_conv_network_rejects_mismatched_image_shape():
    with pytest.raises(UsageError, match="pixels"):
        build(100, "S1", network="conv", image_shape=[1, 16, 16])
    with pytest.raises(UsageError, match="divisible"):
        build(36, "S1", network="conv", image_shape=[1, 6, 6], conv_channels=[4, 8])


# ---------------------------------------------------------------------- recovery metrics
def test_angle_alignment_finds_reflection_and_offset():
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 2 * np.pi, 2000)
    learned = -(true - 1.0) + 0.05 * rng.standard_normal(2000)
    fit = align_angles(learned, true)
    assert fit["reflection"] and fit["circular_correlation"] > 0.99
    assert np.median(np.abs(fit["error"])) < 0.06
    # independent angles: ρ_T is near 0 (its s.e. is O(1/n) here; 0.05 is generous)
    assert abs(fisher_lee_correlation(rng.uniform(0, 6.3, 2000), true)) < 0.05


def test_rotation_alignment_recovers_two_sided_and_inverse_maps():
    g = torch.Generator().manual_seed(2)
    r = haar_rotations(300, 3, generator=g, dtype=torch.float64).numpy()
    a, b = haar_rotations(2, 3, generator=g, dtype=torch.float64).numpy()
    learned = a @ np.swapaxes(r, 1, 2) @ b
    fit = align_rotations(learned, r)
    assert fit["inverse"] and fit["median_geodesic_error_deg"] < 1e-6
    unrelated = haar_rotations(300, 3, generator=g, dtype=torch.float64).numpy()
    assert align_rotations(unrelated, r)["median_geodesic_error_deg"] > 60


# ---------------------------------------------------------------------- CLI and suite
def test_cli_image_data_fit_evaluate(tmp_path, capsys):
    data = tmp_path / "renders.npz"
    assert main(["data", "renders", "--n", "120", "--size", "16", "--out", str(data), "--quiet",
                 "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["image_shape"] == [1, 16, 16] and info["n_test"] == 12
    run = tmp_path / "run"
    assert main(["fit", "--data", str(data), "--latent", "SO3xR1", "--group-action", "--steps", "4",
                 "--set", "iwae_k=5", "--set", "hidden=16", "--set", "conv_channels=4,8",
                 "--set", "batch_size=16", "--out", str(run), "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_test"] == 12 and math.isfinite(metrics["test_iwae"])
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["model"]["network"] == "conv" and cfg["model"]["likelihood"] == "bernoulli"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(data), "--split", "test", "--k", "5", "--quiet",
                 "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n"] == 12 and math.isfinite(ev["iwae"]) and "test images of" in ev["scored"]
    np.save(tmp_path / "wide.npy", np.full((12, 256), 2.0, dtype=np.float32))
    assert main(["evaluate", str(run), "--data", str(tmp_path / "wide.npy"), "--k", "5", "--quiet"]) == 1
    assert "use --split all" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--data", str(tmp_path / "wide.npy"), "--split", "all",
                 "--k", "5", "--quiet"]) == 1
    assert "[0, 1]" in capsys.readouterr().err


def test_cli_image_data_bad_input(tmp_path, capsys):
    assert main(["data", "digits", "--out", str(tmp_path / "d.npy"), "--quiet"]) == 2
    assert ".npz" in capsys.readouterr().err
    assert main(["data", "renders", "--n", "1", "--out", str(tmp_path / "r.npz"), "--quiet"]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert main(["data", "digits", "--size", "10", "--out", str(tmp_path / "d.npz"), "--quiet"]) == 2
    assert "multiple of 4" in capsys.readouterr().err
    assert main(["data", "digits", "--n", "50", "--out", str(tmp_path / "d.npz"), "--quiet"]) == 2
    assert "--copies" in capsys.readouterr().err
    assert main(["data", "circle", "--size", "16", "--out", str(tmp_path / "c.npy"), "--quiet"]) == 2
    assert "image datasets" in capsys.readouterr().err
    data = save_image_dataset(tmp_path / "r.npz", rendered_rotations(30, size=16, seed=0))
    assert main(["fit", "--data", str(data), "--test-data", str(data), "--steps", "2",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "own test split" in capsys.readouterr().err


def test_pose_metrics_are_held_out_and_fit_free():
    """A latent that is the truth up to fixed rotations on both sides and the inverse: zero
    held-out error, rank correlation 1, every latent neighbour a true one; an unrelated latent:
    the chance levels (median 132.3°, 0.75 % within 30°; rank correlation 0, neighbour precision
    the share of truly close pairs). Tolerances: 1000 poses, s.e. of the median ≈ 1.5°, of the
    accuracy ≈ 0.004, of Spearman's ρ over ~500k dependent pairs ≲ 0.01."""
    g = lambda n, s: haar_rotations(n, 3, generator=torch.Generator().manual_seed(s),
                                    dtype=torch.float64).numpy()
    true, a, b = g(1000, 0), g(1, 1)[0], g(1, 2)[0]
    learned = a @ np.swapaxes(true, 1, 2) @ b
    held = held_out_rotation_errors(learned, true)
    assert held["inverse"] and held["median_geodesic_error_deg"] < 1e-4 and held["accuracy_30deg"] == 1
    assert len(held["errors_deg"]) == 500                     # scored on the half not fitted on
    agree = rotation_distance_agreement(learned, true)
    assert agree["distance_rank_correlation"] > 0.999 and agree["latent_neighbour_precision"] == 1
    unrelated = g(1000, 3)
    held = held_out_rotation_errors(unrelated, true)
    assert abs(held["median_geodesic_error_deg"] - 132.3) < 12       # a fitted A, B: a bit lower
    assert held["accuracy_30deg"] < 0.03
    agree = rotation_distance_agreement(unrelated, true)
    assert abs(agree["distance_rank_correlation"]) < 0.05
    assert abs(agree["latent_neighbour_precision"] - agree["neighbour_chance"]) < 0.02
    assert abs(haar_angle_cdf(132.3) - 0.5) < 1e-3 and abs(haar_angle_cdf(30) - 0.0075) < 1e-4


def test_relative_angles_score_pairs_of_copies_of_one_source():
    """Each source has its own free offset (unidentifiable) and the latent is reflected: the
    relative metric sees through both; a half turn on some copies is forgiven only modulo π; a
    latent unrelated to the angle scores chance (median 90°, 1/6 of pairs within 30°)."""
    rng = np.random.default_rng(0)
    n_src, copies = 300, 6
    source = rng.permutation(np.repeat(np.arange(n_src), copies))
    true = rng.uniform(0, 2 * np.pi, len(source))
    learned = -true + rng.uniform(0, 2 * np.pi, n_src)[source] + 0.02 * rng.standard_normal(len(source))
    i, j = same_source_pairs(source)
    assert len(i) == n_src * copies * (copies - 1) // 2 and (source[i] == source[j]).all()
    assert len(set(zip(np.minimum(i, j), np.maximum(i, j)))) == len(i)     # each pair once
    refl = best_relative_reflection(learned, true, i, j)
    assert refl
    good = relative_angle_summary(relative_angle_errors(learned, true, i, j, reflection=refl))
    assert good["relative_angle_median_deg"] < 3 and good["relative_angle_within_30deg"] == 1.0
    assert relative_angle_correlation(learned, true, source, reflection=refl) > 0.99
    assert relative_angle_correlation(learned, true, source, reflection=not refl) < -0.99
    flipped = learned + np.pi * (rng.random(len(source)) < 0.5)
    e_full = relative_angle_errors(flipped, true, i, j, reflection=refl)
    e_half = relative_angle_errors(flipped, true, i, j, reflection=refl, half_turn=True)
    assert np.median(e_full) > 45 and np.median(e_half) < 3
    # chance: |error| uniform on [0°, 180°]; with ~4500 pairs the s.e. of the fraction within
    # 30° is sqrt(p(1-p)/n) ≈ 0.006 and of the median ≈ 1.3°: 5 s.e. tolerances
    noise = relative_angle_summary(relative_angle_errors(rng.uniform(0, 6.3, len(source)), true,
                                                         i, j, reflection=False))
    assert abs(noise["relative_angle_within_30deg"] - 1 / 6) < 0.03
    assert abs(noise["relative_angle_median_deg"] - 90) < 7


@pytest.mark.slow
def test_image_suite_end_to_end(tmp_path):
    from manifold_vae.experiments.suites.images import ImageSuiteSettings, reproduce_images
    from manifold_vae.models.pose_search import PoseSearchConfig

    small = dict(batch_size=32, iwae_k=4, hidden=[16], conv_channels=[4, 8], steps=6)
    base = ImageSuiteSettings()
    s = ImageSuiteSettings(digits_copies=2, renders_n=200, renders_size=16, seeds=1, workers=1,
                           digits=base.digits.replace(**small),
                           renders=base.renders.replace(image_shape=[1, 16, 16], **small),
                           renders_search=PoseSearchConfig(points=8, steps=5, grid=16, search=50))
    res = reproduce_images(s, tmp_path, log=lambda m: None)
    assert 0 <= res["relative_angle_median_deg"] <= 180
    assert 0 <= res["relative_angle_within_30deg"] <= 1
    assert -1 <= res["relative_angle_correlation"] <= 1
    assert res["relative_angle_row"] in ("er", "er-ga")
    assert set(res["relative_angle_per_class"]) == {str(c) for c in range(10)}
    assert res["relative_angle_half_turn_classes"]["relative_angle_median_deg"] <= 90   # mod π
    assert "circular_correlation" not in res                # the unidentifiable absolute angle
    assert 0 <= res["median_geodesic_error_deg"] <= 180 and 0 <= res["accuracy_30deg"] <= 1
    assert -1 <= res["distance_rank_correlation"] <= 1 and res["pose_row"] == "pose-search"
    renders = res["datasets"]["renders"]
    assert [r["key"] for r in renders["rows"]] == ["gauss", "er", "er-ga", "pose-search"]
    assert renders["best_er_row"] in ("er", "er-ga")
    search = renders["rows"][-1]
    assert search["valid_bound"] and search["test_elbo_mean"] is None and search["test_iwae_k"] == 50
    assert res["median_geodesic_error_deg"] == renders["recovery"]["pose-search"][
        "median_geodesic_error_deg_mean"]
    for key in ("er", "er-ga", "pose-search"):            # every SO(3) row scored the same way
        assert "accuracy_30deg_mean" in renders["recovery"][key]
    assert "latent_neighbour_precision" in res                # NaN when no pair is that close
    assert res["datasets"]["renders"]["chance"]["median_geodesic_error_deg"] == 132.3
    digits = res["datasets"]["digits"]
    keys = [r["key"] for r in digits["rows"]]
    assert keys == ["gauss", "vmf", "powerspherical", "er", "er-ga"]
    for key in keys:                                      # every row scored the same way
        assert "relative_angle_median_deg_mean" in digits["recovery"][key]
    for name in ("digits_reconstructions", "digits_circle_walk", "digits_angle_recovery",
                 "digits_angle_errors", "renders_reconstructions", "renders_great_circles",
                 "renders_rotation_errors", "renders_search_great_circles"):
        assert (tmp_path / "figures" / f"{name}.png").is_file(), name
    md = (tmp_path / "results.md").read_text()
    assert "Relative angles" in md and "upright" not in md
    # by default the suite trains what identifies the symmetry, and says so
    assert "digits: continuous Bernoulli on grey levels, turn consistency 10, 2 hypotheses" in md
    assert "renders: continuous Bernoulli on grey levels, turn consistency 10, 4 hypotheses" in md
    assert "Pose search: R ~ Haar(SO(3))" in md and "the pose row" in md
    # a second call reuses every finished run
    stamp = (tmp_path / "runs" / "renders" / "pose-search-seed0" / "metrics.json").stat().st_mtime_ns
    again = reproduce_images(s, tmp_path, log=lambda m: None)
    assert again["relative_angle_median_deg"] == res["relative_angle_median_deg"]
    # the reused poses, read back from disk, align to the last bits of LAPACK's SVD
    assert again["median_geodesic_error_deg"] == pytest.approx(res["median_geodesic_error_deg"], rel=1e-9)
    assert (tmp_path / "runs" / "renders" / "pose-search-seed0" / "metrics.json").stat().st_mtime_ns == stamp


def test_image_suite_binarized_is_the_hard_variant(tmp_path):
    from manifold_vae.cli import main
    from manifold_vae.experiments.suites import SUITES
    default = SUITES["images"].settings()
    hard = SUITES["images"].settings(binarized=True, steps=7)
    assert not default.is_binarized and hard.is_binarized
    for name in ("digits", "renders"):
        model, was = getattr(hard, name).model, getattr(default, name).model
        assert (model.likelihood, model.turn_consistency, model.hypotheses) == ("bernoulli", 0.0, 1)
        assert was.likelihood == "continuous-bernoulli" and was.hypotheses > 1
        assert getattr(hard, name).steps == 7 and model.network == was.network
    assert hard.renders_search is None and default.renders_search.steps == 1500
    # the flag belongs to the images suite alone, and a refused command writes nothing
    assert main(["reproduce", "--suite", "circle", "--binarized", "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c").exists()


def test_image_suite_group_action_rows_start_unimodal_as_fit_starts_them():
    from manifold_vae.experiments.suites.images import ImageSuiteSettings, image_rows
    from manifold_vae.training.defaults import UNIMODAL_START
    settings = ImageSuiteSettings()
    for dataset in ("digits", "renders"):
        rows = {r.key: r.config(settings.template(dataset, [1, 16, 16]), 0) for r in
                image_rows(dataset, settings)}
        assert rows["er-ga"].model.latent.init_concentration == UNIMODAL_START
        assert rows["er"].model.latent.init_concentration < UNIMODAL_START   # fit's default there


@pytest.mark.parametrize("key,value,match", [("network", "resnet", "network must be"),
                                             ("likelihood", "poisson", "likelihood must be"),
                                             ("encoder_symmetry", "3", "encoder_symmetry"),
                                             ("network", "conv", "image_shape")])
def test_bad_image_config_is_a_usage_error(key, value, match):
    from manifold_vae.errors import UsageError
    from manifold_vae.training.config import FitConfig, config_from
    with pytest.raises(UsageError, match=match):
        config_from(FitConfig, overrides=[f"{key}={value}"])


def test_bernoulli_fit_refuses_data_outside_unit_interval(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = main(["fit", "--data", str(tmp_path / "x.npy"), "--latent", "S1", "--steps", "2",
                 "--set", "likelihood=bernoulli", "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 1 and "[0, 1]" in capsys.readouterr().err


def test_render_shade_hook_gives_colour_channels_with_the_same_shading():
    """A shade with three channels gives (N, 3, s, s) images: each channel is the grey render
    with the cube's albedo replaced by that channel's colour (here: the grey albedo times 1, ½
    and 0), so channel 0 is the default render itself and the others follow exactly."""
    rot = haar_rotations(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64).numpy()
    grey = render(rot, size=16)
    factors = np.array([1.0, 0.5, 0.0])
    shade = lambda cube, face, lambert: (ALBEDO[cube] * (AMBIENT + (1 - AMBIENT) * lambert))[..., None] * factors
    colour = render(rot, size=16, shade=shade)
    assert colour.shape == (5, 3, 16, 16)
    assert np.allclose(colour[:, 0], grey) and np.allclose(colour[:, 1], 0.5 * grey)
    assert np.all(colour[:, 2] == 0)
    d = rendered_rotations(12, size=16, seed=0, shade=shade)
    assert d["image_shape"].tolist() == [3, 16, 16] and d["x"].shape == (12, 3 * 16 * 16)


def test_splat_decoder_draws_each_channel_from_its_own_albedo():
    """On colour images the splat decoder carries one albedo per point and channel: a 3-channel
    model trains a step, and its splatted albedo channels move independently."""
    from manifold_vae.models import ModelConfig, build_model
    cfg = ModelConfig(latent="SO3xR1", group_action=True, network="splat", image_shape=[3, 16, 16],
                      likelihood="continuous-bernoulli", hidden=[16])
    torch.manual_seed(0)
    model = build_model(cfg.validate(), 3 * 256).train()
    assert model.decoder.albedo.shape == (128, 3)
    out = model.loss(torch.rand(6, 3 * 256))
    out["loss"].backward()
    assert torch.isfinite(model.decoder.albedo.grad).all()
    assert not torch.allclose(model.decoder.albedo.grad[:, 0], model.decoder.albedo.grad[:, 1])


def test_splat_colour_channels_are_the_grey_albedo_when_the_colours_agree():
    """The splatted picture a 3-channel decoder hands its refinement is laid out as coverage,
    one albedo map per channel, depth: with every channel's albedo equal to a 1-channel
    decoder's (same points), each albedo map is that decoder's, and coverage and depth agree."""
    from manifold_vae.models.networks import SplatDecoder
    torch.manual_seed(0)
    grey, colour = SplatDecoder(10, [16], (1, 16, 16)), SplatDecoder(10, [16], (3, 16, 16))
    with torch.no_grad():
        colour.points.copy_(grey.points)
        colour.head.load_state_dict(grey.head.state_dict())
        grey.albedo.copy_(torch.randn(128))
        colour.albedo.copy_(grey.albedo[:, None].expand(128, 3))
    seen = {}
    for name, dec in (("grey", grey), ("colour", colour)):
        dec.refine.register_forward_pre_hook(lambda mod, args, name=name: seen.__setitem__(name, args[0]))
        dec(torch.randn(4, 10, generator=torch.Generator().manual_seed(1)))
    g, c = seen["grey"][:, :3], seen["colour"][:, :5]           # the picture, before the style maps
    assert torch.allclose(c[:, 0], g[:, 0], atol=1e-5) and torch.allclose(c[:, 4], g[:, 2], atol=1e-5)
    for k in (1, 2, 3):
        assert torch.allclose(c[:, k], g[:, 1], atol=1e-5)
    assert g[:, 1].std() > 0                                    # the albedo map is not flat
