"""What a command says when it is done: a few lines a person reads (``--json`` gives the raw
numbers instead)."""
from __future__ import annotations

from pathlib import Path


def _pm(value: float, se: float | None, digits: int = 3) -> str:
    return f"{value:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def _files(directory: Path | None) -> str:
    if directory is None or not Path(directory).is_dir():
        return ""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(directory).iterdir()
                   if not p.name.startswith("."))
    return f"wrote {directory}: {', '.join(names)}"


def fit_summary(m: dict, run_dir: Path | None) -> str:
    """A fitted run: the bounds with standard errors, the gap to the true log-likelihood when
    known, whether it was still improving, time and files."""
    model = m["latent"] + (" + group action" if m.get("group_action") else "")
    if m.get("embedding") not in (None, "exact"):
        model += ", learned f"
    lines = [f"fit {model}: {m['n_train']} training / {m['n_test']} test rows, {m['steps']} steps "
             f"in {m['train_seconds']:.0f} s ({1e3 * m['seconds_per_step']:.1f} ms/step), "
             f"evaluated in {m['eval_seconds']:.0f} s",
             f"  test IWAE {_pm(m['test_iwae'], m['test_iwae_stderr'])} nats/example (K={m['iwae_k']})"
             + ("" if m.get("iwae_is_bound", True) else
                "  [not a bound: a group action on a learned f]"),
             f"  test ELBO {_pm(m['test_elbo'], m['test_elbo_stderr'])}"]
    if "true_log_likelihood" in m:
        lines.append(f"  true log-likelihood {m['true_log_likelihood']:.3f}; gap (true − IWAE) "
                     f"{_pm(m['gap_iwae'], m['gap_iwae_stderr'])}")
    if "selected_step" in m:
        lines.append(f"  early stopping kept step {m['selected_step']} (validation IWAE "
                     f"{m['validation_iwae']:.3f})")
    if m.get("still_improving"):
        lines.append(f"  still improving: the {m['curve']} rose {m['gain']:.2f} ± "
                     f"{m['gain_stderr']:.2f} nats over steps {m['window'][0]}–{m['window'][1]}; "
                     f"more steps would help (e.g. --steps {2 * m['steps']})")
    if m.get("skipped_steps"):
        lines.append(f"  {m['skipped_steps']} steps skipped for a non-finite loss or gradient")
    files = _files(run_dir)
    return "\n".join(lines + ([files] if files else []))


def evaluation_summary(r: dict) -> str:
    lines = [f"evaluated {r['run']} on {r['scored']}:",
             f"  IWAE {_pm(r['iwae'], r['iwae_stderr'])} nats/example (K={r['iwae_k']})",
             f"  ELBO {_pm(r['elbo'], r['elbo_stderr'])}"]
    if "true_log_likelihood" in r:
        lines.append(f"  true log-likelihood {r['true_log_likelihood']:.3f}; gap (true − IWAE) "
                     f"{_pm(r['gap_iwae'], r['gap_iwae_stderr'])}")
    lines.append(f"wrote {Path(r['run']) / 'evaluation.json'}")
    return "\n".join(lines)


def data_summary(info: dict, out: Path, sidecar: Path | None) -> str:
    if "image_shape" in info:
        return (f"wrote {out}: {info['n']} {info['kind']} images "
                f"({'×'.join(map(str, info['image_shape']))}), {info['n_test']} of them the test "
                f"split; labels {', '.join(info['labels'])}")
    g = info["generator"]
    lines = [f"wrote {out} ({info['n']}×{g['dim']}: {g['latent']} through a random MLP, noise "
             f"{g['noise']}, signal/noise per coordinate {info['signal_to_noise']:.2f}) and {sidecar}"]
    if info.get("true_log_likelihood") is not None:
        lines.append(f"  true log-likelihood of the first {info['true_log_likelihood_rows']} rows "
                     f"{_pm(info['true_log_likelihood'], info['true_log_likelihood_stderr'])} "
                     f"nats/example ({info['true_log_likelihood_method']}, numerical error "
                     f"{info['true_log_likelihood_numerical_error']:.1e})")
    return "\n".join(lines)


def embedding_summary(report: dict, out: Path) -> str:
    return "\n".join([
        f"learned embedding of {report['manifold']} (WAE-MMD):",
        f"  distance of f(z) from M: mean {report['distance_mean']:.4f}, max {report['distance_max']:.4f}",
        f"  MMD² to U(M) {report['mmd']:.2e} (two uniform samples: up to {report['mmd_null_max']:.2e}; "
        f"p = {report['mmd_p_value']:.2f})",
        f"  volume element {report['volume_element_mean']:.3f} (vol(M) = {report['volume_expected']:.3f}), "
        f"spread (cv) {report['volume_element_cv']:.3f}",
        *([f"  samples: local dimension {c['local_dimension']:.2f}, density spread "
           f"{c['density_spread']:.2f} (uniform: about {c['density_spread_uniform']:.2f})"]
          if (c := report.get("sample_checks")) else []),
        *[f"  warning: {w}" for w in report.get("sample_checks", {}).get("warnings", [])],
        *[f"  not trusted: {p}" for p in report.get("problems", [])],
        _files(out)])
