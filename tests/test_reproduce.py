"""The reproduce suite end to end on tiny settings: files, keys, figures, reuse of finished runs."""
import dataclasses
import json
import math

import numpy as np
import pytest

from manifold_vae.experiments.suites.circle import ROWS, CircleSettings, reproduce_circle
from manifold_vae.training import FitConfig


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("repro")
    settings = CircleSettings(n_train=512, n_test=64, dim=10, seeds=2, embed_steps=20,
                              training=FitConfig(steps=20, batch_size=64, hidden=[16], iwae_k=8))
    res = reproduce_circle(settings, out, log=lambda m: None)
    return out, settings, res


def test_results_json_has_the_table(tiny):
    out, settings, _ = tiny
    res = json.loads((out / "results.json").read_text())
    assert isinstance(res["true_log_likelihood"], float)
    names = [r["name"] for r in res["rows"]]
    assert names == [r.name for r in ROWS]
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
    # run again with another number of worker processes (so other threads per run): reused too
    logs = []
    other = dataclasses.replace(settings, workers=1)       # the fixture ran with one per core
    reproduce_circle(other, out, log=logs.append)
    assert sum("reusing finished run" in m for m in logs) == len(ROWS) * settings.seeds


def test_manifold_suite_end_to_end(tmp_path):
    from manifold_vae.experiments.suites.manifolds import (ManifoldSuiteSettings,
                                                           reproduce_manifolds, suite_rows)
    settings = ManifoldSuiteSettings(latents=["S1", "SO3"], n_train=256, n_test=16, dim=8, noise=0.3,
                                     seeds=1, embed_steps=10, workers=1, steps_by_latent={"SO3": 12},
                                     training=FitConfig(steps=10, batch_size=64, hidden=[16],
                                                        iwae_k=4))
    reproduce_manifolds(settings, tmp_path, log=lambda m: None)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [m["latent"] for m in saved["manifolds"]] == ["S1", "SO3"]
    for m in saved["manifolds"]:
        assert [r["name"] for r in m["rows"]] == [r.name for r in suite_rows(m["latent"])]
        assert [r["latent"] for r in m["rows"]][:2] == (["R1", "R2"] if m["latent"] == "S1" else ["R3", "R9"])
        for r in m["rows"]:
            assert r["gap_to_true_ll_mean"] == pytest.approx(m["true_log_likelihood"] - r["test_iwae_mean"], abs=1e-6)
        assert m["best_er_row"] == "ER, exact f + group action"   # the only valid-bound ER row
    assert "importance" in saved["manifolds"][1]["true_log_likelihood_method"]
    assert [m["steps"] for m in saved["manifolds"]] == [10, 12]       # steps_by_latent
    assert "| SO3 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "gaps.png").stat().st_size > 1000
    logs = []
    reproduce_manifolds(settings, tmp_path, log=logs.append)
    assert sum("reusing finished run" in m for m in logs) == 8


def test_manifold_known_by_samples_gets_its_rows_and_an_honest_embedding_verdict(tmp_path):
    """A surface in ``sampled`` is given to the learned row as a file of its uniform samples
    (``samples:PATH:d``); the table marks a learned map that fit would refuse, and the samples
    row counts as ER (not as a peer)."""
    from manifold_vae.experiments.suites.manifolds import (ManifoldSuiteSettings,
                                                           reproduce_manifolds, suite_rows)
    settings = ManifoldSuiteSettings(latents=["K2"], sampled=["K2"], sample_count=3000,
                                     sampled_embed_steps=5, n_train=256, n_test=16, dim=8,
                                     noise=0.3, seeds=1, workers=1, steps_by_latent={},
                                     restarts_by_latent={},
                                     training=FitConfig(steps=10, batch_size=64, hidden=[16],
                                                        iwae_k=4))
    reproduce_manifolds(settings, tmp_path, log=lambda m: None)
    saved = json.loads((tmp_path / "results.json").read_text())
    (m,) = saved["manifolds"]
    keys = [r["key"] for r in m["rows"]]
    assert keys == ["gauss-dim", "gauss-ambient", "er-exact", "er-exact-ga", "er-learned-samples"]
    samples_row = m["rows"][-1]
    assert samples_row["latent"] == f"samples:{tmp_path / 'samples' / 'K2-3000.npy'}:2"
    assert samples_row["valid_bound"] and "best_peer_row" not in m
    assert np.load(tmp_path / "samples" / "K2-3000.npy").shape == (3000, 4)
    assert [r.key for r in suite_rows("K2", samples=samples_row["latent"])] == keys
    md = (tmp_path / "results.md").read_text()
    assert "ER learned f from samples" in md and "**Not trusted**" in md   # 5 WAE steps
    # as fit does, the refused flat map was followed by the other periodic and disk choices
    embedded = json.loads((tmp_path / "embeddings" / "K2" / "report.json").read_text())
    assert [(t["periodic"], t["disk"]) for t in embedded["periodic_search"]] == [
        ([], []), ([0], []), ([1], []), ([0, 1], []), ([], [0, 1])]
    assert embedded["config"]["periodic"] == [] and embedded["config"]["steps"] == 5


def test_finished_runs_from_before_a_new_config_key_are_still_reused(tmp_path):
    """A run saved before a FitConfig key existed used that key's default: same config. Runs
    saved by the version before the model config was nested (one flat dict) read the same."""
    import json as _json

    from manifold_vae.training import RunDirectory
    cfg = FitConfig(latent="S2", group_action=True, compact_hidden="box", steps=7)
    flat = {"latent": "S2", "embedding": "exact", "group_action": True, "compact_hidden": "box",
            "init_concentration": 2.0, "hidden": [256, 256], "activation": "relu",
            "likelihood": "gaussian", "image_shape": [], "conv_channels": [32, 64],
            "encoder_symmetry": 1, "steps": 7, "batch_size": 512, "lr": 0.001,
            "embed_steps": 2000, "embed_hidden": [128, 128], "threads": 0}
    (tmp_path / "config.json").write_text(_json.dumps({"config": flat}))
    assert RunDirectory(tmp_path).saved_config() == cfg
    nested = {k: v for k, v in cfg.to_dict().items() if k != "amp"}
    (tmp_path / "config.json").write_text(_json.dumps({"config": nested}))
    assert RunDirectory(tmp_path).saved_config() == cfg
    (tmp_path / "config.json").write_text(_json.dumps({"config": dict(flat, retired_key=1)}))
    assert RunDirectory(tmp_path).saved_config() is None


def test_digit_peers_table_runs_every_row_and_reuses_finished_runs(tmp_path):
    """`reproduce --suite peers` on rotated digits: every peer row trains with the same conv
    networks and is reported; a second call reuses the finished runs."""
    import dataclasses
    from manifold_vae.experiments.suites.digit_peers import (DigitPeersSettings, digit_peer_rows,
                                                             reproduce_digit_peers)
    quick = DigitPeersSettings.quick()
    settings = dataclasses.replace(quick, training=quick.training.replace(steps=20), workers=1)
    res = reproduce_digit_peers(settings, tmp_path, log=lambda m: None)
    rows = digit_peer_rows(settings.sphere_dim)
    assert [r["key"] for r in res["rows"]] == [r.key for r in rows]
    for r in res["rows"]:
        assert math.isfinite(r["test_iwae_mean"]) and r["test_iwae_mean"] < 0   # nats per image
    assert "vmf:S2" in {r["latent"] for r in res["rows"]}
    md = (tmp_path / "results.md").read_text()
    assert "Power Spherical" in md and "normal hidden" in md
    logs = []
    reproduce_digit_peers(settings, tmp_path, log=logs.append)
    assert sum("reusing finished run" in m for m in logs) == len(rows) * settings.seeds


def test_a_suite_run_cut_short_is_resumed_not_retrained(tmp_path, monkeypatch):
    """A suite killed mid-run: the worker finds the run's checkpoint and continues it, and the
    result equals an uninterrupted run bit for bit (restarts included)."""
    import os
    import signal

    from manifold_vae.data import ManifoldBenchmark
    from manifold_vae.errors import ManifoldVAEError
    from manifold_vae.experiments.engine import train_job
    from manifold_vae.training import trainer

    cfg = FitConfig(latent="S1", group_action=True, steps=120, log_every=20, checkpoint_every=40,
                    validation_fraction=0.2, restarts=2, restart_fraction=0.25, iwae_k=8,
                    hidden=[16], batch_size=64, threads=1).to_dict()
    data = (ManifoldBenchmark("S1", dim=8, noise=0.1, seed=0).to_dict(), 400, 64)
    train_job((cfg, str(tmp_path / "ref"), data))
    weight = trainer.kl_weight

    def stop_at_step_90(step, config):
        if step == 89:
            os.kill(os.getpid(), signal.SIGTERM)
        return weight(step, config)

    monkeypatch.setattr(trainer, "kl_weight", stop_at_step_90)
    with pytest.raises(ManifoldVAEError, match="interrupted at step 90/120"):
        train_job((cfg, str(tmp_path / "cut"), data))
    monkeypatch.undo()
    seen = []
    monkeypatch.setattr(trainer, "kl_weight", lambda step, config: seen.append(step) or weight(step, config))
    train_job((cfg, str(tmp_path / "cut"), data))
    assert seen[0] == 90        # continued from the checkpoint written at the stop, not from 0
    ref, cut = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ref", "cut"))
    assert cut["test_iwae"] == ref["test_iwae"] and cut["selected_restart"] == ref["selected_restart"]


def test_a_finished_run_is_reused_only_for_the_same_data(tmp_path):
    """Suite runs are keyed on their data as well as their config: the same benchmark and sizes,
    or the same arrays in an .npz file (even saved again), reuse a finished run; other rows
    (a new n_train, another file in the same place, as `discover` writes) retrain it."""
    import numpy as np

    from manifold_vae.data import ManifoldBenchmark
    from manifold_vae.experiments.engine import Job, run_jobs

    cfg = FitConfig(latent="S1", steps=10, hidden=[16], batch_size=64, iwae_k=4, threads=1)
    bench = ManifoldBenchmark("S1", dim=8, noise=0.1, seed=0).to_dict()

    def go(data, run):
        logs = []
        run_jobs([Job("job", cfg, tmp_path / run, data)], 1, tmp_path, force=False, progress=False,
                 log=logs.append)
        return " ".join(logs), json.loads((tmp_path / run / "metrics.json").read_text())

    _, first = go((bench, 300, 32), "bench")
    logs, again = go((bench, 300, 32), "bench")
    assert "reusing finished run" in logs and again == first
    logs, other = go((bench, 200, 32), "bench")
    assert "trained on other data" in logs and other["n_train"] < first["n_train"]
    (tmp_path / "bench" / "metrics.json").unlink()      # as if cut short, on the 200 rows
    logs, again = go((bench, 300, 32), "bench")
    assert "cut-short run" in logs and "made on other data; training it afresh" in logs
    assert again["n_train"] == first["n_train"]

    x, _ = ManifoldBenchmark(**bench).sample(332)
    split = tmp_path / "split.npz"
    np.savez(split, x_train=x[:300].numpy(), x_test=x[300:].numpy())
    _, first = go(str(split), "file")
    np.savez(split, x_train=x[:300].numpy(), x_test=x[300:].numpy())
    logs, _ = go(str(split), "file")
    assert "reusing finished run" in logs
    np.savez(split, x_train=x[32:].numpy(), x_test=x[:32].numpy())
    logs, other = go(str(split), "file")
    assert "trained on other data" in logs and other["test_iwae"] != first["test_iwae"]


@pytest.mark.parametrize("suite,latents,message", [
    ("manifolds", "Q7", "unknown factor 'Q7'"),
    ("circle", "S1", "--latents applies to the manifolds and peers suites, not circle")])
def test_reproduce_latents_refused_before_anything_is_written(tmp_path, capsys, suite, latents,
                                                              message):
    from manifold_vae.cli import main
    out = tmp_path / "out"
    assert main(["reproduce", "--suite", suite, "--latents", latents, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()
