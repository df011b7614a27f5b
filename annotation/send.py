"""Round step 2, send: the round's images go to CVAT pre-annotated, so people correct
shapes rather than draw them.

The model that ranked the round predicts each picked image's colonies
(annotation/predictions.py); they are stored on the samples in PREDICTIONS_FIELD and in
round_N/sent.json (what was sent, to tell later which images people changed), then
- without a server: an archive CVAT imports as it is, images and "CVAT for images 1.1"
  annotations (annotation/cvat_archive.py), default round_N/cvat_round_N.zip; or
- with `cvat=True`: a CVAT task made through FiftyOne's annotation API
  (`view.annotate(..., backend="cvat")`, annotation run `round_N`), with the server and
  credentials FiftyOne reads from the environment or .env: FIFTYONE_CVAT_URL,
  FIFTYONE_CVAT_USERNAME, FIFTYONE_CVAT_PASSWORD (or FIFTYONE_CVAT_EMAIL).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tqdm import tqdm

from annotation.cvat_archive import read_cvat_export, write_cvat_archive
from annotation.pool import round_tag
from annotation.predictions import ColonyPredictor
from annotation.state import LoopError, finish, load_state, round_dir
from dataset.image_io import ImageReadError, read_header, read_rgb, write_bytes_atomic

log = logging.getLogger("annotate")
PREDICTIONS_FIELD = "loop_predictions"
SENT_FILE = "sent.json"
LABELS_FILE = "cvat_labels.json"


def _entry(name: str, filepath: str, width: int, height: int, polylines) -> dict:
    """sent.json's record of one image: its name in CVAT, size and shapes as sent."""
    shapes = [
        {"label": p.label, "closed": bool(p.closed or p.filled), "points": p.points}
        for p in polylines
    ]
    return dict(name=name, filepath=filepath, width=width, height=height, shapes=shapes)


def predict_round(dataset, loop_round, config: str, device: str | None) -> dict[str, list]:
    """Predict the round's images and store the polylines in PREDICTIONS_FIELD."""
    import fiftyone as fo

    from inferencer import SemanticSegmenter

    predictor = ColonyPredictor(SemanticSegmenter(config, loop_round.checkpoint, device))
    view = dataset.select(loop_round.chosen, ordered=True)
    predictions, failed = {}, []
    for sample_id, path in tqdm(
        zip(*view.values(["id", "filepath"]), strict=True),
        total=len(view), desc="Pre-annotating", unit="image",
    ):  # fmt: skip
        try:
            predictions[sample_id] = predictor(read_rgb(path))
        except ImageReadError as exc:
            failed.append(f"{path}: {exc}")
    if failed:
        raise LoopError(
            f"{len(failed)} picked images cannot be read (fix or remove them, then send "
            "again):\n  " + "\n  ".join(failed)
        )
    values = {i: fo.Polylines(polylines=p) for i, p in predictions.items()}
    view.set_values(PREDICTIONS_FIELD, values, key_field="id")
    return predictions


def send(dataset_name: str, loop_dir: Path, archive: str | None = None, cvat: bool = False,
         overwrite: bool = False, device: str | None = None,
         cvat_options: dict | None = None) -> str:  # fmt: skip
    """Send the last ranked round; returns where it went (archive path or CVAT run)."""
    import fiftyone as fo

    state = load_state(loop_dir)
    if state is None:
        raise LoopError(f"{loop_dir} holds no loop: start with `annotate.py rank`")
    loop_round = state.round()
    if not loop_round.done("ranked"):
        raise LoopError(f"round {loop_round.number} is not ranked yet: run `annotate.py rank`")
    if loop_round.done("sent"):
        raise LoopError(
            f"round {loop_round.number} was sent already ({loop_round.sent_to}, "
            f"{loop_round.steps['sent']}); receive it with `annotate.py receive`"
        )
    if not fo.dataset_exists(dataset_name):
        raise LoopError(f"FiftyOne dataset {dataset_name!r} does not exist")
    dataset = fo.load_dataset(dataset_name)
    folder = round_dir(loop_dir, loop_round)
    target = Path(archive) if archive else folder / f"cvat_{loop_round.name}.zip"
    if not cvat and target.exists() and not overwrite:
        raise LoopError(f"{target} exists; pass --overwrite to replace it")
    predictions = predict_round(dataset, loop_round, state.config, device)
    view = dataset.select(loop_round.chosen, ordered=True)
    classes = cvat_label_names(state.taxonomy)
    paths = dict(zip(*view.values(["id", "filepath"]), strict=True))
    if cvat:
        anno_key = round_tag(loop_round.number)
        upload_to_cvat(dataset, view, anno_key, classes, dict(cvat_options or {}))
        loop_round.sent_to = f"cvat:{anno_key}"
        sent = {}
        for sample_id in loop_round.chosen:
            header = read_header(paths[sample_id])
            sent[sample_id] = _entry(sample_id, paths[sample_id], header.width, header.height,
                                     predictions[sample_id])  # fmt: skip
    else:
        try:
            names = write_cvat_archive(view, PREDICTIONS_FIELD, classes, target, overwrite)
        except (ValueError, FileExistsError) as exc:  # the archive's checks name what to fix
            raise LoopError(f"{target}: {exc}") from None
        loop_round.sent_to = str(target)
        # what people get is what the archive holds (CVAT's writer keeps whole pixels)
        frames = read_cvat_export(target)
        sent = {
            sample_id: _entry(name, paths[sample_id], frames[name].width, frames[name].height,
                              frames[name].polylines)
            for name, sample_id in names.items()
        }  # fmt: skip
    write_bytes_atomic(folder / SENT_FILE, (json.dumps(sent, indent=1) + "\n").encode())
    write_labels(state, folder / LABELS_FILE)
    finish(loop_dir, state, loop_round, "sent")
    return loop_round.sent_to


def upload_to_cvat(dataset, view, anno_key: str, classes: list[str], options: dict) -> None:
    """A CVAT task of the round's images with the predictions as shapes to correct, through
    FiftyOne's annotation API (which records the run `anno_key` for load_annotations).
    Shape attributes stay out, as in the archive. A failure (server unreachable, login
    refused) leaves no half-registered run behind and names the server."""
    import fiftyone as fo

    url = options.get("url") or fo.annotation_config.backends.get("cvat", {}).get("url")
    if anno_key in dataset.list_annotation_runs():  # never ours to delete: its task may hold work
        raise LoopError(
            f"dataset {dataset.name!r} has an annotation run {anno_key!r} already (a CVAT task "
            f"this loop or a person made before); receive it with `annotate.py receive "
            f"--from-cvat`, or delete it with dataset.delete_annotation_run({anno_key!r}) "
            "once its CVAT task is no longer needed"
        )
    try:
        view.annotate(
            anno_key, backend="cvat", label_field=PREDICTIONS_FIELD, label_type="polylines",
            classes=classes, attributes=False, task_name=f"{dataset.name} {anno_key}",
            **options,
        )  # fmt: skip
    except Exception as exc:  # requests' errors, CVAT's refusals: all end the send the same way
        if anno_key in dataset.list_annotation_runs():  # registered by this call, just now
            dataset.delete_annotation_run(anno_key)
        raise LoopError(
            f"CVAT at {url} did not take round {anno_key} ({type(exc).__name__}: {exc}). "
            "Check FIFTYONE_CVAT_URL, FIFTYONE_CVAT_USERNAME and FIFTYONE_CVAT_PASSWORD in "
            ".env, or send without --cvat to write the archive instead"
        ) from None


def write_labels(state, target: Path) -> None:
    """The CVAT labels of the taxonomy (names, colours, the detector's attributes), for the
    task's Raw label editor: the same list deploy_as_zip.sh writes, so one CVAT project
    serves the CVAT functions and the loop's rounds."""
    from dataset.taxonomy import load_taxonomy
    from nuclio.package import project_labels

    taxonomy = load_taxonomy(state.taxonomy)
    labels = project_labels(list(taxonomy.classes), [tuple(c) for c in taxonomy.palette])
    write_bytes_atomic(target, (json.dumps(labels, indent=2) + "\n").encode())


def cvat_label_names(taxonomy: str) -> list[str]:
    """The label names CVAT gets: the taxonomy's classes without background."""
    from dataset.taxonomy import load_taxonomy

    return list(load_taxonomy(taxonomy).classes[1:])
