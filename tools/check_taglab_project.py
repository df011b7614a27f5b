"""Open a TagLab project with TagLab's own loader and print what TagLab sees in it.

A developer's check of the projects exchange/taglab.py writes, run with TagLab's
source and its dependencies, not this repository's (TagLab is no pip package):

    python3 -m venv /tmp/taglab_check/venv
    /tmp/taglab_check/venv/bin/pip install PyQt5 numpy scikit-image opencv-python-headless \\
        rasterio pandas scipy shapely
    git clone https://github.com/cnr-isti-vclab/TagLab /tmp/taglab_check/TagLab
    /tmp/taglab_check/venv/bin/python tools/check_taglab_project.py project.json \\
        --taglab /tmp/taglab_check/TagLab [--masks masks.npz] [--resave resaved.json]

Per map: name, size, pixel size, date, image and georeference files, and per region
TagLab's id, class, stored area, the pixel count of TagLab's own mask of it
(Blob.getMask: the contours filled as TagLab fills them), whether its bbox is the one
TagLab computes from the contour (Mask.pointsBox(contour, 4)), and its data. The exit
status is 1 when a region's mask differs from its stored area or its bbox is not
TagLab's. --masks writes each map's regions painted from TagLab's masks (blob id per
pixel, 0 elsewhere; maps up to 50 Mpx) for a pixel-by-pixel comparison; --resave writes
the project back through TagLab's Project.save, to check what survives TagLab.

No window opens (QT_QPA_PLATFORM=offscreen). A map whose image file is missing stops
the check: TagLab's loader would open a file dialog asking for it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

MAX_MASK_PIXELS = 50_000_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="the TagLab project (.json)")
    parser.add_argument("--taglab", type=Path, required=True, help="TagLab's source folder")
    parser.add_argument("--masks", type=Path, help="write the maps' masks here (.npz)")
    parser.add_argument("--resave", type=Path, help="save the project again here, by TagLab")
    parser.add_argument("--quiet", action="store_true", help="no line per region")
    args = parser.parse_args()

    # resolved before moving into TagLab's folder
    project_path = args.project.resolve()
    taglab = args.taglab.resolve()
    masks_path = args.masks.resolve() if args.masks is not None else None
    resave_path = args.resave.resolve() if args.resave is not None else None
    if not (taglab / "source" / "Project.py").is_file():
        print(f"{taglab}: no TagLab source there (source/Project.py)", file=sys.stderr)
        return 2
    # TagLab opens relative paths from the folder it runs in, its own
    os.chdir(taglab)
    with open(project_path, encoding="utf-8") as file:
        raw = json.load(file)
    for image in raw.get("images", []):
        for channel in image.get("channels", []):
            if not os.path.exists(channel["filename"]):
                print(
                    f"{project_path}: map {image.get('name')!r}: {channel['filename']} does not "
                    "exist (TagLab would ask for it in a dialog)",
                    file=sys.stderr,
                )
                return 2

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(taglab))
    import numpy as np
    from PyQt5.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])  # noqa: F841 (Qt needs one)
    from source import Mask
    from source.Project import loadProject

    # the dictionary only matters for pre-2020 projects; TagLab passes its default one
    project = loadProject(str(taglab), str(project_path), "dictionaries/scripps.json")

    failures = 0
    masks = {}
    print(f"{project_path}: {len(project.images)} maps, labels {sorted(project.labels)}")
    print(f"  working area [top, left, width, height]: {project.working_area}")
    print(f"  region attributes: {[a['name'] for a in project.region_attributes.data]}")
    for image in project.images:
        blobs = image.annotations.seg_blobs
        print(
            f"map {image.name!r}: {image.width} x {image.height} px, pixel size "
            f"{image.map_px_to_mm_factor!r} mm (pixelSize() {image.pixelSize()}), date "
            f"{image.acquisition_date}, georef {image.georef_filename!r}, channels "
            f"{[(c.type, c.filename) for c in image.channels]}, {len(blobs)} regions"
        )
        painted = None
        if masks_path is not None and image.width * image.height <= MAX_MASK_PIXELS:
            painted = np.zeros((image.height, image.width), np.int32)
        total = 0
        for blob in blobs:
            mask = blob.getMask()
            pixels = int(mask.sum())
            total += pixels
            bbox_ok = np.array_equal(np.asarray(blob.bbox), Mask.pointsBox(blob.contour, 4))
            area_ok = pixels == blob.area
            failures += (not bbox_ok) + (not area_ok)
            if not args.quiet or not (bbox_ok and area_ok):
                print(
                    f"  id {blob.id} {blob.class_name!r} instance {blob.instance_name!r}: area "
                    f"{blob.area:g}, mask {pixels} px{'' if area_ok else ' (DIFFERS)'}, bbox "
                    f"{list(map(int, blob.bbox))}{'' if bbox_ok else ' (NOT TagLab)'}, "
                    f"{len(blob.inner_contours)} holes, data {blob.data}"
                )
            if painted is not None:
                top, left = int(blob.bbox[0]), int(blob.bbox[1])
                rows, cols = np.nonzero(mask)
                rows, cols = rows + top, cols + left
                inside = (rows >= 0) & (rows < image.height) & (cols >= 0) & (cols < image.width)
                painted[rows[inside], cols[inside]] = blob.id
        print(f"  total {total} px in TagLab's masks")
        if painted is not None:
            masks[image.name] = painted
    if masks_path is not None:
        np.savez_compressed(masks_path, **masks)
        print(f"masks of {len(masks)} maps written to {masks_path}")
    if resave_path is not None:
        project.save(str(resave_path))
        print(f"saved again by TagLab to {resave_path}")
    print("OK" if failures == 0 else f"{failures} problems")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
