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
    cv2.imwrite(str(tmp / "quadrat.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
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


def test_function_yaml_follows_cvats_contract(bundle):
    fine = load_taxonomy("fine")
    for name in ("function.yaml", "function-gpu.yaml"):
        spec = yaml.safe_load((bundle / name).read_text())
        assert spec["metadata"]["name"] == "pth-mmseg-coralscopsegformer"
        assert spec["metadata"]["namespace"] == "cvat"
        annotations = spec["metadata"]["annotations"]
        assert annotations["type"] == "detector" and annotations["framework"] == "pytorch"
        labels = json.loads(annotations["spec"])
        assert labels == [
            {"id": i, "name": n, "type": "mask"} for i, n in enumerate(fine.classes) if i > 0
        ]
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
assert models.__file__.startswith(sys.argv[2]), models.__file__  # the bundle's own copy
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
        result = deploy(tmp_path, *args)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
    assert (tmp_path / "nuclio.zip").read_bytes() == b"previous zip", (
        "replaced only by a complete zip"
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".nuclio-")], (
        "no partial zip left"
    )
    assert deploy(tmp_path, "only-one-argument").returncode == 2


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
