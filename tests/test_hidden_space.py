"""The hidden space an ER latent uses when none is named (``compact_hidden = "auto"``): the
normal one on spheres S^n, n >= 2, with the exact map (faster than the Beta box there and as
good, ``benchmarks/hidden_space.py``), the box elsewhere; made explicit in every run's config."""
import json

import numpy as np
import pytest

import manifold_vae as mv
from manifold_vae.cli import main
from manifold_vae.errors import UsageError
from manifold_vae.experiments.rows import er_rows
from manifold_vae.training.defaults import choose_defaults


@pytest.mark.parametrize("spec,options,hidden", [
    ("S1", {}, "box"), ("S2", {}, "normal"), ("S10", {"group_action": True}, "normal"),
    ("T2", {}, "box"), ("SO3", {}, "box"), ("S2xS3", {}, "normal"), ("S2xS1", {}, "box"),
    ("S2xR2", {}, "normal"), ("K2", {}, "box"),
    ("S2", {"embedding": "learned"}, "box"),            # not measured with a learned f
    ("S2", {"group_action": True, "centred_posterior": True}, "box"),   # centres Beta means
    ("S2", {"compact_hidden": "box"}, "box"), ("T2", {"compact_hidden": "normal"}, "normal"),
])
def test_the_default_hidden_space_is_chosen_per_manifold(spec, options, hidden):
    latent = mv.LatentSpec(spec, **options)
    assert latent.hidden == hidden
    kinds = mv.ManifoldLatent(latent).hidden_space.kinds if "embedding" not in options else None
    m = latent.manifold_obj
    if kinds is not None:              # what the layer builds: Gaussian coordinates, or Betas
        assert kinds == (("euclidean",) * m.dim if hidden == "normal" else m.hidden_kinds)


def test_auto_is_the_model_it_resolves_to():
    """A config saying "auto" and one naming the space it resolves to are the same model (a
    saved run is reused by an "auto" config); another space is another model."""
    assert mv.LatentSpec("S2") == mv.LatentSpec("S2", compact_hidden="normal")
    assert mv.LatentSpec("S2") != mv.LatentSpec("S2", compact_hidden="box")
    assert mv.LatentSpec("R3") == mv.LatentSpec("R3", compact_hidden="box")
    assert hash(mv.LatentSpec("S1")) == hash(mv.LatentSpec("S1", compact_hidden="box"))
    # changing the manifold of a config re-resolves "auto" (it is not carried over as "normal")
    cfg = mv.FitConfig(latent="S2").replace(latent="T2")
    assert cfg.latent.hidden == "box"
    with pytest.raises(UsageError, match="'auto', 'box' or 'normal'"):
        mv.FitConfig(compact_hidden="gauss").validate()


def test_fit_records_the_hidden_space_it_used(tmp_path, capsys):
    """``fit`` on a sphere, naming no hidden space: the normal one, said in the defaults line and
    written into config.json; off with auto_defaults the choice is still made explicit; the
    model it saved is rebuilt with it."""
    x = mv.ManifoldBenchmark("S2", dim=6, noise=0.05, seed=3).sample(300)[0]
    small = ["--set", "hidden=16", "--set", "iwae_k=4", "--set", "threads=1"]
    np_path = tmp_path / "s2.npy"
    np.save(np_path, x.numpy())
    assert main(["fit", "--data", str(np_path), "--latent", "S2", "--group-action",
                        "--steps", "5", "--set", "restarts=1", "--out", str(tmp_path / "a"),
                        *small]) == 0
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("defaults for S2"))
    assert "compact_hidden normal" in line and "init_concentration" not in line
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["config"]["model"]["latent"]["compact_hidden"] == "normal"
    model = mv.RunDirectory(tmp_path / "a").load()[0]
    assert set(model.latent.hidden_space.kinds) == {"euclidean"}
    off, why = choose_defaults(mv.FitConfig(latent="S5", auto_defaults=False), 100,
                               mv.build_model(mv.ModelConfig(latent="S5"), 6))
    assert off.latent.compact_hidden == "normal" and len(why) == 1
    t2, why = choose_defaults(mv.FitConfig(latent="T2", auto_defaults=False), 100,
                              mv.build_model(mv.ModelConfig(latent="T2"), 6))
    assert t2.latent.compact_hidden == "box" and why == []


def test_suite_rows_name_the_box_they_were_measured_on():
    """The suites' ER rows keep the Beta box (their published numbers) and the normal-hidden row
    names its space: neither follows the default."""
    rows = {r.key: r for r in er_rows("S2", plain=True, normal=True)}
    assert {k: r.latent.compact_hidden for k, r in rows.items()} == {
        "er-exact": "box", "er-exact-ga": "box", "er-learned-ga": "box", "er-normal-ga": "normal"}


def test_a_config_saved_before_the_default_changed_keeps_the_box(tmp_path):
    """A saved config without the key (written before ``compact_hidden`` existed, when every
    hidden space was the box) is read as the box, not as today's default."""
    cfg = mv.FitConfig(latent="S2").to_dict()
    del cfg["model"]["latent"]["compact_hidden"]
    assert mv.FitConfig.from_dict(cfg).latent.hidden == "box"
    flat = {"latent": "S2", "steps": 10}
    assert mv.FitConfig.from_dict(flat).latent.hidden == "box"
