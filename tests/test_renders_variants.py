"""``benchmarks/renders_variants.py`` and ``renders_pose.turn_residuals``: the variants measured
on the renders (and not kept) do what their names say, so their recorded figures mean that."""
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from manifold_vae.models import ModelConfig, build_model

_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    sys.path.insert(0, str(_DIR))
    try:
        spec = importlib.util.spec_from_file_location(name, _DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(_DIR))
    return module


variants = _load("renders_variants")
renders_pose = _load("renders_pose")


def _model(hypotheses):
    cfg = ModelConfig(latent="SO3xR1", group_action=True, network="splat", image_shape=[1, 16, 16],
                      likelihood="continuous-bernoulli", hidden=[16], conv_channels=[4, 8],
                      turn_consistency=1.0, hypotheses=hypotheses)
    return build_model(cfg.validate(), 256)


def test_matched_turn_equals_the_suites_term_with_one_hypothesis():
    """With one hypothesis there is nothing to match: the matched term is the suite's term
    (same turn angles drawn from the same seed)."""
    torch.manual_seed(0)
    model = _model(1).train()
    x = torch.rand(8, 256)
    raw = model.raw(x).float()
    torch.manual_seed(5)
    suite = model._turn_consistency(x, raw)
    torch.manual_seed(5)
    matched = variants.matched_turn_consistency(model, x, raw)
    assert torch.allclose(suite, matched, atol=1e-6)


def test_matched_turn_takes_the_best_hypothesis_of_the_turned_image():
    """With several hypotheses the matched term is at most the suite's same-head term on the
    chosen head, and it lies in the term's range [0, 2]."""
    torch.manual_seed(0)
    model = _model(3).train()
    x = torch.rand(16, 256)
    raw = model.raw(x).float()
    torch.manual_seed(7)
    matched = variants.matched_turn_consistency(model, x, raw)
    torch.manual_seed(7)
    same_head = model._turn_consistency(x, raw)                    # (hypotheses, rows)
    chosen = model.chosen(x, raw)
    assert matched.shape == (16,) and bool(((matched >= 0) & (matched <= 2)).all())
    assert bool((matched <= same_head[chosen, torch.arange(16)] + 1e-6).all())


def test_sleep_term_trains_the_encoder_not_the_decoders_object():
    torch.manual_seed(0)
    model = _model(2).train()
    term = variants.sleep_term(model, torch.rand(8, 256))
    assert 0 <= float(term.detach()) <= 2
    term.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    for name in ("points", "albedo", "log_width"):
        assert getattr(model.decoder, name).grad is None      # the drawn images are detached
    head = model.decoder.head                                 # and the reading head is frozen
    assert head.weight.grad is None and head.bias.grad is None


class _ReadsTheAngle:
    """A stand-in model with one hypothesis whose rotation is ``R_z`` of the blob's angle."""
    def __init__(self, side, blind=False):
        from manifold_vae.likelihoods import LIKELIHOODS
        self.image_shape, self.blind = (1, side, side), blind
        self.likelihood = LIKELIHOODS["continuous-bernoulli"](side * side)
        self.latent = SimpleNamespace(mean_point=lambda c: c)
        self.decoder = SimpleNamespace(rotation=lambda m: m.unflatten(-1, (3, 3)))

    def raw(self, obs):
        from tests.test_equivariance import centroid_point
        from manifold_vae.models.equivariance import camera_turns, planar_angle
        if self.blind:
            return torch.eye(3).flatten().expand(len(obs), 9)
        return camera_turns(planar_angle(centroid_point(obs))).flatten(-2)

    def candidates(self, raw):
        return raw[None]

    def chosen(self, obs, raw):
        return torch.zeros(len(obs), dtype=torch.long)


def test_turn_residuals_are_zero_for_an_encoder_that_turns_with_the_image():
    """An encoder that reads each image's in-plane angle exactly satisfies the turn consistency:
    both residuals vanish (up to interpolation); one blind to the angle is off by the turn."""
    from tests.test_equivariance import blob_images
    x = blob_images(40)
    side = int(round(x.shape[1] ** 0.5))
    res = renders_pose.turn_residuals(_ReadsTheAngle(side), x)
    assert res["turn_residual_chosen_median_deg"] < 5
    assert res["turn_residual_same_head_median_deg"][0] < 5
    blind = renders_pose.turn_residuals(_ReadsTheAngle(side, blind=True), x)
    assert blind["turn_residual_chosen_median_deg"] > 45
