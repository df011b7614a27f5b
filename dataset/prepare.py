"""FiftyOne dataset of polylines -> MMSegmentation dataset folder (the guide's Step 2).

Layout written under <data_root>/<name without _fo>/:
    images/{train,val,test}/       <stem>.jpg (JPEG sources) or <stem>.png (all others)
    annotations/{train,val,test}/  single-channel PNG masks, one class index per pixel
    classes.txt, palette.txt       one class / one "R G B" per line, index order
    dataset_info.py                classes, palette, counts, pixel frequencies, class weights
    manifest.csv                   sample id, source filepath, split, output files

Every source image is decoded with `dataset.image_io` (as CVAT and FiftyOne show it:
EXIF orientation applied, 16-bit scaled by the bits used, gray/RGBA/palette as RGB),
so a damaged or oversized file is named here rather than failing training later.
The image is copied byte for byte only when training would read exactly those
pixels from the copy: an 8-bit, 3-channel JPEG or PNG without rotation, already at
the output size. Otherwise it is re-encoded in the displayed frame, with no
Orientation tag, and the mask is drawn in that same frame.

The whole folder is written under a temporary name next to the target and renamed
at the end, so an interrupted run leaves no half dataset and the previous output
intact; replacing an existing folder needs overwrite=True and is refused for a folder
prepare_data.py did not write (dataset/output_safety.py). A later run removes what a
killed run left behind.
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from dataset.image_io import (
    DEFAULT_MAX_PIXELS,
    JPEG_FORMATS,
    DecodedImage,
    ImageHeader,
    ImageReadError,
    check_complete_jpeg,
    decode,
    is_plain_jpeg,
    read_header,
    write_bytes_atomic,
    write_image,
)
from dataset.info import SPLITS, write_dataset_info
from dataset.output_safety import (
    OutputRefusedError,
    absolute,
    check_replaceable,
    clean_leftovers,
    input_inside,
    staged_folder,
)
from dataset.rasterize import Shape, outside_image, rasterize
from dataset.taxonomy import Taxonomy, load_taxonomy
from settings import Settings

JPEG_QUALITY = 95

TOOL = "prepare_data.py"
WHAT = "prepared dataset folder"  # how refusals name the target
log = logging.getLogger("prepare_data")


class PrepareError(RuntimeError):
    """Input that cannot be prepared; the message says what to fix."""


@dataclass
class SampleJob:
    sample_id: str
    filepath: str
    split: str
    stem: str
    shapes: list[Shape]


@dataclass
class SampleResult:
    job: SampleJob
    image_file: str = ""
    mask_file: str = ""
    size: tuple[int, int] = (0, 0)  # (width, height) written
    source_size: tuple[int, int] = (0, 0)
    pixel_counts: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    shapes_outside: int = 0  # shapes wholly outside the image: they paint nothing
    error: str = ""


@dataclass
class Prepared:
    path: Path
    skipped: list[str]  # one message per sample left out with skip_missing


def output_name(dataset_name: str, taxonomy: str = "fine") -> str:
    """The guide's folder name: the FiftyOne dataset name without its `_fo` suffix.

    Another taxonomy than the fine one adds its name (criobe_finegrained_coarse), so
    one FiftyOne dataset can be prepared at both levels side by side.
    """
    name = dataset_name[: -len("_fo")] if dataset_name.endswith("_fo") else dataset_name
    return name if taxonomy == "fine" else f"{name}_{taxonomy}"


def output_size(width: int, height: int, longest_side: int) -> tuple[int, int]:
    scale = longest_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def pixel_counts(mask: np.ndarray) -> np.ndarray:
    """Pixels of each value 0-255 of a uint8 mask (int64).

    cv2.calcHist is several times faster than np.bincount, which first widens every
    pixel to int64; its float32 counts are exact up to 2**24, hence the row blocks."""
    rows = max(1, 2**24 // max(1, mask.shape[1]))
    counts = np.zeros(256, np.int64)
    for start in range(0, mask.shape[0], rows):  # whole rows of a C-ordered mask: contiguous
        block = mask[start : start + rows]
        counts += cv2.calcHist([block], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    return counts


def _read_source(job: SampleJob, image_size: int) -> tuple[bytes, ImageHeader, DecodedImage | None]:
    """The file's bytes, its header and its decoded pixels; ImageReadError names the file.

    The pixels are None for the common camera file that is copied as it is (an
    upright 8-bit RGB JPEG already at the output size): it is checked complete
    without a full decode, which would cost ~3x more."""
    try:
        data = Path(job.filepath).read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{job.filepath}: no such file") from None
    except OSError as exc:
        raise ImageReadError(f"{job.filepath}: cannot read ({exc.strerror or exc})") from None
    header = read_header(data, name=job.filepath)
    at_size = output_size(header.width, header.height, image_size) == (header.width, header.height)
    if at_size and is_plain_jpeg(header) and header.pixels <= DEFAULT_MAX_PIXELS:
        check_complete_jpeg(data, name=job.filepath)
        return data, header, None
    image = decode(data, DEFAULT_MAX_PIXELS, name=job.filepath)
    return data, image.header, image


def _copyable(image: DecodedImage, size: tuple[int, int]) -> bool:
    """mmcv would read from a byte-for-byte copy exactly the pixels decoded here."""
    header = image.header
    return (
        header.format in (*JPEG_FORMATS, "PNG")
        and image.stored_uint8_bgr
        and header.orientation == 1
        and size == (header.width, header.height)
    )


def _write_prepared_image(
    image_file: Path, data: bytes, image: DecodedImage, size: tuple[int, int]
) -> None:
    if _copyable(image, size):
        write_bytes_atomic(image_file, data)
        return
    rgb = image.rgb
    if size != (rgb.shape[1], rgb.shape[0]):
        interpolation = cv2.INTER_AREA if size[0] < rgb.shape[1] else cv2.INTER_CUBIC
        rgb = cv2.resize(rgb, size, interpolation=interpolation)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if image_file.suffix == ".jpg" else []
    write_image(image_file, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)


def process_sample(
    job: SampleJob, out_dir: str, image_size: int, line_width: float
) -> SampleResult:
    """Write one image and its mask; unreadable images come back in `error` so the batch
    goes on. Write failures raise: they stop the run."""
    result = SampleResult(job)
    try:
        data, header, image = _read_source(job, image_size)
    except ImageReadError as exc:  # ImageTooLargeError included
        result.error = f"sample {job.sample_id}: {exc}"
        return result
    source_size = (header.width, header.height)  # as displayed
    width, height = output_size(*source_size, image_size)
    suffix = ".jpg" if header.format in JPEG_FORMATS else ".png"
    image_file = Path(out_dir, "images", job.split, f"{job.stem}{suffix}")
    if image is None:  # an upright RGB JPEG at the output size, checked complete
        write_bytes_atomic(image_file, data)
    else:
        _write_prepared_image(image_file, data, image, (width, height))
    mask = rasterize(job.shapes, width, height, line_width)
    mask_file = Path(out_dir, "annotations", job.split, f"{job.stem}.png")
    write_image(mask_file, mask)
    result.image_file = str(image_file.relative_to(out_dir))
    result.mask_file = str(mask_file.relative_to(out_dir))
    result.size, result.source_size = (width, height), source_size
    result.pixel_counts = pixel_counts(mask)
    result.shapes_outside = sum(outside_image(s, width, height, line_width) for s in job.shapes)
    return result


def _one_thread() -> None:
    """Workers already fill the cores: OpenCV's own threads would only compete with them."""
    cv2.setNumThreads(1)


def _process(args: tuple) -> SampleResult:
    return process_sample(*args)


def load_fiftyone_dataset(name: str):
    import fiftyone as fo

    if not fo.dataset_exists(name):
        known = fo.list_datasets()
        raise PrepareError(
            f"No FiftyOne dataset named {name!r} in {fo.config.database_dir}. "
            f"Datasets there: {known if known else 'none'}."
        )
    return fo.load_dataset(name)


def _check_field(dataset, field_name: str) -> None:
    import fiftyone as fo

    schema = dataset.get_field_schema(embedded_doc_type=fo.Polylines)
    if field_name not in schema:
        raise PrepareError(
            f"Dataset {dataset.name!r} has no fo.Polylines field {field_name!r}; its "
            f"Polylines fields are {sorted(schema) or 'none'}. Set CORAL_POLYLINES_FIELD "
            "or pass --polylines-field."
        )


def split_of(tags: Iterable[str]) -> str | None:
    found = [split for split in SPLITS if split in set(tags)]
    return found[0] if len(found) == 1 else None


def _unique_stems(jobs: list[SampleJob]) -> None:
    """Give samples whose files share a name distinct output names (the sample id disambiguates)."""
    seen: Counter[tuple[str, str]] = Counter((j.split, j.stem) for j in jobs)
    for job in jobs:
        if seen[(job.split, job.stem)] > 1:
            job.stem = f"{job.stem}_{job.sample_id}"


def _raw_values(dataset, path: str) -> list:
    """values(path) without FiftyOne's per-point conversion, 6x faster on polygon points.

    `_raw` is a private flag of FiftyOne's values(); without it, the public path runs.
    """
    try:
        return dataset.values(path, _raw=True)
    except TypeError:
        return dataset.values(path)


def collect_jobs(
    dataset, settings: Settings, taxonomy: Taxonomy, skip_unsplit: bool
) -> list[SampleJob]:
    field_name = settings.polylines_field
    _check_field(dataset, field_name)
    # Plain per-attribute lists: building fo.Polyline documents costs ~50 ms a sample.
    prefix = f"{field_name}.polylines"
    ids, paths, tags, labels, closed, filled = dataset.values(
        ["id", "filepath", "tags", f"{prefix}.label", f"{prefix}.closed", f"{prefix}.filled"]
    )
    points = _raw_values(dataset, f"{prefix}.points")
    unsplit = [(i, p, t) for i, p, t in zip(ids, paths, tags, strict=True) if split_of(t) is None]
    if unsplit:
        listing = "\n".join(f"  {i}  {p}  tags={t}" for i, p, t in unsplit)
        message = f"{len(unsplit)} sample(s) have no split tag or several of {SPLITS}:\n{listing}"
        if not skip_unsplit:
            raise PrepareError(
                message + "\nTag each with exactly one split, or pass --skip-unsplit."
            )
        log.warning("%s\nSkipping them (--skip-unsplit).", message)
    kept = [i for i, sample_tags in enumerate(tags) if split_of(sample_tags) is not None]
    # a polyline without a label counts as the unknown label ""
    label_counts = Counter(label or "" for i in kept for label in labels[i] or [])
    class_of = taxonomy.resolve(label_counts, unknown=settings.unknown_labels)
    jobs = []
    for i in kept:
        shapes = [
            Shape(class_of[label or ""], shape, bool(is_closed or is_filled))
            for label, shape_list, is_closed, is_filled in zip(
                labels[i] or [], points[i] or [], closed[i] or [], filled[i] or [], strict=True
            )
            for shape in shape_list or []
            if shape
        ]
        jobs.append(SampleJob(ids[i], paths[i], split_of(tags[i]), Path(paths[i]).stem, shapes))
    _unique_stems(jobs)
    return jobs


def write_metadata(
    out_dir: Path,
    dataset_name: str,
    taxonomy: Taxonomy,
    settings: Settings,
    results: list[SampleResult],
) -> None:
    counts = {split: np.zeros(256, np.int64) for split in SPLITS}
    for result in results:
        counts[result.job.split] += result.pixel_counts
    write_dataset_info(
        out_dir,
        taxonomy,
        counts,
        {s: sum(r.job.split == s for r in results) for s in SPLITS},
        dict(dataset_name=dataset_name, image_size=settings.image_size),
        f"the FiftyOne dataset {dataset_name!r}",
    )
    with open(out_dir / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["sample_id", "source_filepath", "split", "image", "annotation", "width", "height",
             "source_width", "source_height", "num_shapes", "shapes_outside"]
        )  # fmt: skip
        for r in results:
            writer.writerow(
                [r.job.sample_id, r.job.filepath, r.job.split, r.image_file, r.mask_file,
                 *r.size, *r.source_size, len(r.job.shapes), r.shapes_outside]
            )  # fmt: skip


def _size_text(results: list[SampleResult]) -> str:
    sizes = {r.size for r in results}
    if len(sizes) == 1:
        width, height = sizes.pop()
        return f" ({width}x{height})"
    return " (sizes vary)" if sizes else ""


def _report(result: SampleResult, errors: list[str]) -> bool:
    """Log one sample's outcome; True when it was written."""
    if result.error:
        errors.append(result.error)
        log.error(result.error)
        return False
    if result.shapes_outside:
        log.warning(
            "sample %s (%s): %d of %d shape(s) lie wholly outside the image and paint "
            "nothing; were they drawn on another image or in another orientation?",
            result.job.sample_id, result.job.filepath, result.shapes_outside,
            len(result.job.shapes),
        )  # fmt: skip
    return True


def _run_split(
    split: str, args: list[tuple], pool, workers: int, errors: list[str]
) -> list[SampleResult]:
    log.info("Processing %s split: %d samples", split, len(args))
    if pool is None:
        mapped = map(_process, args)
    else:
        mapped = pool.map(_process, args, chunksize=max(1, len(args) // (4 * workers)))
    progress = tqdm(mapped, total=len(args), desc=split, unit="img", disable=not args)
    done = [result for result in progress if _report(result, errors)]
    log.info("Created %d semantic masks%s", len(done), _size_text(done))
    return done


def _run_jobs(
    jobs, out_dir, settings, line_width, workers, skip_missing
) -> tuple[list[SampleResult], list[str]]:
    results: list[SampleResult] = []
    errors: list[str] = []
    # spawn, not fork: the parent holds FiftyOne's MongoDB client threads
    pool = (
        ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread
        )
        if workers > 1
        else None
    )
    try:
        with logging_redirect_tqdm():  # log lines between progress bars, not inside one
            for split in SPLITS:
                args = [
                    (j, str(out_dir), settings.image_size, line_width)
                    for j in jobs
                    if j.split == split
                ]
                results += _run_split(split, args, pool, workers, errors)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if errors and not skip_missing:
        raise PrepareError(
            f"{len(errors)} sample(s) could not be read (listed above). Fix or remove them, "
            "or pass --skip-missing to prepare the rest."
        )
    return results, errors


def prepare_dataset(
    dataset_name: str,
    settings: Settings,
    overwrite: bool = False,
    skip_unsplit: bool = False,
    skip_missing: bool = False,
    line_width: float = 3.0,
    view: str | None = None,
) -> Prepared:
    """Export `dataset_name` as an MMSegmentation dataset folder: its path and the samples
    left out because their image could not be read (only with skip_missing). view: a saved
    view of the dataset to prepare instead of all of it (same output folder)."""
    started = time.perf_counter()
    taxonomy = load_taxonomy(settings.taxonomy)
    target = absolute(Path(settings.data_root) / output_name(dataset_name, taxonomy.name))
    clean_leftovers(target)
    check_target(target, overwrite)
    log.info("Loading FiftyOne dataset: %s", dataset_name)
    dataset = load_fiftyone_dataset(dataset_name)
    if view:
        if not dataset.has_saved_view(view):
            raise PrepareError(
                f"Dataset {dataset_name!r} has no saved view {view!r}; "
                f"its saved views: {dataset.list_saved_views() or 'none'}"
            )
        log.info("Saved view %s", view)
        dataset = dataset.load_saved_view(view)
    jobs = collect_jobs(dataset, settings, taxonomy, skip_unsplit)
    per_split = Counter(j.split for j in jobs)
    log.info("Found %d samples (%s)", len(jobs), ", ".join(f"{s}: {per_split[s]}" for s in SPLITS))
    if not jobs:
        raise PrepareError(f"Dataset {dataset_name!r} has no sample to prepare.")
    check_target(target, overwrite, (job.filepath for job in jobs))
    log.info("Converting polylines to semantic masks (%s taxonomy)...", taxonomy.name)
    workers = settings.num_workers or os.cpu_count() or 1
    try:
        with staged_folder(target, TOOL, overwrite, what=WHAT) as staging:
            for kind in ("images", "annotations"):
                for split in SPLITS:
                    (staging / kind / split).mkdir(parents=True)
            results, skipped = _run_jobs(jobs, staging, settings, line_width, workers, skip_missing)
            write_metadata(staging, dataset_name, taxonomy, settings, results)
    except OutputRefusedError as exc:  # another run wrote the folder meanwhile
        raise PrepareError(str(exc)) from None
    except OSError as exc:  # ImageWriteError included: a full disk, a lost mount
        raise PrepareError(
            f"Could not write the prepared dataset: {exc}. Nothing was changed at {target}; "
            f"free space in {target.parent} or pass another --data-root."
        ) from None
    elapsed = time.perf_counter() - started
    log.info("Dataset prepared at: %s (%d samples in %.1f s)", target, len(results), elapsed)
    if skipped:
        log.error(
            "%d sample(s) were left out because their image could not be read (listed above).",
            len(skipped),
        )
    return Prepared(target, skipped)


def prepare(
    dataset_name: str,
    settings: Settings,
    overwrite: bool = False,
    skip_unsplit: bool = False,
    skip_missing: bool = False,
    line_width: float = 3.0,
) -> Path:
    """`prepare_dataset`, for callers that need only the folder's path."""
    return prepare_dataset(
        dataset_name, settings, overwrite, skip_unsplit, skip_missing, line_width
    ).path


def check_target(target: Path, overwrite: bool, sources: Iterable[str] = ()) -> None:
    """The output-folder rule (dataset/output_safety.py), as a PrepareError; `sources`:
    the samples' image files, none of which may lie in the folder to be replaced."""
    try:
        check_replaceable(target, TOOL, overwrite, what=WHAT)
    except OutputRefusedError as exc:
        raise PrepareError(str(exc)) from None
    inside = input_inside(target, sources)
    if inside is not None:
        raise PrepareError(
            f"the image {inside} lies inside {target}, the folder this run writes; move the "
            "images out of it, or pass another --data-root"
        )
