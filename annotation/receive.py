"""Round step 3, receive: people's corrections come back, and the model learns from them.

In order, each recorded in loop.json as it finishes (a second receive goes on from the
first step not done, and refuses a round already recorded):
1. received: the corrected shapes, from the zip CVAT exports ("CVAT for images 1.1",
   read by annotation/cvat_archive.py) or from CVAT through FiftyOne
   (`load_annotations("round_N")`), replace the label field of exactly the round's
   samples. A sample sent but missing from the export, a name that was not sent, and
   label names the taxonomy does not know each stop the round, named. The round's
   samples are tagged `train` (a `val_share` of them `val`, drawn with the round's seed);
   the test split never changes.
2. prepared: prepare_data's own code prepares the saved view `loop_labelled` (every
   split-tagged sample) into the dataset folder training reads.
3. trained: train.py fine-tunes the round's model (annotation/finetune.py).
4. tested: test.py on the fixed test split (round 1 also evaluates the starting model,
   round 0, on the same split).
5. recorded: rounds.csv and rounds.png (annotation/records.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotation import finetune, records
from annotation.cvat_archive import check_frames, read_cvat_export
from annotation.pool import SPLIT_TAGS, find_pool, round_tag
from annotation.send import SENT_FILE
from annotation.state import LoopError, LoopState, Round, finish, load_state, round_dir
from dataset.prepare import prepare_dataset
from dataset.taxonomy import UnknownLabelsError, load_taxonomy
from settings import load_settings

log = logging.getLogger("annotate")
LABELLED_VIEW = "loop_labelled"
RECEIVED_FIELD = "loop_received"
SAME_VERTEX_PX = 0.51  # the CVAT writers keep whole or hundredths of pixels


@dataclass(frozen=True)
class ReceiveSettings:
    export: str | None = None
    from_cvat: bool = False
    val_share: float = 0.0
    epochs: int = 20
    image_size: int | None = None
    data_root: str | None = None

    def check(self) -> None:
        if self.export and self.from_cvat:
            raise LoopError("receive takes one of --export ZIP and --from-cvat, not both")
        if not 0.0 <= self.val_share < 1.0:
            raise LoopError(f"--val-share {self.val_share}: a share from 0 to below 1")
        if self.epochs < 1:
            raise LoopError(f"--epochs {self.epochs}: fine-tuning needs at least one epoch")


def _same_shapes(sent: dict, received: list) -> bool:
    """Whether people left an image's shapes as sent (`sent`: its sent.json entry); the
    order of the shapes does not count, a vertex moved by half a pixel or less does not."""
    if len(sent["shapes"]) != len(received):
        return False
    size = np.array([sent["width"], sent["height"]], float)

    def pixels(label, closed, rings) -> tuple:
        rings = [np.asarray(r, float).reshape(-1, 2) * size for r in rings]
        first = rings[0][0] if rings and len(rings[0]) else np.zeros(2)
        return (label, closed, round(float(first[0])), round(float(first[1]))), rings

    before = sorted((pixels(s["label"], s["closed"], s["points"]) for s in sent["shapes"]),
                    key=lambda item: item[0])  # fmt: skip
    after = sorted((pixels(p.label, bool(p.closed or p.filled), p.points) for p in received),
                   key=lambda item: item[0])  # fmt: skip
    for (key_a, rings_a), (key_b, rings_b) in zip(before, after, strict=True):
        if key_a[:2] != key_b[:2] or len(rings_a) != len(rings_b):
            return False
        for one, other in zip(rings_a, rings_b, strict=True):
            if one.shape != other.shape or np.abs(one - other).max() > SAME_VERTEX_PX:
                return False
    return True


def _received_shapes(dataset, loop_round: Round, sent: dict, settings: ReceiveSettings) -> dict:
    """sample id -> the corrected polylines."""
    if settings.export:
        frames = read_cvat_export(Path(settings.export))
        expected = {entry["name"]: sample_id for sample_id, entry in sent.items()}
        check_frames(frames, expected)
        return {expected[name]: frames[name].polylines for name in expected}
    anno_key = round_tag(loop_round.number)
    if anno_key not in dataset.list_annotation_runs():
        raise LoopError(f"dataset {dataset.name!r} has no CVAT annotation run {anno_key!r}")
    view = dataset.select(loop_round.chosen)
    if dataset.has_sample_field(RECEIVED_FIELD):  # load_annotations merges: start empty
        view.set_values(RECEIVED_FIELD, [None] * len(view))
    unexpected = view.load_annotations(anno_key, dest_field=RECEIVED_FIELD, unexpected="return")
    if unexpected and any(unexpected.values()):
        kinds = ", ".join(f"{len(v)} {k}" for k, v in unexpected.items() if v)
        raise LoopError(
            f"CVAT task {anno_key} holds shapes the dataset cannot take ({kinds}); redraw them "
            "as polygons or masks in CVAT, then receive again"
        )
    ids, labels = view.values(["id", RECEIVED_FIELD])
    return {
        i: (list(v.polylines) if v is not None else []) for i, v in zip(ids, labels, strict=True)
    }


def _check_labels(shapes: dict, taxonomy) -> None:
    unknown = sorted({p.label for polylines in shapes.values() for p in polylines
                      if taxonomy.index_of(p.label or "") is None})  # fmt: skip
    if unknown:
        raise UnknownLabelsError(
            f"labels the {taxonomy.name} taxonomy does not know: {', '.join(map(repr, unknown))}; "
            "rename them in CVAT (label names must be the taxonomy's) and export again"
        )


def take_corrections(dataset, loop_round: Round, folder: Path, settings: ReceiveSettings,
                     label_field: str, taxonomy) -> None:  # fmt: skip
    import fiftyone as fo

    sent = json.loads((folder / SENT_FILE).read_text())
    shapes = _received_shapes(dataset, loop_round, sent, settings)
    _check_labels(shapes, taxonomy)
    edited = sum(not _same_shapes(sent[i], shapes[i]) for i in loop_round.chosen)
    view = dataset.select(loop_round.chosen, ordered=True)
    values = {
        i: fo.Polylines(polylines=[
            fo.Polyline(label=p.label, points=p.points, closed=p.closed, filled=p.filled)
            for p in shapes[i]
        ])
        for i in loop_round.chosen
    }  # fmt: skip
    rng = np.random.default_rng([loop_round.seed, loop_round.number])
    to_val = round(settings.val_share * len(loop_round.chosen))
    val_ids = set(rng.permutation(loop_round.chosen)[:to_val].tolist())
    _check_splits(dataset, loop_round, len(val_ids))
    view.set_values(label_field, values, key_field="id")
    view.untag_samples(list(SPLIT_TAGS))  # a rerun with another --val-share starts clean
    view.select(list(val_ids)).tag_samples("val")
    view.exclude(list(val_ids)).tag_samples("train")
    loop_round.edited = edited
    loop_round.added = {"train": len(loop_round.chosen) - len(val_ids), "val": len(val_ids)}
    loop_round.received_from = settings.export or f"cvat:{round_tag(loop_round.number)}"
    log.info(
        "Round %d: corrections of %d images in %r (%d changed by people); tagged train %d, "
        "val %d", loop_round.number, len(loop_round.chosen), label_field, edited,
        loop_round.added["train"], loop_round.added["val"],
    )  # fmt: skip


def _check_splits(dataset, loop_round: Round, new_val: int) -> None:
    """Training needs a val split to keep its best checkpoint, and the loop a test split to
    measure it; say so before anything is changed."""
    others = dataset.exclude(loop_round.chosen)
    counts = others.count_sample_tags()
    missing = [s for s in ("val", "test") if counts.get(s, 0) + (new_val if s == "val" else 0) == 0]
    if missing:
        raise LoopError(
            f"dataset {dataset.name!r} has no {' and no '.join(missing)} sample: tag annotated "
            f"samples {' and '.join(missing)} (the test split stays fixed over the rounds)"
            + (", or pass --val-share" if "val" in missing else "")
        )


def _check_round(state: LoopState) -> Round:
    loop_round = state.round()
    if loop_round.done("recorded"):
        raise LoopError(
            f"round {loop_round.number} was received and recorded on "
            f"{loop_round.steps['recorded']}; refusing to do it again. Start round "
            f"{loop_round.number + 1} with `annotate.py rank`"
        )
    if not loop_round.done("sent"):
        raise LoopError(f"round {loop_round.number} was not sent yet: run `annotate.py send` first")
    return loop_round


def receive(dataset_name: str, loop_dir: Path, settings: ReceiveSettings) -> dict:
    """Run receive's steps that are not done yet; returns the round's rounds.csv row."""
    import fiftyone as fo

    settings.check()
    state = load_state(loop_dir)
    if state is None:
        raise LoopError(f"{loop_dir} holds no loop: start with `annotate.py rank`")
    loop_round = _check_round(state)
    if not fo.dataset_exists(dataset_name):
        raise LoopError(f"FiftyOne dataset {dataset_name!r} does not exist")
    dataset = fo.load_dataset(dataset_name)
    folder = round_dir(loop_dir, loop_round)
    taxonomy = load_taxonomy(state.taxonomy)
    if not loop_round.done("received"):
        if not settings.export and not settings.from_cvat:
            raise LoopError("receive needs --export ZIP (CVAT's export) or --from-cvat")
        if settings.export and not Path(settings.export).exists():
            raise LoopError(f"--export {settings.export}: no such file")
        take_corrections(dataset, loop_round, folder, settings, state.label_field, taxonomy)
        finish(loop_dir, state, loop_round, "received")
    else:
        log.info("Round %d's corrections were taken on %s; going on", loop_round.number,
                 loop_round.steps["received"])  # fmt: skip
    if not loop_round.done("prepared"):
        prepare_round(dataset, state, settings, loop_dir)
        finish(loop_dir, state, loop_round, "prepared")
    config = finetune.write_finetune_config(folder, state.config, state.data_root, settings.epochs)
    if not loop_round.done("trained"):
        best = finetune.train(config, folder / "train", loop_round.checkpoint)
        loop_round.new_checkpoint = str(best)
        finish(loop_dir, state, loop_round, "trained")
    if not loop_round.done("tested"):
        if loop_round.number == 1 and not (Path(loop_dir) / "round_0" / "metrics.json").is_file():
            finetune.evaluate(config, state.start_checkpoint, Path(loop_dir) / "round_0")
        finetune.evaluate(config, loop_round.new_checkpoint, folder / "test")
        finish(loop_dir, state, loop_round, "tested")
    row = record(dataset, state, loop_round, Path(loop_dir), folder)
    finish(loop_dir, state, loop_round, "recorded")
    return row


def prepare_round(dataset, state: LoopState, settings: ReceiveSettings, loop_dir: Path) -> None:
    dataset.save_view(LABELLED_VIEW, dataset.match_tags(list(SPLIT_TAGS)), overwrite=True)
    # the first round fixes where and at which size; later rounds prepare the same way. By
    # default the loop prepares into its own folder: never over a dataset a user trains on
    if state.data_root:
        data_root = str(Path(state.data_root).parent)
    else:
        data_root = settings.data_root or str(Path(loop_dir) / "prepared")
    chosen = load_settings(
        taxonomy=state.taxonomy,
        image_size=state.image_size or settings.image_size,
        data_root=data_root,
        polylines_field=state.label_field,
    )
    prepared = prepare_dataset(dataset.name, chosen, overwrite=True, view=LABELLED_VIEW)
    if prepared.skipped:
        raise LoopError(f"{len(prepared.skipped)} labelled images could not be prepared")
    state.image_size = chosen.image_size
    state.data_root = str(prepared.path)


def record(dataset, state: LoopState, loop_round: Round, loop_dir: Path, folder: Path) -> dict:
    labelled = len(find_pool(dataset, state.label_field).labelled)
    if not any(r["round"] == "0" for r in records.read_rounds(loop_dir)):
        start = records.metrics_row(loop_dir / "round_0" / "metrics.json")
        before = labelled - loop_round.added.get("train", 0)
        records.append_round(loop_dir, dict(
            round=0, strategy="start", labelled_images=before, new_images=0, edited_images=0,
            checkpoint=state.start_checkpoint, **start,
        ))  # fmt: skip
    row = dict(
        round=loop_round.number, strategy=loop_round.strategy, labelled_images=labelled,
        new_images=len(loop_round.chosen), edited_images=loop_round.edited,
        checkpoint=loop_round.new_checkpoint,
        **records.metrics_row(folder / "test" / "metrics.json"),
    )  # fmt: skip
    rows = records.append_round(loop_dir, row)
    records.draw_rounds(loop_dir, rows, f"{state.dataset}: annotation loop")
    log.info(
        "Round %d: test mIoU %.4f with %d labelled training images (rounds.csv, rounds.png in %s)",
        loop_round.number, row["mIoU"] or float("nan"), labelled, loop_dir,
    )  # fmt: skip
    return row
