"""Two-stage inference: CoralSCoP loading, category filter, fusion rule, the batch command."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models import coralscop
from models.coralscop import SAM_TINY, SamCheckpointError, build_coralscop, load_coralscop
from models.fusion import FusionSettings, fuse
from models.mask_generator import CoralMaskGenerator, GeneratorSettings

ROOT = Path(__file__).resolve().parents[1]
TINY = SAM_TINY
# few prompts, every filter off: a random tiny SAM still proposes masks
FEW_POINTS = dict(
    points_per_side=2,
    crop_n_layers=0,
    pred_iou_thresh=0.0,
    stability_score_thresh=0.0,
    min_mask_region_area=0,
)


def test_category_branch_has_coralscops_names_and_shapes():
    from segment_anything import sam_model_registry

    ours = build_coralscop().state_dict()
    stock = sam_model_registry["vit_b"]().state_dict()
    category = {k: tuple(v.shape) for k, v in ours.items() if k.startswith("mask_decoder.cate_")}
    assert set(ours) - set(category) == set(stock), "everything else is stock SAM ViT-B"
    for i in range(4):
        prefix = f"mask_decoder.cate_output_hypernetworks_mlps.{i}.layers"
        assert [category[f"{prefix}.{j}.weight"] for j in range(3)] == [
            (256, 256),
            (256, 256),
            (32, 256),
        ]
    prefix = "mask_decoder.cate_feature_projection_head.layers"
    assert [category[f"{prefix}.{j}.weight"] for j in range(3)] == [
        (256, 256),
        (256, 256),
        (32, 256),
    ]
    prefix = "mask_decoder.cate_prediction_head.layers"
    assert [category[f"{prefix}.{j}.weight"] for j in range(3)] == [
        (256, 4096),
        (256, 256),
        (2, 256),
    ]
    assert len(category) == 4 * 6 + 6 + 6


def test_checkpoints_load_strictly_stock_sam_without_filter_and_others_are_refused(
    tmp_path, caplog
):
    torch.manual_seed(0)
    state = build_coralscop(TINY).state_dict()
    torch.save(state, tmp_path / "vit_b_coralscop.pth")
    model, use_category = load_coralscop(tmp_path / "vit_b_coralscop.pth", TINY)
    assert use_category
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    stock = {k: v for k, v in state.items() if not k.startswith("mask_decoder.cate_")}
    torch.save(stock, tmp_path / "sam_vit_b.pth")
    with caplog.at_level("WARNING"):
        _, use_category = load_coralscop(tmp_path / "sam_vit_b.pth", TINY)
    assert not use_category and "category filter is off" in caplog.text.replace(
        "coral/background filter", "category filter"
    )
    broken = dict(state)
    del broken["mask_decoder.iou_token.weight"]
    broken["extra.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(
        SamCheckpointError,
        match=r"missing \['mask_decoder.iou_token.weight'\].*unexpected \['extra.weight'\]",
    ):
        load_coralscop(tmp_path / "broken.pth", TINY)


def _generator_with_category_bias(bias: tuple[float, float]) -> CoralMaskGenerator:
    torch.manual_seed(0)
    sam = build_coralscop(TINY)
    last = sam.mask_decoder.cate_prediction_head.layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor(bias))
    return CoralMaskGenerator(sam, True, GeneratorSettings(**FEW_POINTS))


def test_category_head_decides_which_sam_masks_survive():
    from dataset.reef_demo import render_sample

    image, _ = render_sample(0, 64)
    assert len(_generator_with_category_bias((10.0, -10.0)).generate(image)) == 0, (
        "always background"
    )
    coral = _generator_with_category_bias((-10.0, 10.0)).generate(image)
    assert len(coral) > 0 and torch.all(coral.coral_prob > 0.99)
    # with only background proposals, the instances come from the semantic map alone
    from inferencer import CoralSCoPSegmenter

    segmenter = CoralSCoPSegmenter(None, "cpu", GeneratorSettings(**FEW_POINTS), TINY)
    segmenter.generator = _generator_with_category_bias((10.0, -10.0))
    class_map = np.zeros((64, 64), np.int64)
    class_map[10:30, 10:30] = 2
    instances = segmenter.segment_instances(image, class_map, min_area=10)
    assert [(i.source, i.label, i.area) for i in instances] == [("semantic", 2, 400)]


def probability_maps() -> torch.Tensor:
    """3 classes on 40x40: class 1 on the left block, class 2 (weak) on the right block,
    an uncertain strip where no class reaches min_threshold."""
    probs = torch.zeros(3, 40, 40)
    probs[0] = 1.0
    probs[:, 5:20, 5:20] = torch.tensor([0.1, 0.9, 0.0])[:, None, None]
    probs[:, 5:20, 25:35] = torch.tensor([0.85, 0.0, 0.15])[
        :, None, None
    ]  # background wins per pixel
    probs[:, 25:35, 5:35] = torch.tensor([0.2, 0.1, 0.7])[:, None, None]
    probs[:, 36:40, :] = torch.tensor([0.02, 0.02, 0.02])[:, None, None]  # below min_threshold
    return probs


def mask(y0, y1, x0, x1, size=40) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def test_fusion_rule_labels_flags_adds_and_suppresses():
    probs = probability_maps()
    sam = torch.stack(
        [
            mask(5, 20, 5, 20),  # exactly the class-1 block -> class 1, confident
            mask(5, 20, 5, 20),  # a duplicate -> removed by NMS
            mask(5, 20, 25, 35),  # background wins inside -> dropped
            mask(25, 35, 5, 20),  # left half of the class-2 band -> class 2, confidence 0.7
            mask(36, 40, 0, 40),  # only uncounted pixels -> dropped
        ]
    )
    instances = fuse(
        probs,
        sam,
        FusionSettings(min_threshold=0.05, unsure_threshold=0.75, nms_threshold=0.5, min_area=20),
    )
    summary = sorted(
        (i.source, i.label, round(i.score, 3), i.unsure, i.area, i.box) for i in instances
    )
    assert summary == [
        ("sam", 1, 0.9, False, 225, (5, 5, 19, 19)),
        ("sam", 2, 0.7, True, 150, (5, 25, 19, 34)),
        # the uncovered right half of the class-2 band becomes its own instance
        ("semantic", 2, 0.7, True, 150, (20, 25, 34, 34)),
    ]


def test_overlapping_instances_partition_their_pixels_the_most_confident_keeps_the_overlap():
    """IoU under the NMS threshold used to keep both masks whole, so 80 pixels were in two
    colonies. Now the more confident instance keeps them, the other the rest of its own;
    one left under min_area by the more confident ones is dropped."""
    probs = torch.zeros(2, 40, 40)
    probs[1, :, :20], probs[1, :, 20:] = 0.9, 0.6
    sam = torch.stack(
        [
            mask(5, 25, 18, 35),  # mostly 0.6: the less confident
            mask(5, 25, 5, 22),  # mostly 0.9: the more confident
            mask(26, 30, 5, 35),  # apart: kept whole
            mask(3, 7, 5, 25),  # second by confidence; 46 px left once the first has its own
        ]
    )
    probs[1] *= sam.any(0)  # coral only where a proposal is: no semantic fallback instance
    probs[0] = 1 - probs[1]
    instances = fuse(probs, sam, FusionSettings(min_threshold=0.0, nms_threshold=0.5, min_area=50))
    masks = np.stack([i.mask for i in instances])
    assert masks.sum(0).max() == 1, "no pixel in two instances"
    assert masks.sum() == np.logical_or.reduce(masks).sum()
    by_box = {tuple(np.argwhere(i.mask)[[0, -1]].ravel()): i.area for i in instances}
    assert by_box == {
        (5, 5, 24, 21): 20 * 17,  # whole
        (5, 22, 24, 34): 20 * 17 - 20 * 4,  # less the 80 contested pixels
        (26, 5, 29, 34): 4 * 30,
    }
    assert len(instances) == 3, "the strip's 46 own pixels are under min_area"


def test_min_area_drops_small_instances_and_semantic_regions():
    probs = probability_maps()
    instances = fuse(probs, mask(5, 20, 5, 20)[None], FusionSettings(min_area=200))
    assert [(i.source, i.label) for i in instances] == [("sam", 1), ("semantic", 2)]
    instances = fuse(probs, mask(5, 20, 5, 20)[None], FusionSettings(min_area=301))
    assert [(i.source, i.label) for i in instances] == []


def test_min_threshold_default_acts_on_real_softmax_outputs():
    """17 classes (the fine taxonomy), probabilities from logits by softmax: the best class
    is never under 1/17 = 0.059, so the old absolute default 0.05 removed nothing. The
    default now removes pixels the model spreads over many genera, and keeps those it
    hesitates over between two."""
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(0, 0.1, (17, 60, 60)).astype(np.float32))
    logits[3, :20] += 6.0  # sure: Acropora-like class 3 on the top band
    logits[5, 20:40] += 4.0  # torn between two genera in the middle band
    logits[6, 20:40] += 4.0
    probs = logits.softmax(0)  # the bottom band: no opinion, the best p is about 0.07
    torch.testing.assert_close(probs.sum(0), torch.ones(60, 60))
    best = probs.max(0).values
    assert best[40:].min() > 1 / 17 > 0.05 and best[40:].max() < 0.1

    floor = FusionSettings().probability_floor(17)
    assert floor == pytest.approx(0.106, abs=1e-3)
    assert FusionSettings().probability_floor(7) == pytest.approx(0.186, abs=1e-3)
    no_sam = torch.zeros((0, 60, 60), dtype=torch.bool)
    instances = fuse(probs, no_sam, FusionSettings(min_area=20))
    covered = np.zeros((60, 60), bool)
    for inst in instances:
        covered |= inst.mask
    assert covered[:40].sum() > 0.95 * 40 * 60  # sure and torn pixels stay counted
    assert not covered[40:].any()  # no-opinion pixels count for no class: no instance
    assert {i.label for i in instances} >= {3} and {i.label for i in instances} <= {3, 5, 6}
    # 0 keeps every pixel: the no-opinion band then makes instances of random genera
    kept_all = fuse(probs, no_sam, FusionSettings(min_threshold=0.0, min_area=20))
    assert any(inst.mask[40:].any() for inst in kept_all)


def test_min_threshold_is_explained_in_the_help(capsys):
    import inference_with_coralscop as cli

    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "p >= 1/C + T * (1 - 1/C)" in text and "default 0.05 removes p < 0.106" in text


def test_instances_own_their_masks_not_the_proposal_stack():
    """A view into the (K, H, W) stack of kept proposals keeps all K full-size masks
    alive for as long as one instance lives; each instance's mask must be its own."""
    probs = probability_maps()
    sam = torch.stack([mask(5, 20, 5, 20), mask(25, 35, 5, 20), mask(5, 20, 5, 20)])
    instances = fuse(probs, sam, FusionSettings(min_area=20))
    assert sum(i.source == "sam" for i in instances) == 2
    for inst in instances:
        assert inst.mask.base is None and inst.mask.flags.owndata, inst.source


def test_semantic_regions_of_a_noisy_class_map_match_scikit_image():
    """Uncovered coral pixels become one instance per 8-connected component of at least
    min_area pixels, scored by the component's mean probability: checked against
    skimage.measure on a speckled map with thousands of components (the shape of a
    random or badly trained model's output, which used to take minutes at 1920 px)."""
    from skimage.measure import label as connected_label
    from skimage.measure import regionprops

    rng = np.random.default_rng(3)
    logits = torch.from_numpy(rng.normal(size=(3, 160, 160)).astype(np.float32))
    logits[1, 20:60, 20:60] += 4  # two large regions among the speckle
    logits[2, 90:150, 70:130] += 4
    probs = logits.softmax(0)
    settings = FusionSettings(min_threshold=0.0, unsure_threshold=0.5, min_area=30)
    instances = fuse(probs, torch.zeros((0, 160, 160), dtype=torch.bool), settings)

    class_map = probs.argmax(0).numpy()
    expected = []
    for cls in (1, 2):
        labelled = connected_label(class_map == cls, connectivity=2)
        assert labelled.max() > 100  # the speckle really makes many components
        for region in regionprops(labelled, intensity_image=probs[cls].numpy()):
            if region.area >= settings.min_area:
                y0, x0, y1, x1 = region.bbox
                expected.append((cls, int(region.area), (x0, y0, x1 - 1, y1 - 1),
                                 round(float(region.intensity_mean), 5)))  # fmt: skip
    got = [(i.label, i.area, i.box, round(i.score, 5)) for i in instances]
    assert all(i.source == "semantic" for i in instances)
    assert all(i.unsure == (i.score < 0.5) for i in instances)
    # NMS cannot drop disjoint components: the same set, whatever the order
    assert sorted(got) == sorted(expected) and len(expected) >= 2


@pytest.fixture
def batch(tmp_path, monkeypatch, random_semantic_checkpoint):
    from dataset.reef_demo import render_sample

    monkeypatch.setattr(coralscop, "SAM_VIT_B", TINY)  # a small SAM keeps the CPU test short
    images = tmp_path / "in"
    images.mkdir()
    for index in range(2):
        image, _ = render_sample(index, 64)
        assert cv2.imwrite(
            str(images / f"quadrat_{index}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        )
    args = [
        "--input-dir",
        str(images),
        "--output-dir",
        str(tmp_path / "out"),
        "--segformer-config",
        str(ROOT / "configs/reef_demo_tiny.py"),
        "--segformer-weights",
        str(random_semantic_checkpoint),
        "--device",
        "cpu",
        "--points-per-side",
        "2",
        "--crop-n-layers",
        "0",
        "--score-threshold",
        "0",
        "--min-threshold",
        "0.0",
        "--min-area",
        "1",
    ]
    return dict(images=images, out=tmp_path / "out", args=args)


def test_batch_outputs_round_trip_through_pycocotools(batch):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    import inference_with_coralscop as cli

    assert cli.main(batch["args"] + ["--save-semantic"]) == 0
    out = batch["out"]
    coco = COCO(str(out / "predictions.json"))
    assert len(coco.getImgIds()) == 2
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())][:2] == ["Acanthastrea", "Acropora"]
    # loadRes edits what it is given (ids, and box areas for results with a bbox): a copy
    results = coco.loadRes(copy.deepcopy(coco.dataset["annotations"]))
    assert len(results.getAnnIds()) == len(coco.getAnnIds()) > 0
    for loaded in results.loadAnns(results.getAnnIds()):
        assert loaded["segmentation"]["counts"] and 0.0 <= loaded["score"] <= 1.0
    for image in coco.loadImgs(coco.getImgIds()):
        stem = Path(image["file_name"]).stem
        annotations = sorted(
            coco.loadAnns(coco.getAnnIds(imgIds=image["id"])), key=lambda a: a["id"]
        )
        pngs = sorted((out / "masks" / stem).glob("instance_*.png"))
        assert len(pngs) == len(annotations)
        for annotation, png in zip(annotations, pngs, strict=True):
            decoded = mask_utils.decode(annotation["segmentation"]).astype(bool)
            assert np.array_equal(decoded, cv2.imread(str(png), cv2.IMREAD_UNCHANGED) > 0)
            assert decoded.shape == (image["height"], image["width"]) == (64, 64)
            assert set(annotation["attributes"]) == {"unsure", "source"}
            assert 0.0 <= annotation["score"] <= 1.0 and annotation["area"] == decoded.sum()
        assert (out / "visualizations" / f"{stem}.jpg").is_file()
        assert (out / "semantic" / f"{stem}.png").is_file()


def test_corrupt_image_is_logged_and_rerun_skips_finished_images(batch):
    import inference_with_coralscop as cli

    (batch["images"] / "broken.jpg").write_bytes(b"not a jpeg")
    assert cli.main(batch["args"]) == 1
    log = (batch["out"] / "inference_log.txt").read_text()
    assert "broken.jpg: not done: ImageReadError: does not decode as an image" in log
    assert "1 of 3 images failed" in log
    assert len(json.loads((batch["out"] / "predictions.json").read_text())["images"]) == 2
    assert not (batch["out"] / ".per_image" / "broken.json").exists()
    (batch["images"] / "broken.jpg").unlink()
    assert cli.main(batch["args"]) == 0
    # the rerun's own summary: both images seen, both finished before, nothing redone
    rerun = (batch["out"] / "inference_log.txt").read_text()[len(log) :]
    summaries = [line for line in rerun.splitlines() if " images in " in line]
    assert len(summaries) == 1
    assert summaries[0].endswith(
        f"2 images in {batch['images']}; 2 already done, 0 to process on cpu"
    )
    assert " instances (" not in rerun  # no image went through the models again


def test_output_of_another_run_is_not_overwritten(batch):
    import inference_with_coralscop as cli

    assert cli.main(batch["args"]) == 0
    other = [*batch["args"], "--nms-threshold", "0.3"]
    assert cli.main(other) == 2
    assert cli.main([*other, "--overwrite"]) == 0
    run = json.loads((batch["out"] / "inference_run.json").read_text())
    assert run["fusion"]["nms_threshold"] == 0.3


@pytest.mark.parametrize("crop_n_layers,min_region", [(0, 0), (1, 0), (0, 30)])
def test_generator_finds_the_same_masks_as_segment_anythings(crop_n_layers, min_region):
    """Category filter off, multimask output: the stock SamAutomaticMaskGenerator's algorithm."""
    from segment_anything import SamAutomaticMaskGenerator

    from dataset.reef_demo import render_sample

    torch.manual_seed(0)
    sam = build_coralscop(TINY)
    image, _ = render_sample(1, 64)
    settings = dict(
        points_per_side=3,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        crop_n_layers=crop_n_layers,
        min_mask_region_area=min_region,
    )
    stock = SamAutomaticMaskGenerator(sam, **settings).generate(image)
    ours = CoralMaskGenerator(
        sam, use_category=False, settings=GeneratorSettings(multimask_output=True, **settings)
    ).generate(image)
    stock_masks = [m["segmentation"] for m in stock if m["segmentation"].any()]
    our_masks = [m for m in ours.masks.numpy() if m.any()]
    assert len(our_masks) == len(stock_masks) > 0
    for mask in stock_masks:
        best = max(np.logical_and(mask, m).sum() / np.logical_or(mask, m).sum() for m in our_masks)
        assert best >= 0.99


def test_instances_land_in_fiftyone(batch, fiftyone):
    import inference_with_coralscop as cli

    # a first run without FiftyOne (say, interrupted): the rerun stores its images too
    assert cli.main(batch["args"]) == 0
    for _ in range(2):  # twice: samples are matched by file path, never added again
        assert cli.main([*batch["args"], "--to-fiftyone", "two_stage_test_fo"]) == 0
    dataset = fiftyone.load_dataset("two_stage_test_fo")
    coco = json.loads((batch["out"] / "predictions.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert len(dataset) == 2
    assert len(coco["annotations"]) > 0
    for sample in dataset:
        stem = Path(sample.filepath).stem
        image_id = next(i["id"] for i in coco["images"] if Path(i["file_name"]).stem == stem)
        annotations = [a for a in coco["annotations"] if a["image_id"] == image_id]
        detections = sample["predictions"].detections
        # each mask cut to its box, as FiftyOne stores it, is the annotation's mask
        got = sorted(
            (d.label, *(round(v * 64) for v in d.bounding_box), *d.mask.shape, int(d.mask.sum()),
             round(d.confidence, 6), d["unsure"])
            for d in detections
        )  # fmt: skip
        expected = sorted(
            (names[a["category_id"]], *(round(v) for v in a["bbox"]), round(a["bbox"][3]),
             round(a["bbox"][2]), int(a["area"]), a["score"], a["attributes"]["unsure"])
            for a in annotations
        )  # fmt: skip
        assert got == expected
    dataset.delete()


def test_fiftyone_writes_batch_by_batch(tmp_path, fiftyone):
    """add_predictions consumes its items as it writes: never more than one batch ahead."""
    from dataset.fiftyone_predictions import add_predictions

    name = "batch_by_batch_test_fo"
    pulled = []

    def items():
        for index in range(7):
            if fiftyone.dataset_exists(name):
                pulled.append(index - len(fiftyone.load_dataset(name)))
            det = fiftyone.Detection(label="Acropora", bounding_box=[0, 0, 0.5, 0.5])
            yield tmp_path / f"q{index}.jpg", [det]

    assert add_predictions(name, items(), batch_size=3) == 7
    dataset = fiftyone.load_dataset(name)
    assert len(dataset) == 7 and max(pulled) == 2  # never a whole batch ahead
    # a second pass updates the same samples
    assert add_predictions(name, items(), batch_size=3) == 7
    assert len(dataset) == 7
    assert all(len(s["predictions"].detections) == 1 for s in dataset)
    dataset.delete()


def _blobs_with_holes_and_islands(count: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size), np.uint8)
    for mask in masks:
        centre, radius = rng.integers(0, size, 2), int(rng.integers(2, size // 5))
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        outline = centre + radius * rng.uniform(0.5, 1.0, (24, 1)) * np.stack(
            [np.cos(angles), np.sin(angles)], 1
        )
        cv2.fillPoly(mask, [outline.astype(np.int32)], 1)
        for _ in range(3):  # small holes inside, small islands around
            y, x = np.clip(centre[::-1] + rng.integers(-radius // 2, radius // 2 + 1, 2), 0, size)
            mask[y : y + 3, x : x + 3] = 0
            y, x = np.clip(centre[::-1] + rng.integers(-2 * radius, 2 * radius + 1, 2), 0, size)
            mask[y : y + 2, x : x + 2] = 1
    # a small cup whose inside opens onto its box's border: inside the window that
    # background looks like a small hole, in the whole image it is the outside
    masks[-2] = 0
    masks[-2, 50:58, 50:52] = masks[-2, 50:58, 56:58] = masks[-2, 56:58, 50:58] = 1
    masks[-1] = 0  # an empty mask is dropped
    return masks.astype(bool)


def test_small_region_cleanup_equals_segment_anythings():
    """Window-by-window clean-up gives segment-anything's whole-image result, boxes included."""
    from segment_anything import SamAutomaticMaskGenerator
    from segment_anything.utils.amg import (
        MaskData,
        batched_mask_to_box,
        mask_to_rle_pytorch,
        rle_to_mask,
    )

    from models.mask_generator import Proposals

    area = 80  # more than the cup's window background (60 px)
    masks = torch.from_numpy(_blobs_with_holes_and_islands(40, 160))
    generator = CoralMaskGenerator(
        build_coralscop(TINY), settings=GeneratorSettings(min_mask_region_area=area)
    )
    ones = torch.ones(len(masks))
    cleaned = masks.clone()  # cleaned in place
    ours = generator._remove_small_regions(
        Proposals(cleaned, batched_mask_to_box(masks), ones, ones, ones)
    )
    assert (cleaned != masks).flatten(1).any(1).sum() > 10  # most masks had something to clean
    stock = SamAutomaticMaskGenerator.postprocess_small_regions(
        MaskData(rles=mask_to_rle_pytorch(masks), boxes=batched_mask_to_box(masks)), area, 0.7
    )
    stock_masks = torch.from_numpy(np.stack([rle_to_mask(rle) for rle in stock["rles"]]))
    nonempty = stock_masks.flatten(1).any(1)  # ours also drops masks the clean-up emptied
    assert torch.equal(ours.masks, stock_masks[nonempty])
    assert torch.equal(ours.boxes, stock["boxes"][nonempty])


def test_semantic_segmenter_matches_mmseg_inference_on_the_same_image(random_semantic_checkpoint):
    """Our upload (RGB to the device, reordered there) gives mmseg's own result: its
    inference_model with the config's test pipeline on the image as BGR (as mmcv reads it)."""
    from mmengine.config import Config
    from mmseg.apis import inference_model, init_model

    from inferencer import SemanticSegmenter

    config = str(ROOT / "configs/reef_demo_tiny.py")
    segmenter = SemanticSegmenter(config, str(random_semantic_checkpoint), "cpu", bf16=False)
    # an asymmetric image in colour: a swapped channel order changes the logits
    rgb = np.random.default_rng(5).integers(0, 256, (150, 90, 3), dtype=np.uint8)
    rgb[:40, :, 0] = 255
    probs = segmenter.predict_probs(rgb)

    cfg = Config.fromfile(config, import_custom_modules=False)
    reference = init_model(cfg, None, device="cpu")
    reference.load_state_dict(segmenter.model.state_dict())
    expected = inference_model(reference, np.ascontiguousarray(rgb[..., ::-1]))
    torch.testing.assert_close(probs, expected.seg_logits.data.softmax(0), rtol=1e-4, atol=1e-5)
    swapped = segmenter.predict_probs(np.ascontiguousarray(rgb[..., ::-1]))
    assert not torch.allclose(swapped, probs, atol=1e-3)


def test_min_area_zero_never_keeps_an_instance_without_pixels():
    """A small mask inside a large, more confident one (IoU under the NMS threshold) is
    left with no pixel once the large one has claimed its own; it is dropped, not kept
    empty (an empty mask has no box)."""
    probs = torch.zeros(2, 40, 40)
    probs[1] = 0.9
    probs[1, 10:14, 10:14] = 0.6
    probs[0] = 1 - probs[1]
    sam = torch.stack([mask(0, 40, 0, 40), mask(10, 14, 10, 14)])
    instances = fuse(probs, sam, FusionSettings(min_threshold=0.0, nms_threshold=0.5, min_area=0))
    assert [i.area for i in instances] == [1600]
