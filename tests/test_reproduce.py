"""The reproduce suite end to end on tiny settings: files, keys, figures, reuse of finished runs."""
import json

import pytest

from manifold_vae.experiments.reproduce import ROWS, ReproduceSettings, reproduce_circle


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    settings = ReproduceSettings(n_train=512, n_test=64, dim=10, steps=20, batch_size=64,
                                 hidden=[16], seeds=2, iwae_k=8, embed_steps=20)
    res = reproduce_circle(settings, out, log=lambda m: None)
    return out, settings, res


def test_results_json_has_the_table(tiny):
    out, settings, _ = tiny
    res = json.loads((out / "results.json").read_text())
    assert isinstance(res["true_log_likelihood"], float)
    names = [r["name"] for r in res["rows"]]
    assert names == [r[1] for r in ROWS]
    for row in res["rows"]:
        for key in ("test_elbo_mean", "test_elbo_std", "test_iwae_mean", "test_iwae_std",
                    "gap_to_true_ll_mean", "iwae_minus_gauss_d1_mean"):
            assert isinstance(row[key], float)
        assert row["seeds"] == 2
        # the gap is the ceiling minus the row's IWAE
        assert row["gap_to_true_ll_mean"] == pytest.approx(res["true_log_likelihood"] - row["test_iwae_mean"], abs=1e-6)


def test_markdown_and_figures_are_written(tiny):
    out, _, _ = tiny
    md = (out / "results.md").read_text()
    assert "| Gaussian VAE, d=1 |" in md and "True log-likelihood" in md
    for fig in ("latents.png", "embedding.png", "training_curves.png"):
        assert (out / fig).stat().st_size > 1000


def test_finished_runs_are_reused(tiny):
    out, settings, res = tiny
    logs = []
    again = reproduce_circle(settings, out, log=logs.append)
    assert sum("reusing finished run" in m for m in logs) == len(ROWS) * settings.seeds
    assert [r["test_iwae_mean"] for r in again["rows"]] == [r["test_iwae_mean"] for r in res["rows"]]
