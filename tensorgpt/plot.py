"""File size against perplexity, one labelled point per variant, the Pareto front drawn.

matplotlib is imported only here and only when a plot is asked for: the runtime package must
install and run without it (it is in the `export` extra, not the base install).
"""

from __future__ import annotations

import math
from pathlib import Path

from tensorgpt.compare import pareto_front


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")  # files only: no display on a board or a CI runner
    import matplotlib.pyplot as plt

    return plt


# Variants within this factor of the best perplexity get a linear-scale zoom panel: on the log
# scale that broken variants need, 29 and 50 sit almost on top of each other.
ZOOM_FACTOR = 2.0


def plot_size_vs_perplexity(report: dict, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG of the report's rows that have a finite perplexity; returns the path."""
    rows = [
        r for r in report["rows"] if r["perplexity"] is not None and math.isfinite(r["perplexity"])
    ]
    if not rows:
        raise ValueError("--plot needs perplexities: give --text")
    plt = _pyplot()
    points = [(r["file_bytes"] / 1e6, r["perplexity"]) for r in rows]
    front = set(pareto_front(points))
    best = min(p for _, p in points)
    near = [i for i, (_, p) in enumerate(points) if p <= ZOOM_FACTOR * best]
    zoom = len(near) < len(points)
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(14 if zoom else 9, 6), dpi=110)
    axes = list(axes) if zoom else [axes]
    try:
        # Full view: every variant; with a zoom panel, only those not shown there are named.
        labelled = [i for i in range(len(points)) if not zoom or i not in near]
        _panel(axes[0], points, rows, front, labelled, log_y=zoom)
        axes[0].set_title(title or "File size vs perplexity")
        if zoom:
            _panel(
                axes[1],
                [points[i] for i in near],
                [rows[i] for i in near],
                {near.index(i) for i in front if i in near},
                range(len(near)),
                log_y=False,
            )
            axes[1].set_title(f"Zoom: perplexity within {ZOOM_FACTOR:g}x of the best")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


def _panel(ax, points, rows, front, labelled, log_y: bool) -> None:
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    colors = ["tab:red" if i in front else "tab:blue" for i in range(len(points))]
    ax.scatter(xs, ys, c=colors, zorder=3)
    # Cycle labels above, below and further above, in order of size, so neighbours do not
    # overprint.
    order = sorted(labelled, key=lambda i: xs[i])
    for k, i in enumerate(order):
        ax.annotate(
            rows[i]["name"],
            (xs[i], ys[i]),
            textcoords="offset points",
            xytext=(5, (5, -12, 16)[k % 3]),
            fontsize=8,
        )
    # The front as a staircase: between two front points the best reachable perplexity stays
    # that of the smaller file until the larger file's point.
    steps = sorted(front, key=lambda i: xs[i])
    ax.step(
        [xs[i] for i in steps],
        [ys[i] for i in steps],
        where="post",
        color="tab:red",
        label="Pareto front (red points)",
        zorder=2,
    )
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("model.onnx size (MB)")
    ax.set_ylabel("perplexity (lower is better)")
    ax.grid(True, which="both", alpha=0.3)
    # Broken variants sit top-left on the log panel; the middle right is usually empty.
    ax.legend(loc="center right" if log_y else "upper right")
