"""`compare`: synthetic surveys of one quadrat with known colony events, shifted and rotated."""

from __future__ import annotations

import shlex

import cv2
import numpy as np
import pandas as pd
import pytest
from test_analysis_synthetic import FINE, Instance, disc, write_png, write_prepared, write_two_stage

import reef_stats
from analysis.change import classify, colony_events, match
from analysis.sources import ClassInfo, Colony, colonies_of_class_map

SIZE = 240
ACROPORA, PORITES, POCILLOPORA, MONTIPORA, FUNGIA = (
    FINE.classes.index(n) for n in ("Acropora", "Porites", "Pocillopora", "Montipora", "Fungia")
)
EXPECTED = {  # event: (genus before, genus after)
    "grew": ("Acropora", "Acropora"),
    "same": ("Porites", "Porites"),
    "shrank": ("Fungia", "Fungia"),
    "died": ("Pocillopora", ""),
    "born": ("", "Porites"),
    "split": ("Acropora", "Acropora"),
    "fused": ("Montipora", "Montipora"),
}


def survey_maps() -> tuple[np.ndarray, np.ndarray]:
    """The quadrat at two dates, both in the first survey's frame."""
    shape = (SIZE, SIZE)
    before, after = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    before[40:60, 35:65] = ACROPORA
    after[40:60, 35:71] = ACROPORA  # grown 20 %: 600 -> 720 px
    for state in (before, after):
        state[disc(shape, (50, 185), 12)] = PORITES  # unchanged
    before[disc(shape, (120, 190), 13)] = FUNGIA
    after[disc(shape, (120, 190), 10)] = FUNGIA  # shrank
    before[disc(shape, (185, 45), 10)] = POCILLOPORA  # died
    after[disc(shape, (115, 110), 9)] = PORITES  # born
    before[160:182, 95:155] = ACROPORA
    after[160:182, 95:121] = ACROPORA  # split in two, 8 px apart
    after[160:182, 129:155] = ACROPORA
    before[disc(shape, (200, 175), 8)] = MONTIPORA
    before[disc(shape, (200, 200), 8)] = MONTIPORA
    after[192:209, 170:206] = MONTIPORA  # the two fused
    return before, after


def textured_photo(seed: int = 0) -> np.ndarray:
    """Features for the registration to find: blobs of several sizes."""
    rng = np.random.default_rng(seed)
    layers = [
        cv2.resize(
            rng.uniform(0, 255, (n, n)).astype(np.float32),
            (SIZE, SIZE),
            interpolation=cv2.INTER_CUBIC,
        )
        for n in (12, 30, 60)
    ]
    gray = np.clip(sum(layers) / 3, 0, 255).astype(np.uint8)
    return cv2.merge([gray, np.roll(gray, 7, axis=0), np.roll(gray, 7, axis=1)])


def shift_and_rotate(image: np.ndarray, interpolation: int) -> np.ndarray:
    """The second survey's camera: 5 degrees of rotation and a (9, -6) px shift."""
    matrix = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), 5.0, 1.0)
    matrix[:, 2] += (9, -6)
    return cv2.warpAffine(
        image, matrix, (SIZE, SIZE), flags=interpolation, borderMode=cv2.BORDER_REFLECT
    )


def write_surveys(tmp_path, moved: bool):
    before, after = survey_maps()
    photo = textured_photo()
    after_photo = photo
    if moved:
        after = shift_and_rotate(after, cv2.INTER_NEAREST)
        after_photo = shift_and_rotate(photo, cv2.INTER_LINEAR)
    stems = ("Q1_2023", "Q1_2024") if moved else ("Q1", "Q1")
    first = write_prepared(tmp_path / "survey_2023", {stems[0]: before}, photos={stems[0]: photo})
    second = write_prepared(
        tmp_path / "survey_2024", {stems[1]: after}, photos={stems[1]: after_photo}
    )
    return first, second


def read_changes(folder) -> pd.DataFrame:
    changes = pd.read_csv(folder / "changes.csv")
    return changes.fillna({"genus_before": "", "genus_after": ""})


def check_events(changes: pd.DataFrame, resampled: bool) -> None:
    assert sorted(changes["event"]) == sorted(EXPECTED)
    for row in changes.itertuples():
        assert (row.genus_before, row.genus_after) == EXPECTED[row.event], row.event
    by_event = changes.set_index("event")
    assert len(str(by_event.loc["split", "after_ids"]).split(";")) == 2
    assert len(str(by_event.loc["fused", "before_ids"]).split(";")) == 2
    # warped masks gain or lose a few edge pixels; aligned ones keep every pixel
    growth = pytest.approx(20, abs=1.5) if resampled else 20.0
    assert by_event.loc["grew", "change_percent"] == growth
    assert abs(by_event.loc["same", "change_percent"]) <= 5
    # 2 mm per pixel: cm2 = px * 0.04
    assert by_event.loc["grew", "area_before_cm2"] == pytest.approx(
        by_event.loc["grew", "area_before_px"] * 0.04
    )


def test_compare_registers_a_shifted_rotated_survey_and_gets_every_event(tmp_path):
    first, second = write_surveys(tmp_path, moved=True)
    groups = tmp_path / "groups.csv"
    groups.write_text("image,quadrat,date\nQ1_2023.jpg,Q1,2023-05-02\nQ1_2024.jpg,Q1,2024-05-07\n")
    out = tmp_path / "change"
    status = reef_stats.main(
        [
            "compare",
            str(first),
            str(second),
            "--groups",
            str(groups),
            "--mm-per-pixel",
            "2",
            "--output-dir",
            str(out),
        ]
    )
    assert status == 0
    changes = read_changes(out)
    check_events(changes, resampled=True)
    pair = pd.read_csv(out / "pairs.csv").iloc[0]
    assert pair["registration"].endswith("RANSAC homography") and pair["inliers"] >= 12
    assert (pair["date_before"], pair["date_after"]) == ("2023-05-02", "2024-05-07")
    overlay = cv2.imread(str(out / "overlays" / "Q1_2023__Q1_2024.png"))
    assert overlay is not None and overlay.shape[0] >= SIZE and overlay.shape[1] > SIZE


def test_compare_without_registration_on_aligned_surveys(tmp_path):
    first, second = write_surveys(tmp_path, moved=False)
    out = tmp_path / "change"
    assert (
        reef_stats.main(
            [
                "compare",
                str(first),
                str(second),
                "--no-register",
                "--mm-per-pixel",
                "2",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    check_events(read_changes(out), resampled=False)
    assert pd.read_csv(out / "pairs.csv").iloc[0]["registration"] == "none (--no-register)"


def test_a_moved_survey_without_registration_gets_events_wrong(tmp_path):
    """The registration is what makes the moved pair right (so the test above can fail)."""
    first, second = write_surveys(tmp_path, moved=True)
    groups = tmp_path / "groups.csv"
    groups.write_text("image,quadrat,date\nQ1_2023,Q1,2023-05-02\nQ1_2024,Q1,2024-05-07\n")
    out = tmp_path / "change"
    reef_stats.main(
        [
            "compare",
            str(first),
            str(second),
            "--groups",
            str(groups),
            "--no-register",
            "--output-dir",
            str(out),
        ]
    )
    events = sorted(pd.read_csv(out / "changes.csv")["event"])
    assert events != sorted(EXPECTED)


def test_compare_two_stage_outputs_with_their_photos(tmp_path, monkeypatch):
    """docs/reef_numbers.md's command: inference outputs (which do not keep the photos) of
    two surveys, paired by a groups CSV, photos from --images-before / --images-after."""
    before, after = survey_maps()
    photo = textured_photo(1)
    after, after_photo = (
        shift_and_rotate(after, cv2.INTER_NEAREST),
        shift_and_rotate(photo, cv2.INTER_LINEAR),
    )
    info = ClassInfo.from_names(FINE.classes)
    for year, class_map, image in (("2023", before, photo), ("2024", after, after_photo)):
        instances = [
            Instance(c.full(class_map.shape), c.class_index)
            for c in colonies_of_class_map(class_map, info)
        ]
        stem = f"MOO_Q7_{year}"
        write_two_stage(tmp_path / f"survey_{year}", {stem: instances}, shape=class_map.shape)
        write_png(tmp_path / "photos" / year / f"{stem}.jpg", image[..., ::-1])
    (tmp_path / "groups.csv").write_text(
        "image,site,quadrat,date\nMOO_Q7_2023.jpg,MOO,Q7,2023-05-02\n"
        "MOO_Q7_2024.jpg,MOO,Q7,2024-05-07\n"
    )
    monkeypatch.chdir(tmp_path)  # the page's relative paths
    command = (
        "compare survey_2023 survey_2024 --groups groups.csv --images-before photos/2023 "
        "--images-after photos/2024 --mm-per-pixel 2 --output-dir change"
    )
    assert reef_stats.main(shlex.split(command)) == 0
    check_events(read_changes(tmp_path / "change"), resampled=True)


def test_registration_needs_the_photos_and_says_so(tmp_path, caplog):
    first, second = write_surveys(tmp_path, moved=False)
    for photo in (second / "images" / "test").iterdir():
        photo.unlink()
    status = reef_stats.main(
        ["compare", str(first), str(second), "--output-dir", str(tmp_path / "out")]
    )
    assert status == 1 and not (tmp_path / "out").exists()
    assert "Q1.png: registration needs the photo; give --images-after" in caplog.text


def test_overlap_of_60_percent_of_the_smaller_colony_matches():
    big = Colony.from_mask(1, 1, np.pad(np.ones((10, 10), bool), ((0, 0), (0, 20))))
    small = np.zeros((10, 30), bool)
    small[:, 4:14] = True  # 60 of its 100 pixels on the big colony
    assert match([big], [Colony.from_mask(2, 1, small)]) == [(0, 0)]
    small[:, 4:14], small[:, 5:15] = False, True  # 50 %
    assert match([big], [Colony.from_mask(2, 1, small)]) == []
    assert [e.event for e in colony_events([big], [])] == ["died"]
    assert classify([big], [big]) == "same"
