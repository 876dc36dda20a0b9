"""The in-plane turn-consistency term (models/equivariance.py): its rotation convention, its
value for consistent and inconsistent encoders, and that it touches training only."""
import math

import pytest
import torch

from manifold_vae.errors import UsageError
from manifold_vae.models import ModelConfig, build_model
from manifold_vae.models.equivariance import planar_angle, turn_consistency

SHAPE = (1, 24, 24)


def blob_images(n: int, seed: int = 0) -> torch.Tensor:
    """Gaussian blobs at random angles, 6 pixels from the centre (inside the canvas at any turn)."""
    g = torch.Generator().manual_seed(seed)
    phi = 2 * math.pi * torch.rand(n, generator=g)
    c = torch.arange(24, dtype=torch.float32) - 11.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    # displayed image: row 0 at the top, so "up" is -y in array coordinates
    bx, by = 6 * torch.cos(phi), -6 * torch.sin(phi)
    img = torch.exp(-((xx - bx[:, None, None]) ** 2 + (yy - by[:, None, None]) ** 2) / 4)
    return img.reshape(n, -1)


def centroid_point(x: torch.Tensor) -> torch.Tensor:
    """An exactly turn-equivariant "encoder": the image's centroid, y axis pointing up."""
    img = x.reshape(-1, 24, 24)
    c = torch.arange(24, dtype=x.dtype) - 11.5
    w = img / img.sum((1, 2), keepdim=True)
    return torch.stack([(w * c[None, None, :]).sum((1, 2)), -(w * c[None, :, None]).sum((1, 2))], -1)


def test_equivariant_encoder_scores_zero_and_a_blind_one_scores_one():
    x = blob_images(400)
    torch.manual_seed(0)
    pen = turn_consistency(centroid_point, x, centroid_point(x), SHAPE)
    # a counter-clockwise turn of the picture turns the centroid's polar angle the same way:
    # only interpolation error is left (a 1e-3 rad error would give 5e-7)
    assert pen.max() < 1e-3
    blind = lambda obs: torch.tensor([[1.0, 0.0]]).expand(obs.shape[0], 2)
    pen = turn_consistency(blind, x, blind(x), SHAPE)
    # E[1 - cos α] = 1 for α ~ U[0, 2π); 400 draws: standard error sqrt(1/2 / 400) = 0.035
    assert abs(float(pen.mean()) - 1) < 4 * 0.035
    # an encoder that turns the wrong way is penalized as much
    mirror = lambda obs: centroid_point(obs) * torch.tensor([1.0, -1.0])
    pen = turn_consistency(mirror, x, mirror(x), SHAPE)
    assert abs(float(pen.mean()) - 1) < 4 * 0.035


def test_planar_angle_reads_first_two_coordinates():
    m = torch.tensor([[0.0, 2.0, 5.0], [-1.0, 0.0, 7.0]])
    assert torch.allclose(planar_angle(m), torch.tensor([math.pi / 2, math.pi]))


def _model(weight: float, latent: str = "S1xR2", **kw):
    cfg = ModelConfig(latent=latent, network="conv-rotate", image_shape=[1, 16, 16],
                      likelihood="bernoulli", hidden=[32], conv_channels=[8, 16],
                      turn_consistency=weight, **kw)
    torch.manual_seed(0)
    return build_model(cfg.validate(), 256)


def test_term_enters_the_training_loss_only():
    x = torch.rand(16, 256)
    plain, turned = _model(0.0, group_action=True), _model(5.0, group_action=True)
    turned.load_state_dict(plain.state_dict())
    turned.train()
    torch.manual_seed(1)
    out = turned.loss(x)
    assert "turn_consistency" in out and float(out["turn_consistency"]) > 0
    # the loss is the negative ELBO plus the weighted term (the KL weight is 1 here)
    assert torch.allclose(out["loss"], -out["elbo"] + 5.0 * out["turn_consistency"], atol=1e-4)
    out["loss"].backward()
    assert all(p.grad is not None for p in turned.encoder.parameters())
    # evaluation (and so every bound) sees the model alone: same numbers as without the term
    turned.eval(), plain.eval()
    torch.manual_seed(2)
    a = turned.log_weights(x, 4)
    torch.manual_seed(2)
    b = plain.log_weights(x, 4)
    assert torch.equal(a, b)
    assert "turn_consistency" not in turned.loss(x)


@pytest.mark.parametrize("changes, message", [
    ({"turn_consistency": -1.0}, "turn_consistency must be >= 0"),
    ({"turn_consistency": 1.0, "network": "mlp", "image_shape": []}, "needs network conv"),
])
def test_bad_settings_are_named(changes, message):
    base = dict(latent="S1xR2", network="conv-rotate", image_shape=[1, 16, 16])
    with pytest.raises(UsageError, match=message):
        ModelConfig(**{**base, **changes}).validate()


def test_one_dimensional_latent_is_refused():
    with pytest.raises(UsageError, match="first two coordinates"):
        build_model(ModelConfig(latent="R1", network="conv", image_shape=[1, 16, 16],
                                likelihood="bernoulli", turn_consistency=1.0), 256)


def test_camera_turn_matches_turning_the_splat_decoders_image():
    """Turning a rendered image counter-clockwise by α is rendering the object turned by R_z(α)
    on the left: the splat decoder's coverage map (before its learned refinement) agrees with
    the turned image up to interpolation, and the other conventions are far off."""
    from manifold_vae.data.images import rotate_images
    from manifold_vae.manifolds import parse_latent
    from manifold_vae.models.equivariance import camera_turns
    from manifold_vae.models.networks import SplatDecoder
    torch.manual_seed(0)
    dec = SplatDecoder(10, [32], [1, 32, 32])
    r = parse_latent("SO3").sample_prior(4, generator=torch.Generator().manual_seed(1)).reshape(4, 3, 3).float()
    alpha = torch.tensor([0.5, 1.0, 2.0, -1.2])

    def cover(rot):
        q = torch.einsum("bij,kj->bki", rot, dec.points)[..., :2]
        d2 = (dec.pixels[None, :, None, :] - q[:, None, :, :]).pow(2).sum(-1)
        return torch.exp(-0.5 * torch.exp(-2 * dec.log_width) * d2).sum(-1).reshape(4, 1, 16, 16)

    with torch.no_grad():
        turned = rotate_images(cover(r), alpha)[..., 3:13, 3:13]     # the centre: no corners lost
        rz = camera_turns(alpha)
        err = {name: float((cover(rot)[..., 3:13, 3:13] - turned).abs().mean())
               for name, rot in [("left", rz @ r), ("inverse", rz.transpose(-1, -2) @ r),
                                 ("right", r @ rz)]}
    assert err["left"] < 0.25 * min(err["inverse"], err["right"])


def test_rotation_penalty_is_zero_when_consistent_and_one_minus_cos_otherwise():
    from manifold_vae.models.equivariance import camera_turns, rotation_turn_consistency
    x = blob_images(64)
    r = torch.eye(3).expand(64, 3, 3)
    torch.manual_seed(3)
    # an "encoder" that knows the turn it was given (it reads the blob's angle): consistent
    angle = lambda obs: planar_angle(centroid_point(obs)) - planar_angle(centroid_point(x))
    pen = rotation_turn_consistency(lambda obs: camera_turns(angle(obs)), x, r, SHAPE)
    assert pen.max() < 1e-3
    # a blind one: 1 − cos α on average 1 (s.e. sqrt(1/2 / 64) = 0.09)
    pen = rotation_turn_consistency(lambda obs: torch.eye(3).expand(len(obs), 3, 3), x, r, SHAPE)
    assert abs(float(pen.mean()) - 1) < 4 * 0.09


def test_splat_model_trains_with_the_rotation_term():
    cfg = ModelConfig(latent="SO3xR1", group_action=True, network="splat", image_shape=[1, 16, 16],
                      likelihood="bernoulli", hidden=[32], turn_consistency=2.0)
    torch.manual_seed(0)
    model = build_model(cfg.validate(), 256).train()
    out = model.loss(torch.rand(8, 256))
    assert 0 < float(out["turn_consistency"]) <= 2
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.encoder.parameters() if p.grad is not None)


def test_fit_logs_the_term_and_reports_the_models_own_bound(tmp_path):
    """End to end: a run trained with the term logs its mean in metrics.jsonl (the term's own
    range [0, 2]), and the test numbers it reports are finite bounds of the model."""
    import json
    from manifold_vae.training import FitConfig, run_fit
    g = torch.Generator().manual_seed(0)
    x = blob_images(96).reshape(96, 24, 24)[:, 4:20, 4:20].reshape(96, 256).clamp(0, 1)
    x = (x + 0.05 * torch.rand(x.shape, generator=g)).clamp(0, 1)
    cfg = FitConfig(latent="S1xR1", group_action=True, network="conv-rotate", image_shape=[1, 16, 16],
                    likelihood="continuous-bernoulli", hidden=[16], conv_channels=[4, 8],
                    turn_consistency=3.0, steps=6, batch_size=16, log_every=3, iwae_k=4,
                    checkpoint_every=6, auto_defaults=False)
    res = run_fit(cfg, x, tmp_path / "run", log=lambda s: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["turn_consistency"] <= 2 for r in rows if "turn_consistency" in r)
    assert sum("turn_consistency" in r for r in rows) == 2
    m = res.metrics
    assert math.isfinite(m["test_elbo"]) and math.isfinite(m["test_iwae"]) and m["iwae_is_bound"]
