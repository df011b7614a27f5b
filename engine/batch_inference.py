"""Batch two-stage inference over a folder, as inference_with_coralscop.py runs it.

`run(args, processes, generator, fusion, run_info)`: the main process checks the inputs
and claims the output folder (holding its lock) while the others wait and then join it;
the images still to do are shared by pixel count (dataset/sharding.py); each process
runs the models over its share, a large image through tiles (mosaic/); the main process
merges the logs and writes predictions.json and the summary. Every process returns the
same exit status: 0, 1 when an image or an output failed, 2 when nothing could start.
`args` is the command line as inference_with_coralscop.parse_args reads it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dataset.image_io import read_rgb
from dataset.inference_outputs import (
    InputFolderError,
    OutputConflictError,
    OutputFolder,
    scan_inputs,
)
from dataset.sharding import partition, pixel_count
from engine.distributed import Processes
from exchange.run_to_taglab import PROJECT, write_run_project
from inferencer import TwoStageInferencer
from models.cpu_precision import requested_precision
from models.fusion import FusionSettings
from models.mask_generator import GeneratorSettings
from mosaic.batch import infer_large_image
from mosaic.pipeline import TileSettings, wants_tiling

log = logging.getLogger("inference")


def setup_logging(log_file: Path, process: str = "") -> None:
    """INFO and above to the terminal and to log_file (one file handler per run);
    process: '[rank/world] ' in a sharded run, so each line says which process wrote it."""
    logging.basicConfig(level=logging.INFO, format=f"{process}%(levelname)s: %(message)s")
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(f"%(asctime)s {process}%(levelname)s %(message)s"))
    for name in ("inference", "inferencer", "models"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        for old in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
            logger.removeHandler(old)
            old.close()
        logger.addHandler(handler)


def _reason(exc: BaseException, name: str) -> str:
    """The error's message without a leading file name (the log line starts with it)."""
    message = str(exc)
    return message[len(name) + 2 :] if message.startswith(f"{name}: ") else message


def _check_stems(images: list[Path]) -> None:
    stems = [p.stem for p in images]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise InputFolderError(
            f"images in {images[0].parent} share a name (their masks would collide): {clashes}; "
            "rename them"
        )


def _decode(path: Path, tiles: TileSettings) -> np.ndarray | None:
    """The decoded image, or None for one that goes through tiles (read by windows there)."""
    return None if wants_tiling(path, tiles.always) else read_rgb(path, name=path.name)


def _process(
    pending: list[Path],
    out: OutputFolder,
    inferencer,
    save_semantic: bool,
    progress: bool = True,
    tiles: TileSettings | None = None,
) -> list[str]:
    """Every pending image through the models into the output folder; returns the names of
    those that failed."""
    failures = []
    # decoding the next image overlaps the model work on this one
    with ThreadPoolExecutor(max_workers=1) as reader:
        tiles = tiles or TileSettings()
        decoded = [reader.submit(_decode, path, tiles) for path in pending[:1]]
        bar = tqdm(pending, unit="img", disable=not progress)
        for index, path in enumerate(bar):
            if index + 1 < len(pending):
                nxt = pending[index + 1]
                decoded.append(reader.submit(_decode, nxt, tiles))
            started = time.perf_counter()
            try:
                image = decoded[index].result()
                if image is None:  # a large image: tiles, GeoTIFF and GeoJSON outputs
                    result = infer_large_image(path, out, inferencer, tiles)
                else:
                    result = inferencer(image)
                    out.write(path.stem, path.name, image, result, inferencer.classes,
                              inferencer.palette, save_semantic)  # fmt: skip
            except Exception as exc:  # one bad image must not stop the batch; it is logged
                failures.append(path.name)
                log.error(
                    "%s: not done: %s: %s", path.name, type(exc).__name__, _reason(exc, path.name)
                )
                continue
            finally:
                decoded[index] = None  # the decoded image goes with this iteration
            seconds = time.perf_counter() - started
            if image is None:
                found, unsure = result.colonies, result.unsure
            else:
                found, unsure = len(result.instances), sum(i.unsure for i in result.instances)
            bar.set_postfix(s_per_img=f"{seconds:.2f}", instances=found)
            log.info(
                "%s: %d instances (%d unsure) in %.2f s (semantic %.2f, SAM %.2f, fusion %.2f)",
                path.name,
                found,
                unsure,
                seconds,
                result.seconds["semantic"],
                result.seconds["sam"],
                result.seconds["fusion"],
            )
            del image, result  # nothing of a finished image outlives its iteration
    return failures


def _to_fiftyone(name: str, out: OutputFolder, images: list[Path], classes) -> None:
    """Store every finished image's instances, read back from its record one at a time:
    memory stays that of one batch, and images finished by an earlier (interrupted)
    run are stored too."""
    from dataset.fiftyone_predictions import add_predictions, detections_from_coco

    by_name = {p.name: p for p in images}
    items = (
        (by_name[record["image"]["file_name"]], detections_from_coco(
            record["annotations"], classes, record["image"]["width"], record["image"]["height"]
        ))
        for _, record in out.records([p.stem for p in images])
    )  # fmt: skip
    count = add_predictions(name, items)
    log.info("Stored predictions of %d images in FiftyOne dataset %s (field 'predictions')",
             count, name)  # fmt: skip


def _to_taglab(args, out: OutputFolder, images: list[Path], classes, reports: list[dict]) -> int:
    """--taglab: the run's predictions as one TagLab project; the count of errors."""
    palette = next(r["palette"] for r in reports if r["palette"])
    try:
        target = out.end_file_target(PROJECT)
        written, refused = write_run_project(out.root, images, out.record_path, classes, palette,
                                             args.mm_per_pixel, target)  # fmt: skip
        if written is not None:
            out.note_written(written)
    except OSError as exc:  # ImageWriteError included
        log.error("TagLab project not written: %s", exc)
        return 1
    return 1 if refused else 0


def _settings(args: argparse.Namespace) -> tuple[GeneratorSettings, FusionSettings, dict]:
    generator = GeneratorSettings(
        points_per_side=args.points_per_side,
        crop_n_layers=args.crop_n_layers,
        pred_iou_thresh=args.score_threshold,
        stability_score_thresh=args.stability_threshold,
        min_mask_region_area=args.min_area,
    )
    fusion = FusionSettings(
        args.min_threshold, args.unsure_threshold, args.nms_threshold, args.min_area
    )
    run_info = {
        "segformer_config": str(args.segformer_config),
        "segformer_weights": str(args.segformer_weights),
        "sam_checkpoint": args.sam_checkpoint,
        "generator": vars(generator),
        "fusion": vars(fusion),
    }
    # bf16 changes the numbers a little: a bf16 run does not resume an f32 one's folder.
    # Recorded only when asked for, so that f32 runs resume the folders of earlier versions.
    if requested_precision(args.cpu_precision, "--cpu-precision") == "bf16":
        run_info["cpu_precision"] = "bf16"
    return generator, fusion, run_info


def run(args: argparse.Namespace, processes: Processes) -> int:
    """The main process checks the inputs and claims the output folder (holding its lock)
    while the others wait; they then join the folder. Every process returns the same status."""
    generator, fusion, run_info = _settings(args)
    opened: tuple | str = ""
    if processes.is_main:
        try:
            scan = scan_inputs(args.input_dir)
            _check_stems(scan.images)
            out = OutputFolder(args.output_dir, run_info, args.overwrite, inputs=[args.input_dir])
            opened = (scan, [p for p in scan.images if not out.is_done(p.stem)])
        except (InputFolderError, OutputConflictError, OSError) as exc:
            opened = f"ERROR: {exc}"
    opened = processes.broadcast(opened)
    if isinstance(opened, str):
        if processes.is_main:
            print(opened, file=sys.stderr)
        return 2
    scan, pending = opened
    if not processes.is_main:
        out = OutputFolder(args.output_dir, run_info, join=True)
    with out:
        return _run(args, scan, pending, out, generator, fusion, processes)


def _share(pending: list[Path], processes: Processes) -> list[Path]:
    """This process's images: the pending ones split by pixel count (headers read by all)."""
    if not processes.sharded:
        return pending
    pixels = processes.map(pixel_count, pending)
    shares = partition(pixels, processes.world_size)
    if processes.is_main:
        log.info("Shares: %s", "; ".join(
            f"process {rank}: {len(share)} images, {sum(pixels[i] for i in share) / 1e6:.1f} MP"
            for rank, share in enumerate(shares)
        ))  # fmt: skip
    return [pending[i] for i in shares[processes.rank]]


def _run(args, scan, pending: list[Path], out: OutputFolder, generator: GeneratorSettings,
         fusion: FusionSettings, processes: Processes) -> int:  # fmt: skip
    tag = f"[{processes.rank}/{processes.world_size}] " if processes.sharded else ""
    setup_logging(out.process_log(processes.rank) if processes.sharded else out.log_file, tag)
    device = processes.device(args.device)
    images = scan.images
    if processes.is_main:
        if out.kept:
            more = f" and {len(out.kept) - 10} more" if len(out.kept) > 10 else ""
            log.warning("--overwrite kept the files no run writes in %s: %s%s", out.root,
                        ", ".join(map(str, out.kept[:10])), more)  # fmt: skip
        for path, reason in scan.skipped:
            log.warning("%s: skipped: %s", path.name, reason)
        where = f"{processes.world_size} processes" if processes.sharded else device
        log.info("%d images in %s; %d already done, %d to process on %s", len(images),
                 args.input_dir, len(images) - len(pending), len(pending), where)  # fmt: skip
    share = _share(pending, processes)
    classes = None
    started = time.time()
    try:
        inferencer = TwoStageInferencer(
            args.segformer_config,
            args.segformer_weights,
            args.sam_checkpoint,
            device,
            fusion,
            generator,
            cpu_precision=args.cpu_precision,
        )
        classes = inferencer.classes
        if processes.is_main:
            log.info("--min-threshold %s: pixels whose best class probability is under %.3f "
                     "(%d classes) count for no class", fusion.min_threshold,
                     fusion.probability_floor(len(classes)), len(classes))  # fmt: skip
        if processes.sharded:
            log.info("%d images to process on %s", len(share), device)
        started = time.time()
        tiles = TileSettings(
            args.tile_size, args.tile_overlap, args.mm_per_pixel, args.tiled, nodata=args.nodata
        )
        failed = _process(share, out, inferencer, args.save_semantic, processes.is_main, tiles)
    except Exception as exc:
        if not processes.sharded:
            raise
        # Raising would end this process, and torchrun then ends the others: they finish
        # their shares instead, and this one's unfinished images are reported.
        log.exception("This process failed: %s: %s", type(exc).__name__, exc)
        failed = [p.name for p in share if not out.is_done(p.stem)]
        for name in failed:
            log.error("%s: not done: its process failed (%s)", name, type(exc).__name__)
    palette = inferencer.palette if classes is not None else None
    report = dict(failed=failed, done=len(share) - len(failed), classes=classes,
                  palette=palette, started=started, finished=time.time())  # fmt: skip
    reports = processes.all_gather(report)
    status = _finish(args, images, pending, out, reports, tag) if processes.is_main else 0
    return processes.broadcast(status)  # no process ends before the main one has finished


def _finish(args, images: list[Path], pending: list[Path], out: OutputFolder,
            reports: list[dict], tag: str) -> int:  # fmt: skip
    """The main process, once every process is done: one log, one predictions.json, the
    summary; returns the exit status."""
    errors = 0
    if len(reports) > 1:
        try:
            out.merge_process_logs()
        except OSError as exc:
            errors += 1
            log.error("process logs not merged (they stay in %s): %s", out.process_log(0).parent,
                      exc)  # fmt: skip
        setup_logging(out.log_file, tag)
    done = sum(r["done"] for r in reports)
    seconds = max(r["finished"] for r in reports) - min(r["started"] for r in reports)
    log.info("%d images processed in %.2f s on %d process(es): %.3f images/s", done, seconds,
             len(reports), done / seconds if seconds > 0 else 0.0)  # fmt: skip
    classes = next((r["classes"] for r in reports if r["classes"]), None)
    try:
        if classes is None:
            raise OSError("no process could load the models")
        predictions = out.assemble([p.stem for p in images], classes)
        log.info("Results in %s (predictions: %s, log: %s)", out.root, predictions, out.log_file)
    except OSError as exc:
        errors += 1
        log.error("predictions.json not written: %s", exc)
    if args.taglab and classes is not None:
        errors += _to_taglab(args, out, images, classes, reports)
    if args.to_fiftyone and classes is not None:
        try:
            _to_fiftyone(args.to_fiftyone, out, images, classes)
        except Exception as exc:  # the files are written; say what failed, exit non-zero
            errors += 1
            log.error("FiftyOne dataset %s not updated: %s: %s", args.to_fiftyone,
                      type(exc).__name__, exc)  # fmt: skip
    failed = sorted(name for r in reports for name in r["failed"])
    if failed:
        more = f" and {len(failed) - 50} more (each named above)" if len(failed) > 50 else ""
        log.error("Not done: %s%s", ", ".join(failed[:50]), more)
        log.error("%d of %d images failed; rerun the same command to retry them (see %s)",
                  len(failed), len(pending), out.log_file)  # fmt: skip
    return 1 if failed or errors else 0
