"""The built-in reef example: a small, deterministic synthetic reef dataset in FiftyOne.

Each image is a textured sandy substrate with a few coral "colonies". Every genus
has its own colour and texture (branching stripes, polyp dots, radial septa, ...)
so a small model can learn to tell them apart on a CPU in minutes, which is what
the demo needs to show that training works. Labels are what CVAT exports:
closed, filled `fo.Polyline`s in relative coordinates, labelled with the genus,
and the samples carry `train` / `val` / `test` tags.

`create_reef_pool` makes a larger variant for active-learning benchmarks: genera
drawn with skewed frequencies (`SKEWED_GENUS_WEIGHTS`, two rare genera), random
fixed test / val sets, a small labelled `train` set and an unlabelled pool.

    python -m dataset.reef_demo                 # creates `reef_demo_fo` if missing
    python -m dataset.reef_demo --overwrite     # recreates it
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

import settings
from dataset.image_io import write_image

DEMO_DATASET_NAME = "reef_demo_fo"
CREATOR = "dataset.reef_demo"  # stored in dataset.info: the datasets this module may remake
SPLIT_CYCLE = ("train", "train", "train", "train", "val", "test")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenusLook:
    color: tuple[int, int, int]  # RGB
    texture: str


# Genera of the fine taxonomy, each with a look distinct in colour and texture.
GENUS_LOOKS: dict[str, GenusLook] = {
    "Acropora": GenusLook((196, 160, 86), "stripes"),
    "Porites": GenusLook((150, 96, 160), "cells"),
    "Pocillopora": GenusLook((232, 128, 140), "dots"),
    "Montipora": GenusLook((70, 120, 200), "smooth"),
    "Fungia": GenusLook((222, 222, 150), "radial"),
}

# Genus frequencies for active-learning benchmarks: three common genera and two rare
# ones. At seed 0 and 256 px, Montipora / Fungia are 0.97 % / 0.86 % of the 932 colonies
# of 300 images (0.97 % / 0.81 % of 1233 in 400); at 32-128 px each stays under 2 %.
SKEWED_GENUS_WEIGHTS: dict[str, float] = {
    "Acropora": 0.45,
    "Porites": 0.32,
    "Pocillopora": 0.206,
    "Montipora": 0.012,
    "Fungia": 0.012,
}


def _genus_probabilities(genus_weights: Mapping[str, float]) -> np.ndarray:
    """Weights per genus -> probabilities in GENUS_LOOKS order (checked, normalised)."""
    unknown = sorted(set(genus_weights) - set(GENUS_LOOKS))
    if unknown:
        raise ValueError(f"genus_weights name unknown genera {unknown}; known: {list(GENUS_LOOKS)}")
    missing = [g for g in GENUS_LOOKS if g not in genus_weights]
    if missing:
        raise ValueError(f"genus_weights lack genera {missing}; give every genus a weight")
    weights = np.array([float(genus_weights[g]) for g in GENUS_LOOKS])
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"genus_weights must be finite, >= 0 and not all 0: {dict(genus_weights)}")
    return weights / weights.sum()


def _smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    """Noise in [-1, 1] whose features are about `scale` pixels wide."""
    cells = max(2, size // scale)
    coarse = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(-1, 1)


def _substrate(rng: np.random.Generator, size: int) -> np.ndarray:
    base = np.array([128, 132, 118], np.float32)
    light = 18 * _smooth_noise(rng, size, 64)[..., None]
    grain = rng.normal(0, 9, (size, size, 1)).astype(np.float32)
    return base + light + grain


def _texture(look: GenusLook, rng: np.random.Generator, size: int, center) -> np.ndarray:
    """Brightness modulation in about [-1, 1] over the whole image for one colony."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if look.texture == "stripes":
        angle = rng.uniform(0, math.pi)
        return np.sin((xx * math.cos(angle) + yy * math.sin(angle)) / 2.2)
    if look.texture == "cells":
        return np.sin(xx / 2.5) * np.sin(yy / 2.5)
    if look.texture == "dots":
        return np.where(_smooth_noise(rng, size, 4) > 0.45, -1.0, 0.4).astype(np.float32)
    if look.texture == "radial":
        theta = np.arctan2(yy - center[1], xx - center[0])
        return np.sin(theta * 28)
    return 0.4 * _smooth_noise(rng, size, 24)


def _colony_outline(rng: np.random.Generator, center, radius: float) -> np.ndarray:
    """A closed, irregular, star-shaped outline (N, 2) in pixels."""
    count = int(rng.integers(20, 36))
    theta = np.linspace(0, 2 * math.pi, count, endpoint=False)
    wobble = sum(
        rng.uniform(-0.12, 0.12) * np.sin(k * theta + rng.uniform(0, 2 * math.pi))
        for k in (2, 3, 5)
    )
    r = radius * (1.0 + wobble)
    return np.stack([center[0] + r * np.cos(theta), center[1] + r * np.sin(theta)], axis=1)


def _place_colonies(rng: np.random.Generator, size: int) -> list[tuple[tuple[float, float], float]]:
    """Non-overlapping (center, radius) pairs; colonies may cross the image border."""
    placed: list[tuple[tuple[float, float], float]] = []
    wanted = int(rng.integers(2, 5))
    for _ in range(200):
        if len(placed) == wanted:
            break
        radius = float(rng.uniform(0.09, 0.2) * size)
        center = (float(rng.uniform(0.05, 0.95) * size), float(rng.uniform(0.05, 0.95) * size))
        if all(math.dist(center, c) > 1.3 * (radius + r) for c, r in placed):
            placed.append((center, radius))
    return placed


def render_sample(
    index: int, size: int, seed: int = 0, genus_weights: Mapping[str, float] | None = None
) -> tuple[np.ndarray, list[dict]]:
    """One synthetic quadrat: an RGB uint8 image and its colonies (genus, relative outline).

    Each colony's genus is uniform over GENUS_LOOKS, or drawn with `genus_weights`
    (genus -> weight for every genus, normalised here) when given.
    """
    probabilities = None if genus_weights is None else _genus_probabilities(genus_weights)
    rng = np.random.default_rng([seed, index])
    image = _substrate(rng, size)
    genera = list(GENUS_LOOKS)
    colonies = []
    for center, radius in _place_colonies(rng, size):
        if probabilities is None:  # the original draw: keeps the demo's images unchanged
            genus = genera[int(rng.integers(len(genera)))]
        else:
            genus = genera[int(rng.choice(len(genera), p=probabilities))]
        look = GENUS_LOOKS[genus]
        outline = _colony_outline(rng, center, radius)
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [np.round(outline).astype(np.int32)], 1)
        shade = 1.0 + 0.22 * _texture(look, rng, size, center)[..., None]
        colour = np.array(look.color, np.float32) * shade + rng.normal(0, 5, (size, size, 1))
        image = np.where(mask[..., None] > 0, colour, image)
        relative = np.clip(outline / size, 0.0, 1.0)
        colonies.append({"label": genus, "points": [tuple(map(float, p)) for p in relative]})
    return np.clip(image, 0, 255).astype(np.uint8), colonies


def _missing_images(dataset) -> list[str]:
    return [p for p in dataset.values("filepath") if not Path(p).is_file()]


def _write_images(
    image_dir: Path,
    num_samples: int,
    image_size: int,
    seed: int,
    genus_weights: Mapping[str, float] | None = None,
    stem: str = "reef",
) -> list[tuple[Path, list[dict]]]:
    """Render samples 0..num_samples-1 into `image_dir`; (image path, colonies) for each."""
    image_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(num_samples):
        image, colonies = render_sample(index, image_size, seed, genus_weights)
        path = image_dir / f"{stem}_{index:03d}.jpg"
        write_image(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        written.append((path, colonies))
    return written


def _polylines(colonies: list[dict]):
    """The colonies as CVAT exports them: closed, filled polylines (a fresh object each call)."""
    import fiftyone as fo

    return fo.Polylines(
        polylines=[
            fo.Polyline(label=c["label"], points=[c["points"]], closed=True, filled=True)
            for c in colonies
        ]
    )


def _save_dataset(name: str, samples: list, info: dict):
    """A new persistent FiftyOne dataset of `samples`, marked as made by this module."""
    import fiftyone as fo

    dataset = fo.Dataset(name)
    dataset.add_samples(samples, progress=False)
    dataset.info.update(info)
    dataset.info["created_by"] = CREATOR
    dataset.persistent = True
    dataset.save()
    return dataset


def _drop_to_remake(name: str, missing: list[str]) -> None:
    """Delete a dataset this module made, to make it again (its images may be gone, e.g.
    with the checkout that held them)."""
    import fiftyone as fo

    if missing:
        log.warning(
            "%d images of %s are missing (e.g. %s); recreating it", len(missing), name, missing[0]
        )
    fo.delete_dataset(name)


def create_reef_demo(
    name: str = DEMO_DATASET_NAME,
    num_samples: int = 24,
    image_size: int = 256,
    image_dir: str | Path | None = None,
    seed: int = 0,
    overwrite: bool = False,
):
    """Create (or return, if it exists) the synthetic reef dataset in FiftyOne.

    Sample i goes to split SPLIT_CYCLE[i % 6] (train:val:test = 4:1:1). The
    dataset is persistent, so it stays in FiftyOne's database after the process ends.
    """
    import fiftyone as fo

    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        missing = _missing_images(dataset)
        if not overwrite and not missing:
            log.info("FiftyOne dataset %s exists (%d samples); reusing it", name, len(dataset))
            return dataset
        if missing and dataset.info.get("created_by") != CREATOR:
            raise FileExistsError(
                f"FiftyOne dataset {name!r} exists, was not made by {CREATOR}, and "
                f"{len(missing)} of its images are gone (e.g. {missing[0]}); delete it or pick "
                "another --name."
            )
        _drop_to_remake(name, missing)
    image_dir = Path(image_dir or settings.load_settings().demo_dir / "images").resolve()
    samples = [
        fo.Sample(
            filepath=str(path),
            tags=[SPLIT_CYCLE[index % len(SPLIT_CYCLE)]],
            polylines=_polylines(colonies),
        )
        for index, (path, colonies) in enumerate(
            _write_images(image_dir, num_samples, image_size, seed)
        )
    ]
    dataset = _save_dataset(name, samples, {})
    log.info("Created FiftyOne dataset %s: %d samples, images in %s", name, len(dataset), image_dir)
    return dataset


def create_reef_pool(
    name: str,
    num_samples: int,
    image_size: int = 256,
    image_dir: str | Path | None = None,
    seed: int = 0,
    genus_weights: Mapping[str, float] | None = SKEWED_GENUS_WEIGHTS,
    labelled: int = 20,
    val: int = 30,
    test: int = 60,
    label_field: str = "polylines",
    truth_field: str = "ground_truth",
    overwrite: bool = False,
):
    """Create (or return, if it exists) a synthetic reef pool for active-learning benchmarks.

    Every sample holds its true colonies in `truth_field`. A random permutation of the
    samples (numpy Generator seeded with `seed`) picks `test` samples tagged `test`,
    then `val` tagged `val` (fixed evaluation sets), then `labelled` tagged `train`;
    these have `label_field` filled too. The rest form the unlabelled pool: no tag and
    no `label_field` value. Genera are drawn with `genus_weights` (None: uniform).

    Images go to `image_dir` (default: <demo_dir>/pools/<name>) as pool_NNN.jpg. An
    existing dataset of this name is reused when this module made it with the same
    settings and its images are all there; it is remade when its images are gone or
    `overwrite` is set (which also resets labels added since). A dataset this module
    did not make is never touched (FileExistsError), nor is one made with other
    settings unless `overwrite`.
    """
    import fiftyone as fo

    counts = {"num_samples": num_samples, "labelled": labelled, "val": val, "test": test}
    if any(int(v) != v or v < 0 for v in counts.values()):
        raise ValueError(f"sample counts must be integers >= 0: {counts}")
    if labelled + val + test > num_samples:
        raise ValueError(f"labelled + val + test = {labelled + val + test} > {num_samples=}")
    if label_field == truth_field:
        raise ValueError(f"label_field and truth_field must differ, both are {label_field!r}")
    probabilities = None
    if genus_weights is not None:
        probabilities = dict(
            zip(GENUS_LOOKS, _genus_probabilities(genus_weights).tolist(), strict=True)
        )
    recipe = {
        **counts,
        "image_size": image_size,
        "seed": seed,
        "genus_probabilities": probabilities,
        "label_field": label_field,
        "truth_field": truth_field,
    }
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        if dataset.info.get("created_by") != CREATOR:
            raise FileExistsError(
                f"FiftyOne dataset {name!r} exists and was not made by {CREATOR}; delete it or "
                "pick another name."
            )
        missing = _missing_images(dataset)
        same = dataset.info.get("reef_pool") == recipe
        if not overwrite and not missing:
            if same:
                log.info("FiftyOne dataset %s exists (%d samples); reusing it", name, len(dataset))
                return dataset
            raise FileExistsError(
                f"FiftyOne dataset {name!r} was made with other settings "
                f"({dataset.info.get('reef_pool')}); pass overwrite=True to remake it."
            )
        _drop_to_remake(name, missing)
    image_dir = Path(image_dir or settings.load_settings().demo_dir / "pools" / name).resolve()
    order = np.random.default_rng(seed).permutation(num_samples)
    tag_of = {}
    for tag, count in (("test", test), ("val", val), ("train", labelled)):
        tag_of.update((int(index), tag) for index in order[len(tag_of) : len(tag_of) + count])
    samples = []
    written = _write_images(image_dir, num_samples, image_size, seed, genus_weights, "pool")
    for index, (path, colonies) in enumerate(written):
        sample = fo.Sample(filepath=str(path), **{truth_field: _polylines(colonies)})
        if index in tag_of:
            sample.tags.append(tag_of[index])
            sample[label_field] = _polylines(colonies)
        samples.append(sample)
    dataset = _save_dataset(name, samples, {"reef_pool": recipe})
    log.info(
        "Created FiftyOne reef pool %s: %d samples (%d test, %d val, %d labelled), images in %s",
        name,
        len(dataset),
        test,
        val,
        labelled,
        image_dir,
    )
    return dataset


def main(
    name: str = DEMO_DATASET_NAME,
    num_samples: int = 24,
    image_size: int = 256,
    image_dir: str | None = None,
    overwrite: bool = False,
    pool: bool = False,
    labelled: int = 8,
    val: int = 4,
    test: int = 6,
    seed: int = 0,
) -> None:
    """Create the built-in synthetic reef dataset `reef_demo_fo` in FiftyOne; with --pool,
    a pool for the annotation loop instead (skewed genera, `labelled` train, `val` and
    `test` samples annotated, the rest unlabelled, the truth kept in `ground_truth`)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if pool:
        dataset = create_reef_pool(name, num_samples, image_size, image_dir, seed,
                                   labelled=labelled, val=val, test=test,
                                   overwrite=overwrite)  # fmt: skip
    else:
        dataset = create_reef_demo(name, num_samples, image_size, image_dir, overwrite=overwrite)
    counts = dataset.count_sample_tags()
    print(f"FiftyOne dataset {name}: {len(dataset)} samples, tags {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    import fire

    fire.Fire(main)
