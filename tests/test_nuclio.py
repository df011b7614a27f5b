"""deploy_as_zip.sh and the CVAT function: package, unpack, serve, answer as CVAT expects."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import cv2
import pytest
import torch
import yaml

from dataset.taxonomy import load_taxonomy

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "reef_demo_tiny.py"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, random_semantic_checkpoint):
    """A checkpoint of the demo config (random weights, saved as train.py saves them) and a
    randomly initialised CoralSCoP ViT-B with the released checkpoint's exact keys."""
    from dataset.reef_demo import render_sample
    from models.coralscop import write_random_checkpoint

    tmp = tmp_path_factory.mktemp("deploy")
    shutil.copy(random_semantic_checkpoint, tmp / "best.pth")
    write_random_checkpoint(tmp / "vit_b_coralscop.pth")
    image, _ = render_sample(5, 128)
    assert cv2.imwrite(str(tmp / "quadrat.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return tmp


def deploy(cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "deploy_as_zip.sh"), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )


@pytest.fixture(scope="module")
def bundle(inputs):
    result = deploy(
        inputs, "coralscopsegformer", inputs / "best.pth", CONFIG, inputs / "vit_b_coralscop.pth"
    )
    assert result.returncode == 0, result.stderr
    assert "nuctl deploy --project-name cvat" in result.stdout
    target = inputs / "unpacked"
    target.mkdir()
    with zipfile.ZipFile(inputs / "nuclio.zip") as archive:
        archive.extractall(target)
    return target / "nuclio"


def test_bundle_holds_the_guides_files(bundle):
    assert (bundle.parent.parent / "cvat_labels.json").is_file(), "written beside nuclio.zip"
    names = {p.name for p in bundle.iterdir()}
    assert {
        "best_segformer.pth",
        "best_segformer_config.py",
        "vit_b_coralscop.pth",
        "inferencer.py",
        "main.py",
        "function.yaml",
        "function-gpu.yaml",
        "dataset",
        "models",
        "segment_anything",
    } <= names
    # the function reads images with the toolkit's reader, from the bundle's own copy
    assert (bundle / "dataset" / "image_io.py").is_file()


def test_function_yaml_follows_cvats_contract(bundle):
    fine = load_taxonomy("fine")
    for name in ("function.yaml", "function-gpu.yaml"):
        spec = yaml.safe_load((bundle / name).read_text())
        assert spec["metadata"]["name"] == "pth-mmseg-coralscopsegformer"
        assert spec["metadata"]["namespace"] == "cvat"
        annotations = spec["metadata"]["annotations"]
        assert annotations["type"] == "detector" and annotations["framework"] == "pytorch"
        labels = json.loads(annotations["spec"])
        assert [(label["id"], label["name"], label["type"]) for label in labels] == [
            (i, n, "mask") for i, n in enumerate(fine.classes) if i > 0
        ]
        for label in labels:  # what the answer's attributes need to be kept by CVAT
            assert [a["name"] for a in label["attributes"]] == ["confidence", "unsure"]
        # the bundle's own labels for the CVAT project: the same names, the same attributes
        project = json.loads((bundle / "cvat_labels.json").read_text())
        assert [label["name"] for label in project] == list(fine.classes[1:])
        assert spec["spec"]["handler"] == "main:handler"
        assert (
            spec["spec"]["triggers"]["myHttpTrigger"]["attributes"]["maxRequestBodySize"]
            >= 32 * 2**20
        )
        assert spec["spec"]["platform"]["attributes"]["restartPolicy"]["name"] == "always"
    gpu = yaml.safe_load((bundle / "function-gpu.yaml").read_text())
    assert gpu["spec"]["resources"]["limits"]["nvidia.com/gpu"] == 1


RUNNER = r"""
import base64, json, sys
import cv2, numpy as np
import nuclio_sdk, nuclio_sdk.test
import main, models
from dataset import image_io
for module in (models, image_io):  # the bundle's own copies
    assert module.__file__.startswith(sys.argv[2]), module.__file__
platform = nuclio_sdk.test.Platform()
def call(body):
    return platform.call_handler(main.handler, nuclio_sdk.Event(body=body))
image_bytes = open(sys.argv[1], "rb").read()
good = json.dumps({"image": base64.b64encode(image_bytes).decode()})
out = {"first": None, "bad": [], "again": None}
response = call(good)
items = json.loads(response.body)
context = platform._get_handler_context(main.handler)
rgb = cv2.cvtColor(cv2.imread(sys.argv[1]), cv2.COLOR_BGR2RGB)
expected = context.user_data.model(rgb).instances
checks = []
for item, inst in zip(items, expected):
    xtl, ytl, xbr, ybr = item["mask"][-4:]
    crop = np.array(item["mask"][:-4], np.uint8).reshape(ybr - ytl + 1, xbr - xtl + 1)
    full = np.zeros(rgb.shape[:2], bool)
    full[ytl:ybr + 1, xtl:xbr + 1] = crop > 0
    points = np.array(item["points"]).reshape(-1, 2)
    checks.append(dict(equal=bool(np.array_equal(full, inst.mask)), label=item["label"],
                       type=item["type"], confidence=item["confidence"],
                       inside=bool((points >= 0).all() and (points[:, 0] < rgb.shape[1]).all()
                                   and (points[:, 1] < rgb.shape[0]).all())))
out["first"] = dict(status=response.status_code, count=len(items), expected=len(expected),
                    checks=checks)
big = cv2.imencode(".png", np.zeros((400, 400, 3), np.uint8))[1].tobytes()
not_image = base64.b64encode(b"hello").decode()
too_big = base64.b64encode(big).decode()
for body in [b"{}", b"not json", json.dumps({"image": "@@@"}), json.dumps({"image": not_image}),
             json.dumps({"image": too_big})]:
    r = call(body)
    out["bad"].append([r.status_code, json.loads(r.body).get("error", "")])
out["again"] = call(good).status_code
print("RESULT" + json.dumps(out))
"""


def test_handler_in_a_fresh_process_answers_like_cvat_expects(bundle, inputs):
    (bundle / "run_handler.py").write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        CORAL_SAM_POINTS_PER_SIDE="2", CORAL_SAM_CROP_N_LAYERS="0", CORAL_MAX_PIXELS="100000"
    )
    result = subprocess.run(
        [sys.executable, "run_handler.py", str(inputs / "quadrat.jpg"), str(bundle)],
        cwd=bundle,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT", 1)[1])
    first = out["first"]
    assert first["status"] == 200 and first["count"] == first["expected"] > 0
    fine = load_taxonomy("fine")
    for check in first["checks"]:
        assert check["equal"] and check["inside"] and check["type"] == "mask"
        assert check["label"] in fine.classes[1:] and 0.0 <= float(check["confidence"]) <= 1.0
    statuses = [status for status, _ in out["bad"]]
    assert statuses == [400] * 5
    assert "limit is 100000" in out["bad"][-1][1]
    assert out["again"] == 200, "the function keeps serving after bad requests"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_local_http_server_answers_the_guides_curl(bundle, inputs):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(CORAL_SAM_POINTS_PER_SIDE="2", CORAL_SAM_CROP_N_LAYERS="0")
    subprocess.run(
        [sys.executable, "make_payload.py", str(inputs / "quadrat.jpg")], cwd=bundle, check=True
    )
    server = subprocess.Popen(
        [sys.executable, "serve.py", "--port", str(port)],
        cwd=bundle,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, "server exited"
                time.sleep(1)
        url = f"http://127.0.0.1:{port}"
        if shutil.which("curl"):
            answer = subprocess.run(
                [
                    "curl",
                    "-s",
                    "-X",
                    "POST",
                    url,
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    "@test_payload.json",
                ],
                cwd=bundle,
                capture_output=True,
                text=True,
                timeout=300,
            ).stdout
        else:
            request = urllib.request.Request(
                url, data=(bundle / "test_payload.json").read_bytes(), method="POST"
            )
            answer = urllib.request.urlopen(request, timeout=300).read().decode()
        items = json.loads(answer)
        assert (
            isinstance(items, list)
            and items
            and {"confidence", "label", "points", "mask", "type"} <= set(items[0])
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_bad_inputs_name_the_argument_and_leave_no_zip(inputs, tmp_path):
    best, sam = inputs / "best.pth", inputs / "vit_b_coralscop.pth"
    wrong_classes = tmp_path / "seven_classes.py"
    wrong_classes.write_text(
        f'_base_ = ["{CONFIG}"]\nmodel = dict(decode_head=dict(num_classes=7))\n'
    )
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "not_sam.pth")
    (tmp_path / "nuclio.zip").write_bytes(b"previous zip")
    cases = [
        (("Bad_Name", best, CONFIG, sam), "MODEL_NAME"),
        (("coral", tmp_path / "missing.pth", CONFIG, sam), "SEGFORMER_WEIGHTS"),
        (("coral", best, tmp_path / "missing.py", sam), "SEGFORMER_CONFIG"),
        (("coral", best, wrong_classes, sam), "7 classes"),
        (("coral", best, CONFIG, tmp_path / "not_sam.pth"), "SAM_WEIGHTS"),
    ]
    for args, message in cases:
        result = deploy(tmp_path, *args, "--overwrite")
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
    assert (tmp_path / "nuclio.zip").read_bytes() == b"previous zip", (
        "replaced only by a complete zip"
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".nuclio-")], (
        "no partial zip left"
    )
    assert deploy(tmp_path, "only-one-argument").returncode == 2


def test_an_existing_zip_and_labels_are_replaced_only_with_overwrite(inputs, tmp_path):
    args = ("coral", inputs / "best.pth", CONFIG, inputs / "vit_b_coralscop.pth")
    (tmp_path / "cvat_labels.json").write_text("my edited labels")
    refused = deploy(tmp_path, *args)
    assert refused.returncode == 1 and "cvat_labels.json already exists" in refused.stderr
    assert "--overwrite" in refused.stderr
    assert (tmp_path / "cvat_labels.json").read_text() == "my edited labels"
    assert not (tmp_path / "nuclio.zip").exists(), "refused before any work"
    assert deploy(tmp_path, *args, "--overwrite").returncode == 0
    assert json.loads((tmp_path / "cvat_labels.json").read_text())[0]["name"]
    previous = (tmp_path / "nuclio.zip").read_bytes()
    again = deploy(tmp_path, *args)
    assert again.returncode == 1 and "nuclio.zip" in again.stderr
    assert (tmp_path / "nuclio.zip").read_bytes() == previous


def test_an_unexpected_failure_answers_500_and_the_function_keeps_serving(monkeypatch, inputs):
    """Fault injection: the model raises once; the handler answers 500 with the reason, then 200."""
    import base64
    import importlib.util
    import types

    spec = importlib.util.spec_from_file_location("nuclio_main", ROOT / "nuclio" / "main.py")
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    calls = []

    class FlakyModel:
        classes = ["background", "Acropora"]

        def __call__(self, image):
            calls.append(image.shape)
            if len(calls) == 1:
                raise RuntimeError("CUDA out of memory (injected)")
            return types.SimpleNamespace(instances=[])

    logged = []
    logger = types.SimpleNamespace(warn=logged.append, error=logged.append, info=logged.append)
    context = types.SimpleNamespace(
        logger=logger,
        user_data=types.SimpleNamespace(model=FlakyModel()),
        Response=lambda **kw: types.SimpleNamespace(**kw),
    )
    body = json.dumps({"image": base64.b64encode((inputs / "quadrat.jpg").read_bytes()).decode()})
    failed = main.handler(context, types.SimpleNamespace(body=body))
    assert (
        failed.status_code == 500
        and "CUDA out of memory (injected)" in json.loads(failed.body)["error"]
    )
    assert any("Inference failed" in line for line in logged)
    again = main.handler(context, types.SimpleNamespace(body=body))
    assert again.status_code == 200 and json.loads(again.body) == []


def _load_package_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("nuclio_package", ROOT / "nuclio" / "package.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sam_weights_are_left_out_only_on_purpose(capsys, tmp_path):
    package = _load_package_module()
    weights, sam = tmp_path / "best.pth", tmp_path / "sam.pth"
    assert package.main(["coral", str(weights), str(CONFIG)]) == 1
    assert "SAM_WEIGHTS: missing" in capsys.readouterr().err
    assert package.main(["--semantic-only", "coral", str(weights), str(CONFIG), str(sam)]) == 1
    assert "give one or the other" in capsys.readouterr().err
    assert not (tmp_path / "nuclio.zip").exists()


@pytest.fixture(scope="module")
def semantic_bundle(tmp_path_factory, random_semantic_checkpoint):
    """deploy_as_zip.sh --semantic-only: the demo model without SAM weights, unpacked."""
    from dataset.reef_demo import render_sample

    tmp = tmp_path_factory.mktemp("semantic_only")
    result = deploy(tmp, "--semantic-only", "reefsemantic", random_semantic_checkpoint, CONFIG)
    assert result.returncode == 0, result.stderr
    assert "semantic only (no SAM" in result.stdout
    with zipfile.ZipFile(tmp / "nuclio.zip") as archive:
        archive.extractall(tmp / "unpacked")
    image, _ = render_sample(7, 128)
    assert cv2.imwrite(str(tmp / "quadrat.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return tmp / "unpacked" / "nuclio"


def test_a_semantic_only_bundle_records_it_in_its_function_yaml(semantic_bundle):
    assert not (semantic_bundle / "vit_b_coralscop.pth").exists()
    assert (semantic_bundle / "dataset" / "image_io.py").is_file()
    for name in ("function.yaml", "function-gpu.yaml"):
        spec = yaml.safe_load((semantic_bundle / name).read_text())
        env = {e["name"]: e["value"] for e in spec["spec"]["env"]}
        assert env["CORAL_SEMANTIC_ONLY"] == "1", name
        assert not [k for k in env if k.startswith("CORAL_SAM_")], name
        assert "semantic only, no SAM" in spec["metadata"]["annotations"]["name"]
    # serve.py (no Nuclio) sets the same env before the function starts; the shell wins
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORAL_")}
    show = ("import os, serve, request_body; "
            "print(os.environ['CORAL_SEMANTIC_ONLY'], request_body.MAX_PIXELS)")  # fmt: skip
    for shell, expected in (({}, "1 40000000"), ({"CORAL_SEMANTIC_ONLY": "0"}, "0 40000000")):
        shown = subprocess.run([sys.executable, "-c", show], cwd=semantic_bundle,
                               env={**env, **shell}, capture_output=True, text=True)  # fmt: skip
        assert shown.stdout.split() == expected.split(), shown.stderr[-2000:]


SEMANTIC_RUNNER = r"""
import base64, json, os, sys
import nuclio_sdk, nuclio_sdk.test
import main
from dataset import image_io
assert image_io.__file__.startswith(sys.argv[2]), image_io.__file__
body = json.dumps({"image": base64.b64encode(open(sys.argv[1], "rb").read()).decode()})
def call(body):  # a new Platform: init_context runs again
    return nuclio_sdk.test.Platform().call_handler(main.handler, nuclio_sdk.Event(body=body))
out = {}
marker = os.environ.pop("CORAL_SEMANTIC_ONLY")
try:
    call(body)
    out["without_marker"] = "started"
except FileNotFoundError as exc:
    out["without_marker"] = str(exc)
os.environ["CORAL_SEMANTIC_ONLY"] = marker
response = call(body)
out["status"], out["items"] = response.status_code, json.loads(response.body)
print("RESULT" + json.dumps(out))
"""


def test_a_semantic_only_bundle_serves_and_refuses_without_its_marker(semantic_bundle):
    (semantic_bundle / "run_semantic.py").write_text(SEMANTIC_RUNNER)
    spec = yaml.safe_load((semantic_bundle / "function.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("CORAL_")}
    env.update({e["name"]: str(e["value"]) for e in spec["spec"]["env"]})  # as Nuclio sets it
    result = subprocess.run(
        [sys.executable, "run_semantic.py", str(semantic_bundle.parent.parent / "quadrat.png"),
         str(semantic_bundle)],
        cwd=semantic_bundle, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.split("RESULT", 1)[1])
    assert str(semantic_bundle / "vit_b_coralscop.pth") in out["without_marker"]
    assert "--semantic-only" in out["without_marker"]
    assert out["status"] == 200 and out["items"], "genus regions come back as instances"
    for item in out["items"]:
        xtl, ytl, xbr, ybr = item["mask"][-4:]
        assert 0 <= xtl <= xbr < 128 and 0 <= ytl <= ybr < 128
        assert len(item["mask"]) - 4 == (xbr - xtl + 1) * (ybr - ytl + 1)
