"""Figures (matplotlib, Agg backend): latent spaces, embeddings, training curves."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported when a figure is first drawn (importing
    it costs a second, which commands that draw nothing should not pay)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return math.ceil(n / cols), cols


def plot_latents(models: dict, x, angle, path: Path, *, title: str = "") -> None:
    """Each model's posterior latent point of the test data, coloured by the true angle.

    2-D latents (the circle, R2) are drawn as points in the plane; 1-D latents (R1) as the
    latent coordinate against the true angle.
    """
    plt = _pyplot()
    rows, cols = _grid(len(models))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False,
                             layout="constrained")
    a = angle.numpy()
    for ax, (name, model) in zip(axes.flat, models.items()):
        with torch.no_grad():
            m = model.embed(x).numpy()
        if m.shape[1] >= 2:
            sc = ax.scatter(m[:, 0], m[:, 1], c=a, cmap="hsv", s=4, vmin=0, vmax=2 * math.pi)
            ax.set_aspect("equal", adjustable="datalim")
            ax.set_xlabel("latent 1")
            ax.set_ylabel("latent 2")
        else:
            sc = ax.scatter(a, m[:, 0], c=a, cmap="hsv", s=4, vmin=0, vmax=2 * math.pi)
            ax.set_xlabel("true angle")
            ax.set_ylabel("latent z")
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    fig.colorbar(sc, ax=axes, shrink=0.6, label="true angle (rad)")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_embedding(embedding, manifold, path: Path, *, n: int = 400) -> None:
    """The learned map ``f`` against the manifold's uniform samples.

    On the circle: ``f`` of a grid of [0, 1] over the unit circle. Otherwise: ``f`` of the grid
    lines of the hidden box's first two coordinates (the others at 1/2), drawn over 3000 uniform
    samples of M, in projections onto pairs of ambient coordinates ((1, 2) and (3, 4) in R^4).
    """
    plt = _pyplot()
    if manifold.dim == 1 and manifold.ambient_dim == 2:
        fig, ax = plt.subplots(figsize=(5, 5))
        z = torch.linspace(0, 1, n).unsqueeze(-1)
        with torch.no_grad():
            m = embedding(z).numpy()
        t = torch.linspace(0, 2 * math.pi, 400)
        ax.plot(t.cos(), t.sin(), "k--", lw=1, label="true circle")
        sc = ax.scatter(m[:, 0], m[:, 1], c=z[:, 0], cmap="viridis", s=6, label="f(z), z on a grid")
        fig.colorbar(sc, ax=ax, label="z")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", fontsize=8)
        ax.set_title(f"learned embedding of {manifold.spec}")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    k = manifold.ambient_dim
    pairs = [(0, 1), (2, 3)] if k >= 4 else [(0, 1), (0, 2)] if k == 3 else [(0, 1)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 5), squeeze=False,
                             layout="constrained")
    samples = manifold.sample_uniform(3000, generator=torch.Generator().manual_seed(0)).numpy()
    lines, t = 9, torch.linspace(0, 1, n)
    cmap = plt.get_cmap("viridis")
    for ax, (i, j) in zip(axes.flat, pairs):
        ax.scatter(samples[:, i], samples[:, j], s=2, c="0.75", label="uniform samples of M")
        for axis in range(min(manifold.dim, 2)):
            for level in range(lines):
                z = torch.full((n, manifold.dim), 0.5)
                z[:, axis] = t
                if manifold.dim > 1:
                    z[:, 1 - axis] = (level + 0.5) / lines
                with torch.no_grad():
                    m = embedding(z).numpy()
                ax.plot(m[:, i], m[:, j], lw=0.9, ls="-" if axis == 0 else ":",
                        color=cmap(level / (lines - 1)))
        ax.set_xlabel(f"ambient {i + 1}")
        ax.set_ylabel(f"ambient {j + 1}")
        ax.set_aspect("equal", adjustable="datalim")
    axes.flat[0].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"learned embedding of {manifold.spec}: f of the box's grid lines "
                 f"(solid: z1 varies, dotted: z2 varies; colour: the other coordinate)",
                 fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(histories: dict, path: Path, *, ceiling: float | None = None) -> None:
    """Training ELBO (per example, running mean over each logging interval) against step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lows = []
    for name, rows in histories.items():
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        elbo = [r["elbo"] for r in rows]
        ax.plot(steps, elbo, label=name, lw=1.2)
        lows.append(elbo[-1])
    if ceiling is not None:
        ax.axhline(ceiling, color="k", ls="--", lw=1, label="true log-likelihood")
    if lows and ceiling is not None:
        ax.set_ylim(min(lows) - 4, ceiling + 1)
    ax.set_xlabel("step")
    ax.set_ylabel("training ELBO (nats/example)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_differences(names, diffs, errs, path: Path, *, margin: float = 0.0,
                     xlabel: str = "", title: str = "") -> None:
    """Each candidate's paired difference to the top one with its interval (the top one at 0):
    what a verdict between them rests on, whatever the sign of the values themselves."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.5))
    y = np.arange(len(names))[::-1]
    ax.errorbar(diffs, y, xerr=errs, fmt="o", capsize=4, color="tab:blue")
    ax.axvline(0.0, color="k", lw=1)
    if margin > 0:
        ax.axvline(-margin, color="k", ls="--", lw=1, label=f"margin {margin:g}")
        ax.legend(fontsize=8, loc="lower left")
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_grouped_bars(groups, labels, values, errs, path: Path, *, ylabel: str = "") -> None:
    """Bars of ``values[i][j]`` (series ``labels[i]``, group ``groups[j]``) with error bars."""
    plt = _pyplot()
    n = len(labels)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4))
    for i, (label, vals, es) in enumerate(zip(labels, values, errs)):
        pos = [j + (i - (n - 1) / 2) * width for j in range(len(groups))]
        ax.bar(pos, vals, width, yerr=es, capsize=3, label=label)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latent_embedding(model, x, labels, path: Path, *, title: str = "") -> None:
    """Posterior latent points of ``x`` (``model.embed``), coloured by ``labels``: the ambient
    coordinates when they are 2-D, otherwise their first two principal components."""
    plt = _pyplot()
    with torch.no_grad():
        m = model.embed(x).double()
    if m.shape[1] == 1:
        m = torch.cat([m, torch.zeros_like(m)], 1)
    axes = ("m1", "m2")
    if m.shape[1] > 2:
        centred = m - m.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        m = centred @ v[:2].T
        axes = ("PC 1", "PC 2")
    fig, ax = plt.subplots(figsize=(5.5, 5))
    sc = ax.scatter(m[:, 0].numpy(), m[:, 1].numpy(), c=np.asarray(labels), s=5, cmap="viridis")
    fig.colorbar(sc, ax=ax, label="label")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_image_grid(rows, path: Path, *, image_shape, row_labels=(), title: str = "") -> None:
    """A grid of images: ``rows`` is a list of equal-length lists (or arrays) of flat images."""
    plt = _pyplot()
    c, h, w = (int(s) for s in image_shape)
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(0.75 * n_cols + 0.9, 0.75 * n_rows + 0.4),
                             squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j < len(row):
                img = np.asarray(row[j], dtype=np.float64).reshape(c, h, w)
                ax.imshow(img[0] if c == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        if i < len(row_labels):
            axes[i][0].set_ylabel(row_labels[i], fontsize=7, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_angle_recovery(true_angle, learned_angle, labels, path: Path, *, title: str = "",
                        xlabel: str = "true rotation angle (deg)",
                        ylabel: str = "learned S1 angle, aligned (deg)") -> None:
    """Learned circle angle against the true angle, in degrees, coloured by class."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    t = np.degrees(np.mod(true_angle, 2 * np.pi))
    l = np.degrees(np.mod(learned_angle, 2 * np.pi))
    labels = np.asarray(labels)
    for cls in np.unique(labels):
        sel = labels == cls
        ax.scatter(t[sel], l[sel], s=4, label=str(cls))
    ax.plot([0, 360], [0, 360], "k--", lw=0.8)
    ax.set_xlim(0, 360)
    ax.set_ylim(0, 360)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, markerscale=3, title="class", title_fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_error_histogram(errors_deg, path: Path, *, xlabel: str, title: str = "") -> None:
    """Histogram of recovery errors in degrees, with the median marked."""
    plt = _pyplot()
    errors_deg = np.asarray(errors_deg, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.hist(errors_deg, bins=60, range=(0, 180), color="tab:blue", alpha=0.8)
    med = float(np.median(errors_deg))
    ax.axvline(med, color="k", ls="--", lw=1, label=f"median {med:.1f}°")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test examples")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
