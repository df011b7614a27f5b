"""Images grouped by site, date, transect...: mean cover, colony density, size classes.

Groups come from a CSV with a column `image` (file name or stem) and any others (site,
date, transect, quadrat, ...), or from a regular expression with named groups matched
against each image's stem, e.g. `(?P<site>[A-Z]+)_(?P<date>\\d{8})_Q(?P<quadrat>\\d+)`.
Without either, all images form one group.

Colony density is counted over the images with a scale only: an image without one has
no area, so its colonies (still in `colonies`) would inflate the density of a group
that mixes both. `density_images` says how many images gave the density.

Size-frequency uses log2 size classes, the convention of coral demography: class k holds
colonies with 2**k <= area < 2**(k+1) (cm2 where the scale is known, else px).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.sources import SourceError

ALL = "all images"

log = logging.getLogger("coral")


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
    images (percent), colonies (all images), counted area (m2) of the images with a scale,
    how many they are (density_images) and the colony density (per m2) over them alone."""
    by = [*keys, "source", "class_index", "class"]
    stats = cover.groupby(by, sort=False)["cover_percent"].agg(
        images="count", cover_mean="mean", cover_sd="std", cover_min="min", cover_max="max"
    )
    stats["cover_se"] = stats["cover_sd"] / np.sqrt(stats["images"])
    per_group = images.groupby([*keys, "source"], sort=False)["valid_area_m2"]
    area = per_group.sum(min_count=1).rename("area_m2")
    scaled_images = per_group.count().rename("density_images")
    _log_mixed_scales(images, keys)
    named = colonies.rename(columns={"genus": "class"})
    counts = named.groupby(by, sort=False).size().rename("colonies")
    # the density's numerator: colonies of the images whose area is known, as the denominator
    scaled = images.loc[images["valid_area_m2"].notna(), ["image", "source"]]
    in_scaled = named.merge(scaled.drop_duplicates(), on=["image", "source"])
    scaled_counts = in_scaled.groupby(by, sort=False).size().rename("scaled_colonies")
    out = stats.join(counts).join(scaled_counts).reset_index()
    background = out["class_index"] == 0  # background holds no colony
    for column in ("colonies", "scaled_colonies"):
        out[column] = out[column].fillna(0).astype("Int64")
        out.loc[background, column] = pd.NA
    out = out.join(area, on=[*keys, "source"]).join(scaled_images, on=[*keys, "source"])
    out["density_images"] = out["density_images"].astype("Int64")
    out.loc[background, "density_images"] = pd.NA
    density = out["scaled_colonies"].to_numpy(float, na_value=np.nan) / out["area_m2"]
    out["density_per_m2"] = density
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
        "density_images",
        "density_per_m2",
    ]
    return out[columns]


def _log_mixed_scales(images: pd.DataFrame, keys: list[str]) -> None:
    """Name the groups whose images have a scale only in part: their density leaves the
    others out."""
    # an image's scale is the same for its predictions and annotations: one line per group
    known = images.assign(scaled=images["valid_area_m2"].notna()).drop_duplicates("image")
    for group, scaled in known.groupby(keys, sort=False)["scaled"]:
        if 0 < scaled.sum() < len(scaled):
            label = " / ".join(map(str, group if isinstance(group, tuple) else (group,)))
            log.warning(
                "Group %s: %d of %d images have a scale; its colony density counts the "
                "colonies of those %d over their area (density_images), the others' colonies "
                "count in `colonies` only. Give every image a scale (--mm-per-pixel or "
                "--quadrat-size-cm) for a density over all of them",
                label, int(scaled.sum()), len(scaled), int(scaled.sum()),
            )  # fmt: skip


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
