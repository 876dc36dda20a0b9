"""Latent-topology discovery: ranking, verdict with uncertainty, reuse, reports and bad input."""
import json

import numpy as np
import pytest
import torch

from manifold_vae.cli import main
from manifold_vae.data import ManifoldBenchmark
from manifold_vae.experiments.discover import Budget, candidate_config, discover

TINY = Budget(steps=800, iwae_k=100, seeds=1, hidden=(128, 128))


@pytest.fixture(scope="module")
def circle_run(tmp_path_factory):
    """Circle data, strong signal: S1 must beat R1 and T2 must not beat S1 significantly."""
    out = tmp_path_factory.mktemp("disc")
    x, m = ManifoldBenchmark("S1", dim=20, noise=0.1, seed=3).sample(3000)
    angle = torch.atan2(m[:, 1], m[:, 0]).numpy()
    res = discover(x, out, candidates=["R1", "S1", "T2"], budget=TINY, workers=2, labels=angle,
                   log=lambda s: None)
    return out, x, res


def test_true_topology_wins_or_ties_with_fewest_dimensions(circle_run):
    _, _, res = circle_run
    ranking = {r["latent"]: r for r in res["ranking"]}
    assert set(ranking) == {"R1", "S1", "T2"}
    # R1 cannot represent the loop: S1 beats it by a clear margin
    assert ranking["S1"]["test_iwae"] > ranking["R1"]["test_iwae"]
    assert res["best"] == "S1"
    if res["verdict"] == "undecided":
        assert "S1" in res["tied"]


def test_discovery_json_has_the_documented_structure(circle_run):
    out, _, res = circle_run
    saved = json.loads((out / "discovery.json").read_text())
    assert saved["best"] == res["best"]
    assert saved["verdict"] in ("decided", "undecided")
    for r in saved["ranking"]:
        for key in ("latent", "test_iwae", "test_iwae_stderr", "test_elbo", "train_seconds"):
            assert key in r
    iwaes = [r["test_iwae"] for r in saved["ranking"]]
    assert iwaes == sorted(iwaes, reverse=True)
    assert saved["top_two"]["difference_stderr"] > 0
    assert "fewest latent dimensions" in (out / "report.md").read_text()
    for fig in ("iwae.png", "best_latent.png"):
        assert (out / fig).stat().st_size > 1000


def test_restart_reuses_finished_candidates(circle_run):
    out, x, res = circle_run
    logs = []
    again = discover(x, out, candidates=["R1", "S1", "T2"], budget=TINY, workers=2, log=logs.append)
    assert sum("reusing finished run" in s for s in logs) == 3
    assert [r["test_iwae"] for r in again["ranking"]] == [r["test_iwae"] for r in res["ranking"]]


def test_candidate_configurations():
    assert candidate_config("S1", TINY, 0).latent.group_action is True
    assert candidate_config("SO3", TINY, 0).latent.embedding == "exact"
    assert candidate_config("R2", TINY, 0).latent.group_action is False
    s5 = candidate_config("S5", TINY, 0)     # stick-breaking exact map + SO(6) action
    assert s5.latent.embedding == "exact" and s5.latent.group_action is True
    # compact candidates start their Beta posteriors narrower than the uniform prior, so that
    # the group action gets a gradient from the first step
    assert candidate_config("T2", TINY, 0).latent.init_concentration > 2.0
    # with the default budget, compact candidates of two or more dimensions (which can settle in
    # a poor basin) train four initializations and keep the best by validation IWAE
    from manifold_vae.experiments.discover import BUDGETS
    default = BUDGETS["default"]
    assert {s: candidate_config(s, default, 0).restarts for s in ("R3", "S1", "S2", "T2", "SO3")} \
        == {"R3": 1, "S1": 1, "S2": 4, "T2": 4, "SO3": 4}
    assert candidate_config("T2", default, 0).restart_fraction == 0.25
    assert candidate_config("T2", BUDGETS["quick"], 0).restarts == 1


@pytest.mark.parametrize("args,needle", [
    (["--candidates", "S1,Q7"], "unknown candidate"),
    (["--candidates", "S1"], "at least two"),
    (["--candidates", "S1,S1"], "at least two"),
    (["--budget", "huge"], "invalid choice"),
    (["--candidates", "R1,S1", "--margin", "-1"], "--margin must be >= 0"),
])
def test_bad_discovery_input(tmp_path, capsys, args, needle):
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32))
    code = main(["discover", "--data", str(data), "--out", str(tmp_path / "o"), "--quiet", *args])
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_label_file_of_the_wrong_length(tmp_path, capsys):
    data, labels = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(data, np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32))
    np.save(labels, np.arange(49))
    code = main(["discover", "--data", str(data), "--labels", str(labels), "--candidates", "R1,S1",
                 "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "49 entries for 50 data rows" in err and err.count("\n") == 1


def _fake_candidates(tmp_path, per_example: dict):
    """Run directories holding only what the ranking reads, with given per-example test IWAEs."""
    dirs = {}
    for spec, iwae in per_example.items():
        d = tmp_path / spec
        d.mkdir(parents=True)
        np.save(d / "test_per_example.npy", np.stack([iwae - 0.1, iwae]))
        (d / "metrics.json").write_text(json.dumps({"test_elbo": float(iwae.mean() - 0.1),
                                                    "train_seconds": 1.0, "embedding": "exact",
                                                    "group_action": spec != "R3"}))
        dirs[spec] = [d]
    return dirs


def test_verdict_rules_significance_margin_and_fewest_dimensions(tmp_path):
    from manifold_vae.experiments.discover import rank_candidates
    rng = np.random.default_rng(0)
    base = rng.normal(100.0, 1.0, size=4000)

    def noise():   # paired designs: small per-example differences around the shared base
        return rng.normal(0.0, 0.01, size=4000)
    # S1 leads T2 by 0.5 nats with a tiny standard error: decided
    res = rank_candidates(["S1", "T2"], _fake_candidates(tmp_path / "a", {"S1": base + 0.5 + noise(), "T2": base + noise()}),
                "custom", TINY, 100, 4000, 0.05)
    assert res["verdict"] == "decided" and res["best"] == "S1" and res["tied"] == []
    # R3 leads S1 by 0.02 nats, significant (z >> 2) but below the 0.05 margin: a tie -> S1 (dim 1)
    res = rank_candidates(["R3", "S1"], _fake_candidates(tmp_path / "b", {"R3": base + 0.02 + noise(), "S1": base + noise()}),
                "custom", TINY, 100, 4000, 0.05)
    assert res["verdict"] == "undecided" and res["best"] == "S1" and set(res["tied"]) == {"R3", "S1"}
    # with no margin the same data decide for R3
    res = rank_candidates(["R3", "S1"], _fake_candidates(tmp_path / "c", {"R3": base + 0.02 + noise(), "S1": base + noise()}),
                "custom", TINY, 100, 4000, 0.0)
    assert res["verdict"] == "decided" and res["best"] == "R3"


def test_restarts_keep_the_seed_with_the_best_validation_score(tmp_path):
    """Several seeds per candidate: the one that scored best on the validation rows represents
    the candidate (its test values, never the test-best one), and the choice is reported."""
    from manifold_vae.experiments.discover import rank_candidates
    rng = np.random.default_rng(1)
    base = rng.normal(100.0, 1.0, size=2000)
    dirs = {}
    # S1: seed 1 validates best but is not the best on the test rows; T2: one seed only
    for spec, seeds in {"S1": [(0.0, 5.0), (1.0, 7.0), (2.0, 6.0)], "T2": [(0.5, 9.0)]}.items():
        for i, (shift, val) in enumerate(seeds):
            d = tmp_path / spec / f"seed{i}"
            d.mkdir(parents=True)
            iwae = base + shift + rng.normal(0.0, 0.01, size=2000)
            np.save(d / "test_per_example.npy", np.stack([iwae - 0.1, iwae]))
            (d / "metrics.json").write_text(json.dumps({
                "test_elbo": float(iwae.mean() - 0.1), "train_seconds": 1.0, "embedding": "exact",
                "group_action": True, "validation_iwae": val}))
            dirs.setdefault(spec, []).append(d)
    res = rank_candidates(["S1", "T2"], dirs, "custom", TINY, 100, 2000, 0.05)
    s1 = next(r for r in res["ranking"] if r["latent"] == "S1")
    assert s1["selected_seed"] == 1 and s1["validation_iwae"] == 7.0
    assert s1["test_iwae"] == pytest.approx(base.mean() + 1.0, abs=0.01)
    assert len(s1["seed_test_iwae"]) == 3
    assert res["best"] == "S1" and res["verdict"] == "decided"
    assert "the one with the best validation IWAE kept" in __import__(
        "manifold_vae.experiments.discover", fromlist=["x"]).report_markdown(
        {**res, "budget": {**res["budget"], "seeds": 3}})


def test_unconverged_leaders_are_never_decided(tmp_path):
    """A lead far above the margin, but the top candidate's validation curve still rises over the
    third quarter of its schedule: 'undecided: unconverged', naming it, and the report says how to
    settle it."""
    from manifold_vae.experiments.discover import UNCONVERGED, rank_candidates, report_markdown

    rng = np.random.default_rng(2)
    base = rng.normal(100.0, 1.0, size=4000)
    dirs = _fake_candidates(tmp_path, {"S1": base + 3.0 + rng.normal(0, 0.01, 4000),
                                       "T2": base + rng.normal(0, 0.01, 4000)})
    for spec, slope in (("S1", 0.01), ("T2", 0.0)):
        rows = [{"step": s, "elbo": 1.0, "validation_iwae": 90 + slope * s}
                for s in range(100, 1001, 100)]
        (dirs[spec][0] / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        metrics = json.loads((dirs[spec][0] / "metrics.json").read_text())
        (dirs[spec][0] / "metrics.json").write_text(json.dumps({**metrics, "steps": 1000}))
    res = rank_candidates(["S1", "T2"], dirs, "custom", TINY, 100, 4000, 0.05)
    assert res["verdict"] == UNCONVERGED and res["unconverged"] == ["S1"]
    assert "undecided: unconverged" in report_markdown(res)
    s1 = next(r for r in res["ranking"] if r["latent"] == "S1")
    assert s1["still_improving"] and s1["recent_gain"] == pytest.approx(3.0)


def test_a_doubling_that_gained_nothing_ends_the_wait(tmp_path):
    """Both top candidates' validation curves rise over their third quarters (the one-cycle
    schedule's annealing does that to every curve), but the doubling that led to this round raised
    S1's validation IWAE by 0.02 and T2's by 0.9: T2 is still improving, S1 is not. When neither
    doubling gained more than the margin, the lead decides. A candidate that did not train in
    this round (its steps are not twice the last round's) gets no round gain."""
    from manifold_vae.experiments.discover import UNCONVERGED, rank_candidates

    rng = np.random.default_rng(3)
    base = rng.normal(100.0, 1.0, size=4000)
    dirs = _fake_candidates(tmp_path, {"S1": base + 3.0 + rng.normal(0, 0.01, 4000),
                                       "T2": base + rng.normal(0, 0.01, 4000)})
    for spec, val in (("S1", 95.02), ("T2", 92.7)):
        rows = [{"step": s, "elbo": 1.0, "validation_iwae": val - 10 + 0.01 * s}
                for s in range(100, 1001, 100)]
        (dirs[spec][0] / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        metrics = json.loads((dirs[spec][0] / "metrics.json").read_text())
        (dirs[spec][0] / "metrics.json").write_text(json.dumps({**metrics, "steps": 1000,
                                                                "validation_iwae": val}))

    def rank(t2_before, t2_steps=500):
        previous = {"S1": {"steps": 500, "validation_iwae": 95.0},
                    "T2": {"steps": t2_steps, "validation_iwae": t2_before}}
        res = rank_candidates(["S1", "T2"], dirs, "custom", TINY, 100, 4000, 0.05, previous=previous)
        return res, {r["latent"]: r for r in res["ranking"]}

    res, rows = rank(91.8)
    assert rows["S1"]["round_gain"] == pytest.approx(0.02) and not rows["S1"]["still_improving"]
    assert rows["T2"]["round_gain"] == pytest.approx(0.9) and rows["T2"]["still_improving"]
    assert res["verdict"] == UNCONVERGED and res["unconverged"] == ["T2"]
    # T2 gains 0.7 per doubling, 3.0 behind a top that stopped: four more doublings at that gain
    # would not close the lead, so it does not hold up the verdict
    res, rows = rank(92.0)
    assert rows["T2"]["still_improving"] and rows["T2"]["out_of_reach"]
    assert res["verdict"] == "decided" and res["best"] == "S1" and res["unconverged"] == []
    res, rows = rank(92.68)
    assert not rows["T2"]["still_improving"]
    assert res["verdict"] == "decided" and res["best"] == "S1"
    # without the previous round (or when T2 sat it out) its rising curve alone keeps it open
    res, rows = rank(92.68, t2_steps=1000)
    assert rows["T2"]["round_gain"] is None and rows["T2"]["still_improving"]
    assert res["verdict"] == UNCONVERGED


def test_a_tie_brings_back_simpler_candidates_dropped_while_still_improving():
    """The tie-break names the simplest tied candidate, so the simpler ones that successive
    halving dropped while they were still learning must get the same steps first; converged,
    more complex, or decided cases bring nobody back."""
    from manifold_vae.experiments.discover import left_behind

    def row(latent, dim, steps, rising):
        return {"latent": latent, "latent_dim": dim, "steps": steps, "still_improving": rising}

    ranking = [row("R2", 2, 10000, False), row("S2", 2, 10000, False), row("T2", 2, 5000, True),
               row("R3", 3, 5000, True), row("S1", 1, 2500, True), row("R1", 1, 2500, True),
               row("SO3", 3, 2500, False)]
    tie = {"verdict": "undecided", "best": "R2", "tied": ["R2", "S2"], "ranking": ranking}
    assert left_behind(tie, 10000) == ["S1", "R1"]
    ranking[4]["still_improving"] = False                     # S1 had flattened: stays out
    assert left_behind(tie, 10000) == ["R1"]
    assert left_behind({**tie, "verdict": "decided"}, 10000) == []
    assert left_behind({**tie, "best": "R1", "ranking": ranking}, 10000) == []


def test_unconverged_leaders_train_again_twice_as_long(tmp_path):
    """Successive halving: with a budget that allows it, the top half of the candidates trains
    again with twice the steps while the leaders' curves still rise; the rounds are recorded."""
    bench = ManifoldBenchmark("S1", dim=20, noise=0.05, seed=4)
    x, _ = bench.sample(1500)
    short = Budget(steps=40, iwae_k=8, seeds=1, hidden=(16,), batch_size=128, max_steps=80)
    res = discover(x, tmp_path / "d", candidates=["R1", "S1", "T2"], budget=short, workers=1,
                   log=lambda m: None)
    # 40 steps are far too few: the leaders still rise, so the top two train again for 80
    assert res["rounds"][0] == {"steps": 40, "candidates": ["R1", "S1", "T2"]}
    assert res["rounds"][1]["steps"] == 80 and len(res["rounds"][1]["candidates"]) == 2
    assert (tmp_path / "d" / "candidates" / res["rounds"][1]["candidates"][0]
            / "seed0-80steps" / "metrics.json").is_file()
    assert res["verdict"] != "decided" or not res["unconverged"]
