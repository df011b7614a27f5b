"""PNG figures from the tables (matplotlib, Agg backend: no display needed).

Each genus keeps its taxonomy colour. Background (substrate) is left out of the cover
figures: it would flatten the corals the figures are about.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: figures are written to files, never shown
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from analysis.sources import ANNOTATED, ClassInfo  # noqa: E402

SOURCE_HATCH = {ANNOTATED: "//"}


def _colour(classes: ClassInfo, name: str) -> tuple[float, float, float]:
    return tuple(c / 255 for c in classes.palette[classes.names.index(name)])


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    # No "Software" text chunk: the PNG holds pixels only (report.html embeds it).
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def cover_by_group(groups: pd.DataFrame, keys: list[str], classes: ClassInfo, path: Path) -> Path:
    """Stacked bars of mean coral cover per genus, one bar per group (and source)."""
    coral = groups[groups["class"] != classes.names[0]]
    several = coral["source"].nunique() > 1
    wide = coral.pivot_table(
        index=[*keys, "source"], columns="class", values="cover_mean", sort=False, fill_value=0.0
    )
    genera = [n for n in classes.names if n in wide.columns and wide[n].any()]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(wide) + 2.5), 4.2))
    x = np.arange(len(wide))
    bottom = np.zeros(len(wide))
    hatches = [SOURCE_HATCH.get(idx[-1], "") for idx in wide.index]
    for genus in genera:
        values = wide[genus].to_numpy()
        bars = ax.bar(
            x,
            values,
            bottom=bottom,
            color=_colour(classes, genus),
            label=genus,
            edgecolor="black",
            linewidth=0.4,
        )
        for bar, hatch in zip(bars, hatches, strict=True):
            bar.set_hatch(hatch)
        bottom += values
    labels = [
        " / ".join(map(str, idx[:-1])) + (f"\n{idx[-1]}" if several else "") for idx in wide.index
    ]
    ax.set_xticks(
        x,
        labels,
        rotation=30 if len(x) > 4 else 0,
        ha="right" if len(x) > 4 else "center",
        fontsize=8,
    )
    ax.set_ylabel("mean cover (%)")
    ax.set_title("Coral cover per genus" + (" (hatched: annotated)" if several else ""))
    if genera:
        ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False)
    return _save(fig, path)


def size_frequency(sizes: pd.DataFrame, classes: ClassInfo, path: Path) -> Path:
    """Colonies per log2 size class, one panel per genus, all groups together."""
    genera = [n for n in classes.names if n in set(sizes["genus"])]
    columns = min(3, max(1, len(genera)))
    rows = max(1, -(-len(genera) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 2.8 * rows), squeeze=False)
    sources = list(dict.fromkeys(sizes["source"]))
    width = 0.8 / max(1, len(sources))
    unit = sizes["unit"].iloc[0] if len(sizes) else "px"
    for ax, genus in zip(axes.flat, genera, strict=False):
        part = sizes[sizes["genus"] == genus]
        for offset, source in enumerate(sources):
            counts = part[part["source"] == source].groupby("size_class")["colonies"].sum()
            ax.bar(
                counts.index + (offset - (len(sources) - 1) / 2) * width,
                counts.to_numpy(),
                width=width,
                color=_colour(classes, genus),
                edgecolor="black",
                linewidth=0.4,
                hatch=SOURCE_HATCH.get(source, ""),
                label=source,
            )
        ticks = sorted(set(part["size_class"]))
        ax.set_xticks(ticks, [f"$2^{{{k}}}$" for k in ticks], fontsize=7)
        ax.set_title(genus, fontsize=9)
        ax.set_xlabel(f"colony area ({unit}, log2 classes)", fontsize=7)
        ax.set_ylabel("colonies", fontsize=7)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # colonies come whole
        if len(sources) > 1:
            ax.legend(fontsize=6, frameon=False)
    for ax in list(axes.flat)[len(genera) :]:
        ax.axis("off")
    if not genera:
        axes.flat[0].text(0.5, 0.5, "no colony", ha="center", va="center")
    return _save(fig, path)


def cover_scatter(cover: pd.DataFrame, predicted: str, classes: ClassInfo, path: Path) -> Path:
    """Predicted vs annotated cover, one point per image and genus, with the 1:1 line."""
    coral = cover[cover["class_index"] > 0]
    wide = coral.pivot_table(index=["image", "class"], columns="source", values="cover_percent")
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    present = wide[wide.max(axis=1) > 0].index.get_level_values("class")
    for genus in [n for n in classes.names[1:] if n in present]:
        part = wide.xs(genus, level="class")
        ax.scatter(
            part[ANNOTATED],
            part[predicted],
            s=22,
            color=_colour(classes, genus),
            edgecolor="black",
            linewidth=0.4,
            label=genus,
        )
    top = float(np.nanmax([wide.to_numpy().max(initial=0.0), 1.0])) * 1.05
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="1:1")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_aspect("equal")
    ax.set_xlabel("annotated cover (%)")
    ax.set_ylabel(f"{predicted} cover (%)")
    ax.set_title("Cover per image and genus")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left", frameon=False)
    return _save(fig, path)
