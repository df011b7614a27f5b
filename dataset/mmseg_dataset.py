"""`CoralDataset`: MMSegmentation's view of a folder written by prepare_data.py.

Registered in mmseg's DATASETS registry; configs use `type='CoralDataset'` with
`data_root` set to the prepared folder. Classes and palette are read from the
folder's classes.txt / palette.txt, so they are never retyped in a config.
"""

from __future__ import annotations

import os.path as osp
from pathlib import Path

from dataset import IMAGE_SUFFIXES
from models import mmcv_ops_compat

mmcv_ops_compat.install()

from mmseg.datasets import BaseSegDataset  # noqa: E402
from mmseg.registry import DATASETS  # noqa: E402


def read_metainfo(data_root: str | Path) -> dict:
    """classes and palette of a prepared dataset folder."""
    root = Path(data_root)
    try:
        classes = tuple(root.joinpath("classes.txt").read_text().splitlines())
        palette = [
            [int(v) for v in line.split()]
            for line in root.joinpath("palette.txt").read_text().splitlines()
        ]
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{exc.filename} is missing: is {root} a folder written by prepare_data.py? "
            "Run `python prepare_data.py <fiftyone dataset>` first, or fix data_root in the config."
        ) from None
    if len(classes) != len(palette):
        raise ValueError(
            f"{root}: classes.txt has {len(classes)} lines, palette.txt {len(palette)}"
        )
    return dict(classes=classes, palette=palette)


@DATASETS.register_module()
class CoralDataset(BaseSegDataset):
    """Images under images/<split>, masks `<stem>.png` under annotations/<split>.

    Images may be JPEG or PNG (prepare_data writes JPEG sources as .jpg, all others as
    .png), so pairs are matched by file stem rather than by a fixed image suffix. Every
    entry of the image folder must become a sample: anything else there (a .webp, a
    folder, two images sharing a stem) is refused by name rather than silently left
    out of training.
    """

    def __init__(
        self,
        data_root: str,
        data_prefix: dict | None = None,
        metainfo: dict | None = None,
        **kwargs,
    ) -> None:
        if metainfo is None:
            metainfo = read_metainfo(data_root)
        data_prefix = data_prefix or dict(img_path="images/train", seg_map_path="annotations/train")
        kwargs.setdefault("reduce_zero_label", False)
        kwargs.setdefault("seg_map_suffix", ".png")
        super().__init__(data_root=data_root, data_prefix=data_prefix, metainfo=metainfo, **kwargs)

    def load_data_list(self) -> list[dict]:
        img_dir = self.data_prefix["img_path"]
        ann_dir = self.data_prefix.get("seg_map_path")
        if not osp.isdir(img_dir):
            raise FileNotFoundError(
                f"Image folder {img_dir} does not exist; check data_root and data_prefix "
                "in the config, or run prepare_data.py."
            )
        images = _images_by_stem(Path(img_dir))
        data_list = []
        for stem, image in sorted(images.items()):
            info = dict(
                img_path=str(image),
                label_map=self.label_map,
                reduce_zero_label=self.reduce_zero_label,
                seg_fields=[],
            )
            if ann_dir is not None:
                seg_map = osp.join(ann_dir, stem + self.seg_map_suffix)
                if not osp.isfile(seg_map):
                    raise FileNotFoundError(
                        f"{image} has no mask {seg_map}; re-run prepare_data.py"
                    )
                info["seg_map_path"] = seg_map
            data_list.append(info)
        return data_list


def _images_by_stem(img_dir: Path) -> dict[str, Path]:
    """The folder's images by stem; ValueError naming every entry that would not be used."""
    images: dict[str, Path] = {}
    unused = []
    for path in sorted(img_dir.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            unused.append(f"  {path} (not an image file of {', '.join(IMAGE_SUFFIXES)})")
        elif path.stem in images:
            unused.append(f"  {path} (same stem as {images[path.stem].name})")
        else:
            images[path.stem] = path
    if unused:
        raise ValueError(
            f"{img_dir} holds {len(unused)} entr{'y' if len(unused) == 1 else 'ies'} that "
            "CoralDataset would leave out of training:\n" + "\n".join(unused) + "\n"
            "Re-run prepare_data.py --overwrite (it writes every image as .jpg or .png), "
            "or move these out of the folder."
        )
    return images
