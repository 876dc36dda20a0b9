"""Several posterior hypotheses per example (``hypotheses=H``): the chosen one is the best by the
ELBO at its central point, the bounds are those of the chosen posterior (valid bounds of the same
model), and training reaches the chosen hypothesis only."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from manifold_vae import ModelConfig
from manifold_vae.cli import main
from manifold_vae.common.config import UsageError
from manifold_vae.data.synthetic import ManifoldBenchmark
from manifold_vae.evaluation.bounds import per_example_bounds
from manifold_vae.evaluation.ceiling import true_log_likelihood
from manifold_vae.latents import ManifoldLatent
from manifold_vae.likelihoods import GaussianLikelihood
from manifold_vae.models import VAE
from tests.helpers import build


class _Heads(nn.Module):
    """An encoder giving every example the same raw parameters for each hypothesis (learnable)."""

    def __init__(self, raw: torch.Tensor):
        super().__init__()
        self.raw = nn.Parameter(raw.reshape(-1).clone())

    def forward(self, x):
        return self.raw.expand(*x.shape[:-1], -1)


def _scores(model, x, raw):
    """``log p(x | decoder(m̄_h)) − KL_h`` computed hypothesis by hypothesis."""
    out = []
    for h in range(model.hypotheses):
        r = raw[h]
        out.append(model.likelihood.log_prob(x, model.decoder(model.latent.mean_point(r)))
                   - model.latent.kl(r))
    return torch.stack(out)


@pytest.mark.parametrize("latent,ga", [("S2", True), ("SO3", True), ("T2", False), ("vmf:S2", False)])
def test_chosen_hypothesis_is_the_best_at_its_central_point(latent, ga):
    torch.manual_seed(0)
    model = build(10, latent, group_action=ga, hidden=[16], hypotheses=3).eval()
    x = torch.randn(64, 10)
    raw = model.raw(x)
    assert raw.shape == (3, 64, model.latent.param_dim)
    assert model.encoder(x).shape[-1] == 3 * model.latent.param_dim
    chosen = model.chosen(x, raw)
    assert torch.equal(chosen, _scores(model, x, raw).argmax(0))
    assert len(set(chosen.tolist())) > 1          # a random encoder's heads each win somewhere
    shares = torch.bincount(chosen, minlength=3).double() / 64
    assert model.hypothesis_shares(x) == pytest.approx(shares.tolist())
    picked = raw[chosen, torch.arange(64)]
    assert torch.equal(model.choose(x, raw), picked)
    assert torch.allclose(model.embed(x), model.latent.mean_point(picked))


def test_bounds_are_those_of_the_chosen_posterior():
    """The ELBO and IWAE of a model with hypotheses equal, draw for draw, those of the same model
    whose encoder gives only the chosen hypothesis: the bounds are of the same generative model."""
    torch.manual_seed(1)
    model = build(10, "S2", group_action=True, hidden=[16], hypotheses=4).eval()
    x = torch.randn(32, 10)
    with torch.no_grad():
        picked = model.choose(x, model.raw(x))
    single = VAE(_Fixed(picked), model.latent, model.decoder, model.likelihood).eval()
    a = per_example_bounds(model, x, k=50, generator_seed=3)
    b = per_example_bounds(single, x, k=50, generator_seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


class _Fixed(nn.Module):
    """An encoder returning given per-example raw parameters for the rows it was built with."""

    def __init__(self, raw):
        super().__init__()
        self.register_buffer("table", raw)

    def forward(self, x):
        return self.table[: x.shape[0]]


def test_iwae_with_hypotheses_never_exceeds_the_exact_likelihood():
    """Two hypotheses (one at the Beta floor a = 0.01, one concentrated, group actions apart) on a
    model whose exact log p(x) is known by quadrature: the IWAE of the chosen posterior (K = 1000,
    16 independent repetitions) exceeds log p(x) by no more than 3 standard errors of its mean
    (plus the quadrature's error), the same line every latent family is held to."""
    bench = ManifoldBenchmark("S1", dim=4, noise=2e-4, hidden=8, seed=5)
    latent = ManifoldLatent("S1", group_action=True)
    floor = torch.tensor([math.log(0.01 / 0.99), -math.log(latent.init_concentration), 0.3, 1.0])
    sharp = torch.tensor([math.log(0.3 / 0.7), 20.0, -0.7, 0.2])
    likelihood = GaussianLikelihood(4)
    with torch.no_grad():
        likelihood.log_scale.fill_(math.log(bench.noise))

    class Generator(nn.Module):
        def forward(self, m):
            return bench.mean(m).float()

    model = VAE(_Heads(torch.stack([floor, sharp])), latent, Generator(), likelihood,
                hypotheses=2).eval()
    torch.manual_seed(6)
    with torch.no_grad():       # observations where each hypothesis puts its mass
        m = torch.cat([latent.sample(floor[None], 2).point[:, 0], latent.sample(sharp[None], 2).point[:, 0]])
    x = (bench.mean(m) + bench.noise * torch.randn(4, 4, dtype=torch.float64)).float()
    log_p, err = true_log_likelihood(bench, x)
    reps = torch.stack([per_example_bounds(model, x, k=1000, generator_seed=r)[1] for r in range(16)])
    mean, se = reps.mean(0), reps.std(0) / 4
    assert (mean <= log_p + 3 * se + 2 * err + 1e-6).all(), (mean - log_p, se)


def test_training_reaches_only_the_chosen_hypothesis():
    torch.manual_seed(2)
    latent = ManifoldLatent("S1", group_action=True)
    raw = torch.randn(3, latent.param_dim)
    model = VAE(_Heads(raw), latent, nn.Linear(2, 6), GaussianLikelihood(6), hypotheses=3)
    x = torch.randn(1, 6).expand(16, 6)            # one observation: every example picks one head
    chosen = model.chosen(x, model.raw(x))
    assert len(set(chosen.tolist())) == 1
    model.loss(x)["loss"].backward()
    grad = model.encoder.raw.grad.reshape(3, -1)
    h = int(chosen[0])
    assert grad[h].abs().sum() > 0
    assert all(grad[j].abs().sum() == 0 for j in range(3) if j != h)


def test_hypotheses_need_matching_encoder_and_valid_count():
    latent = ManifoldLatent("S2", group_action=True)
    model = VAE(nn.Linear(5, latent.param_dim), latent, nn.Linear(3, 5), GaussianLikelihood(5),
                hypotheses=2)
    with pytest.raises(ValueError, match=f"emits {latent.param_dim} numbers.*2 hypotheses needs "
                                         f"{2 * latent.param_dim}"):
        model.loss(torch.randn(4, 5))
    with pytest.raises(ValueError, match="hypotheses must be a positive integer"):
        VAE(nn.Linear(5, latent.param_dim), latent, nn.Linear(3, 5), GaussianLikelihood(5), hypotheses=0)
    with pytest.raises(UsageError, match="hypotheses must be an integer from 1 to 64"):
        ModelConfig(latent="S2", hypotheses=0).validate()


def test_fit_and_evaluate_with_hypotheses(tmp_path, capsys):
    """End to end: `fit --set hypotheses=3` saves the key, the checkpoint reloads with three
    hypotheses, and `evaluate` reproduces the run's test IWAE."""
    data = tmp_path / "s2.npy"
    assert main(["data", "S2", "--n", "300", "--dim", "8", "--noise", "0.1", "--out", str(data),
                 "--quiet"]) == 0
    out = tmp_path / "run"
    assert main(["fit", "--data", str(data), "--latent", "S2", "--group-action", "--steps", "20",
                 "--set", "hypotheses=3", "--set", "iwae_k=20", "--set", "hidden=16",
                 "--set", "batch_size=64", "--set", "threads=1", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["model"]["hypotheses"] == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["test_iwae"]) and metrics["test_iwae"] >= metrics["test_elbo"]
    shares = metrics["hypothesis_shares"]           # which heads the test rows take
    assert len(shares) == 3 and abs(sum(shares) - 1) < 1e-9 and min(shares) >= 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(data), "--split", "test", "--k", "20",
                 "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["iwae"] == pytest.approx(metrics["test_iwae"], abs=1e-6)


def test_choosing_allocates_on_the_inputs_device():
    """With the default device set to ``meta``, a tensor the choice made without looking at its
    inputs would land on ``meta`` and fail against the CPU model (see test_contracts)."""
    torch.manual_seed(4)
    model = build(10, "S2", group_action=True, hidden=[16], hypotheses=3)
    x = torch.randn(8, 10)
    with torch.device("meta"):
        out = model.loss(x)
        out["loss"].backward()
        lw = model.log_weights(x, 4)
        shares = model.hypothesis_shares(x)
        point = model.embed(x)
    assert out["loss"].device.type == lw.device.type == point.device.type == "cpu"
    assert abs(sum(shares) - 1) < 1e-9


# ---------------------------------------------------------------------- pose grid
@pytest.mark.parametrize("order,radius", [(12, 90.0), (24, 62.8), (60, 44.5)])
def test_rotation_groups_are_groups_spread_over_so3(order, radius):
    from manifold_vae.manifolds.rotations import rotation_group
    from manifold_vae.manifolds.so3 import SO3
    g = rotation_group(order, dtype=torch.float64)
    assert g.shape == (order, 3, 3) and torch.equal(g[0], torch.eye(3, dtype=torch.float64))
    assert torch.allclose(g @ g.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand_as(g), atol=1e-12)
    assert torch.allclose(torch.linalg.det(g), torch.ones(order, dtype=torch.float64))
    # closed under products: every product is one of the elements
    prod = (g[:, None] @ g[None]).reshape(-1, 1, 9)
    assert (prod - g.reshape(1, order, 9)).abs().amax(-1).amin(-1).max() < 1e-9
    # every rotation lies within the group's covering radius of an element (Haar draws)
    r = SO3().random_group_element(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    near = torch.einsum("nij,gij->ng", r, g).amax(-1)          # trace of R gᵀ at the nearest
    worst = math.degrees(math.acos(min(1.0, max(-1.0, (float(near.min()) - 1) / 2))))
    assert radius - 5 < worst <= radius
    with pytest.raises(ValueError, match="order 7"):
        rotation_group(7)


@pytest.mark.parametrize("latent,hypotheses", [("SO3", 1), ("SO3xR1", 2), ("S1xSO3", 2)])
def test_pose_grid_candidates_are_the_hypotheses_turned_by_each_grid_rotation(latent, hypotheses):
    """Candidate ``j · H + h`` is hypothesis ``h`` with its group element left-multiplied by grid
    rotation ``j``: its central point's SO(3) factor is ``R_j`` times the hypothesis's, every other
    raw number is the hypothesis's own; the chosen candidate is the best by the ELBO at its
    central point, and the bounds are those of the chosen posterior."""
    torch.manual_seed(5)
    model = build(10, latent, group_action=True, hidden=[16], hypotheses=hypotheses, pose_grid=12).eval()
    x = torch.randn(16, 10)
    raw = model.raw(x)
    every = model.candidates(raw)
    h_raw = raw if hypotheses > 1 else raw[None]
    assert every.shape == (12 * hypotheses, 16, model.latent.param_dim) and model.n_candidates == 12 * hypotheses
    slot = model.latent.rotation_slot()
    start = 2 if latent.startswith("S1") else 0        # the SO(3) factor's coordinates of a point
    grid = model.pose_grid
    for j in (0, 5, 11):
        for h in range(hypotheses):
            c = every[j * hypotheses + h]
            keep = torch.ones(c.shape[-1], dtype=torch.bool)
            keep[slot:slot + 6] = False
            assert torch.equal(c[:, keep], h_raw[h][:, keep])
            turned = model.latent.mean_point(c)[:, start:start + 9].unflatten(-1, (3, 3))
            own = model.latent.mean_point(h_raw[h])[:, start:start + 9].unflatten(-1, (3, 3))
            assert torch.allclose(turned, grid[j] @ own, atol=1e-5)
    scores = torch.stack([model.likelihood.log_prob(x, model.decoder(model.latent.mean_point(c)))
                          - model.latent.kl(c) for c in every])
    chosen = model.chosen(x, raw)
    assert torch.equal(chosen, scores.argmax(0))
    assert len(set((chosen // hypotheses).tolist())) > 1       # different grid rotations win
    picked = every[chosen, torch.arange(16)]
    assert torch.equal(model.choose(x, raw), picked)
    single = VAE(_Fixed(picked), model.latent, model.decoder, model.likelihood).eval()
    a = per_example_bounds(model, x, k=20, generator_seed=3)
    b = per_example_bounds(single, x, k=20, generator_seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert model.hypothesis_shares(x) == pytest.approx(
        (torch.bincount(chosen % hypotheses, minlength=hypotheses).double() / 16).tolist())


def test_pose_grid_reaches_the_encoder_through_the_turned_rotation_and_follows_the_device():
    torch.manual_seed(6)
    model = build(10, "SO3xR1", group_action=True, hidden=[16], pose_grid=24)
    x = torch.randn(8, 10)
    with torch.device("meta"):           # see test_choosing_allocates_on_the_inputs_device
        out = model.loss(x)
        out["loss"].backward()
        lw = model.log_weights(x, 4)
        point = model.embed(x)
    assert out["loss"].device.type == lw.device.type == point.device.type == "cpu"
    head = model.encoder.net[-1] if hasattr(model.encoder, "net") else list(model.encoder.modules())[-1]
    assert all(torch.isfinite(p.grad).all() for p in model.encoder.parameters() if p.grad is not None)
    assert head.weight.grad[model.latent.rotation_slot():model.latent.rotation_slot() + 6].abs().sum() > 0


@pytest.mark.parametrize("keys,message", [
    (dict(latent="SO3xR1", group_action=True, pose_grid=7), "pose_grid must be 0 .* got 7"),
    (dict(latent="SO3xR1", pose_grid=24), "SO3xR1 has none"),
    (dict(latent="S2", group_action=True, pose_grid=12), "S2 \\+ group action has none"),
])
def test_pose_grid_refuses_what_it_cannot_turn(keys, message):
    with pytest.raises(UsageError, match=message):
        ModelConfig(**keys).validate()


def test_a_trained_model_can_search_poses_at_test_time_and_embeds_in_chunks():
    """``set_pose_grid`` switches the search on (and off) on a built model; ``embed`` chooses a
    chunk of rows at a time (``C`` decoder rows per observation) with the same answer as at once."""
    torch.manual_seed(7)
    model = build(10, "SO3xR1", group_action=True, hidden=[16], hypotheses=2).eval()
    x = torch.randn(40, 10)
    before = model.embed(x)
    model.set_pose_grid(24)
    assert model.n_candidates == 48
    whole = model.latent.mean_point(model.encode(x))
    model.decoder.max_eval_rows = 48 * 7              # chunks of 7 rows (the last one of 5)
    assert torch.allclose(model.embed(x), whole, atol=1e-6)
    assert not torch.allclose(whole, before)          # some rows choose a turned candidate
    model.set_pose_grid(0)
    assert model.n_candidates == 2 and torch.allclose(model.embed(x), before)
    with pytest.raises(ValueError, match="S2 \\+ group action has none"):
        build(10, "S2", group_action=True, hidden=[16]).set_pose_grid(12)
