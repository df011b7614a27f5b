"""Groups: from a CSV or a file-name pattern; mean cover, density, log2 size classes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.groups import groups_from_pattern, read_groups_csv, size_classes, summarize_groups
from analysis.sources import SourceError

STEMS = ["MOO_20230501_Q1", "MOO_20230501_Q2", "TIA_20230502_Q1"]


def test_groups_from_a_csv_by_file_name_or_stem(tmp_path):
    path = tmp_path / "groups.csv"
    path.write_text(
        "image,site,date\nMOO_20230501_Q1.jpg,MOO,2023-05-01\n"
        "MOO_20230501_Q2,MOO,2023-05-01\nTIA_20230502_Q1.JPG,TIA,2023-05-02\n"
    )
    table = read_groups_csv(path, {s: f"{s}.jpg" for s in STEMS})
    assert table.loc["TIA_20230502_Q1", "site"] == "TIA" and list(table.columns) == ["site", "date"]
    with pytest.raises(SourceError, match="no row for 1 image.*extra.jpg"):
        read_groups_csv(path, {**{s: s for s in STEMS}, "extra": "extra.jpg"})


def test_groups_from_a_file_name_pattern():
    table = groups_from_pattern(r"(?P<site>[A-Z]+)_(?P<date>\d{8})_Q(?P<quadrat>\d+)", STEMS)
    assert table.loc["MOO_20230501_Q2"].to_dict() == {
        "site": "MOO",
        "date": "20230501",
        "quadrat": "2",
    }
    with pytest.raises(SourceError, match="does not match 1 image.*odd"):
        groups_from_pattern(r"(?P<site>[A-Z]+)_", [*STEMS, "odd"])
    with pytest.raises(SourceError, match="name the parts"):
        groups_from_pattern(r"[A-Z]+", STEMS)


def test_group_cover_mean_spread_and_density():
    covers = {"MOO_20230501_Q1": 10.0, "MOO_20230501_Q2": 30.0, "TIA_20230502_Q1": 5.0}
    site = {s: s[:3] for s in STEMS}
    cover = pd.DataFrame(
        [
            {
                "image": s,
                "site": site[s],
                "source": "predicted",
                "class_index": k,
                "class": name,
                "cover_percent": value if k else 100 - value,
            }
            for s, value in covers.items()
            for k, name in ((0, "background"), (1, "Porites"))
        ]
    )
    images = pd.DataFrame(
        [{"image": s, "site": site[s], "source": "predicted", "valid_area_m2": 0.25} for s in STEMS]
    )
    colonies = pd.DataFrame(
        [
            {
                "image": s,
                "site": site[s],
                "source": "predicted",
                "class_index": 1,
                "genus": "Porites",
            }
            for s, n in zip(STEMS, (3, 1, 2), strict=True)
            for _ in range(n)
        ]
    )
    groups = summarize_groups(cover, images, colonies, ["site"]).set_index(["site", "class"])
    moo = groups.loc[("MOO", "Porites")]
    assert moo["images"] == 2 and moo["cover_mean"] == 20.0
    assert moo["cover_sd"] == pytest.approx(np.std([10, 30], ddof=1))
    assert moo["cover_se"] == pytest.approx(np.std([10, 30], ddof=1) / np.sqrt(2))
    assert moo["colonies"] == 4 and moo["area_m2"] == 0.5 and moo["density_per_m2"] == 8.0
    assert groups.loc[("TIA", "Porites"), "density_per_m2"] == 8.0
    assert pd.isna(groups.loc[("TIA", "background"), "colonies"])


def test_size_classes_are_log2_with_lower_bounds_inclusive():
    areas = [1.0, 1.9, 2.0, 3.99, 4.0, 16.0, 17.0]
    colonies = pd.DataFrame(
        {"source": "predicted", "genus": "Acropora", "area_cm2": areas, "area_px": 0, "g": "x"}
    )
    table = size_classes(colonies, ["g"]).set_index("size_class")
    assert table["colonies"].to_dict() == {0: 2, 1: 2, 2: 1, 3: 0, 4: 2}  # zeros kept
    assert (table.loc[4, "lower"], table.loc[4, "upper"], table.loc[4, "unit"]) == (16, 32, "cm2")
    assert table["fraction"].sum() == pytest.approx(1.0)


def test_density_counts_only_the_images_with_a_scale(caplog):
    """Issue 23 item 6: one image with a scale (0.25 m2, 3 colonies) and one without
    (5 colonies) in a group: the density is 3 / 0.25 = 12 per m2, not (3 + 5) / 0.25."""
    stems, scaled = ["A_1", "A_2"], {"A_1": 0.25, "A_2": np.nan}
    counts = {"A_1": 3, "A_2": 5}
    cover = pd.DataFrame(
        [
            {"image": s, "site": "A", "source": "predicted", "class_index": k, "class": name,
             "cover_percent": 50.0}
            for s in stems
            for k, name in ((0, "background"), (1, "Porites"))
        ]
    )  # fmt: skip
    images = pd.DataFrame(
        [
            {"image": s, "site": "A", "source": "predicted", "valid_area_m2": scaled[s]}
            for s in stems
        ]
    )
    colonies = pd.DataFrame(
        [
            {"image": s, "site": "A", "source": "predicted", "class_index": 1, "genus": "Porites"}
            for s in stems
            for _ in range(counts[s])
        ]
    )
    with caplog.at_level("WARNING", logger="coral"):
        groups = summarize_groups(cover, images, colonies, ["site"]).set_index(["site", "class"])
    porites = groups.loc[("A", "Porites")]
    assert porites["colonies"] == 3 + 5  # every colony is still counted
    assert porites["area_m2"] == 0.25 and porites["density_images"] == 1
    assert porites["density_per_m2"] == pytest.approx(3 / 0.25)
    assert pd.isna(groups.loc[("A", "background"), "density_images"])
    assert "Group A: 1 of 2 images have a scale" in caplog.text

    unscaled = images.assign(valid_area_m2=np.nan)
    groups = summarize_groups(cover, unscaled, colonies, ["site"]).set_index(["site", "class"])
    assert groups.loc[("A", "Porites"), "density_images"] == 0
    assert np.isnan(groups.loc[("A", "Porites"), "density_per_m2"])
