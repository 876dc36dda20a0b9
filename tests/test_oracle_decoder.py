"""``benchmarks/oracle_decoder.py``: the decoder's own estimation error, measured with the latent
points given. Its gap must be zero for the generator itself and equal a known excess for a
decoder that is off by a known amount, in the data's own units."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch

from manifold_vae.data.synthetic import ManifoldBenchmark
from manifold_vae.likelihoods.gaussian import standardization

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "oracle_decoder.py"
_spec = importlib.util.spec_from_file_location("oracle_decoder", _PATH)
oracle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(oracle)


def _generator_as_decoder(bench, x, offset=0.0):
    """The generator's own network as an oracle fit on rows standardized as the oracle does
    (shift the rows' mean, one global scale): it predicts (μ(m) − shift) / scale with log σ̂ =
    log σ − log scale; ``offset`` moves every coordinate's mean by that much in the data's units."""
    w1, w2 = bench.weights()
    net = oracle.decoder("generator", w1.shape[1], w2.shape[0]).double()
    with torch.no_grad():
        net[0].weight.copy_(w1)
        net[2].weight.copy_(w2)
    shift, scale = standardization(x)
    assert abs(float(scale) - 1) > 0.1           # the unstandardization is exercised
    log_scale = torch.full((bench.dim,), math.log(bench.noise), dtype=torch.float64) - scale.log()

    def standardized(pts):      # the oracle hands its decoders float32 points; this is float64
        return (net(pts.double()) + offset - shift) / scale
    return standardized, log_scale, shift, scale


def test_the_generator_itself_has_no_gap_and_a_known_offset_costs_its_excess():
    bench = ManifoldBenchmark("S2", dim=30, noise=0.05, seed=3)
    x, m = bench.sample(4000)
    x = x.double()               # float32 rows: compare against the same rows in float64
    exact = oracle.per_row_gap(bench, _generator_as_decoder(bench, x), m, x)
    # the true density of the float32-rounded rows: rounding moves each row by ~1e-8 relative
    assert exact.abs().max() < 1e-3
    # every coordinate's mean off by δ: per row (D δ² − 2δ Σ(x − μ)) / 2σ², mean D δ² / 2σ²;
    # fixed seed, tolerance 4 standard errors of the mean over rows
    delta = 0.01
    gap = oracle.per_row_gap(bench, _generator_as_decoder(bench, x, delta), m, x)
    expected = bench.dim * delta ** 2 / (2 * bench.noise ** 2)
    se = float(gap.std() / math.sqrt(len(gap)))
    assert abs(float(gap.mean()) - expected) < 4 * se


def test_an_oracle_fit_learns_and_is_scored_on_rows_it_did_not_see():
    """A short fit on a small circle dataset: far better than an untrained decoder on the held-out
    rows, and the training rows fit better than the held-out ones (the estimation error)."""
    bench = ManifoldBenchmark("S1", dim=20, noise=0.1, seed=2)
    x, m = bench.sample(2500)
    fitted = oracle.fit_oracle("mlp:64,64", m[:2000], x[:2000].double(), steps=600, lr=3e-3,
                               batch_size=256, seed=0)
    untrained = (lambda pts: torch.zeros(len(pts), bench.dim), torch.zeros(bench.dim),
                 x[:2000].double().mean(0), torch.ones((), dtype=torch.float64))
    test = oracle.per_row_gap(bench, fitted, m[2000:], x[2000:])
    train = oracle.per_row_gap(bench, fitted, m[:500], x[:500])
    assert float(test.mean()) < 0.1 * float(oracle.per_row_gap(bench, untrained, m[2000:], x[2000:]).mean())
    assert float(train.mean()) < float(test.mean())


@pytest.mark.parametrize("arch", ["wide", "mlp:", "mlp:0", "mlp:12,x"])
def test_an_unknown_architecture_is_refused_by_name(arch):
    with pytest.raises(ValueError, match="unknown architecture"):
        oracle.decoder(arch, 2, 3)
