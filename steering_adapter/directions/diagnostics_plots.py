"""The PNG figures of direction diagnostics (matplotlib Agg canvases on plain Figures: no pyplot, no GUI).

- ``separability.png``: ROC AUC and ``|r|`` per block;
- ``direction_norm.png``: ``‖v‖`` and participation ratio per block;
- ``pca_best_layer.png``: the 2-D PCA scatter of refused vs complied prompts at the best block, when available.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PLOT_FILES = {
    "separability": "separability.png",
    "norm": "direction_norm.png",
    "pca": "pca_best_layer.png",
}


def plot_diagnostics(
    directory: Path,
    *,
    layer_ids: Sequence[int],
    aucs: Sequence[float],
    abs_pearson_r: Sequence[float],
    norms: Sequence[float],
    participation_ratios: Sequence[float],
    hidden_size: int,
    pca_layer: int | None = None,
    pca_coords: np.ndarray | None = None,
    pca_is_refusal: np.ndarray | None = None,
    pca_explained_variance: list[float] | None = None,
) -> dict[str, Path]:
    """Draw the diagnostics figures into ``directory`` (file names in :data:`PLOT_FILES`).

    Args:
        directory: an existing directory.
        layer_ids: the blocks, ``L`` of them, the x axis of the first two figures.
        aucs: ``[L]`` ROC AUC per block (NaN where unknown).
        abs_pearson_r: ``[L]`` ``|r|`` per block (NaN where unknown).
        norms: ``[L]`` ``‖v‖₂`` per block.
        participation_ratios: ``[L]`` participation ratio per block.
        hidden_size: ``d``, for the axis label.
        pca_layer: the block of the PCA scatter.
        pca_coords: ``[m, 2]`` PCA coordinates; without them (or ``pca_is_refusal``) no scatter is drawn.
        pca_is_refusal: bool ``[m]`` class of each point.
        pca_explained_variance: explained-variance ratios of the two components.

    Returns:
        ``{"separability": path, "norm": path, "pca": path}`` for the figures written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib takes seconds to import
    from matplotlib.figure import Figure  # lazy: matplotlib takes seconds to import
    from matplotlib.ticker import MaxNLocator  # lazy: matplotlib takes seconds to import

    def new_figure(size: tuple[float, float]) -> Figure:
        figure = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(figure)
        return figure

    written: dict[str, Path] = {}
    layer_ids = list(layer_ids)

    figure = new_figure((6.4, 4.0))
    axis = figure.add_subplot()
    axis.plot(layer_ids, list(aucs), marker="o", label="ROC AUC (refused vs complied)")
    axis.plot(layer_ids, list(abs_pearson_r), marker="s", label="|Pearson r| with refusal score")
    axis.set_xlabel("decoder block")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel("separability")
    axis.set_ylim(0.0, 1.05)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    axis.set_title("Refusal direction separability per layer")
    written["separability"] = directory / PLOT_FILES["separability"]
    figure.savefig(written["separability"], dpi=100)

    figure = new_figure((6.4, 4.0))
    axis = figure.add_subplot()
    axis.plot(layer_ids, list(norms), marker="o", color="tab:blue")
    axis.set_xlabel("decoder block")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel(r"$\|v\|_2$", color="tab:blue")
    twin = axis.twinx()
    twin.plot(layer_ids, list(participation_ratios), marker="s", color="tab:orange")
    twin.set_ylabel(f"participation ratio (of d = {hidden_size})", color="tab:orange")
    axis.grid(alpha=0.3)
    axis.set_title("Direction norm and spread per layer")
    written["norm"] = directory / PLOT_FILES["norm"]
    figure.savefig(written["norm"], dpi=100)

    if pca_coords is not None and pca_is_refusal is not None:
        figure = new_figure((5.0, 5.0))
        axis = figure.add_subplot()
        for flag, name, color in ((False, "complied", "tab:blue"), (True, "refused", "tab:red")):
            points = pca_coords[pca_is_refusal == flag]
            axis.scatter(points[:, 0], points[:, 1], s=12, alpha=0.7, label=name, color=color)
        ratios = pca_explained_variance or [math.nan, math.nan]
        axis.set_xlabel(f"PC1 ({ratios[0]:.1%})")
        axis.set_ylabel(f"PC2 ({ratios[1]:.1%})")
        axis.legend()
        axis.set_title(f"Activations at block {pca_layer} (best layer)")
        written["pca"] = directory / PLOT_FILES["pca"]
        figure.savefig(written["pca"], dpi=100)
    return written
