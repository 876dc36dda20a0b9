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
