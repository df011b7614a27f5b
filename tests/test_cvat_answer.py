"""The CVAT function's answer as CVAT's server reads it, and the same instances as the CLI.

What the server does with a detector's answer is read in cvat-ai/cvat v2.73.0,
cvat/apps/lambda_manager/views.py (LambdaJob.__call__ and _call_detector):
- labels are looked up by exact, case-sensitive name; an unknown label drops the item;
- an item's attribute is kept only when the task's label declares one of that name;
  the top-level "confidence" is never read;
- a mask item's "mask" is the crop, row by row, then [xtl, ytl, xbr, ybr] (inclusive);
  the values go through numpy into CVAT's RLE (uint8 here);
- with conv_mask_to_poly the item's own "points" become the polygon.
`cvat_shapes` below does the same on the answer, and the tests compare what it keeps
with the instances the function's model found, pixel for pixel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from function_harness import CONFIG, Function, load_packager, make_bundle

ROOT = Path(__file__).resolve().parents[1]
package = load_packager()
LIGHT = dict(points_per_side=3, crop_n_layers=0, pred_iou_thresh=0.0,
             stability_score_thresh=0.0)  # fmt: skip


def cvat_shapes(items: list[dict], labels: list[dict], height: int, width: int,
                conv_mask_to_poly: bool = False) -> list[dict]:  # fmt: skip
    """The shapes CVAT's server stores for a detector's answer, given the task's labels
    (CVAT's raw label format: name, attributes with name). Masks come back decoded
    to (H, W) bool; polygons as (N, 2) points."""
    by_name = {label["name"]: {a["name"] for a in label.get("attributes", [])} for label in labels}
    shapes = []
    for item in items:
        declared = by_name.get(item["label"])
        if declared is None:
            continue  # "Invalid label provided"
        attributes = {a["name"]: a["value"] for a in item.get("attributes") or []
                      if a["name"] in declared}  # fmt: skip
        shape = {"label": item["label"], "attributes": attributes}
        if item["type"] == "mask" and "points" in item and conv_mask_to_poly:
            shape["polygon"] = np.asarray(item["points"]).reshape(-1, 2)
        elif item["type"] == "mask":
            xtl, ytl, xbr, ybr = item["mask"][-4:]
            crop = np.asarray(item["mask"][:-4]).astype(np.uint8)
            assert crop.size == (ybr - ytl + 1) * (xbr - xtl + 1), "crop length != inclusive box"
            mask = np.zeros((height, width), dtype=bool)
            mask[ytl : ybr + 1, xtl : xbr + 1] = crop.reshape(ybr - ytl + 1, xbr - xtl + 1) > 0
            shape["mask"] = mask
        shapes.append(shape)
    return shapes


@pytest.fixture(scope="module")
def served(tmp_path_factory, random_semantic_checkpoint):
    """The function with the demo model and a tiny CoralSCoP whose filters keep every
    proposal (so SAM's masks, not only the semantic regions, reach the answer), plus the
    labels a user pastes into CVAT (cvat_labels.json as the packager writes it)."""
    import torch

    from inferencer import TwoStageInferencer
    from models.coralscop import SAM_TINY
    from models.mask_generator import GeneratorSettings

    folder = make_bundle(tmp_path_factory.mktemp("answer") / "nuclio", random_semantic_checkpoint)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CORAL_SEMANTIC_ONLY", "1")
        function = Function(folder)
        context = function.start()
    # the tiny SAM's random weights come from torch's generator: seeded, so that what it
    # proposes does not depend on which tests ran before in this process. Seed 1: one
    # 716 px SAM mask among 12 semantic regions on this quadrat (seed 0 proposes 6 px,
    # under min_area, seeds 2-3 one mask over the whole frame)
    torch.manual_seed(1)
    model = TwoStageInferencer(
        str(CONFIG), str(random_semantic_checkpoint), None, "cpu",
        generator=GeneratorSettings(**LIGHT), sam_encoder=SAM_TINY,
    )  # fmt: skip
    # random category weights call nothing coral: filter off, as for a stock SAM checkpoint
    model.instances.generator.use_category = False
    context.user_data.model = model  # the handler serves whatever init_context put there
    classes = model.classes
    labels = package.project_labels(classes, model.palette)
    return function, model, labels


def _quadrat(size: int = 160) -> tuple[bytes, np.ndarray]:
    from dataset.reef_demo import render_sample

    image, _ = render_sample(7, size)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return encoded.tobytes(), image


def test_every_item_survives_cvats_server_pixel_for_pixel(served):
    function, model, labels = served
    data, image = _quadrat()
    status, items = function.send(data)
    assert status == 200
    instances = model(image).instances
    assert sum(i.source == "sam" for i in instances) > 0, "SAM proposals reach the answer"
    assert len(items) == len(instances) > 3
    shapes = cvat_shapes(items, labels, *image.shape[:2])
    assert len(shapes) == len(items), "every label name matches the project's exactly"
    for shape, instance in zip(shapes, instances, strict=True):
        assert shape["label"] == model.classes[instance.label]
        assert np.array_equal(shape["mask"], instance.mask)
        assert shape["attributes"] == {
            "confidence": str(round(100 * instance.score)),
            "unsure": "true" if instance.unsure else "false",
        }, "both attributes kept, with the instance's values"
    assert {s["attributes"]["unsure"] for s in shapes} <= {"true", "false"}
    masks = np.stack([shape["mask"] for shape in shapes])
    assert masks.sum(0).max() == 1, "one pixel, one colony: the masks CVAT stores never overlap"


def test_undeclared_attributes_are_dropped_by_the_server(served):
    """Why the labels must declare them: without, CVAT keeps neither value."""
    function, model, labels = served
    data, image = _quadrat()
    _, items = function.send(data)
    bare = [{k: v for k, v in label.items() if k != "attributes"} for label in labels]
    shapes = cvat_shapes(items, bare, *image.shape[:2])
    assert shapes and all(s["attributes"] == {} for s in shapes)


def test_attribute_values_are_valid_for_their_declared_types(served):
    function, model, labels = served
    data, _ = _quadrat()
    _, items = function.send(data)
    spec = {a["name"]: a for a in package.ATTRIBUTES}
    low, high, step = (int(v) for v in spec["confidence"]["values"])
    assert spec["unsure"]["input_type"] == "checkbox"
    for item in items:
        values = {a["name"]: a["value"] for a in item["attributes"]}
        assert set(values) == set(spec)
        confidence = int(values["confidence"])  # a whole number, as the spec's step says
        assert low <= confidence <= high and (confidence - low) % step == 0
        assert abs(confidence - 100 * float(item["confidence"])) <= 0.5


def test_the_spec_and_the_labels_file_declare_what_the_function_answers(tmp_path):
    import yaml

    classes = ["background", "Acropora", "Pavona/Leptoseris", "porites"]
    spec = yaml.safe_load(
        package.render_function_yaml(ROOT / "nuclio" / "function.yaml", "demo", classes)
    )
    declared = json.loads(spec["metadata"]["annotations"]["spec"])
    assert [label["name"] for label in declared] == classes[1:], "exact names, case kept"
    for label in declared:
        assert label["type"] == "mask"
        assert [a["name"] for a in label["attributes"]] == ["confidence", "unsure"]
    project = package.project_labels(classes, [(0, 0, 0), (255, 0, 0), (0, 128, 255)])
    assert [label["name"] for label in project] == classes[1:]
    assert project[0]["color"] == "#ff0000" and project[1]["color"] == "#0080ff"
    assert "color" not in project[2], "no palette entry: CVAT picks a colour"
    for label in project:
        assert label["type"] == "any", "takes masks and the polygons of conv_mask_to_poly"
        for attribute in label["attributes"]:
            assert attribute["default_value"] == attribute["values"][0]


def test_polygon_form_keeps_only_the_outer_boundary(served):
    """A ring of Porites round a sand patch: the mask form keeps the hole, the polygon
    CVAT stores with conv_mask_to_poly cannot (docs/cvat.md says so)."""
    function, model, labels = served
    main = function.main
    ring = np.zeros((60, 60), dtype=bool)
    cv2.circle(ring.view(np.uint8), (30, 30), 25, 1, -1)
    cv2.circle(ring.view(np.uint8), (30, 30), 10, 0, -1)
    from models.fusion import Instance

    item = main.to_cvat(Instance(ring, 1, 0.9, False, "sam"), model.classes)
    as_mask = cvat_shapes([item], labels, 60, 60)[0]["mask"]
    assert np.array_equal(as_mask, ring), "the mask form keeps the hole"
    polygon = cvat_shapes([item], labels, 60, 60, conv_mask_to_poly=True)[0]["polygon"]
    filled = np.zeros((60, 60), np.uint8)
    cv2.fillPoly(filled, [polygon.astype(np.int32)], 1)
    assert filled[30, 30] == 1 and not ring[30, 30], "the polygon covers the hole"
    assert (filled.astype(bool) & ~ring).sum() > 250  # the hole's ~314 px, less the outline


def test_cli_and_function_give_the_same_instances(tmp_path, random_semantic_checkpoint):
    """inference_with_coralscop.py and the packaged function, same image and settings: the
    same instances (both call inferencer.TwoStageInferencer; this proves they configure it
    alike). SAM ViT-B with random weights, saved as a stock SAM checkpoint (no category
    head: random category weights would call nothing coral); both quality filters off."""
    import torch
    from pycocotools import mask as mask_utils

    from models.coralscop import CATEGORY_PREFIX, build_coralscop

    torch.manual_seed(0)
    state = {k: v for k, v in build_coralscop().state_dict().items()
             if not k.startswith(CATEGORY_PREFIX)}  # fmt: skip
    sam = tmp_path / "vit_b_coralscop.pth"
    torch.save(state, sam)
    folder = make_bundle(tmp_path / "nuclio", random_semantic_checkpoint)
    shutil.copy(sam, folder / "vit_b_coralscop.pth")
    data, image = _quadrat(192)
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "quadrat.png").write_bytes(data)
    cli = subprocess.run(
        [sys.executable, "inference_with_coralscop.py", "--input-dir", str(inputs),
         "--output-dir", str(tmp_path / "out"), "--segformer-config", str(CONFIG),
         "--segformer-weights", str(random_semantic_checkpoint), "--sam-checkpoint", str(sam),
         "--device", "cpu", "--points-per-side", "2", "--crop-n-layers", "0",
         "--score-threshold", "0", "--stability-threshold", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    coco = json.loads((tmp_path / "out" / "predictions.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    sources = [a["attributes"]["source"] for a in coco["annotations"]]
    assert "sam" in sources, f"SAM's masks reach the comparison: {sources}"
    from_cli = sorted(
        (names[a["category_id"]], mask_utils.decode(a["segmentation"]).astype(bool).tobytes())
        for a in coco["annotations"]
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CORAL_SAM_POINTS_PER_SIDE", "2")
        patch.setenv("CORAL_SAM_CROP_N_LAYERS", "0")
        patch.setenv("CORAL_SAM_PRED_IOU_THRESH", "0")
        patch.setenv("CORAL_SAM_STABILITY_THRESH", "0")
        function = Function(folder)
        status, items = function.send(data)
    assert status == 200
    labels = package.project_labels(function.model.classes, [])
    shapes = cvat_shapes(items, labels, *image.shape[:2])
    from_function = sorted((s["label"], s["mask"].tobytes()) for s in shapes)
    assert len(from_cli) == len(from_function) > 0
    assert from_cli == from_function
