"""Defaults that carry what the suites learned, chosen for the data a run sees.

When a run's config leaves a key at its default (``FitConfig.given`` does not name it) and
``auto_defaults`` is on, ``fit`` chooses it from the latent and the data, says so in one log line
and records the choices in ``config.json`` (key ``defaults``):

* a Beta posterior that starts unimodal (``init_concentration = 50``) for ER latents on the box
  whose encoder moves the sample — a group action, or a learned map's periodic or disk hidden
  coordinates (wrapped posteriors): under the uniform start (2) the move gets no gradient at
  first and a circle could settle U-shaped at the seam (discovery, T2 data D=20, σ=0.02: a gap
  of 17.4 nats against 8.7; the Klein bottle's learned map: 8.8 against 0.57);
* for compact latents of two or more dimensions, four restarts chosen by validation IWAE after a
  quarter of the schedule, on 2.5 % of the training rows, and 12,000 steps: SO3 encoders that fold
  (gap 4.75 against 0.81 nats in the manifold suite) and T2 runs in poor basins (two seeds of three
  on precise torus data) are left behind early; 12,000 steps are what T2 and SO3 needed there;
* early stopping on 10 % of the training rows when they are few for the networks (fewer than a
  tenth of the parameters): a decoder then fits the noise (T2 data, 4,500 rows, 256-256 networks:
  training ELBO 34.9 against test ELBO 30.9).

* for a learned map, periodic hidden coordinates or a disk when the map with flat ones is not
  trusted (``embed_periodic``, ``embed_disk``; chosen in ``fit.choose_periodic``, which must train
  the maps to know).

The latent's ``compact_hidden = "auto"`` (the default) is made explicit in every run's config:
the manifold's preferred hidden space with the exact map (the normal one on spheres S^n, n >= 2:
faster than the Beta box there, and as good — ``benchmarks/hidden_space.py``), the box otherwise.

Every choice is a default: setting the key (``--set``, a config file, ``FitConfig(...)``) wins.
"""
from __future__ import annotations

from torch import nn

from .config import FitConfig

UNIMODAL_START = 50.0
RESTARTS, RESTART_FRACTION, RESTART_VALIDATION = 4, 0.25, 0.025
LONG_STEPS = 12000
SMALL_DATA_ROWS_PER_PARAMETER = 0.1
EARLY_STOPPING_FRACTION = 0.1


def choose_defaults(config: FitConfig, n_rows: int, model: nn.Module) -> tuple[FitConfig, list[str]]:
    """``(config with the chosen defaults, one reason per choice)`` for ``n_rows`` training rows
    and the (skeleton) ``model``; with ``auto_defaults`` off only ``compact_hidden`` is made
    explicit."""
    given, spec = config.given, config.latent
    m = spec.manifold_obj
    changes, reasons = {}, []
    if spec.compact_hidden == "auto":       # the spec's own rule, recorded as what it chose
        changes["compact_hidden"] = spec.hidden
        if spec.hidden == "normal":
            reasons.append(f"compact_hidden normal (a Gaussian hidden posterior, f ∘ Φ: on {m.spec} "
                           "faster than the Beta box and as good)")
    if not config.auto_defaults:
        return with_chosen(config, changes), reasons
    start, why = unimodal_start(config, model)
    changes.update(start)
    reasons += why
    if spec.family == "er" and can_settle_in_a_poor_basin(m):
        if "restarts" not in given:
            changes.update(restarts=RESTARTS)
            if "restart_fraction" not in given:
                changes["restart_fraction"] = RESTART_FRACTION
            if "validation_fraction" not in given and config.validation_fraction <= 0:
                changes["validation_fraction"] = RESTART_VALIDATION
            reasons.append(f"{RESTARTS} restarts, the best by validation IWAE after "
                           f"{changes.get('restart_fraction', config.restart_fraction):.0%} of the "
                           f"steps (a {m.spec} encoder can settle in a poor basin)")
        if "steps" not in given:
            changes["steps"] = LONG_STEPS
            reasons.append(f"steps {LONG_STEPS} (what T2 and SO3 needed in the manifold suite)")
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if ("validation_fraction" not in given and config.validation_fraction < EARLY_STOPPING_FRACTION
            and n_rows < SMALL_DATA_ROWS_PER_PARAMETER * params):
        changes["validation_fraction"] = EARLY_STOPPING_FRACTION     # also what restarts score on
        reasons.append(f"early stopping on {EARLY_STOPPING_FRACTION:.0%} of the rows ({n_rows} "
                       f"rows for {params / 1e6:.2f}M parameters: the decoder could fit the noise)")
    return with_chosen(config, changes), reasons


def can_settle_in_a_poor_basin(manifold) -> bool:
    """Compact factors of two or more dimensions in all: the latents whose runs are restarted
    (``fit``'s defaults and ``discover``'s budgets)."""
    return sum(f.dim for f in manifold.factors() if f.compact) >= 2


def unimodal_start(config: FitConfig, model: nn.Module) -> tuple[dict, list[str]]:
    """``({"init_concentration": 50}, [reason])`` for an ER latent on the Beta box whose encoder
    moves its sample — a group action, or hidden coordinates of a learned map read as circles
    (``embed_periodic``, ``embed_disk``: wrapped posteriors) — when the config leaves the start
    open; ``({}, [])`` otherwise. Under the uniform start (2) the move gets no gradient at first
    and a circle can settle U-shaped at the seam: on the Klein bottle suite's learned map (both
    coordinates periodic) one seed of two did so for every test row at all four restarts
    (α, β < 1 on coordinate 0; gap 8.8 nats against 0.57)."""
    spec = config.latent
    if (not config.auto_defaults or "init_concentration" in config.given or spec.family != "er"
            or spec.hidden != "box" or "box" not in spec.manifold_obj.hidden_kinds):
        return {}, []
    wrapped = tuple(getattr(getattr(model, "latent", None), "wrapped", ()))
    if not (spec.group_action or wrapped):
        return {}, []
    why = "group action" if spec.group_action else f"shift of hidden coordinates {list(wrapped)}"
    return ({"init_concentration": UNIMODAL_START},
            [f"init_concentration {UNIMODAL_START:g} (a unimodal start gives the {why} a "
             "gradient from the first step)"])


def with_chosen(config: FitConfig, changes: dict) -> FitConfig:
    """``config`` with ``changes``, which count as chosen, not as given by the user (a later run
    may choose them again for the data it sees)."""
    if not changes:
        return config
    chosen = config.replace(**changes)
    object.__setattr__(chosen, "_given", config.given)
    return chosen
