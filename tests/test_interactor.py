"""The click interactor's core (interactor/): cache, prompt checks, colony rule, CVAT answer.

Most tests use a STAND-IN predictor (SAM with random weights answers noise): its
"embedding" is the frame itself, and it decodes a click as the pixels of the clicked
colour, everywhere on the frame (as SAM leaks onto a look-alike colony), minus the
connected regions under negative clicks. Answers are read by an independent model of
CVAT's UI (tests/cvat_interactor_model.py). The real SamClickPredictor is checked against
segment-anything's SamPredictor on a tiny SAM, and smoke-tested with ViT-B.
"""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
from cvat_interactor_model import (
    NO_SHAPES,
    CvatError,
    CvatTypeError,
    consume_masks,
    consume_polygons,
    crop_mask,
    polygon_area_mask,
)

from interactor.answer import NOTHING_FOUND, answer, encode_mask
from interactor.cache import BUDGET_VARIABLE, EmbeddingCache, cache_budget_bytes, frame_key
from interactor.clicks import (
    BadPrompt,
    ClickSegmenter,
    Decoded,
    FrameEmbedding,
    Prompt,
    parse_prompt,
)
from interactor.colony import keep_colony

HEIGHT, WIDTH = 240, 320
BACKGROUND = (40, 60, 90)
RED, GREEN, YELLOW = (200, 60, 50), (60, 180, 80), (220, 200, 40)
# centre (x, y), outer radius, inner radius (0: a disc)
COLONY_A = ((70, 80), 35, 0)  # red disc
RING_B = ((210, 120), 55, 20)  # green ring: a colony with a hole of background
DISC_C = ((60, 190), 18, 0)  # yellow disc
LOOKALIKE_D = ((150, 200), 15, 0)  # red again: SAM's mask for A leaks onto it


def disc(shape, centre, outer, inner=0) -> np.ndarray:
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    r2 = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2
    return (r2 <= outer**2) & (r2 > inner**2 if inner else True)


def make_frame(shape=(HEIGHT, WIDTH), shift: int = 0) -> np.ndarray:
    frame = np.empty((*shape, 3), np.uint8)
    frame[:] = BACKGROUND
    for (centre, outer, inner), colour in (
        (COLONY_A, RED),
        (RING_B, GREEN),
        (DISC_C, YELLOW),
        (LOOKALIKE_D, RED),
    ):
        frame[disc(shape, (centre[0] + shift, centre[1]), outer, inner)] = colour
    return frame


def png(frame: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", frame[..., ::-1])
    assert ok
    return data.tobytes()


def expected(shape_def, shape=(HEIGHT, WIDTH)) -> np.ndarray:
    centre, outer, inner = shape_def
    return disc(shape, centre, outer, inner)


class StandIn:
    """A predictor with known answers; counts encoder and decoder calls."""

    def __init__(self, ious=(0.9, 0.7, 0.5), corals=(0.9, 0.3, 0.6), coral_head=True):
        self.ious, self.corals, self.coral_head = ious, corals, coral_head
        self.embedded: list[tuple[int, int]] = []
        self.decoded: list[bool] = []

    def embed(self, rgb: np.ndarray) -> FrameEmbedding:
        self.embedded.append(rgb.shape[:2])
        return FrameEmbedding(rgb.copy(), rgb.shape[:2], rgb.shape[:2])

    @staticmethod
    def _at(points: np.ndarray, width: int, height: int):
        for x, y in points:
            yield min(int(y), height - 1), min(int(x), width - 1)

    def colony(self, rgb: np.ndarray, prompt: Prompt) -> np.ndarray:
        height, width = rgb.shape[:2]
        mask = np.zeros((height, width), bool)
        for row, col in self._at(prompt.positives, width, height):
            colour = rgb[row, col]
            if tuple(colour) != BACKGROUND:
                mask |= (rgb == colour).all(-1)  # every pixel of that colour: leaks
        for row, col in self._at(prompt.negatives, width, height):
            same = (rgb == rgb[row, col]).all(-1).astype(np.uint8)
            _, labels = cv2.connectedComponents(same, connectivity=8)
            mask &= labels != labels[row, col]
        return mask

    def decode(self, embedding: FrameEmbedding, prompt: Prompt, multimask: bool) -> Decoded:
        self.decoded.append(multimask)
        colony = self.colony(embedding.features, prompt)
        coral = np.asarray(self.corals, float) if self.coral_head else None
        if not multimask:
            return Decoded(
                colony[None], np.asarray(self.ious[:1]), None if coral is None else coral[:1]
            )
        box = np.zeros_like(colony)
        if colony.any():
            rows, cols = np.flatnonzero(colony.any(1)), np.flatnonzero(colony.any(0))
            box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
        square = np.zeros_like(colony)
        (row, col), *_ = self._at(prompt.positives, colony.shape[1], colony.shape[0])
        square[max(row - 2, 0) : row + 3, max(col - 2, 0) : col + 3] = colony.any()
        return Decoded(np.stack([colony, box, square]), np.asarray(self.ious, float), coral)


class Frame:
    """A frame's bytes and a decoder that counts its calls."""

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb, self.data, self.decodes = rgb, png(rgb), 0

    def decode(self) -> np.ndarray:
        self.decodes += 1
        return self.rgb


def click(x, y, negatives=(), box=None) -> Prompt:
    return Prompt([[x, y]], list(negatives), box)


def segmenter(predictor=None, budget=64 * 2**20, choose="iou") -> ClickSegmenter:
    return ClickSegmenter(predictor or StandIn(), EmbeddingCache(budget), choose)


# ------------------------------------------------------------------ one click, one object


def test_a_click_inside_a_colony_gives_exactly_that_colony_as_one_cvat_object():
    frame, predictor = Frame(make_frame()), StandIn()
    result = segmenter(predictor).segment(frame.data, frame.decode, click(70.4, 80.7))
    colony = expected(COLONY_A)
    # the stand-in's mask also holds the look-alike D; the colony rule drops it
    assert predictor.colony(frame.rgb, click(70, 80))[expected(LOOKALIKE_D)].all()
    assert result.mask is not None and np.array_equal(result.mask, colony)
    assert predictor.decoded == [True], "one click: SAM's three masks"
    assert result.score == 0.9 and result.coral == 0.9 and result.encoder_ran
    reply = json.loads(json.dumps(answer(result.mask, result.score)))
    outcome = consume_masks(reply, WIDTH, HEIGHT)
    assert outcome.message is None and len(outcome.objects) == 1
    assert np.array_equal(outcome.objects[0], colony)


def test_a_colony_with_a_hole_keeps_it_in_mask_mode_and_is_filled_in_polygon_mode():
    frame = Frame(make_frame())
    (cx, cy), outer, _ = RING_B
    result = segmenter().segment(frame.data, frame.decode, click(cx + 40, cy))
    ring = expected(RING_B)
    assert np.array_equal(result.mask, ring) and not result.mask[cy, cx]
    reply = answer(result.mask, result.score)
    (mask,) = consume_masks(reply, WIDTH, HEIGHT).objects
    assert np.array_equal(mask, ring), "CVAT's mask mode stores the RLE: the hole stays"
    (polygon,) = consume_polygons(reply, WIDTH, HEIGHT).objects
    filled = polygon_area_mask(polygon, WIDTH, HEIGHT)
    assert filled[cy, cx], "polygon mode keeps the outer contour only: the hole is filled"
    whole = disc((HEIGHT, WIDTH), (cx, cy), outer)
    assert (filled & whole).sum() / (filled | whole).sum() > 0.98, "the ring's outline, filled"


def test_a_negative_click_removes_the_region_it_marks():
    frame, predictor = Frame(make_frame()), StandIn()
    prompt = Prompt([[70, 80], [60, 190]], [[60, 185]])  # A and C, then "not C"
    result = segmenter(predictor).segment(frame.data, frame.decode, prompt)
    assert predictor.decoded == [False], "several clicks: one mask"
    assert np.array_equal(result.mask, expected(COLONY_A))
    (mask,) = consume_masks(answer(result.mask), WIDTH, HEIGHT).objects
    assert not mask[expected(DISC_C)].any()


def test_nothing_found_answers_no_shapes_and_cvat_creates_nothing_without_error():
    frame = Frame(make_frame())
    result = segmenter().segment(frame.data, frame.decode, click(300, 10))  # background
    assert result.mask is None and result.score == 0.0
    reply = answer(result.mask, result.score)
    assert reply == NOTHING_FOUND == {"shapes": []}
    assert reply is not NOTHING_FOUND, "a fresh dict: the handler may not mutate a shared one"
    for consume in (consume_masks, consume_polygons):
        outcome = consume(reply, WIDTH, HEIGHT)
        assert outcome.objects == [] and outcome.message == NO_SHAPES


def test_an_all_background_mask_never_becomes_an_rle():
    empty = np.zeros((HEIGHT, WIDTH), bool)
    assert answer(empty, 0.9) == {"shapes": []}
    with pytest.raises(ValueError, match="empty"):
        encode_mask(empty)
    # what it would cost: 6+ numbers without foreground is an error in CVAT's UI ...
    bad = {"shapes": [{"type": "mask", "points": [WIDTH * HEIGHT, 0, 0, 0, WIDTH - 1, HEIGHT - 1]}]}
    with pytest.raises(CvatError, match="Empty contour received from state"):
        consume_masks(bad, WIDTH, HEIGHT)
    # ... while CVAT's own "empty" marker (fewer than 6 numbers) is skipped
    marker = {"shapes": [{"type": "mask", "points": [0, 0, 0, 0, 0]}]}
    assert consume_masks(marker, WIDTH, HEIGHT).message == NO_SHAPES


def test_the_answer_is_the_size_of_the_colony_not_of_the_frame():
    side = 1920
    mask = disc((side, side), (900, 700), 60)
    text = json.dumps(answer(mask, 0.9))
    assert len(text) < 20_000
    (decoded,) = consume_masks(json.loads(text), side, side).objects
    assert np.array_equal(decoded, mask)
    full_frame = len(json.dumps({"mask": mask.astype(np.uint8).tolist()}))
    assert full_frame > 10_000_000, "the legacy full-frame list: ~11 MB on every click"


def test_the_confidence_attribute_would_hide_a_low_iou_colony():
    colony = expected(COLONY_A)
    assert answer(colony, 0.3)["shapes"][0]["attributes"] == [], "left out by default"
    with_confidence = answer(colony, 0.3, confidence=True)
    assert with_confidence["shapes"][0]["attributes"] == [{"spec_id": 0, "value": "0.3000"}]
    assert consume_masks(with_confidence, WIDTH, HEIGHT).message == NO_SHAPES
    assert len(consume_masks(answer(colony, 0.3), WIDTH, HEIGHT).objects) == 1


# ------------------------------------------------------------------ the embedding cache


def test_a_second_click_on_the_same_frame_does_not_run_the_encoder():
    frame, other, predictor = Frame(make_frame()), Frame(make_frame(shift=3)), StandIn()
    clicks = segmenter(predictor)
    first = clicks.segment(frame.data, frame.decode, click(70, 80))
    second = clicks.segment(frame.data, frame.decode, Prompt([[70, 80], [60, 190]]))
    assert first.encoder_ran and not second.encoder_ran
    assert len(predictor.embedded) == 1 and frame.decodes == 1, "a hit does not even decode"
    assert "encoder" in first.seconds and "encoder" not in second.seconds
    assert np.array_equal(second.mask, expected(COLONY_A) | expected(DISC_C))
    third = clicks.segment(other.data, other.decode, click(73, 80))
    assert third.encoder_ran and len(predictor.embedded) == 2 and other.decodes == 1
    assert (clicks.cache.hits, clicks.cache.misses, len(clicks.cache)) == (1, 2, 2)


def test_frames_are_evicted_least_recently_used_first_at_the_budget():
    frames = [Frame(make_frame(shift=s)) for s in (0, 2, 4)]
    predictor = StandIn()
    per_frame = frames[0].rgb.nbytes
    clicks = segmenter(predictor, budget=2 * per_frame)
    for frame in frames[:2]:
        clicks.segment(frame.data, frame.decode, click(75, 80))
    clicks.segment(frames[0].data, frames[0].decode, click(75, 80))  # 0 is now recent
    clicks.segment(frames[2].data, frames[2].decode, click(75, 80))  # evicts 1
    assert len(predictor.embedded) == 3 and clicks.cache.evictions == 1
    assert frame_key(frames[1].data) not in clicks.cache
    assert clicks.cache.bytes == 2 * per_frame
    clicks.segment(frames[0].data, frames[0].decode, click(75, 80))
    assert len(predictor.embedded) == 3, "frame 0 survived: it was used after frame 1"
    clicks.segment(frames[1].data, frames[1].decode, click(75, 80))
    assert len(predictor.embedded) == 4


class Blob:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


def test_cache_counts_bytes_and_evicts_in_lru_order():
    cache = EmbeddingCache(300)
    for key in "abc":
        assert cache.put(key, Blob(100))
    assert cache.get("a") is not None  # b is now the least recently used
    assert cache.get("zz") is None
    cache.put("d", Blob(100))
    assert "b" not in cache and all(k in cache for k in "acd")
    assert (cache.hits, cache.misses, cache.evictions, cache.bytes, len(cache)) == (1, 1, 1, 300, 3)
    cache.put("e", Blob(250))  # evicts c, a and d, oldest first... until it fits
    assert [k for k in "acde" if k in cache] == ["e"] and cache.evictions == 4
    cache.put("e", Blob(50))  # replacing an entry counts its new size only
    assert cache.bytes == 50
    assert not cache.put("huge", Blob(301)), "an entry over the budget is not kept"
    assert "huge" not in cache and cache.bytes == 50
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0
    assert not EmbeddingCache(0).put("a", Blob(1)), "a budget of 0 keeps nothing"


@pytest.mark.parametrize(
    ("raw", "mib"), [(None, 512), ("", 512), ("256", 256), (" 0.5 ", 0.5), ("0", 0)]
)
def test_cache_budget_from_the_environment(monkeypatch, raw, mib):
    if raw is None:
        monkeypatch.delenv(BUDGET_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(BUDGET_VARIABLE, raw)
    assert cache_budget_bytes() == int(mib * 2**20)


@pytest.mark.parametrize("raw", ["lots", "-1", "nan", "inf", "512MB"])
def test_a_bad_cache_budget_names_the_variable(monkeypatch, raw):
    monkeypatch.setenv(BUDGET_VARIABLE, raw)
    with pytest.raises(ValueError, match=BUDGET_VARIABLE):
        cache_budget_bytes()


def test_frame_key_is_the_hash_of_the_bytes():
    assert frame_key(b"abc") == frame_key(b"abc") != frame_key(b"abd")
    assert len(frame_key(b"")) == 64


# ------------------------------------------------------------------ the single-click choice


def test_choose_coral_prefers_the_mask_the_coral_head_calls_coral():
    # the colony's box (whole reef patch): best IoU, background for the coral head
    predictor = StandIn(ious=(0.80, 0.95, 0.5), corals=(0.9, 0.1, 0.5))
    frame = Frame(make_frame())
    by_iou = segmenter(predictor).segment(frame.data, frame.decode, click(70, 80))
    by_coral = segmenter(predictor, choose="coral").segment(frame.data, frame.decode, click(70, 80))
    colony = expected(COLONY_A)
    assert by_iou.mask.sum() > colony.sum() and by_iou.score == 0.95, "SAM's rule: the box"
    assert np.array_equal(by_coral.mask, colony) and by_coral.coral == 0.9
    assert by_coral.score == 0.80, "the score stays SAM's predicted IoU"


def test_choose_coral_without_a_coral_head_falls_back_to_iou_and_says_so_once(caplog):
    predictor = StandIn(ious=(0.80, 0.95, 0.5), coral_head=False)
    frame = Frame(make_frame())
    clicks = segmenter(predictor, choose="coral")
    with caplog.at_level(logging.WARNING, logger="interactor"):
        for _ in range(3):
            result = clicks.segment(frame.data, frame.decode, click(70, 80))
    assert result.score == 0.95 and result.coral is None
    assert sum("coral head" in r.getMessage() for r in caplog.records) == 1


def test_the_next_candidate_is_used_when_the_best_one_is_empty():
    class EmptyFirst(StandIn):
        def decode(self, embedding, prompt, multimask):
            decoded = super().decode(embedding, prompt, multimask)
            decoded.masks[0] = False
            return decoded

    frame = Frame(make_frame())
    result = segmenter(EmptyFirst()).segment(frame.data, frame.decode, click(70, 80))
    assert result.score == 0.7, "the colony's box, the second by IoU"


def test_choose_must_be_known():
    with pytest.raises(ValueError, match="choose"):
        segmenter(choose="area")


# ------------------------------------------------------------------ the colony rule


def _mask(*shapes) -> np.ndarray:
    return np.logical_or.reduce([expected(s) for s in shapes])


def test_colony_keeps_the_components_under_positive_clicks():
    mask = _mask(COLONY_A, DISC_C, LOOKALIKE_D)
    both = keep_colony(mask, Prompt([[70, 80], [60, 190]]))
    assert np.array_equal(both, _mask(COLONY_A, DISC_C))
    # a positive click outside the mask: the nearest component without a negative click
    near_c = keep_colony(mask, Prompt([[60, 215]], [[150, 200]]))
    assert np.array_equal(near_c, expected(DISC_C))
    near_d = keep_colony(mask, Prompt([[150, 225]]))
    assert np.array_equal(near_d, expected(LOOKALIKE_D))
    # clicks on the frame's far edges are on its last pixels
    edge = np.zeros((10, 10), bool)
    edge[9, 9] = True
    assert keep_colony(edge, Prompt([[10, 10]]))[9, 9]


def test_colony_negative_clicks_remove_components_but_not_the_clicked_colony():
    mask = _mask(COLONY_A, DISC_C)
    # under a positive and a negative click: SAM saw both and joined them, so it stays
    assert np.array_equal(keep_colony(mask, Prompt([[70, 80]], [[75, 85]])), expected(COLONY_A))
    # box only: the largest component inside the box that no negative click marks
    box = [0, 0, WIDTH, HEIGHT]
    assert np.array_equal(keep_colony(mask, Prompt(box=box)), expected(COLONY_A))
    assert np.array_equal(keep_colony(mask, Prompt([], [[70, 80]], box)), expected(DISC_C))
    assert keep_colony(mask, Prompt([], [[70, 80], [60, 190]], box)) is None
    assert keep_colony(mask, Prompt(box=[250, 0, 320, 40])) is None, "nothing in the box"
    assert keep_colony(np.zeros_like(mask), Prompt([[70, 80]])) is None


def test_only_negative_clicks_find_nothing_without_decoding():
    predictor, frame = StandIn(), Frame(make_frame())
    result = segmenter(predictor).segment(frame.data, frame.decode, Prompt([], [[70, 80]]))
    assert result.mask is None and predictor.decoded == []


# ------------------------------------------------------------------ the request's prompt


def body(**keys) -> dict:
    return {"image": "", "pos_points": [[10, 20]], "neg_points": [], "obj_bbox": [], **keys}


def test_parse_prompt_reads_points_and_boxes():
    prompt = parse_prompt(body(pos_points=[[10.5, 20.25], [WIDTH, HEIGHT]],
                               neg_points=[[0, 0]], threshold=0.5, text_prompts=["x"]),
                          WIDTH, HEIGHT)  # fmt: skip
    assert prompt.positives.tolist() == [[10.5, 20.25], [WIDTH, HEIGHT]]
    assert prompt.negatives.tolist() == [[0, 0]] and prompt.box is None
    for no_box in ([], None):
        assert parse_prompt(body(obj_bbox=no_box), WIDTH, HEIGHT).box is None
    assert parse_prompt({"pos_points": [[1, 2]]}).negatives.shape == (0, 2)
    boxed = parse_prompt(body(obj_bbox=[[30, 40.5], [5, 60]]), WIDTH, HEIGHT)
    assert boxed.box.tolist() == [5, 40.5, 30, 60], "corners in either order"
    assert not boxed.is_single_click and parse_prompt(body()).is_single_click


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"pos_points": []}, "pos_points"),
        ({"pos_points": None}, "pos_points"),
        ({"pos_points": "10,20"}, "pos_points"),
        ({"pos_points": [[10]]}, "pos_points"),
        ({"pos_points": [[10, 20, 30]]}, "pos_points"),
        ({"pos_points": [[10, "20"]]}, "pos_points"),
        ({"pos_points": [[True, 20]]}, "pos_points"),
        ({"pos_points": [[float("nan"), 20]]}, "pos_points"),
        ({"pos_points": [10, 20]}, "pos_points"),
        ({"pos_points": [[WIDTH + 0.5, 20]]}, "pos_points"),
        ({"pos_points": [[-0.1, 20]]}, "pos_points"),
        ({"pos_points": [[10, HEIGHT + 1]]}, "pos_points"),
        ({"neg_points": [[10, 20], "x"]}, "neg_points"),
        ({"neg_points": [[10, -5]]}, "neg_points"),
        ({"neg_points": {"x": 1}}, "neg_points"),
        ({"obj_bbox": [[1, 2]]}, "obj_bbox"),
        ({"obj_bbox": [1, 2, 3, 4]}, "obj_bbox"),
        ({"obj_bbox": [[1, 2], [3]]}, "obj_bbox"),
        ({"obj_bbox": [[1, 2], [3, 4], [5, 6], [7, 8]]}, "obj_bbox"),
        ({"obj_bbox": "box"}, "obj_bbox"),
        ({"obj_bbox": [[1, 2], [WIDTH + 1, 4]]}, "obj_bbox"),
    ],
)
def test_parse_prompt_names_the_bad_key(keys, named):
    with pytest.raises(BadPrompt, match=named):
        parse_prompt(body(**keys), WIDTH, HEIGHT)


def test_parse_prompt_needs_pos_points_and_an_object():
    with pytest.raises(BadPrompt, match="pos_points"):
        parse_prompt({"image": ""})
    with pytest.raises(BadPrompt, match="JSON object"):
        parse_prompt([[1, 2]])


def test_points_outside_the_frame_are_refused_cached_or_not():
    predictor, frame = StandIn(), Frame(make_frame())
    clicks = segmenter(predictor)
    outside = parse_prompt(body(pos_points=[[WIDTH + 5, 10]]))  # no size known yet: accepted
    with pytest.raises(BadPrompt, match=f"outside the {WIDTH} x {HEIGHT} frame"):
        clicks.segment(frame.data, frame.decode, outside)
    assert predictor.embedded == [], "refused before the encoder runs"
    clicks.segment(frame.data, frame.decode, click(70, 80))
    with pytest.raises(BadPrompt, match="pos_points"):
        clicks.segment(frame.data, frame.decode, outside)  # checked against the cached size
    assert frame.decodes == 2 and len(predictor.embedded) == 1


# ------------------------------------------------------------------ CVAT's RLE


def _random_masks():
    rng = np.random.default_rng(7)
    for _ in range(60):
        shape = tuple(rng.integers(1, 30, size=2))
        yield rng.random(shape) < rng.uniform(0.02, 0.98)
    single = np.zeros((9, 11), bool)
    single[4, 7] = True
    yield single
    yield np.ones((5, 7), bool)  # touches every edge, starts with foreground
    corner = np.zeros((6, 6), bool)
    corner[0, 0] = corner[5, 5] = True  # box = frame, first and last pixel set
    yield corner
    yield expected(RING_B)


def test_encode_mask_decodes_back_with_cvats_rle_rules():
    for mask in _random_masks():
        if not mask.any():
            continue
        points = encode_mask(mask)
        assert all(type(v) is int for v in points), "plain ints for json"
        runs, (left, top, right, bottom) = points[:-4], points[-4:]
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert (left, top, right, bottom) == (cols[0], rows[0], cols[-1], rows[-1]), "tight box"
        assert sum(runs) == (right - left + 1) * (bottom - top + 1)
        assert all(r > 0 for r in runs[1:]) and runs[0] >= 0
        assert (runs[0] == 0) == bool(mask[top, left])
        height, width = mask.shape
        assert np.array_equal(crop_mask(points, width, height), mask)


def test_the_consumer_model_rejects_what_cvat_rejects():
    # a sanity check of the model itself, on answers CVAT's UI is known to refuse
    for reply in ([], None, {"points": [1, 2]}, {"blob": "..."}, "text", {"shapes": {}}):
        with pytest.raises(CvatTypeError):
            consume_masks(reply, WIDTH, HEIGHT)
    with pytest.raises(CvatTypeError):
        consume_masks({"shapes": [{"type": "mask"}]}, WIDTH, HEIGHT)
    with pytest.raises(CvatTypeError):
        consume_masks({"mask": []}, WIDTH, HEIGHT)
    ignored = {"shapes": [{"type": "polygon", "points": [1, 2, 3, 4, 5, 6]}]}
    assert consume_masks(ignored, WIDTH, HEIGHT).message == NO_SHAPES
    # the legacy full-frame answer still works in >= 2.60
    legacy = {"mask": expected(COLONY_A).astype(int).tolist()}
    (mask,) = consume_masks(legacy, WIDTH, HEIGHT).objects
    assert np.array_equal(mask, expected(COLONY_A))
    # one malformed attribute drops them all, the confidence included
    colony = answer(expected(COLONY_A), 0.3, confidence=True)
    colony["shapes"][0]["attributes"].append({"spec_id": 1, "value": 2})
    assert len(consume_masks(colony, WIDTH, HEIGHT).objects) == 1


# ------------------------------------------------------------------ the real predictor


@pytest.fixture(scope="module")
def tiny_sam():
    import torch

    from models.coralscop import SAM_TINY, build_coralscop

    torch.manual_seed(3)
    return build_coralscop(SAM_TINY)


def test_sam_click_predictor_decodes_as_segment_anythings_predictor(tiny_sam):
    from segment_anything import SamPredictor

    from interactor.clicks import SamClickPredictor

    rgb = make_frame()
    predictor = SamClickPredictor(tiny_sam, use_category=True)
    embedding = predictor.embed(rgb)
    assert tuple(embedding.features.shape) == (1, 256, 64, 64)
    assert embedding.original_size == (HEIGHT, WIDTH) and embedding.input_size == (768, 1024)
    assert embedding.nbytes == 4 * 2**20
    reference = SamPredictor(tiny_sam)
    reference.set_image(rgb)
    for prompt, multimask in (
        (click(70.5, 80.2), True),
        (Prompt([[70, 80], [60, 190]], [[210, 120]]), False),
        (Prompt([[70, 80]], [], [30, 40, 110, 120]), False),
    ):
        decoded = predictor.decode(embedding, prompt, multimask)
        coords = np.concatenate([prompt.positives, prompt.negatives])
        labels = np.r_[np.ones(len(prompt.positives)), np.zeros(len(prompt.negatives))]
        masks, iou, _ = reference.predict(coords, labels, prompt.box, multimask_output=multimask)
        assert decoded.masks.dtype == bool and decoded.masks.shape == masks.shape
        assert np.array_equal(decoded.masks, masks) and np.allclose(decoded.iou, iou, atol=1e-6)
        assert (
            decoded.coral.shape == iou.shape and ((decoded.coral >= 0) & (decoded.coral <= 1)).all()
        )
    stock = SamClickPredictor(tiny_sam, use_category=False)
    assert stock.decode(embedding, click(70, 80), True).coral is None


def test_the_coral_probability_is_the_category_heads_coral_class(tiny_sam):
    import torch

    from interactor.clicks import SamClickPredictor

    head = tiny_sam.mask_decoder.cate_prediction_head.layers[-1]
    saved = head.weight.clone(), head.bias.clone()
    try:
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(torch.tensor([-2.0, 2.0]))  # (background, coral)
        predictor = SamClickPredictor(tiny_sam)
        decoded = predictor.decode(predictor.embed(make_frame()), click(70, 80), True)
        assert np.allclose(decoded.coral, 1 / (1 + np.exp(-4.0)))
    finally:
        with torch.no_grad():
            head.weight.copy_(saved[0])
            head.bias.copy_(saved[1])


def test_one_loading_path_for_the_detector_and_the_interactor(monkeypatch):
    import inferencer
    from interactor.clicks import SamClickPredictor
    from models.coralscop import SAM_TINY

    calls = []
    real = inferencer.load_sam_for_device

    def recorded(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(inferencer, "load_sam_for_device", recorded)
    predictor = SamClickPredictor.load(None, "cpu", SAM_TINY, "torch", bf16=False)
    segmenter_ = inferencer.CoralSCoPSegmenter(None, "cpu", None, SAM_TINY, "torch", bf16=False)
    assert len(calls) == 2
    assert predictor.encoder_runtime == segmenter_.encoder_runtime == "torch"
    assert predictor.use_category and not predictor.bf16


def test_real_vit_b_with_random_weights_two_clicks_one_encoder_run():
    """The real path end to end (random ViT-B weights, PyTorch encoder on the CPU): the
    masks are noise, but their types, sizes, the cache and the answer are checked."""
    from interactor.clicks import SamClickPredictor

    side = 512
    predictor = SamClickPredictor.load(None, "cpu", encoder_runtime="torch")
    assert predictor.encoder_runtime == "torch" and predictor.use_category
    rgb = make_frame((side, side))
    frame = Frame(rgb)
    clicks = ClickSegmenter(predictor, EmbeddingCache(64 * 2**20), "coral")
    first = clicks.segment(frame.data, frame.decode, parse_prompt(body(), side, side))
    second = clicks.segment(
        frame.data,
        frame.decode,
        parse_prompt(body(pos_points=[[70, 80], [80.5, 90]], neg_points=[[300, 10]],
                          obj_bbox=[[20, 30], [200, 200]]), side, side),
    )  # fmt: skip
    assert first.encoder_ran and not second.encoder_ran and frame.decodes == 1
    assert clicks.cache.bytes == 4 * 2**20
    for result in (first, second):
        assert result.mask is None or (
            result.mask.dtype == bool and result.mask.shape == (side, side)
        )
        reply = json.loads(json.dumps(answer(result.mask, result.score)))
        outcome = consume_masks(reply, side, side)
        if result.mask is None:
            assert outcome.objects == [] and outcome.message == NO_SHAPES
        else:
            assert len(outcome.objects) == 1 and np.array_equal(outcome.objects[0], result.mask)
