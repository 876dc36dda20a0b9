"""The command line end to end, and every bad input answered with a one-line error."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from manifold_vae.cli import main

FAST = ["--set", "iwae_k=20", "--set", "hidden=32", "--set", "batch_size=64", "--set", "threads=1", "--quiet"]


def run_cli(*args, cwd=None):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def circle_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    path = d / "circle.npy"
    assert main(["data", "circle", "--n", "400", "--dim", "12", "--noise", "0.1", "--out", str(path), "--quiet"]) == 0
    return path


def test_data_writes_array_and_true_log_likelihood(circle_data, capsys):
    x = np.load(circle_data)
    assert x.shape == (400, 12) and x.dtype == np.float32
    side = json.loads(circle_data.with_suffix(".json").read_text())
    assert side["generator"]["latent"] == "S1"
    assert np.isfinite(side["true_log_likelihood"])
    assert side["true_log_likelihood_numerical_error"] < 1e-3


def test_fit_then_evaluate(circle_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "--data", str(circle_data), "--latent", "S1", "--group-action", "--steps", "30",
                 "--out", str(out), *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_elbo", "test_elbo_stderr", "test_iwae", "test_iwae_stderr", "train_seconds",
                "true_log_likelihood", "gap_iwae"):
        assert key in metrics and np.isfinite(metrics[key])
    assert metrics["test_iwae"] >= metrics["test_elbo"]
    assert (out / "checkpoint.pt").is_file() and (out / "config.json").is_file()
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 30 and {"loss", "elbo", "kl", "reconstruction", "lr", "seconds"} <= set(rows[-1])
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(circle_data), "--split", "test", "--k", "20",
                 "--quiet", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    # same model, same test rows, same K and seed: the same numbers
    assert ev["iwae"] == pytest.approx(metrics["test_iwae"], abs=1e-6)
    assert ev["n"] == metrics["n_test"]


@pytest.mark.parametrize("latent,extra", [("R1", []), ("R2", []), ("S1", ["--embedding", "exact"])])
def test_fit_other_models(circle_data, tmp_path, latent, extra):
    out = tmp_path / latent
    assert main(["fit", "--data", str(circle_data), "--latent", latent, "--steps", "10", "--out", str(out),
                 *extra, *FAST]) == 0
    assert json.loads((out / "metrics.json").read_text())["latent"] == latent


def test_fit_with_learned_embedding_and_reuse(circle_data, tmp_path):
    # 50 WAE steps leave f far from uniform on the circle: embed says so (exit 1) but keeps its
    # files for inspection, and fit refuses that embedding before writing anything.
    brief = tmp_path / "brief"
    assert main(["embed", "--latent", "S1", "--steps", "50", "--out", str(brief), "--quiet"]) == 1
    assert json.loads((brief / "report.json").read_text())["report"]["problems"]
    refused = tmp_path / "refused"
    assert main(["fit", "--data", str(circle_data), "--embedding", str(brief), "--steps", "10",
                 "--out", str(refused), *FAST]) == 1
    assert not refused.exists()
    # 800 steps give a map the report trusts (measured: mean distance 0.008, MMD² 2e-3)
    emb = tmp_path / "emb"
    assert main(["embed", "--latent", "S1", "--steps", "800", "--out", str(emb), "--quiet"]) == 0
    report = json.loads((emb / "report.json").read_text())["report"]
    assert {"mmd", "distance_mean", "volume_element_cv"} <= set(report) and not report["problems"]
    assert (emb / "embedding.png").is_file()
    out = tmp_path / "run"
    assert main(["fit", "--data", str(circle_data), "--embedding", str(emb), "--group-action", "--steps", "10",
                 "--out", str(out), *FAST]) == 0
    assert json.loads((out / "metrics.json").read_text())["embedding"] == str(emb)


def test_config_file_and_overrides(circle_data, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('latent = "R2"\nsteps = 7\nhidden = [16, 16]\n')
    out = tmp_path / "run"
    assert main(["fit", "--data", str(circle_data), "--config", str(cfg), "--set", "steps=9", "--out", str(out),
                 "--set", "iwae_k=5", "--quiet"]) == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    model = saved["model"]
    assert model["latent"]["manifold"] == "R2" and saved["steps"] == 9 and model["hidden"] == [16, 16]


# ------------------------------------------------------------------------------- bad inputs
def write(path: Path, arr) -> Path:
    np.save(path, arr)
    return path


def bad_cases(tmp: Path, circle_data: Path):
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    nan = x.copy()
    nan[7, 2] = np.nan
    inf = x.copy()
    inf[3, 0] = np.inf
    (tmp / "text.csv").write_text("1,2,3\n4,five,6\n")
    (tmp / "empty.npy").write_bytes(b"")
    with open(tmp / "pickled.npy", "wb") as fh:
        np.save(fh, np.array([{"a": 1}] * 20, dtype=object), allow_pickle=True)
    (tmp / "garbage.npy").write_bytes(b"\x93NUMPY garbage that is not an array")
    emb2 = tmp / "emb_torus"
    from manifold_vae.embeddings import EmbedConfig, fit_learned_embedding, save_embedding
    emb, _ = fit_learned_embedding(EmbedConfig(latent="S1xS1", steps=5, batch_size=16))
    save_embedding(emb, emb2)
    return {
        "nan": (["fit", "--data", write(tmp / "nan.npy", nan)], 1, "row 8, column 3 (counting from 1)"),
        "inf": (["fit", "--data", write(tmp / "inf.npy", inf)], 1, "row 4, column 1"),
        "rank": (["fit", "--data", write(tmp / "r3.npy", x.reshape(50, 2, 2))], 1, "2-D"),
        "rank1": (["fit", "--data", write(tmp / "r1.npy", x[:, 0])], 1, "2-D"),
        "few rows": (["fit", "--data", write(tmp / "few.npy", x[:3])], 1, "at least"),
        "non-numeric": (["fit", "--data", tmp / "text.csv"], 1, "not a numeric"),
        "missing": (["fit", "--data", tmp / "nope.npy"], 1, "not found"),
        "empty": (["fit", "--data", tmp / "empty.npy"], 1, "empty"),
        "pickle": (["fit", "--data", tmp / "pickled.npy"], 1, "pickled"),
        "garbage": (["fit", "--data", tmp / "garbage.npy"], 1, "garbage.npy"),
        "unknown latent": (["fit", "--data", circle_data, "--latent", "K7"], 2, "Valid forms"),
        "bad spec": (["fit", "--data", circle_data, "--latent", "S1xx"], 2, "Valid forms"),
        "embedding for another manifold": (["fit", "--data", circle_data, "--embedding", emb2], 1, "S1xS1"),
        "group action on R": (["fit", "--data", circle_data, "--latent", "R2", "--group-action"], 2, "no group action"),
        "unknown key": (["fit", "--data", circle_data, "--set", "nope=3"], 2, "unknown config key 'nope'"),
        "wrong type": (["fit", "--data", circle_data, "--set", "lr=fast"], 2, "lr must be of type float"),
        "zero steps": (["fit", "--data", circle_data, "--steps", "0"], 2, "steps must be a positive"),
        "negative batch": (["fit", "--data", circle_data, "--set", "batch_size=-4"], 2, "batch_size"),
        "test dims": (["fit", "--data", circle_data, "--test-data", write(tmp / "t.npy", x)], 1, "columns"),
        "unknown option": (["fit", "--data", circle_data, "--frobnicate"], 2, "unrecognized"),
        "bad data kind": (["data", "S1xR2", "--out", tmp / "z.npy"], 2, "compact"),
        "negative ceiling rows": (["data", "circle", "--ceiling-rows", "-1", "--out", tmp / "c.npy"], 2,
                                  "--ceiling-rows must be >= 0"),
        "bad device": (["fit", "--data", circle_data, "--device", "tpu"], 2, "device"),
        "evaluate missing run": (["evaluate", tmp / "norun", "--data", circle_data], 1, "not found"),
    }


def test_bad_inputs_give_one_line_errors(circle_data, tmp_path, capsys):
    cases = bad_cases(tmp_path, circle_data)
    for name, (args, code, needle) in cases.items():
        capsys.readouterr()
        rc = main([str(a) for a in args] + ["--out", str(tmp_path / "out" / name.replace(" ", "_"))]
                  if args[0] == "fit" else [str(a) for a in args])
        err = capsys.readouterr().err.strip()
        assert rc == code, (name, rc, err)
        assert len(err.splitlines()) == 1, (name, err)
        assert err.startswith("manifold-vae: error:"), (name, err)
        assert needle in err, (name, err)
        assert "Traceback" not in err


def test_data_dimension_mismatch_with_checkpoint(circle_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "--data", str(circle_data), "--steps", "5", "--out", str(out), *FAST]) == 0
    other = write(tmp_path / "other.npy", np.zeros((20, 5), np.float32))
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(other)]) == 1
    assert "columns" in capsys.readouterr().err


def test_python_m_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "manifold_vae", "fit", "--data", str(tmp_path / "x.npy")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"manifold-vae: error: data file not found: {tmp_path / 'x.npy'}"


@pytest.mark.parametrize("bad,code,message", [
    (["--latent", "Q7"], 2, "invalid latent spec 'Q7'"),
    (["--latent", "R2", "--group-action"], 2, "has no group action"),
    (["--set", "network=conv", "--set", "image_shape=1,4,4"], 2, "16 pixels but the data have 12"),
    (["--set", "likelihood=bernoulli"], 1, "[0, 1]"),
    (["--set", "likelihood=continuous-bernoulli"], 1, "continuous Bernoulli likelihood needs training data in [0, 1]"),
    (["--set", "turn_consistency=1"], 2, "turn_consistency turns images"),
])
def test_a_refused_fit_writes_nothing_so_the_corrected_command_runs(circle_data, tmp_path, capsys,
                                                                   bad, code, message):
    """Everything is checked before anything is written: the refused command leaves no folder, and
    the corrected command into the same --out is not refused as 'a different run'."""
    out = tmp_path / "r"
    assert main(["fit", "--data", str(circle_data), "--steps", "5", "--out", str(out), *bad,
                 *FAST]) == code
    assert message in capsys.readouterr().err
    assert not out.exists()
    assert main(["fit", "--data", str(circle_data), "--latent", "S1", "--steps", "5",
                 "--out", str(out), *FAST]) == 0
