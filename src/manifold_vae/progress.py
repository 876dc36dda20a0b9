"""Progress of long work: a bar on a terminal, a line now and then in a log file.

On a terminal the bar (tqdm) is redrawn in place and erased at the end; when the output goes to
a file or a pipe a bar would print nothing useful, so a line is written instead about every
tenth of the work (and at the end), so that a two-minute fit in a log shows how it went.
"""
from __future__ import annotations

import sys
import time
from typing import Callable

from tqdm.auto import tqdm


def want_progress(quiet: bool) -> bool:
    """Whether to show a progress bar (a terminal, not ``--quiet``)."""
    return not quiet and sys.stderr.isatty()


def training_bar(desc: str, enabled: bool | None = None, *, quiet: bool = False
                 ) -> Callable[[int, int], Callable] | None:
    """A factory ``(total, initial) -> update(step, row)`` for :func:`run_fit`, or None when
    ``quiet``: a tqdm bar on a terminal (``enabled``, default: stderr is one), else log lines."""
    if quiet:
        return None
    if enabled is None:
        enabled = sys.stderr.isatty()

    def factory(total: int, initial: int):
        if not enabled:
            return _line_logger(desc, total, initial)
        bar = tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)

        def update(step, row):
            if step is None:
                bar.close()
                return
            bar.update(step - bar.n)
            bar.set_postfix(elbo=f"{row['elbo']:.2f}", kl=f"{row['kl']:.2f}")
        return update
    return factory


def _line_logger(desc: str, total: int, initial: int, stream=None):
    """``update(step, row)`` writing ``desc: step s/N  ELBO …  KL …  (t s)`` about every tenth."""
    stream = stream or sys.stderr
    every = max(1, total // 10)
    state = {"next": initial + every, "t0": time.perf_counter()}

    def update(step, row):
        if step is None:
            return
        if step >= state["next"] or step == total:
            extra = (f"  validation IWAE {row['validation_iwae']:.3f}"
                     if row.get("validation_iwae") is not None else "")
            print(f"{desc}: step {step}/{total}  ELBO {row['elbo']:.3f}  KL {row['kl']:.3f}"
                  f"{extra}  ({time.perf_counter() - state['t0']:.0f} s)", file=stream, flush=True)
            state["next"] = step + every
    return update
