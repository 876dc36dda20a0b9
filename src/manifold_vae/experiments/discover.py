"""Latent-topology discovery: fit one VAE per candidate latent manifold, rank them by test IWAE.

The IWAE bound approaches the model's log-likelihood as K grows, so the candidate whose latent
topology matches the data's (the symmetry that generated it) should reach the highest test
IWAE (Golikov & Kretov 2018, section 1). Each candidate gets its best ER configuration — exact
f + group-action encoder on compact manifolds, with Beta posteriors that start unimodal
(``INIT_CONCENTRATION``; a learned f without group action where no exact map exists, which
keeps the bound valid), the Gaussian VAE on ``R^k`` — on one shared train/test split, with the
same networks, steps and evaluation.

Training holds out 10% of the training rows and keeps the state with the best validation IWAE
(early stopping): on a few thousand rows the decoder otherwise fits the noise, and the ranking
then measures which candidate overfits least (measured: T2 data, D=200, σ=0.2, 4500 training
rows, 256-256 networks: final training ELBO 34.9 against test ELBO 30.9 nats; the true
log-likelihood is 34.0). With several seeds per candidate (restarts), the seed with the best
validation IWAE represents the candidate: a topology should not lose because one of its runs
landed in a poor optimum.

Verdict with uncertainty: the per-example IWAE difference between the top two candidates
(paired on the same test examples) has mean ``d`` and standard error
``se``; the top candidate wins when ``d > max(z·se, δ)`` (``z = 2``, ``δ = 0.05`` nats per
example). ``se`` covers the test sample only, not the run-to-run variation of training (seed
to seed, well-trained models differ by a few hundredths of a nat), hence the margin ``δ``: a
bigger latent space that is easier to optimize must not win by a hair. Otherwise the verdict
is ``"undecided"`` and every candidate within ``max(z·se, δ)`` of the top one is tied; among
tied candidates the one with the fewest latent dimensions is preferred (Occam), then the
higher IWAE.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..common.files import read_json, save_arrays, write_json
from ..data.io import as_matrix, rows_sha256, train_test_split
from ..errors import DataError, UsageError
from ..manifolds import parse_latent
from ..training import FitConfig, RunDirectory, load_run
from ..training.convergence import still_improving
from ..training.defaults import RESTART_FRACTION, RESTARTS, can_settle_in_a_poor_basin
from .engine import Job, run_jobs
from .figures import plot_differences, plot_latent_embedding

DEFAULT_CANDIDATES = ["R1", "R2", "R3", "S1", "S2", "T2", "SO3"]
Z_THRESHOLD = 2.0
MARGIN = 0.05        # nats per example: smaller leads count as ties (see the module docstring)
UNCONVERGED = "undecided: unconverged"
# A still-improving second cannot hold up a verdict when the top has stopped improving and the
# lead exceeds this many times the second's gain from its last doubling (16× the steps at that
# gain each doubling, where gains shrink as a run converges). Precise torus data (D=20, σ=0.02,
# 20,000 rows): T2 flat at 40,000 steps (+0.02), SO3 +0.10 then +0.085 per doubling, 0.79 behind
OUT_OF_REACH_DOUBLINGS = 4
# Beta posteriors of compact candidates start unimodal at κ = 50 (sd ≈ 0.07 in the box), not at
# the uniform prior (κ = 2): a uniform sample carries no information about x (the group action's
# expected gradient is zero), and the posterior can leave it either way — narrower around the box
# centre, or U-shaped, massed at both ends of the box, which on a circle is one point, the seam.
# The U-shaped branch ends at κ's lower bound (1, where its gradient is zero) still broad: on T2
# data (D=20, σ=0.02) one torus circle did that (gap to the true log-likelihood 17.4 nats after
# 2500 steps; 8.7 with κ₀ = 50, both circles sharp).
INIT_CONCENTRATION = 50.0


@dataclass(frozen=True)
class Budget:
    """Training effort per candidate (same for every candidate)."""

    steps: int
    iwae_k: int
    seeds: int
    hidden: tuple[int, ...] = (128, 128)
    batch_size: int = 512
    # early stopping on held-out training rows (see FitConfig.validation_fraction)
    validation_fraction: float = 0.1
    # successive halving: while the leading candidates still improve, the top half is trained
    # again with twice the steps, up to this many. The torus-vs-Klein case (torus data, D=100,
    # 20,000 rows) needs 40,000 for default: at 20,000 K2 had just gained 0.71 nats from its
    # doubling and was 0.57 behind T2; at 40,000 neither gained and T2 led by 1.16
    max_steps: int = 0
    # compact ER candidates of two or more dimensions: this many initializations, the best by
    # validation IWAE after a quarter of the steps kept (fit's rule, training/defaults.py). On
    # the most precise torus case of benchmarks/discovery_accuracy.py (D=20, σ=0.02, 5,000 rows)
    # one initialization left T2 in a poor basin (37.96 after 5,000 steps, third, SO3 preferred);
    # with four T2 led from the first round (41.76 at 10,000 steps, true 42.32) and, trained up
    # to 20,000 steps, was decided right
    restarts: int = 1


BUDGETS = {
    # 128-128 networks: on T2 data (D=200, σ=0.2, 10,000 rows, early stopping) 256-256 ones
    # reached a test IWAE of 32.99, 128-128 ones 33.51 (true log-likelihood 33.88)
    "quick": Budget(steps=800, iwae_k=200, seeds=1, hidden=(128, 128), max_steps=3200),
    "default": Budget(steps=2500, iwae_k=1000, seeds=1, hidden=(128, 128), max_steps=40000,
                      restarts=RESTARTS),
    "thorough": Budget(steps=5000, iwae_k=2000, seeds=3, hidden=(128, 128), max_steps=80000,
                       restarts=RESTARTS),
}


def parse_candidates(candidates: Sequence[str] | str) -> list[str]:
    """Validated, de-duplicated latent specs (at least two)."""
    if isinstance(candidates, str):
        candidates = [c.strip() for c in candidates.split(",") if c.strip()]
    specs = []
    for c in candidates:
        try:
            spec = parse_latent(c).spec
        except ValueError as err:
            raise UsageError(f"unknown candidate {c!r}: {err}") from None
        if spec not in specs:
            specs.append(spec)
    if len(specs) < 2:
        raise UsageError(f"discovery compares candidates: give at least two, got {specs}")
    return specs


def candidate_config(spec: str, budget: Budget, seed: int) -> FitConfig:
    """The best ER configuration of a candidate (see the module docstring)."""
    m = parse_latent(spec)
    exact = m.has_exact_map
    ga = m.has_group and exact and all(f.compact for f in m.factors())
    restarts = budget.restarts if can_settle_in_a_poor_basin(m) else 1
    restart = {"restarts": restarts, "restart_fraction": RESTART_FRACTION} if restarts > 1 else {}
    return FitConfig(latent=spec, embedding="exact" if exact else "learned", group_action=ga,
                     **restart,
                     init_concentration=INIT_CONCENTRATION, hidden=list(budget.hidden),
                     steps=budget.steps, batch_size=budget.batch_size, iwae_k=budget.iwae_k,
                     seed=seed, checkpoint_every=max(1, budget.steps // 4),
                     validation_fraction=budget.validation_fraction,
                     # 40 points of the validation curve: enough to tell whether it still rises
                     log_every=max(1, budget.steps // 40))


def discover(x: torch.Tensor, out: Path, *, candidates: Sequence[str] = DEFAULT_CANDIDATES,
             budget: str | Budget = "default", seeds: int | None = None,
             labels: np.ndarray | None = None, test_fraction: float = 0.1, split_seed: int = 0,
             margin: float = MARGIN, workers: int = 0, progress: bool = False,
             data_path: str | None = None, force: bool = False,
             log: Callable[[str], None] = print) -> dict:
    """Rank ``candidates`` by test IWAE on ``x``; writes ``out/discovery.json``, ``report.md``
    and figures, and returns the same structure as ``discovery.json``.

    Finished candidates in ``out`` are reused when called again with the same settings and data.
    ``out`` records the data it was made on (``data_path`` and a SHA-256 of the rows, in
    ``data.json``, ``discovery.json`` and ``report.md``); a folder made on other data is refused
    unless ``force``.
    """
    t0 = time.perf_counter()
    specs = parse_candidates(candidates)
    if isinstance(budget, str):
        if budget not in BUDGETS:
            raise UsageError(f"unknown budget {budget!r}; use one of {', '.join(BUDGETS)}")
        budget_name, budget = budget, BUDGETS[budget]
    else:
        budget_name = "custom"
    if seeds is not None:
        if seeds < 1:
            raise UsageError("--seeds must be positive")
        budget = dataclasses.replace(budget, seeds=seeds)
    if not margin >= 0:
        raise UsageError(f"--margin must be >= 0, got {margin}")
    x = as_matrix(x, name=data_path or "data")
    if labels is not None and len(labels) != len(x):
        raise DataError(f"labels: {len(labels)} entries for {len(x)} data rows")
    out = Path(out)
    data = {"path": data_path, "rows": int(x.shape[0]), "columns": int(x.shape[1]),
            "rows_sha256": rows_sha256(x)}
    before = read_json(out / "data.json")
    if isinstance(before, dict) and before.get("rows_sha256") != data["rows_sha256"]:
        if not force:
            raise UsageError(f"{out} holds a discovery on other data ({before.get('path')}, "
                             f"{before.get('rows')} rows × {before.get('columns')}); use --force "
                             f"to replace it, or another --out")
        log(f"{out}: replacing the discovery made on {before.get('path')} (--force)")
        (out / "discovery.json").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "data.json", data)
    x_train, x_test, _, test_idx = train_test_split(x, test_fraction, split_seed)
    split = out / "split.npz"
    arrays = {"x_train": x_train.numpy(), "x_test": x_test.numpy()}
    if not split.is_file() or not _same_arrays(split, arrays):
        save_arrays(split, **arrays)
    log(f"discovery over {', '.join(specs)}: {len(x_train)} train / {len(x_test)} test rows, "
        f"budget {budget_name} ({budget.steps} steps, K={budget.iwae_k}, {budget.seeds} seed(s))")
    dirs: dict[str, list[Path]] = {}
    racing, steps, rounds, previous, brought_back = list(specs), budget.steps, [], {}, False
    while True:
        jobs = []
        for spec in racing:
            dirs[spec] = []
            for seed in range(budget.seeds):
                name = f"seed{seed}" if steps == budget.steps else f"seed{seed}-{steps}steps"
                run_dir = out / "candidates" / spec / name
                dirs[spec].append(run_dir)
                jobs.append(Job(f"{spec} seed {seed} ({steps} steps)",
                                candidate_config(spec, dataclasses.replace(budget, steps=steps),
                                                 seed), run_dir, str(split)))
        run_jobs(jobs, workers, out, force=False, progress=progress, log=log)
        rounds.append({"steps": steps, "candidates": list(racing),
                       **({"brought_back": True} if brought_back else {})})
        # ``previous``: the rows of the last round at half these steps (each candidate's own
        # doubling is measured against it; a candidate brought back from further behind has none)
        result = rank_candidates(specs, dirs, budget_name, budget, len(x_train), len(x_test), margin,
                                 previous=previous)
        if result["verdict"] != UNCONVERGED or 2 * steps > budget.max_steps:
            back = [] if brought_back else left_behind(result, steps)
            if not back:
                break
            # a tie prefers its simplest member: give the simpler candidates that were dropped
            # while still improving the same steps before naming one
            racing, brought_back = back, True
            log(f"undecided among {', '.join(result['tied'])}: training {', '.join(back)}, "
                f"dropped while still improving, for {steps} steps too")
            continue
        previous, brought_back = {r["latent"]: r for r in result["ranking"]}, False
        # successive halving: the top half trains again, twice as long
        racing = [r["latent"] for r in result["ranking"][:max(2, math.ceil(len(racing) / 2))]]
        steps *= 2
        log(f"the leaders were still improving: training {', '.join(racing)} for {steps} steps")
    result["rounds"] = rounds
    result["total_seconds"] = time.perf_counter() - t0
    result["data"] = data
    write_json(out / "discovery.json", result)
    (out / "report.md").write_text(report_markdown(result))
    rank = result["ranking"]
    plot_differences([r["latent"] for r in rank], [-r["difference_to_top"] for r in rank],
                     [Z_THRESHOLD * r["difference_to_top_stderr"] for r in rank], out / "iwae.png",
                     margin=margin, xlabel=f"test IWAE − {rank[0]['latent']}'s, paired "
                                           f"(nats/example, ± {Z_THRESHOLD:g} s.e.)",
                     title=f"{Path((result.get('data') or {}).get('path') or 'data').name}: "
                           f"{result['verdict']} ({result['best']})")
    if labels is not None:
        kept = next(r for r in result["ranking"] if r["latent"] == result["best"])
        model = load_run(dirs[result["best"]][kept.get("selected_seed", 0)])[0]
        plot_latent_embedding(model, x_test, np.asarray(labels)[test_idx.numpy()],
                              out / "best_latent.png",
                              title=f"{result['best']}: test points on the latent manifold")
    log(f"best: {result['best']} ({result['verdict']}); wrote {out}/discovery.json and report.md")
    return result


def left_behind(result: dict, steps: int) -> list[str]:
    """After a tie (verdict ``undecided``), the candidates with fewer latent dimensions than the
    preferred one that left the race before ``steps`` while still improving: the tie-break
    prefers the simplest tied candidate, so these get the same steps before one is named. On
    circle-free line data (R1, D=20, σ=0.02, 20,000 rows) R1 learned slowest, left after the first
    round (still rising 2.5 nats over its third quarter) and the verdict tied R2 with S2."""
    if result["verdict"] != "undecided":
        return []
    dim = next(r["latent_dim"] for r in result["ranking"] if r["latent"] == result["best"])
    return [r["latent"] for r in result["ranking"]
            if r["steps"] < steps and r["still_improving"] and r["latent_dim"] < dim]


def _same_arrays(path: Path, arrays: dict) -> bool:
    try:
        with np.load(path) as saved:
            return all(k in saved and np.array_equal(saved[k], v) for k, v in arrays.items())
    except (OSError, ValueError):
        return False


def rank_candidates(specs, dirs, budget_name, budget, n_train, n_test, margin,
                    previous: dict | None = None) -> dict:
    """The ranking, verdict and rule of one round; ``previous``: the rows of the round before, by
    candidate. A candidate is still improving when its validation curve rose by more than
    ``margin`` over the third quarter of its schedule (:func:`~manifold_vae.training.convergence.still_improving`) and, after a
    doubling, the doubling itself raised its validation IWAE by more than ``margin``: the
    one-cycle schedule's annealing lifts every curve in its third quarter, and a doubling that
    gained nothing says more steps would not either (torus data, D=100, 20,000 rows: T2 +0.05,
    K2 +0.71 from 10,000 to 20,000 steps, then −0.02 and −0.93 at 40,000, while both curves
    still rose over their third quarters)."""
    previous = previous or {}
    per, rows = {}, []
    for spec in specs:
        runs = [RunDirectory(d) for d in dirs[spec]]
        metrics = [r.read_metrics() for r in runs]
        per_seed = [r.per_example()[1] for r in runs]
        val = [m.get("validation_iwae") for m in metrics]
        if any(v is not None for v in val):
            # restarts: keep the seed with the best validation score (the test rows stay unseen)
            pick = int(np.argmax([-math.inf if v is None else v for v in val]))
            iwae, used = per_seed[pick], [metrics[pick]]
            selection = {"selected_seed": pick, "validation_iwae": val[pick],
                         "seed_test_iwae": [float(p.mean()) for p in per_seed]}
        else:   # runs without a validation split: average the seeds, example by example
            iwae, used, selection = torch.stack(per_seed).mean(0), metrics, {}
        per[spec] = iwae
        kept = runs[selection.get("selected_seed", 0)]
        steps = metrics[0].get("steps", budget.steps)
        curve = still_improving(kept.history(), steps, min_gain=margin)
        # the gain of this candidate's own doubling (none for one left out of this round)
        before, now = previous.get(spec, {}), selection.get("validation_iwae")
        round_gain = (float(now - before["validation_iwae"])
                      if now is not None and before.get("validation_iwae") is not None
                      and before.get("steps") is not None and steps == 2 * before["steps"] else None)
        rows.append({"latent": spec, "latent_dim": parse_latent(spec).dim,
                     "steps": steps,
                     "still_improving": bool(curve.get("still_improving"))
                     and (round_gain is None or round_gain > margin),
                     "recent_gain": curve.get("gain"), "round_gain": round_gain,
                     "test_iwae": float(iwae.mean()),
                     "test_iwae_stderr": float(iwae.std() / math.sqrt(len(iwae))),
                     "test_elbo": float(np.mean([m["test_elbo"] for m in used])),
                     "train_seconds": float(np.sum([m["train_seconds"] for m in metrics])),
                     "embedding": metrics[0]["embedding"],
                     "group_action": bool(metrics[0]["group_action"]), **selection})
    rows.sort(key=lambda r: r["test_iwae"], reverse=True)
    top = rows[0]["latent"]
    for r in rows:   # paired difference to the top candidate, on the same test examples
        d = per[top] - per[r["latent"]]
        r["difference_to_top"] = float(d.mean())
        r["difference_to_top_stderr"] = float(d.std() / math.sqrt(len(d))) if r["latent"] != top else 0.0
    second = rows[1]

    def clear_lead(r):
        return r["difference_to_top"] > max(Z_THRESHOLD * r["difference_to_top_stderr"], margin)

    decided = clear_lead(second)
    tied = [r["latent"] for r in rows if r["latent"] == top or not clear_lead(r)]
    # a lead between candidates that were still learning says which learns fastest, not which
    # fits the data: the verdict waits for their curves to flatten
    unconverged = [r["latent"] for r in rows[:2] if r["still_improving"]]
    if (decided and unconverged == [second["latent"]] and second.get("round_gain") is not None
            and second["difference_to_top"] > OUT_OF_REACH_DOUBLINGS * second["round_gain"]):
        # the top has stopped improving and the second, still rising, could not close the lead
        # in OUT_OF_REACH_DOUBLINGS more doublings at its last doubling's gain
        unconverged = []
        second["out_of_reach"] = True
    if decided and not unconverged:
        best = top
    else:
        best = min((r for r in rows if r["latent"] in tied),
                   key=lambda r: (r["latent_dim"], -r["test_iwae"]))["latent"]
    verdict = UNCONVERGED if unconverged else ("decided" if decided else "undecided")
    return {
        "best": best, "verdict": verdict, "unconverged": unconverged,
        "tied": [] if verdict == "decided" else tied,
        "top_two": {"first": top, "second": second["latent"],
                    "difference": second["difference_to_top"],
                    "difference_stderr": second["difference_to_top_stderr"],
                    "z": (second["difference_to_top"] / second["difference_to_top_stderr"]
                          if second["difference_to_top_stderr"] > 0 else math.inf)},
        "z_threshold": Z_THRESHOLD, "margin": margin,
        "rule": ("the top candidate wins when its paired per-example IWAE lead over the second "
                 f"exceeds both {Z_THRESHOLD:g} standard errors and {margin:g} nats; otherwise "
                 f"every candidate within that distance of the top is tied and the tied one with "
                 "the fewest latent dimensions is preferred"),
        "budget": {"name": budget_name, **dataclasses.asdict(budget)},
        "n_train": n_train, "n_test": n_test,
        "ranking": rows,
    }


def report_markdown(res: dict) -> str:
    t = res["top_two"]
    if res["verdict"] == "decided":
        second = next((r for r in res["ranking"] if r["latent"] == t["second"]), {})
        reach = (f" {t['second']} was still improving, by {second['round_gain']:.3f} nats in its "
                 f"last doubling: {OUT_OF_REACH_DOUBLINGS} more doublings at that gain would not "
                 f"close the lead." if second.get("out_of_reach") else "")
        verdict = (f"**{res['best']}**: it leads {t['second']} by {t['difference']:.3f} ± "
                   f"{t['difference_stderr']:.3f} nats/example (paired, z = {t['z']:.1f} > "
                   f"{res['z_threshold']:g}, and more than {res['margin']:g} nats).{reach}")
    elif res["verdict"] == UNCONVERGED:
        last = res.get("rounds", [{}])[-1].get("steps", res["budget"]["steps"])
        verdict = (f"**undecided: unconverged** — {', '.join(res['unconverged'])} still improved "
                   f"over the third quarter of {last} steps by more than the margin (and, after "
                   f"a doubling, gained more than it from the doubling); a lead "
                   f"between candidates still learning says which learns fastest. Preferred "
                   f"for now: **{res['best']}**. Settle it with a larger budget (--budget "
                   f"{'thorough' if res['budget']['name'] != 'thorough' else 'thorough --seeds 5'}"
                   f", which trains up to {BUDGETS['thorough'].max_steps} steps).")
    else:
        verdict = (f"**undecided** between {', '.join(res['tied'])} (the lead of {t['first']} over "
                   f"{t['second']} is {t['difference']:.3f} ± {t['difference_stderr']:.3f}, "
                   f"z = {t['z']:.1f}: not both above {res['z_threshold']:g} standard errors and "
                   f"{res['margin']:g} nats); preferred among the tied: "
                   f"**{res['best']}**, the one with the fewest latent dimensions.")
    b = res["budget"]
    d = res.get("data") or {}
    lines = ["# Latent-topology discovery", "",
             f"Data: {d.get('path') or 'rows given in Python'} ({d.get('rows')} rows × "
             f"{d.get('columns')}, SHA-256 of the rows {str(d.get('rows_sha256'))[:16]}…).", "",
             f"{res['n_train']} train (validation included) / {res['n_test']} test rows; budget {b['name']} "
             f"({b['steps']} steps, {'-'.join(map(str, b['hidden']))} MLPs, K={b['iwae_k']}, "
             f"{b['seeds']} seed(s)"
             + ((", the one with the best validation IWAE kept" if b.get("validation_fraction")
                 else ", averaged") if b["seeds"] > 1 else "")
             + (f"; early stopping on {b['validation_fraction']:g} of the training rows"
                if b.get("validation_fraction") else "") + f"). Verdict: {verdict}", "",
             "| rank | latent | dim | model | test IWAE | test ELBO | lead of the top (paired) | steps "
             "| gain from the last doubling | still rising | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(res["ranking"], 1):
        model = ("Gaussian VAE" if r["latent"].startswith("R") and "x" not in r["latent"]
                 else f"ER, {r['embedding'] if r['embedding'] in ('exact', 'learned') else 'learned'} f"
                 + (" + group action" if r["group_action"] else ""))
        lead = "—" if i == 1 else f"{r['difference_to_top']:.3f} ± {r['difference_to_top_stderr']:.3f}"
        lines.append(f"| {i} | {r['latent']} | {r['latent_dim']} | {model} | "
                     f"{r['test_iwae']:.3f} ± {r['test_iwae_stderr']:.3f} | {r['test_elbo']:.3f} | "
                     f"{lead} | {r.get('steps', '—')} | "
                     f"{'—' if r.get('round_gain') is None else format(r['round_gain'], '+.3f')} | "
                     f"{'yes' if r.get('still_improving') else 'no'} | {r['train_seconds']:.0f} |")
    lines += ["", f"Rule: {res['rule']}. A candidate is still rising when its validation IWAE "
              f"rose by more than the margin over the third quarter of its one-cycle schedule "
              f"and, after a doubling, the doubling raised its validation IWAE by more than the "
              f"margin (a second still improving does not count when the top has stopped and "
              f"{OUT_OF_REACH_DOUBLINGS} more doublings at its last gain would not close the lead); "
              f"while one of the top two is, the verdict is 'undecided: unconverged' and the top "
              f"half trains again with twice the steps (up to {res['budget'].get('max_steps')}).",
              ""]
    if len(res.get("rounds", [])) > 1:
        lines += ["Rounds: " + "; ".join(f"{r['steps']} steps: {', '.join(r['candidates'])}"
                                         + (" (brought back: simpler than the tie's preferred "
                                            "one, dropped while still improving)"
                                            if r.get("brought_back") else "")
                                         for r in res["rounds"]) + ".", ""]
    return "\n".join(lines)
