"""Validate a trained model and package it as CVAT (Nuclio) functions: nuclio.zip.

Called by deploy_as_zip.sh MODEL_NAME SEGFORMER_WEIGHTS SEGFORMER_CONFIG SAM_WEIGHTS,
or deploy_as_zip.sh --semantic-only MODEL_NAME SEGFORMER_WEIGHTS SEGFORMER_CONFIG.
Every input is checked before anything is written; the zip is built under a
temporary name and moved into place at the end, so a failure leaves no partial
zip and an existing nuclio.zip is replaced only by a complete one.

The zip holds two function folders: nuclio/, the detector (pth-mmseg-<MODEL_NAME>: a
whole frame pre-annotated), and nuclio-interactor/, the interactor (pth-click-<MODEL_NAME>:
clicks -> one colony, CoralSCoP alone; nuclio/interactor/ in this repository). Each is a
complete deploy folder with its own copy of the code and the SAM weights (Nuclio builds
a function from one folder).

A semantic-only bundle has no SAM weights; its function.yaml and function-gpu.yaml
set CORAL_SEMANTIC_ONLY=1, which is what lets the function start without them
(nuclio/main.py refuses to start without SAM weights otherwise). It has no interactor,
which is CoralSCoP.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FUNCTION_FILES = ("main.py", "request_body.py", "serve.py", "make_payload.py", "function.yaml",
                  "function-gpu.yaml")  # fmt: skip
SOURCE_MODULES = ("inferencer.py", "settings.py")
SOURCE_PACKAGES = ("dataset", "models")  # dataset/ holds image_io.py, the function's reader
INTERACTOR_FOLDER = "nuclio-interactor"  # in the zip, beside nuclio/
INTERACTOR_FILES = ("main.py", "function.yaml", "function-gpu.yaml")  # nuclio/interactor/
INTERACTOR_SHARED = ("request_body.py", "serve.py", "make_payload.py")  # shared with nuclio/
INTERACTOR_PACKAGES = ("dataset", "models", "interactor")
# Kubernetes names: the function is pth-mmseg-<MODEL_NAME>, at most 63 characters.
NAME_PATTERN = re.compile(r"[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?")
SEMANTIC_ONLY_ENV = {"name": "CORAL_SEMANTIC_ONLY", "value": "1"}
# The attributes every answered item carries (nuclio/main.py `attributes`). CVAT's server
# keeps an item's attribute only when the task's label declares one of that name, so the
# function's spec and the project's labels (cvat_labels.json) both declare them.
ATTRIBUTES = (
    {"name": "confidence", "input_type": "number", "values": ["0", "100", "1"]},
    {"name": "unsure", "input_type": "checkbox", "values": ["false"]},
)
LABELS_FILE = "cvat_labels.json"


class PackagingError(ValueError):
    """An input that cannot be packaged; the message names the argument."""


def _readable(path: str, argument: str) -> Path:
    file = Path(path)
    if not file.is_file() or not os.access(file, os.R_OK):
        raise PackagingError(f"{argument}: {path} is not a readable file")
    return file


def validate(model_name: str, seg_weights: str, seg_config: str, sam_weights: str | None) -> dict:
    """Check every input; returns what packaging needs (the resolved config, the classes).

    sam_weights None: a semantic-only bundle (the caller asked for it on purpose)."""
    if not NAME_PATTERN.fullmatch(model_name):
        raise PackagingError(
            f"MODEL_NAME: {model_name!r} is not a valid function name (lower-case letters, "
            "digits and '-', starting and ending with a letter or digit, at most 53 characters)"
        )
    weights = _readable(seg_weights, "SEGFORMER_WEIGHTS")
    config = _readable(seg_config, "SEGFORMER_CONFIG")
    sam = None if sam_weights is None else _readable(sam_weights, "SAM_WEIGHTS")
    from mmengine.config import Config

    import models  # noqa: F401  (mmcv.ops stand-in before mmengine builds anything)
    from models.coralscop import SamCheckpointError, load_coralscop
    from models.safe_checkpoint import safe_load

    try:
        cfg = Config.fromfile(str(config), import_custom_modules=False)
        num_classes = int(cfg.model.decode_head.num_classes)
    except Exception as exc:  # a config is Python: any error means it cannot be used
        raise PackagingError(
            f"SEGFORMER_CONFIG: {config} does not parse as an MMSegmentation config: {exc}"
        ) from None
    try:
        checkpoint = safe_load(weights)
    except Exception as exc:
        raise PackagingError(f"SEGFORMER_WEIGHTS: {weights} cannot be loaded: {exc}") from None
    state = checkpoint.get("state_dict", checkpoint)
    head = state.get("decode_head.conv_seg.weight")
    if head is None:
        raise PackagingError(f"SEGFORMER_WEIGHTS: {weights} holds no decode_head.conv_seg weights")
    if head.shape[0] != num_classes:
        raise PackagingError(
            f"SEGFORMER_CONFIG and SEGFORMER_WEIGHTS disagree: {config} has {num_classes} classes, "
            f"{weights} was trained with {head.shape[0]}"
        )
    meta = checkpoint.get("meta", {}).get("dataset_meta") or cfg.get("dataset_info") or {}
    classes = list(meta.get("classes") or [])
    palette = [tuple(int(c) for c in color) for color in meta.get("palette") or []]
    if len(classes) != num_classes:
        raise PackagingError(
            f"SEGFORMER_WEIGHTS: {weights} names {len(classes)} classes, expected {num_classes}"
        )
    if sam is not None:
        try:
            load_coralscop(sam)
        except (SamCheckpointError, Exception) as exc:
            raise PackagingError(f"SAM_WEIGHTS: {sam}: {exc}") from None
    return dict(cfg=cfg, classes=classes, palette=palette, weights=weights, sam=sam)


def function_labels(classes: list[str]) -> list[dict]:
    """The function's label spec (function.yaml): every genus, as masks, with ATTRIBUTES."""
    return [
        {"id": i, "name": name, "type": "mask", "attributes": [dict(a) for a in ATTRIBUTES]}
        for i, name in enumerate(classes)
        if i > 0
    ]


def project_labels(classes: list[str], palette: list[tuple[int, ...]]) -> list[dict]:
    """Labels for a CVAT project or task (paste into its Raw label editor): the names the
    function answers with (CVAT matches them exactly, case included), the attributes it
    fills, and the dataset's palette. Type "any" takes masks and, with "Convert masks to
    polygons", polygons."""
    labels = []
    for i, name in enumerate(classes):
        if i == 0:
            continue  # background is not annotated
        label = {"name": name, "type": "any"}
        if i < len(palette):
            label["color"] = "#{:02x}{:02x}{:02x}".format(*palette[i][:3])
        label["attributes"] = [
            {**a, "mutable": True, "default_value": a["values"][0]} for a in ATTRIBUTES
        ]
        labels.append(label)
    return labels


def function_names(model_name: str) -> dict[str, str]:
    """The two functions' Nuclio names (Kubernetes names: at most 63 characters)."""
    return {"detector": f"pth-mmseg-{model_name}", "interactor": f"pth-click-{model_name}"}


def render_function_yaml(
    template: Path, model_name: str, classes: list[str], semantic_only: bool = False
) -> str:
    import yaml

    spec = yaml.safe_load(template.read_text())
    spec["metadata"]["name"] = function_names(model_name)["detector"]
    annotations = spec["metadata"]["annotations"]
    if semantic_only:
        annotations["name"] = f"{annotations['name']} [{model_name}, semantic only, no SAM]"
        env = [e for e in spec["spec"].get("env") or [] if not e["name"].startswith("CORAL_SAM_")]
        spec["spec"]["env"] = [*env, dict(SEMANTIC_ONLY_ENV)]
        spec["spec"]["description"] = (
            "Coral genera instances: the connected regions of each genus in a DINOv2 + "
            "SegFormer semantic map (no SAM)"
        )
    else:
        annotations["name"] = f"{annotations['name']} [{model_name}]"
    annotations["spec"] = json.dumps(function_labels(classes), indent=2)
    spec["spec"]["build"]["image"] = f"cvat.pth.mmseg.{model_name}" + (
        ".gpu" if "gpu" in template.name else ""
    )
    return yaml.safe_dump(spec, sort_keys=False)


def render_interactor_yaml(template: Path, model_name: str) -> str:
    """The interactor's function.yaml: its name and display name for this model; the
    annotations CVAT reads are kept as written (nuclio/interactor/function.yaml)."""
    import yaml

    spec = yaml.safe_load(template.read_text())
    spec["metadata"]["name"] = function_names(model_name)["interactor"]
    annotations = spec["metadata"]["annotations"]
    annotations["name"] = f"{annotations['name']} [{model_name}]"
    spec["spec"]["build"]["image"] = f"cvat.pth.click.{model_name}" + (
        ".gpu" if "gpu" in template.name else ""
    )
    return yaml.safe_dump(spec, sort_keys=False)


def _add_tree(archive: zipfile.ZipFile, folder: Path, arc_root: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            archive.write(path, f"{arc_root}/{path.relative_to(folder)}")


def build_zip(model_name: str, checked: dict, output: Path) -> Path:
    import segment_anything

    output = output.resolve()
    fd, temporary = tempfile.mkstemp(prefix=".nuclio-", suffix=".zip", dir=output.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
            here = Path(__file__).resolve().parent
            for name in FUNCTION_FILES:
                if name.startswith("function"):
                    spec = render_function_yaml(
                        here / name, model_name, checked["classes"], checked["sam"] is None
                    )
                    archive.writestr(f"nuclio/{name}", spec)
                else:
                    archive.write(here / name, f"nuclio/{name}")
            for name in SOURCE_MODULES:
                archive.write(REPO / name, f"nuclio/{name}")
            for package in SOURCE_PACKAGES:
                _add_tree(archive, REPO / package, f"nuclio/{package}")
            _add_tree(archive, Path(segment_anything.__file__).parent, "nuclio/segment_anything")
            archive.writestr("nuclio/best_segformer_config.py", checked["cfg"].pretty_text)
            archive.writestr(f"nuclio/{LABELS_FILE}", labels_json(checked))
            # weights do not compress: store them as they are
            archive.write(checked["weights"], "nuclio/best_segformer.pth", zipfile.ZIP_STORED)
            if checked["sam"] is not None:
                archive.write(checked["sam"], "nuclio/vit_b_coralscop.pth", zipfile.ZIP_STORED)
                _add_interactor(archive, model_name, checked["sam"])
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a zip is for sharing
        os.replace(temporary, output)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return output


def _add_interactor(archive: zipfile.ZipFile, model_name: str, sam_weights: Path) -> None:
    """nuclio-interactor/: the click-to-segment function, a deploy folder of its own."""
    import segment_anything

    here = Path(__file__).resolve().parent
    root = INTERACTOR_FOLDER
    for name in INTERACTOR_FILES:
        source = here / "interactor" / name
        if name.startswith("function"):
            archive.writestr(f"{root}/{name}", render_interactor_yaml(source, model_name))
        else:
            archive.write(source, f"{root}/{name}")
    for name in INTERACTOR_SHARED:
        archive.write(here / name, f"{root}/{name}")
    for name in SOURCE_MODULES:
        archive.write(REPO / name, f"{root}/{name}")
    for package in INTERACTOR_PACKAGES:
        _add_tree(archive, REPO / package, f"{root}/{package}")
    _add_tree(archive, Path(segment_anything.__file__).parent, f"{root}/segment_anything")
    archive.write(sam_weights, f"{root}/vit_b_coralscop.pth", zipfile.ZIP_STORED)


def labels_json(checked: dict) -> str:
    return json.dumps(project_labels(checked["classes"], checked["palette"]), indent=2) + "\n"


def write_labels(checked: dict, target: Path) -> Path:
    """cvat_labels.json beside the zip, written whole or not at all."""
    from dataset.image_io import write_bytes_atomic

    write_bytes_atomic(target, labels_json(checked).encode())
    return target


def _check_outputs(output: Path, overwrite: bool) -> None:
    """Refuse, before any work, to replace a zip or labels file without --overwrite."""
    existing = [p for p in (output, output.with_name(LABELS_FILE)) if p.exists()]
    if existing and not overwrite:
        names = " and ".join(str(p) for p in existing)
        raise PackagingError(
            f"{names} already exist{'s' if len(existing) == 1 else ''}; pass --overwrite to "
            "replace, or run from another folder (or --output elsewhere)"
        )
    for path in existing:
        if path.is_dir():
            raise PackagingError(f"{path} is a folder; move it or pass another --output")


def _sam_argument(sam_weights: str | None, semantic_only: bool) -> str | None:
    """SAM_WEIGHTS, or None for a semantic-only bundle; never one left out by mistake."""
    if semantic_only and sam_weights is not None:
        raise PackagingError(
            f"SAM_WEIGHTS: {sam_weights} was given with --semantic-only; give one or the other"
        )
    if not semantic_only and sam_weights is None:
        raise PackagingError(
            "SAM_WEIGHTS: missing. Give the CoralSCoP weights (vit_b_coralscop.pth), or "
            "--semantic-only to package a function without SAM (one instance per genus region)"
        )
    return sam_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_name")
    parser.add_argument("segformer_weights")
    parser.add_argument("segformer_config")
    parser.add_argument("sam_weights", nargs="?")
    parser.add_argument(
        "--semantic-only",
        action="store_true",
        help="package without SAM weights: the function serves each genus region of the "
        "semantic map as an instance (sets CORAL_SEMANTIC_ONLY=1 in function.yaml)",
    )
    parser.add_argument("--output", type=Path, default=Path("nuclio.zip"))
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace an existing zip and the {LABELS_FILE} beside it",
    )
    args = parser.parse_args(argv)
    try:
        sam_weights = _sam_argument(args.sam_weights, args.semantic_only)
        _check_outputs(args.output, args.overwrite)
        checked = validate(
            args.model_name, args.segformer_weights, args.segformer_config, sam_weights
        )
        zip_path = build_zip(args.model_name, checked, args.output)
        labels_path = write_labels(checked, zip_path.with_name(LABELS_FILE))
    except PackagingError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    names, model = function_names(args.model_name), args.model_name
    size = zip_path.stat().st_size / 2**20
    deploy = "nuctl deploy --project-name cvat --platform local --verbose --path"
    served = f"{len(checked['classes']) - 1} genera"
    folders, deployed = ["nuclio"], [names["detector"]]
    if sam_weights is None:
        served += ", semantic only (no SAM: one instance per genus region; no interactor)"
    else:
        served += f"; interactor {names['interactor']} (click-to-segment, CoralSCoP)"
        folders.append(INTERACTOR_FOLDER)
        deployed.append(names["interactor"])
    serverless = f"/path/to/cvat/serverless/pytorch/mmseg/{model}"
    print(
        f"Created {zip_path} ({size:.1f} MiB): function {names['detector']}, {served}.\n\n"
        "Deploy, option 1 (CVAT's serverless folder):\n"
        f"  unzip {zip_path.name} -d {serverless}/\n"
        + "".join(
            f"  cd /path/to/cvat && {deploy} ./serverless/pytorch/mmseg/{model}/{f}/\n"
            for f in folders
        )  # fmt: skip
        + "Deploy, option 2 (local bundle):\n"
        f"  mkdir -p nuclio_bundles/{model} && unzip {zip_path.name} -d nuclio_bundles/{model}/\n"
        + "".join(f"  {deploy} ./nuclio_bundles/{model}/{f}/\n" for f in folders)
        + "GPU: add --file <bundle>/<folder>/function-gpu.yaml to nuctl deploy.\n"
        f"Check: nuctl get function --platform local (lists {', '.join(deployed)})\n"
        f"Labels: paste {labels_path.name} into the CVAT project's Raw label editor (names "
        "match the function's exactly; confidence and unsure attributes kept)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
