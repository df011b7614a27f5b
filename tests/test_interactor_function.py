"""The interactor as CVAT deploys and calls it: deploy_as_zip.sh packages it beside the
detector, its function.yaml files carry what CVAT reads, and its handler answers clicks
(the real ViT-B path on random weights), bad requests with 400, and refuses to start
without CoralSCoP weights."""

from __future__ import annotations

import base64
import importlib
import json
import sys
import types
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from cvat_interactor_model import consume_masks
from test_nuclio import CONFIG, deploy

ROOT = Path(__file__).resolve().parents[1]
# What CVAT's server reads from an interactor's annotations (cvat/apps/lambda_manager/
# views.py, v2.73.0) and the parse it applies to each; booleans are bool(str): present = on.
READ_AS_INT = ("version", "min_pos_points", "min_neg_points")
BOOLEANS = ("startswith_box", "startswith_box_optional")


@pytest.fixture(scope="module")
def packaged(tmp_path_factory, random_semantic_checkpoint):
    from models.coralscop import write_random_checkpoint

    tmp = tmp_path_factory.mktemp("interactor")
    write_random_checkpoint(tmp / "vit_b_coralscop.pth")
    result = deploy(
        tmp, "reefdemo", random_semantic_checkpoint, CONFIG, tmp / "vit_b_coralscop.pth"
    )
    assert result.returncode == 0, result.stderr
    assert "pth-click-reefdemo" in result.stdout and "nuclio-interactor/" in result.stdout
    with zipfile.ZipFile(tmp / "nuclio.zip") as archive:
        archive.extractall(tmp / "unpacked")
    return tmp / "unpacked"


def test_the_zip_holds_both_functions_each_a_deploy_folder(packaged):
    detector, interactor = packaged / "nuclio", packaged / "nuclio-interactor"
    assert (detector / "main.py").is_file() and (detector / "request_body.py").is_file()
    names = {p.name for p in interactor.iterdir()}
    assert {"main.py", "request_body.py", "function.yaml", "function-gpu.yaml", "interactor",
            "models", "dataset", "segment_anything", "vit_b_coralscop.pth", "serve.py",
            "make_payload.py"} <= names  # fmt: skip
    assert "best_segformer.pth" not in names  # CoralSCoP alone


@pytest.mark.parametrize("name", ["function.yaml", "function-gpu.yaml"])
def test_function_yaml_carries_what_cvat_reads_for_an_interactor(packaged, name):
    spec = yaml.safe_load((packaged / "nuclio-interactor" / name).read_text())
    assert spec["metadata"]["name"] == "pth-click-reefdemo"
    assert spec["metadata"]["name"] != "pth-facebookresearch-sam-vit-h"  # CVAT's SAM plugin id
    assert spec["metadata"]["namespace"] == "cvat"
    annotations = spec["metadata"]["annotations"]
    assert annotations["type"] == "interactor"
    # CVAT parses these with int(); the UI disables interactors under version 2
    values = {key: int(str(annotations[key])) for key in READ_AS_INT}
    assert values == {"version": 2, "min_pos_points": 1, "min_neg_points": 0}
    # bool(str) on the server: present means on, so only the wanted one is present
    assert [key for key in BOOLEANS if key in annotations] == ["startswith_box_optional"]
    assert annotations["spec"] in (None, "")  # json.loads(spec or "[]") must parse
    json.loads(annotations["spec"] or "[]")
    assert "reefdemo" in annotations["name"] and annotations["help_message"]
    assert spec["spec"]["description"]  # read without a default: a KeyError breaks the list
    assert spec["spec"]["handler"] == "main:handler"
    env = {e["name"]: e["value"] for e in spec["spec"]["env"]}
    assert int(env["CORAL_INTERACTOR_CACHE_MB"]) > 0 and env["CORAL_INTERACTOR_CHOOSE"] == "iou"
    assert spec["spec"]["build"]["image"].startswith("cvat.pth.click.reefdemo")


def _context():
    logged = []
    logger = types.SimpleNamespace(info=logged.append, warn=logged.append, error=logged.append)

    class Response:
        def __init__(self, body, headers, content_type, status_code):
            self.body, self.status_code, self.content_type = body, status_code, content_type

    return types.SimpleNamespace(logger=logger, user_data=types.SimpleNamespace(),
                                 Response=Response, logged=logged)  # fmt: skip


@pytest.fixture(scope="module")
def function(packaged):
    """The bundle's main.py, started as Nuclio starts it (its own folder first on the path)."""
    folder = packaged / "nuclio-interactor"
    saved = list(sys.path)
    sys.path.insert(0, str(folder))
    for name in ("main", "request_body"):
        sys.modules.pop(name, None)
    try:
        main = importlib.import_module("main")
        assert Path(main.__file__).parent == folder
        context = _context()
        main.init_context(context)
        yield main, context
    finally:
        sys.path[:] = saved
        for name in ("main", "request_body"):
            sys.modules.pop(name, None)


def _frame(size: int = 256) -> str:
    image = np.full((size, size, 3), (194, 178, 128), np.uint8)
    cv2.circle(image, (128, 128), 60, (40, 160, 60), -1)
    ok, data = cv2.imencode(".png", image)
    assert ok
    return base64.b64encode(data.tobytes()).decode()


def _call(function, body) -> tuple[int, dict]:
    main, context = function
    event = types.SimpleNamespace(body=body if isinstance(body, bytes | str) else json.dumps(body))
    response = main.handler(context, event)
    return response.status_code, json.loads(response.body)


def test_clicks_through_the_handler_give_answers_cvat_turns_into_at_most_one_object(function):
    """The real ViT-B path (random weights: the mask is noise, its form is checked)."""
    image = _frame()
    body = {"image": image, "pos_points": [[128.0, 128.5]], "neg_points": [], "obj_bbox": []}
    status, first = _call(function, body)
    assert status == 200
    objects = consume_masks(first, 256, 256).objects  # raises where CVAT would show an error
    assert len(objects) <= 1
    segmenter = function[1].user_data.segmenter
    runs = segmenter.cache.misses
    body["neg_points"] = [[20.0, 20.0]]
    status, second = _call(function, body)
    assert status == 200 and segmenter.cache.misses == runs  # no second encoder run
    assert len(consume_masks(second, 256, 256).objects) <= 1
    logged = " ".join(map(str, function[1].logged))
    assert "(image encoder ran)" in logged and "(cached embedding)" in logged


@pytest.mark.parametrize(
    "body, message",
    [
        ("", "the body is empty"),
        ("not json", "the body is not JSON"),
        ({"pos_points": [[1, 1]]}, '"image"'),
        ({"image": "%%%", "pos_points": [[1, 1]], "neg_points": []}, "not valid base64"),
        (
            {
                "image": base64.b64encode(b"not an image").decode(),
                "pos_points": [[1, 1]],
                "neg_points": [],
            },
            "image",
        ),  # fmt: skip
        ({"image": "IMAGE", "pos_points": [], "neg_points": [], "obj_bbox": []}, "pos_points"),
        ({"image": "IMAGE", "pos_points": [[300, 10]], "neg_points": []}, "outside"),
        ({"image": "IMAGE", "pos_points": [["a", 1]], "neg_points": []}, "pos_points"),
        (
            {"image": "IMAGE", "pos_points": [[10, 10]], "neg_points": [], "obj_bbox": [[1, 2]]},
            "obj_bbox",
        ),  # fmt: skip
    ],
)
def test_bad_requests_answer_400_naming_what_is_wrong_and_the_function_keeps_serving(
    function, body, message
):
    if isinstance(body, dict) and body.get("image") == "IMAGE":
        body = {**body, "image": _frame()}
    status, answer = _call(function, body)
    assert status == 400 and message in answer["error"], answer
    status, _ = _call(function, {"image": _frame(), "pos_points": [[100, 100]], "neg_points": []})
    assert status == 200


def test_an_oversized_frame_is_refused_before_decoding(function, monkeypatch):
    import request_body

    monkeypatch.setattr(request_body, "MAX_PIXELS", 1000)
    status, answer = _call(function, {"image": _frame(), "pos_points": [[1, 1]], "neg_points": []})
    assert status == 400 and "the limit is 1000 pixels" in answer["error"]


def test_without_coralscop_weights_the_function_refuses_to_start(packaged, tmp_path):
    folder = tmp_path / "bundle"
    folder.mkdir()
    for path in (packaged / "nuclio-interactor").iterdir():
        if path.name == "main.py":  # a copy: it finds the weights beside its real path
            (folder / path.name).write_bytes(path.read_bytes())
        elif path.name != "vit_b_coralscop.pth":
            (folder / path.name).symlink_to(path)
    code = (
        "import sys, types; sys.path.insert(0, '.'); import main; log = types.SimpleNamespace("
        "error=print, info=print, warn=print); main.init_context(types.SimpleNamespace("
        "logger=log, user_data=types.SimpleNamespace()))"
    )
    import subprocess

    run = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True)
    assert run.returncode != 0
    assert "vit_b_coralscop.pth is missing" in run.stdout + run.stderr


def test_make_payload_writes_the_body_cvat_sends_and_the_handler_answers_it(
    packaged, function, tmp_path
):
    """docs/cvat.md's try-it-without-Nuclio commands: make_payload.py --positive/--negative."""
    import subprocess

    image = tmp_path / "quadrat.png"
    image.write_bytes(base64.b64decode(_frame()))
    run = subprocess.run(
        [sys.executable, "make_payload.py", str(image), "--positive", "128,130",
         "--negative", "20,20", "--box", "60,60,200,200", "--output", str(tmp_path / "p.json")],
        cwd=packaged / "nuclio-interactor", capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    body = json.loads((tmp_path / "p.json").read_text())
    assert body["pos_points"] == [[128.0, 130.0]] and body["neg_points"] == [[20.0, 20.0]]
    assert body["obj_bbox"] == [[60.0, 60.0], [200.0, 200.0]]
    status, answer = _call(function, body)
    assert status == 200 and len(consume_masks(answer, 256, 256).objects) <= 1
