"""Images grouped by site, date, transect...: mean cover, colony density, size classes.

Groups come from a CSV with a column `image` (file name or stem) and any others (site,
date, transect, quadrat, ...), or from a regular expression with named groups matched
against each image's stem, e.g. `(?P<site>[A-Z]+)_(?P<date>\\d{8})_Q(?P<quadrat>\\d+)`.
Without either, all images form one group.

Size-frequency uses log2 size classes, the convention of coral demography: class k holds
colonies with 2**k <= area < 2**(k+1) (cm2 where the scale is known, else px).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.sources import SourceError

ALL = "all images"


def read_groups_csv(path: str | Path, stems: dict[str, str]) -> pd.DataFrame:
    """Group columns per image stem, from a CSV with an `image` column. `stems` maps each
    image's stem to its file name; the CSV may name images either way."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SourceError(f"--groups {path}: cannot read it as CSV ({exc})") from None
    table.columns = [c.strip() for c in table.columns]
    if "image" not in table.columns or len(table.columns) < 2:
        raise SourceError(
            f"--groups {path}: needs a column 'image' and at least one other (site, date, "
            f"...); it has {list(table.columns)}"
        )
    table["image"] = table["image"].str.strip().map(lambda s: Path(s).stem)
    duplicated = sorted(set(table.loc[table["image"].duplicated(), "image"]))
    if duplicated:
        raise SourceError(f"--groups {path}: images listed twice: {duplicated[:10]}")
    missing = sorted(set(stems) - set(table["image"]))
    if missing:
        raise SourceError(
            f"--groups {path}: no row for {len(missing)} image(s): "
            f"{', '.join(stems[s] for s in missing[:10])}; add them"
        )
    return table.set_index("image").loc[sorted(stems)]


def groups_from_pattern(pattern: str, stems: list[str]) -> pd.DataFrame:
    """Group columns per stem from the named groups of a regular expression."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise SourceError(
            f"--group-pattern {pattern!r}: not a regular expression ({exc})"
        ) from None
    if not regex.groupindex:
        raise SourceError(
            f"--group-pattern {pattern!r}: name the parts, e.g. (?P<site>[A-Z]+)_(?P<date>\\d+)"
        )
    rows, unmatched = {}, []
    for stem in stems:
        match = regex.search(stem)
        if match is None:
            unmatched.append(stem)
        else:
            rows[stem] = match.groupdict(default="")
    if unmatched:
        raise SourceError(
            f"--group-pattern {pattern!r} does not match {len(unmatched)} image(s): "
            f"{', '.join(unmatched[:10])}; widen the pattern or use --groups CSV"
        )
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("image").loc[stems]


def single_group(stems: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"group": ALL}, index=pd.Index(stems, name="image"))


def summarize_groups(
    cover: pd.DataFrame, images: pd.DataFrame, colonies: pd.DataFrame, keys: list[str]
) -> pd.DataFrame:
    """One row per group, source and class: images, cover mean / sd / se / min / max across
    images (percent), colonies, counted area (m2) and colony density (per m2)."""
    by = [*keys, "source", "class_index", "class"]
    stats = cover.groupby(by, sort=False)["cover_percent"].agg(
        images="count", cover_mean="mean", cover_sd="std", cover_min="min", cover_max="max"
    )
    stats["cover_se"] = stats["cover_sd"] / np.sqrt(stats["images"])
    area = images.groupby([*keys, "source"], sort=False)["valid_area_m2"].sum(min_count=1)
    named = colonies.rename(columns={"genus": "class"})
    counts = named.groupby(by, sort=False).size().rename("colonies")
    out = stats.join(counts).reset_index()
    out["colonies"] = out["colonies"].fillna(0).astype("Int64")
    out.loc[out["class_index"] == 0, "colonies"] = pd.NA  # background holds no colony
    out = out.join(area.rename("area_m2"), on=[*keys, "source"])
    out["density_per_m2"] = out["colonies"].to_numpy(float, na_value=np.nan) / out["area_m2"]
    columns = [
        *keys,
        "source",
        "class",
        "images",
        "cover_mean",
        "cover_sd",
        "cover_se",
        "cover_min",
        "cover_max",
        "colonies",
        "area_m2",
        "density_per_m2",
    ]
    return out[columns]


def size_classes(colonies: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Colonies per group, source, genus and log2 size class (all classes from the smallest
    to the largest colony seen, zeros included, so groups line up)."""
    columns = [
        *keys,
        "source",
        "genus",
        "size_class",
        "lower",
        "upper",
        "unit",
        "colonies",
        "fraction",
    ]
    if colonies.empty:
        return pd.DataFrame(columns=columns)
    unit = "cm2" if "area_cm2" in colonies and colonies["area_cm2"].notna().all() else "px"
    area = colonies["area_cm2" if unit == "cm2" else "area_px"].astype(float)
    k = np.floor(np.log2(area)).astype(int)
    table = colonies.assign(size_class=k)
    classes = np.arange(k.min(), k.max() + 1)
    counts = table.groupby([*keys, "source", "genus", "size_class"]).size()
    combos = table[[*keys, "source", "genus"]].drop_duplicates()
    full = combos.merge(pd.DataFrame({"size_class": classes}), how="cross")
    out = full.join(counts.rename("colonies"), on=[*keys, "source", "genus", "size_class"])
    out["colonies"] = out["colonies"].fillna(0).astype(int)
    totals = out.groupby([*keys, "source", "genus"])["colonies"].transform("sum")
    out["fraction"] = out["colonies"] / totals
    out["lower"] = 2.0 ** out["size_class"]
    out["upper"] = 2.0 ** (out["size_class"] + 1)
    out["unit"] = unit
    return out[columns].reset_index(drop=True)
