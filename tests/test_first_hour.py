"""A newcomer's first hour: runs resume what they started, commands say what they did, the
Python API checks its inputs as the command line does, and the help answers."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from manifold_vae.cli import main

FAST = ["--set", "iwae_k=10", "--set", "hidden=16", "--set", "batch_size=64", "--set", "log_every=10"]


@pytest.fixture(scope="module")
def circle(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    path = d / "circle.npy"
    assert main(["data", "circle", "--n", "300", "--dim", "6", "--noise", "0.2", "--out", str(path),
                 "--ceiling-rows", "0", "--quiet"]) == 0
    other = d / "other.npy"
    np.save(other, np.load(path)[::-1].copy())            # same shape, other rows
    return path, other


def fit(*args):
    return main(["fit", *map(str, args), *FAST, "--quiet"])


# ---------------------------------------------------------------------- resuming
def test_resume_finds_the_runs_data_and_refuses_other_rows(circle, tmp_path, capsys):
    data, other = circle
    run = tmp_path / "run"
    assert fit("--data", data, "--latent", "S1", "--steps", "40", "--set", "checkpoint_every=20",
               "--out", run) == 0
    recorded = json.loads((run / "config.json").read_text())["data"]
    assert recorded["data"] == str(data) and len(recorded["data_sha256"]) == 64
    (run / "metrics.json").unlink()                      # as if cut short after its checkpoint
    capsys.readouterr()
    assert main(["fit", "--resume", str(run), "--quiet"]) == 0          # no --data needed
    assert (run / "metrics.json").is_file()
    (run / "metrics.json").unlink()
    assert main(["fit", "--resume", str(run), "--data", str(other), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "holds other rows than the data" in err and err.count("\n") == 1


def test_the_interrupt_message_names_a_command_that_works(circle, tmp_path, capsys):
    data, _ = circle
    run = tmp_path / "run"
    code = subprocess.run(
        [sys.executable, "-c", "import os, signal, sys\n"
         "from manifold_vae.training import hooks\n"
         "orig = hooks.Progress.on_log\n"
         "def stop(self, loop, row):\n"
         "    if row['step'] == 20: os.kill(os.getpid(), signal.SIGINT)\n"
         "    orig(self, loop, row)\n"
         "hooks.Progress.on_log = stop\n"
         "from manifold_vae.cli import main\n"
         f"sys.exit(main(['fit', '--data', {str(data)!r}, '--steps', '60', '--out', {str(run)!r}, "
         f"*{FAST!r}]))"], capture_output=True, text=True)
    assert code.returncode == 130, code.stderr
    hint = code.stderr.strip().splitlines()[-1].split("continue with: ")[1]
    assert hint == f"manifold-vae fit --resume {run}"
    assert main(hint.split()[1:] + ["--quiet"]) == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 60


def test_a_finished_run_says_it_is_complete_and_a_constant_schedule_extends(circle, tmp_path, capsys):
    data, _ = circle
    run = tmp_path / "run"
    assert fit("--data", data, "--steps", "30", "--set", "schedule=constant", "--out", run) == 0
    before = (run / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["fit", "--resume", str(run), "--quiet"]) == 0
    assert "is complete" in capsys.readouterr().err
    assert (run / "metrics.json").stat().st_mtime_ns == before          # not rewritten
    assert main(["fit", "--resume", str(run), "--steps", "50", "--quiet"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50]
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["steps"] == 50 and config["kl_warmup"] == pytest.approx(0.2 * 30 / 50)
    onecycle = tmp_path / "onecycle"
    assert fit("--data", data, "--steps", "30", "--out", onecycle) == 0
    capsys.readouterr()
    assert main(["fit", "--resume", str(onecycle), "--steps", "50", "--quiet"]) == 2
    assert "cannot be extended" in capsys.readouterr().err


def test_evaluate_scores_the_runs_own_test_rows_and_names_them(circle, tmp_path, capsys):
    data, other = circle
    run = tmp_path / "run"
    assert fit("--data", data, "--steps", "20", "--out", run) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--k", "5", "--json"]) == 0     # no --data: the run's own
    res = json.loads(capsys.readouterr().out)
    assert res["split"] == "test" and res["n"] == 30 and "test rows of" in res["scored"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert res["n"] == metrics["n_test"]
    assert main(["evaluate", str(run), "--data", str(other), "--k", "5"]) == 1
    assert "holds other rows" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--data", str(other), "--split", "all", "--k", "5",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 300


def test_discover_refuses_another_datasets_folder_without_force(circle, tmp_path, capsys):
    from manifold_vae.experiments.discover import Budget, discover

    data, other = circle
    tiny = Budget(steps=10, iwae_k=4, seeds=1, hidden=(8,), batch_size=64, validation_fraction=0.0)
    x = torch.from_numpy(np.load(data))
    out = tmp_path / "d"
    res = discover(x, out, candidates=["R1", "S1"], budget=tiny, workers=1, data_path=str(data),
                   log=lambda m: None)
    assert res["data"]["path"] == str(data) and len(res["data"]["rows_sha256"]) == 64
    assert res["data"]["rows_sha256"][:16] in (out / "report.md").read_text()
    from manifold_vae.errors import UsageError
    with pytest.raises(UsageError, match="holds a discovery on other data"):
        discover(torch.from_numpy(np.load(other)), out, candidates=["R1", "S1"], budget=tiny,
                 workers=1, data_path=str(other), log=lambda m: None)
    again = discover(torch.from_numpy(np.load(other)), out, candidates=["R1", "S1"], budget=tiny,
                     workers=1, data_path=str(other), force=True, log=lambda m: None)
    assert again["data"]["path"] == str(other)


# ---------------------------------------------------------------------- output
def test_commands_end_with_a_readable_summary_or_json(circle, tmp_path, capsys):
    data, _ = circle
    capsys.readouterr()
    assert fit("--data", data, "--steps", "20", "--out", tmp_path / "a") == 0
    out = capsys.readouterr().out
    assert "test IWAE" in out and " ± " in out and "wrote" in out and not out.startswith("{")
    assert main(["fit", "--data", str(data), "--steps", "20", "--out", str(tmp_path / "b"),
                 *FAST, "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 20


def test_progress_lines_in_a_log_file(circle, tmp_path):
    """Not on a terminal: a line about every tenth of the schedule on stderr."""
    data, _ = circle
    res = subprocess.run([sys.executable, "-m", "manifold_vae", "fit", "--data", str(data),
                          "--steps", "100", "--out", str(tmp_path / "r"), *FAST],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ": step " in ln]
    assert len(lines) >= 5 and lines[-1].startswith("fit S1: step 100/100")
    assert "threads: 1 (an MLP model" in res.stderr


def test_the_true_likelihood_shows_its_progress(tmp_path, capsys):
    assert main(["data", "S2", "--n", "40", "--dim", "5", "--out", str(tmp_path / "s.npy")]) == 0
    err = capsys.readouterr().err
    assert "true log-likelihood (S2, quadrature): level" in err


def test_still_improving_is_read_off_the_curve():
    from manifold_vae.training.convergence import still_improving

    rising = [{"step": s, "elbo": -10 + 0.01 * s} for s in range(100, 1001, 100)]
    flat = [{"step": s, "elbo": 3.0 + 0.02 * (-1) ** (s // 100)} for s in range(100, 1001, 100)]
    up = still_improving(rising, 1000, schedule="constant")
    assert up["still_improving"] and up["window"] == [700, 1000]    # four rows at the least
    assert up["gain"] == pytest.approx(3.0)
    assert still_improving(rising, 1000)["window"] == [500, 800]      # one-cycle: third quarter on
    assert not still_improving(flat, 1000)["still_improving"]
    annealed = [{"step": s, "elbo": 3.0 + (0.5 if s > 750 else 0.0)} for s in range(100, 1001, 50)]
    assert not still_improving(annealed, 1000)["still_improving"]    # only the annealing gain
    val = [dict(r, validation_iwae=r["elbo"]) for r in flat]
    assert still_improving(val, 1000)["curve"] == "validation IWAE"
    assert still_improving(rising[:2], 1000) == {}


def test_a_short_fit_says_it_was_still_improving(tmp_path, capsys):
    """150 steps on a harder circle (D=40, σ=0.05): the run ends 20+ nats below the truth and the
    third quarter of its one-cycle schedule still rises; the summary says so and what to do."""
    data = tmp_path / "h.npy"
    assert main(["data", "circle", "--n", "1000", "--dim", "40", "--out", str(data),
                 "--ceiling-rows", "0", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["fit", "--data", str(data), "--steps", "150", "--out", str(tmp_path / "r"),
                 "--set", "hidden=32", *FAST[:2], *FAST[4:]]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["still_improving"] and "still improving" in out and "--steps 300" in out


def test_threads_default_to_one_for_mlp_models():
    from manifold_vae import ModelConfig, build_model
    from manifold_vae.training.fit import DEFAULT_THREADS, choose_threads

    mlp = build_model(ModelConfig(latent="S1"), 100)
    conv = build_model(ModelConfig(latent="S1", network="conv", image_shape=[1, 8, 8],
                                   conv_channels=[4, 8], hidden=[8]), 64)
    assert choose_threads(mlp)[0] == 1
    assert choose_threads(conv)[0] == DEFAULT_THREADS


# ---------------------------------------------------------------------- Python API
def test_run_fit_takes_numpy_any_float_dtype_and_string_paths(tmp_path):
    import manifold_vae as mv

    x = np.random.default_rng(0).normal(size=(120, 4))              # float64 numpy
    config = mv.FitConfig(steps=5, batch_size=32, hidden=[8], iwae_k=3)
    res = mv.run_fit(config, x, str(tmp_path / "run"), log=lambda m: None)
    assert isinstance(res, mv.training.fit.FitResult) and math.isfinite(res.metrics["test_iwae"])
    assert res.run_dir == tmp_path / "run" and (tmp_path / "run" / "metrics.json").is_file()
    assert res.history and res.model.latent.spec.name == "S1"
    res64 = mv.run_fit(config, torch.from_numpy(x), None, log=lambda m: None)
    assert res64.metrics["test_iwae"] == pytest.approx(res.metrics["test_iwae"], abs=1e-4)


@pytest.mark.parametrize("keys,match", [
    ({"steps": 0}, "steps must be a positive integer"),
    ({"lr": "abc"}, "lr must be of type float"),
    ({"batch_size": -1}, "batch_size must be a positive integer"),
    ({"latnt": "S1"}, "unknown config key 'latnt'"),
])
def test_bad_configs_are_named_errors(keys, match):
    import manifold_vae as mv
    from manifold_vae.errors import UsageError

    with pytest.raises(UsageError, match=match):
        mv.FitConfig(**keys)


def test_run_fit_refuses_bad_rows_with_named_errors():
    import manifold_vae as mv
    from manifold_vae.errors import DataError

    with pytest.raises(DataError, match="row 2, column 1"):
        mv.run_fit(mv.FitConfig(steps=2), np.array([[1.0, 2], [np.nan, 3], [1, 1]]), None)
    with pytest.raises(DataError, match="expected a 2-D array"):
        mv.run_fit(mv.FitConfig(steps=2), np.zeros(10), None)


# ---------------------------------------------------------------------- help
def test_help_answers(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    for needle in ("default 10000", "T<k>", "SO3", "vmf:S<n>", "README", "runs/<latent>-ga"):
        assert needle in text, needle
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = capsys.readouterr().out
    assert all(s in text for s in ("circle", "manifolds", "peers", "images"))
    assert "Table 1" in text
    with pytest.raises(SystemExit):
        main(["discover", "--help"])
    text = capsys.readouterr().out
    assert "quick: 800 steps" in text and "thorough" in text


def test_csv_with_a_header_row_is_read(tmp_path, capsys):
    rows = np.random.default_rng(1).normal(size=(40, 3))
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in rows) + "\n")
    assert main(["fit", "--data", str(path), "--steps", "5", "--out", str(tmp_path / "r"), *FAST,
                 "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_train"] == 36


# ---------------------------------------------------------------------- defaults
def test_defaults_carry_what_the_suites_learned(tmp_path, capsys):
    """Naming only data and latent: restarts for a 3-dimensional latent, a unimodal start for the
    group action, early stopping for data few for the networks; said in one line, recorded in
    config.json; a key the user sets wins."""
    data = tmp_path / "so3.npy"
    assert main(["data", "SO3", "--n", "400", "--dim", "6", "--ceiling-rows", "0", "--out",
                 str(data), "--quiet"]) == 0
    capsys.readouterr()
    small = FAST[:2] + FAST[4:]             # 256-256 networks: 360 rows are few for them
    assert main(["fit", "--data", str(data), "--latent", "SO3", "--group-action", "--steps", "40",
                 "--out", str(tmp_path / "a"), *small]) == 0
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if ln.startswith("defaults for SO3 + group action"))
    assert "4 restarts" in line and "init_concentration 50" in line and "early stopping" in line
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    config = saved["config"]
    assert config["restarts"] == 4 and config["restart_fraction"] == 0.25
    assert config["model"]["latent"]["init_concentration"] == 50.0
    assert config["steps"] == 40                                  # given: kept
    assert config["validation_fraction"] == 0.1 and len(saved["defaults"]) == 3
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert len(metrics["restarts"]) == 4
    capsys.readouterr()
    assert main(["fit", "--data", str(data), "--latent", "SO3", "--group-action", "--steps", "40",
                 "--set", "restarts=1", "--set", "init_concentration=2", "--set",
                 "validation_fraction=0", "--out", str(tmp_path / "b"), *small]) == 0
    config = json.loads((tmp_path / "b" / "config.json").read_text())["config"]
    assert config["restarts"] == 1 and config["model"]["latent"]["init_concentration"] == 2.0
    assert "defaults for" not in capsys.readouterr().err


def test_defaults_in_python_and_off_switch():
    import manifold_vae as mv
    from manifold_vae.training.defaults import choose_defaults

    config = mv.FitConfig(latent="T2", group_action=True)
    model = mv.build_model(config.model, 100)
    chosen, why = choose_defaults(config, 20000, model)
    assert chosen.restarts == 4 and chosen.steps == 12000 and len(why) == 3
    assert chosen.validation_fraction == 0.025                   # 20,000 rows: no early stopping
    off, why = choose_defaults(config.replace(auto_defaults=False), 20000, model)
    assert off.restarts == 1 and why == []
    s1, why = choose_defaults(mv.FitConfig(latent="S1"), 20000, mv.build_model(
        mv.FitConfig(latent="S1").model, 100))
    assert why == [] and s1.restarts == 1                        # a circle without group action
