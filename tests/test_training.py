"""The training engine: determinism, resume after SIGKILL, safe checkpoints, multi-process."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from manifold_vae.cli import main
from manifold_vae.training import load_run

FAST = ["--set", "iwae_k=20", "--set", "hidden=32,32", "--set", "batch_size=64", "--set", "threads=1", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("d") / "circle.npy"
    assert main(["data", "circle", "--n", "600", "--dim", "16", "--noise", "0.1", "--out", str(path), "--quiet"]) == 0
    return path


def fit(data, out, *extra):
    return main(["fit", "--data", str(data), "--out", str(out), *FAST, *map(str, extra)])


def metrics(out):
    return json.loads((Path(out) / "metrics.json").read_text())


def params(out):
    model, _, _ = load_run(out)
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_weights(run_a, run_b):
    """The two runs' saved models are equal bit for bit (CPU)."""
    a, b = params(run_a), params(run_b)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_metrics(data, tmp_path):
    assert fit(data, tmp_path / "a", "--group-action", "--steps", "40") == 0
    assert fit(data, tmp_path / "b", "--group-action", "--steps", "40") == 0
    ma, mb = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    for k in ("test_elbo", "test_iwae", "final_train_elbo"):
        assert ma[k] == mb[k]


def test_sigkill_then_resume_matches_uninterrupted_run(data, tmp_path):
    steps, every = 600, 100
    args = ["--latent", "S1", "--group-action", "--steps", steps, "--set", f"checkpoint_every={every}",
            "--set", "log_every=10"]
    ref = tmp_path / "ref"
    assert fit(data, ref, *args) == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "manifold_vae", "fit", "--data", str(data), "--out", str(out), *FAST,
           *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = out / "metrics.jsonl"
    deadline = time.time() + 120
    kill_after = 150 + int(np.random.default_rng().integers(0, 250))  # a random step past 1+ checkpoints
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) * 10 >= kill_after:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] % every == 0 and 0 < ckpt["step"] < steps
    assert main(["fit", "--resume", str(out), "--data", str(data), "--quiet"]) == 0
    assert_same_weights(ref, out)
    ma, mb = metrics(ref), metrics(out)
    assert ma["test_iwae"] == mb["test_iwae"] and ma["test_elbo"] == mb["test_elbo"]
    rows = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(10, steps + 1, 10))  # no duplicated or missing log rows


def test_sigterm_writes_a_checkpoint(data, tmp_path):
    out = tmp_path / "term"
    cmd = [sys.executable, "-m", "manifold_vae", "fit", "--data", str(data), "--out", str(out), *FAST,
           "--steps", "100000", "--set", "checkpoint_every=100000", "--set", "log_every=10"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = out / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.is_file() and log.read_text().count("\n") >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted at step" in err and "--resume" in err
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] >= 30


def test_resume_with_different_model_is_refused(data, tmp_path, capsys):
    out = tmp_path / "r"
    assert fit(data, out, "--steps", "10") == 0
    capsys.readouterr()
    assert main(["fit", "--resume", str(out), "--data", str(data), "--latent", "R2"]) == 1
    err = capsys.readouterr().err
    assert "does not match" in err and "latent" in err


def test_truncated_checkpoint_is_refused(data, tmp_path, capsys):
    out = tmp_path / "t"
    assert fit(data, out, "--steps", "10") == 0
    raw = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(raw[: len(raw) // 2])
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(data)]) == 1
    err = capsys.readouterr().err.strip()
    assert "corrupt or truncated" in err and len(err.splitlines()) == 1


def test_arrays_are_written_whole_or_not_at_all(tmp_path):
    """Per-example results, test indices and data splits go to a temporary file that is renamed
    into place: a failed write leaves the earlier file as it was and no temporary file behind."""
    from manifold_vae.common.files import save_arrays

    path = tmp_path / "test_per_example.npy"
    save_arrays(path, np.arange(6.0).reshape(2, 3))
    with pytest.raises(ValueError):              # object arrays are refused (no pickles)
        save_arrays(path, np.array([{"a": 1}], dtype=object))
    assert np.array_equal(np.load(path, allow_pickle=False), np.arange(6.0).reshape(2, 3))
    save_arrays(tmp_path / "split.npz", x_train=np.ones((2, 2)), x_test=np.zeros((1, 2)))
    with np.load(tmp_path / "split.npz") as z:
        assert z["x_train"].shape == (2, 2) and z["x_test"].shape == (1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split.npz", "test_per_example.npy"]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_checkpoint_never_runs_its_payload(data, tmp_path, capsys):
    out = tmp_path / "hostile"
    assert fit(data, out, "--steps", "5") == 0
    marker = tmp_path / "PWNED"
    torch.save({"format": "manifold-vae/run", "model": _Payload(marker)}, out / "checkpoint.pt")
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(data)]) == 1
    assert main(["fit", "--resume", str(out), "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert "refused to load" in err
    assert not marker.exists()


def test_output_directory_holding_another_run_is_refused_unless_force(data, tmp_path, capsys):
    out = tmp_path / "o"
    assert fit(data, out, "--steps", "5") == 0
    capsys.readouterr()
    assert fit(data, out, "--steps", "6") == 2
    assert "already holds a different run" in capsys.readouterr().err
    assert fit(data, out, "--steps", "6", "--force") == 0
    assert metrics(out)["steps"] == 6
    # overwritten by a run with its own test file: the old run's test split is gone with it
    assert (out / "test_index.npy").is_file()
    assert fit(data, out, "--steps", "6", "--test-data", data, "--force") == 0
    assert not (out / "test_index.npy").exists()
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(data), "--split", "test", "--quiet"]) == 1
    assert "has no test_index.npy (it was trained with --test-data" in capsys.readouterr().err


@pytest.mark.parametrize("latent,ga", [("R1", False), ("R2", False), ("S1", False), ("S1", True)])
def test_short_runs_stay_finite_over_seeds(data, tmp_path, latent, ga):
    # fast subset of the 20-seed robustness check (benchmarks/robustness.py runs all of them)
    for seed in range(2):
        out = tmp_path / f"{latent}{ga}{seed}"
        extra = ["--group-action"] if ga else []
        assert fit(data, out, "--latent", latent, "--steps", "60", "--seed", seed, "--set", "lr=3e-3", *extra) == 0
        m = metrics(out)
        assert all(np.isfinite(m[k]) for k in ("test_elbo", "test_iwae", "final_train_elbo"))
        assert all(torch.isfinite(v).all() for v in params(out).values() if v.is_floating_point())


def test_two_processes_match_one(data, tmp_path):
    # torchrun with 2 CPU processes (gloo), the same global batch: statistically the same model.
    single, multi = tmp_path / "one", tmp_path / "two"
    common = ["--data", str(data), "--latent", "S1", "--group-action", "--steps", "150", *FAST]
    assert main(["fit", *common, "--out", str(single)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "manifold_vae", "fit", *common, "--out", str(multi)],
                          capture_output=True, text=True, env=env, timeout=300)
    # the workers' own messages come before torchrun's summary of the failure
    assert proc.returncode == 0, proc.stderr[-8000:]
    m1, m2 = metrics(single), metrics(multi)
    assert m2["world_size"] == 2 and m1["world_size"] == 1
    # only rank 0 writes: one log row per logging step
    rows = (multi / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == len((single / "metrics.jsonl").read_text().splitlines())
    # same data, same global batches and optimiser; only the sampling noise differs by rank, so
    # the test ELBOs agree up to training noise (a few standard errors of the test mean)
    tol = 4 * max(m1["test_elbo_stderr"], m2["test_elbo_stderr"]) + 0.5
    assert abs(m1["test_elbo"] - m2["test_elbo"]) < tol


def test_ranks_leave_the_process_group_together_only_after_a_common_end(monkeypatch):
    # destroy_process_group is collective: after a run every rank ends alike, each waits for the
    # others first (rank 0 still evaluates when the others are done); a rank that failed alone
    # must neither wait nor destroy, or a peer blocked in a collective would hang it
    import torch.distributed as tdist

    from manifold_vae.training import distributed
    calls = []
    monkeypatch.setattr(tdist, "is_initialized", lambda: True)
    monkeypatch.setattr(tdist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(tdist, "destroy_process_group", lambda: calls.append("destroy"))
    two = distributed.DistInfo(rank=1, world_size=2)
    distributed.teardown(two, ok=False)
    assert calls == []
    distributed.teardown(two, ok=True)
    assert calls == ["barrier", "destroy"]
    distributed.teardown(distributed.DistInfo(), ok=True)     # one process: nothing to leave
    assert calls == ["barrier", "destroy"]


def _poison_loss(monkeypatch, bad_steps):
    """Make VAE.loss return a NaN loss on the calls numbered in ``bad_steps`` (0-based)."""
    from manifold_vae.models import VAE
    orig, calls = VAE.loss, {"n": 0}

    def loss(self, x, kl_weight=1.0):
        out = orig(self, x, kl_weight)
        if self.training:
            if calls["n"] in bad_steps:
                out["loss"] = out["loss"] * float("nan")
            calls["n"] += 1
        return out
    monkeypatch.setattr(VAE, "loss", loss)


def test_a_nonfinite_step_is_skipped_not_fatal(data, tmp_path, monkeypatch):
    _poison_loss(monkeypatch, {5})
    assert fit(data, tmp_path / "r", "--latent", "S1", "--set", "steps=40", "--set", "log_every=10") == 0
    m = metrics(tmp_path / "r")
    assert m["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in params(tmp_path / "r").values())


def test_persistent_nonfinite_steps_stop_with_a_clear_error(data, tmp_path, monkeypatch, capsys):
    _poison_loss(monkeypatch, set(range(10, 100)))
    assert fit(data, tmp_path / "r", "--latent", "S1", "--set", "steps=60", "--set", "log_every=10") == 1
    assert "training diverged" in capsys.readouterr().err


# ---------------------------------------------------------------------------- early stopping
def _validation_rows(data, tmp_path):
    """The validation rows ``fit`` holds out: the training part of the test split, split again."""
    from manifold_vae.data import train_test_split
    from manifold_vae.data.io import load_array

    x = torch.as_tensor(load_array(data)).float()
    x_train = train_test_split(x, 0.1, 0)[0]
    return train_test_split(x_train, 0.25, 1)[1]


def test_early_stopping_ends_in_the_state_with_the_best_validation_score(data, tmp_path):
    from manifold_vae.training.hooks import validation_score

    out = tmp_path / "es"
    assert fit(data, out, "--latent", "S1", "--group-action", "--steps", "300", "--set", "log_every=20",
               "--set", "validation_fraction=0.25") == 0
    m = metrics(out)
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    scores = [r["validation_iwae"] for r in rows]
    assert len(scores) == 15
    best = int(np.argmax(scores))
    assert m["selected_step"] == rows[best]["step"] and m["validation_iwae"] == scores[best]
    assert m["n_validation"] == 135 and m["n_train"] == 540 - 135
    model, config, _ = load_run(out)
    # the saved model is the selected one: it reproduces the recorded score exactly
    assert validation_score(model, _validation_rows(data, tmp_path), config.validation_k, config.seed) == scores[best]
    # without the option nothing is held out or selected
    assert fit(data, tmp_path / "plain", "--latent", "S1", "--steps", "20") == 0
    assert "selected_step" not in metrics(tmp_path / "plain")
    assert metrics(tmp_path / "plain")["n_train"] == 540


def test_early_stopping_survives_an_interruption(data, tmp_path):
    """Stopped at step 100 (SIGTERM from the progress hook) and resumed: same selected model,
    bit for bit, as an uninterrupted run."""
    from manifold_vae.data.io import load_array
    from manifold_vae.errors import ManifoldVAEError
    from manifold_vae.training.config import FitConfig
    from manifold_vae.training.fit import run_fit

    x = torch.as_tensor(load_array(data)).float()
    config = FitConfig(latent="S1", group_action=True, steps=200, log_every=20, checkpoint_every=100,
                       validation_fraction=0.25, iwae_k=20, hidden=[32, 32], batch_size=64, threads=1)
    quiet = dict(log=lambda s: None)
    ref = run_fit(config, x, tmp_path / "ref", **quiet).metrics

    def stop_at_100(total, start):
        def hook(step, row):
            if step == 100:
                os.kill(os.getpid(), signal.SIGTERM)
        return hook

    with pytest.raises(ManifoldVAEError, match="interrupted at step 100"):
        run_fit(config, x, tmp_path / "cut", progress_factory=stop_at_100, **quiet)
    resumed = run_fit(config, x, tmp_path / "cut", resume=True, **quiet).metrics
    assert resumed["selected_step"] == ref["selected_step"]
    assert resumed["validation_iwae"] == ref["validation_iwae"]
    assert resumed["test_iwae"] == ref["test_iwae"]
    assert_same_weights(tmp_path / "ref", tmp_path / "cut")


def test_bad_validation_fraction_is_refused(data, tmp_path, capsys):
    assert fit(data, tmp_path / "v", "--steps", "10", "--set", "validation_fraction=1.5") == 2
    assert "validation_fraction must be in [0, 1)" in capsys.readouterr().err


def test_a_validation_fraction_that_leaves_no_training_rows_is_refused(data, tmp_path, capsys):
    assert fit(data, tmp_path / "v", "--steps", "10", "--set", "validation_fraction=0.999") == 1
    err = capsys.readouterr().err
    assert "too few to hold out a validation fraction of 0.999" in err and err.count("\n") == 1


def test_restarts_keep_the_best_early_score_and_survive_an_interruption(data, tmp_path, monkeypatch):
    """Three restarts trained for the first 20% of the schedule: the one with the best validation
    IWAE there is finished; restart 1 is the plain run; a run stopped inside the restart phase
    and resumed equals an uninterrupted one bit for bit."""
    from manifold_vae.data.io import load_array
    from manifold_vae.errors import ManifoldVAEError
    from manifold_vae.training import hooks
    from manifold_vae.training.config import FitConfig
    from manifold_vae.training.fit import run_fit

    x = torch.as_tensor(load_array(data)).float()
    config = FitConfig(latent="S1", group_action=True, steps=200, log_every=20, checkpoint_every=100,
                       validation_fraction=0.25, restarts=3, restart_fraction=0.2, iwae_k=20,
                       hidden=[32, 32], batch_size=64, threads=1)
    quiet = dict(log=lambda s: None)
    ref = run_fit(config, x, tmp_path / "ref", **quiet).metrics
    scores = [r["validation_iwae"] for r in ref["restarts"]]
    assert [r["restart"] for r in ref["restarts"]] == [0, 1, 2]
    assert len(set(scores)) == 3                      # three different initializations
    assert ref["selected_restart"] == int(np.argmax(scores))
    read = lambda p: [json.loads(l) for l in p.read_text().splitlines()]
    chosen = read(tmp_path / "ref" / "restarts" / f"restart{ref['selected_restart']}" / "metrics.jsonl")
    assert [r["step"] for r in chosen] == [20, 40]
    assert read(tmp_path / "ref" / "metrics.jsonl")[:2] == chosen    # the run's log goes on from it
    assert not list((tmp_path / "ref" / "restarts").glob("*/checkpoint.pt"))   # spent, removed
    # restart 0 is the run without restarts: same first steps
    plain = run_fit(config.replace(restarts=1), x, tmp_path / "plain", **quiet)
    first = read(tmp_path / "ref" / "restarts" / "restart0" / "metrics.jsonl")
    assert [r["elbo"] for r in first] == [r["elbo"] for r in plain.history[:2]]

    calls = {"n": 0}
    score = hooks.validation_score

    def stop_in_restart_2(*a, **k):        # 3rd scoring: step 20 of restart 2
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return score(*a, **k)

    monkeypatch.setattr(hooks, "validation_score", stop_in_restart_2)
    with pytest.raises(ManifoldVAEError, match=r"interrupted in restart 2/3; continue with: "
                                               r"manifold-vae fit --resume"):
        run_fit(config, x, tmp_path / "cut", **quiet)
    monkeypatch.undo()
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()
    assert main(["fit", "--data", str(data), "--resume", str(tmp_path / "cut"), "--quiet"]) == 0
    resumed = metrics(tmp_path / "cut")
    assert resumed["selected_restart"] == ref["selected_restart"]
    assert [r["validation_iwae"] for r in resumed["restarts"]] == scores
    assert resumed["test_iwae"] == ref["test_iwae"]
    assert_same_weights(tmp_path / "ref", tmp_path / "cut")


def test_restarts_without_a_validation_fraction_are_refused(data, tmp_path, capsys):
    assert fit(data, tmp_path / "r", "--steps", "10", "--set", "restarts=3") == 2
    assert "restarts > 1 choose by the validation score" in capsys.readouterr().err


@pytest.mark.parametrize("setting, message", [
    ("restarts=0", "restarts must be a positive integer, got 0"),
    ("restart_fraction=1.0", "restart_fraction must be in (0, 1), got 1.0"),
])
def test_bad_restart_settings_are_refused(data, tmp_path, capsys, setting, message):
    assert fit(data, tmp_path / "r", "--steps", "10", "--set", "validation_fraction=0.2",
               "--set", setting) == 2
    assert message in capsys.readouterr().err


def test_restart_phase_errors_name_the_problem(data, tmp_path, monkeypatch, capsys):
    """Two bad states of the restart phase end with a one-line error, not a traceback: a
    restart folder holding another restart's checkpoint (copied by hand) is refused on resume
    with the folder named, and restarts that all score non-finite stop the run."""
    import shutil

    from manifold_vae.training import hooks

    setup = ["--steps", "200", "--set", "validation_fraction=0.25", "--set", "restarts=3",
             "--set", "restart_fraction=0.2", "--set", "checkpoint_every=100", "--set", "log_every=20"]
    calls = {"n": 0}
    score = hooks.validation_score

    def stop_in_third_restart(*a, **k):    # 5th scoring: step 20 of restart2 (40 steps each)
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return score(*a, **k)

    monkeypatch.setattr(hooks, "validation_score", stop_in_third_restart)
    assert fit(data, tmp_path / "cut", *setup) == 130
    monkeypatch.undo()
    restarts = tmp_path / "cut" / "restarts"
    shutil.copy(restarts / "restart0" / "checkpoint.pt", restarts / "restart1" / "checkpoint.pt")
    capsys.readouterr()
    assert main(["fit", "--data", str(data), "--resume", str(tmp_path / "cut"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{restarts / 'restart1'}: holds a restart of another run" in err
    assert err.count("\n") == 1 and "Traceback" not in err

    monkeypatch.setattr(hooks, "validation_score", lambda *a, **k: None)
    assert fit(data, tmp_path / "nan", *setup) == 1
    err = capsys.readouterr().err
    assert "all 3 restarts ended with a non-finite validation score" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def _average_setup(data, **keys):
    from manifold_vae.data.io import load_array
    from manifold_vae.models import build_model
    from manifold_vae.training.config import FitConfig

    x = torch.as_tensor(load_array(data)).float()
    config = FitConfig(latent="S1", group_action=True, hidden=[16, 16], batch_size=32, threads=1,
                       auto_defaults=False, **keys)

    def build():                      # the same initial weights every time
        torch.manual_seed(0)
        return build_model(config.model, x.shape[1])
    return x, config, build


def test_weight_average_is_the_moving_average_of_the_raw_weights(data):
    """With ``weight_average = d`` the run ends in θ̄_s = d·θ̄_{s−1} + (1 − d)·θ_s (θ̄_1 = θ_1),
    computed here by hand from the raw weights of runs stopped after each step; the raw trajectory
    is the one a run without the average takes; a run stopped half-way and resumed from its
    checkpoint ends in the same average bit for bit."""
    from manifold_vae.training.trainer import train

    steps, d = 8, 0.7
    x, config, build = _average_setup(data, steps=steps, log_every=4, weight_average=d)
    cpu = torch.device("cpu")
    plain_config = config.replace(weight_average=0.0)
    raw = []
    for s in range(1, steps):         # θ_s: the run without the average, stopped after step s
        out = train(build(), x, plain_config, None, device=cpu, stop_at=s)
        raw.append(out["checkpoint"]["model"])
    plain_model = build()
    plain = train(plain_model, x, plain_config, None, device=cpu)
    raw.append(plain_model.state_dict())
    average = dict(raw[0])
    for theta in raw[1:]:
        average = {k: d * average[k] + (1 - d) * theta[k] if v.is_floating_point() else theta[k]
                   for k, v in average.items()}
    model = build()
    result = train(model, x, config, None, device=cpu)
    assert [r["elbo"] for r in result["history"]] == [r["elbo"] for r in plain["history"]]
    ended = model.state_dict()
    for k, v in average.items():
        torch.testing.assert_close(ended[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert any(not torch.allclose(ended[k], raw[-1][k]) for k in ended
               if ended[k].is_floating_point())          # and it is not the raw end point

    half = train(build(), x, config, None, device=cpu, stop_at=steps // 2)["checkpoint"]
    resumed = build()
    train(resumed, x, config, None, device=cpu, resume=half)
    for k, v in resumed.state_dict().items():
        assert torch.equal(v, ended[k]), k


def test_early_stopping_scores_and_keeps_the_weight_average(data):
    """Each logged validation IWAE is the score of the average at that step, not of the raw
    weights, and the run ends in the average of the step it selected."""
    from manifold_vae.training.hooks import validation_score
    from manifold_vae.training.trainer import train

    x, config, build = _average_setup(data, steps=40, log_every=10, weight_average=0.9,
                                      validation_k=8)
    x_val, x_train = x[:100], x[100:]
    cpu = torch.device("cpu")
    cut = train(build(), x_train, config, None, device=cpu, x_val=x_val, stop_at=20)
    at_20 = build()
    at_20.load_state_dict(cut["checkpoint"]["weight_average"]["model"])
    raw_20 = build()
    raw_20.load_state_dict(cut["checkpoint"]["model"])
    logged = cut["history"][-1]["validation_iwae"]
    assert logged == validation_score(at_20, x_val, 8, config.seed)
    assert logged != validation_score(raw_20, x_val, 8, config.seed)
    model = build()
    result = train(model, x_train, config, None, device=cpu, x_val=x_val)
    best = max(result["history"], key=lambda r: r["validation_iwae"])
    assert result["selected"]["step"] == best["step"]
    assert validation_score(model, x_val, 8, config.seed) == best["validation_iwae"]


@pytest.mark.parametrize("value", ["1", "-0.1", "1.5"])
def test_a_weight_average_outside_0_1_is_refused_and_writes_nothing(data, tmp_path, capsys, value):
    assert fit(data, tmp_path / "w", "--steps", "10", "--set", f"weight_average={value}") == 2
    assert "weight_average must be in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_restarts_are_chosen_by_their_weight_average_and_the_run_saves_it(data, tmp_path):
    """With restarts and a weight average, each restart's score is its average's validation IWAE,
    and the run keeps the logged step with the best average."""
    from manifold_vae.data.io import load_array
    from manifold_vae.training.config import FitConfig
    from manifold_vae.training.fit import run_fit

    x = torch.as_tensor(load_array(data)).float()
    config = FitConfig(latent="S1", group_action=True, steps=60, log_every=20, checkpoint_every=100,
                       validation_fraction=0.25, restarts=2, restart_fraction=0.34, iwae_k=20,
                       hidden=[32, 32], batch_size=64, threads=1, weight_average=0.95)
    run = run_fit(config, x, tmp_path / "r", log=lambda s: None)
    m = run.metrics
    assert m["selected_restart"] == int(np.argmax([r["validation_iwae"] for r in m["restarts"]]))
    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert ckpt["config"]["weight_average"] == 0.95
    rows = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: r["validation_iwae"])
    assert m["selected_step"] == best["step"] and m["validation_iwae"] == best["validation_iwae"]
    assert len(rows) == 3 and all(r["validation_iwae"] is not None for r in rows)


def test_weight_decay_shrinks_the_weights_and_refuses_bad_values(data, tmp_path, capsys):
    """Decoupled weight decay (AdamW): the same run with it ends with a smaller weight norm, and
    a run stopped half-way and resumed ends where the uninterrupted one does."""
    from manifold_vae.training.trainer import train

    x, config, build = _average_setup(data, steps=30, log_every=10, weight_decay=0.5, lr=1e-2)
    cpu = torch.device("cpu")
    norm = lambda m: float(torch.cat([p.detach().flatten() for p in m.parameters()]).norm())
    decayed, plain = build(), build()
    train(decayed, x, config, None, device=cpu)
    train(plain, x, config.replace(weight_decay=0.0), None, device=cpu)
    assert norm(decayed) < 0.95 * norm(plain)
    half = train(build(), x, config, None, device=cpu, stop_at=15)["checkpoint"]
    resumed = build()
    train(resumed, x, config, None, device=cpu, resume=half)
    for (k, v), w in zip(resumed.state_dict().items(), decayed.state_dict().values()):
        assert torch.equal(v, w), k
    assert fit(data, tmp_path / "w", "--steps", "10", "--set", "weight_decay=-0.01") == 2
    assert "weight_decay must be in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
