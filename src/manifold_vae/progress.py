"""Progress bars (tqdm) that stay quiet when output is not a terminal or when asked to."""
from __future__ import annotations

import sys
from typing import Callable

from tqdm.auto import tqdm


def want_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def training_bar(desc: str, enabled: bool) -> Callable[[int, int], Callable] | None:
    """A factory ``(total, initial) -> update(step, row)`` for :func:`run_fit`, or None."""
    if not enabled:
        return None

    def factory(total: int, initial: int):
        bar = tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)

        def update(step, row):
            if step is None:
                bar.close()
                return
            bar.update(step - bar.n)
            bar.set_postfix(elbo=f"{row['elbo']:.2f}", kl=f"{row['kl']:.2f}")
        return update
    return factory
