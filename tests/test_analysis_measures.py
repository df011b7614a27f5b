"""Colony measures and scales against exact geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_analysis_synthetic import disc

from analysis.measures import measure_colony, touches_edge
from analysis.scale import Scale, ScaleError, ScaleSpec, parse_quadrat_size
from analysis.sources import Colony


def colony_of(mask: np.ndarray) -> Colony:
    return Colony.from_mask(1, 1, mask)


def test_square_of_100_px_at_2_mm_is_400_cm2_exactly():
    mask = np.zeros((300, 300), bool)
    mask[50:150, 120:220] = True
    values = measure_colony(colony_of(mask), Scale(2.0, "--mm-per-pixel 2"))
    assert values["area_px"] == 10_000
    assert values["area_cm2"] == 400.0  # 20 cm x 20 cm
    assert (values["centroid_row"], values["centroid_col"]) == (99.5, 169.5)
    # Feret: the diagonal, between the pixel-centre (99 px) and pixel-edge (100 px) spans
    assert 99 * math.sqrt(2) <= values["feret_px"] <= 100 * math.sqrt(2)
    assert values["feret_cm"] == pytest.approx(values["feret_px"] * 0.2)


@pytest.mark.parametrize("radius", [10, 25, 60])
def test_disc_perimeter_is_within_2_percent_of_2_pi_r(radius):
    size = 2 * radius + 20
    mask = disc((size, size), (size // 2, size // 2), radius)
    values = measure_colony(colony_of(mask), None)
    assert values["perimeter_px"] == pytest.approx(2 * math.pi * radius, rel=0.02)
    assert values["area_px"] == mask.sum()
    assert values["feret_px"] == pytest.approx(2 * radius, rel=0.05)
    assert "area_cm2" not in values  # no scale: pixels only


def test_centroid_is_in_image_coordinates_not_the_crop():
    mask = disc((200, 300), (120, 210), 12)
    values = measure_colony(colony_of(mask), None)
    assert (values["centroid_row"], values["centroid_col"]) == pytest.approx((120, 210))


def test_quadrat_size_gives_the_scale_and_refuses_non_square_pixels():
    assert parse_quadrat_size("50") == (50, 50) and parse_quadrat_size("100x50") == (100, 50)
    scale = ScaleSpec(quadrat_cm=(50, 50)).for_image("q.jpg", (1000, 1000))
    assert scale.mm_per_pixel == 0.5 and scale.cm2(10_000) == pytest.approx(25.0)
    with pytest.raises(ScaleError, match="q.jpg.*square pixels"):
        ScaleSpec(quadrat_cm=(50, 50)).for_image("q.jpg", (1000, 2000))
    with pytest.raises(ScaleError, match="W or WxH"):
        parse_quadrat_size("fifty")
    assert ScaleSpec().for_image("q.jpg", (10, 10)) is None


def test_a_georeference_gives_the_scale_unless_the_command_line_overrides_it():
    own = Scale(2.0, "georeference", mm2_per_pixel=3.8)  # a geographic CRS: not square
    assert own.cm2(100) == pytest.approx(3.8) and own.cm(10) == pytest.approx(2.0)
    assert ScaleSpec().for_image("m.tif", (5, 5), own) is own
    assert ScaleSpec(mm_per_pixel=3).for_image("m.tif", (5, 5), own).mm_per_pixel == 3
    assert ScaleSpec(mm_per_pixel=3).for_image("m.tif", (5, 5), own).cm2(100) == pytest.approx(9)


def test_touches_edge_of_image_or_counted_area():
    valid = np.ones((50, 50), bool)
    inner = colony_of(disc((50, 50), (25, 25), 5))
    assert not touches_edge(inner, valid)
    assert touches_edge(colony_of(disc((50, 50), (2, 25), 5)), valid)  # image border
    valid[:, 30:] = False  # the quadrat ends at column 30
    assert touches_edge(inner, valid)
