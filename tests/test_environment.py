"""The installed environment holds one OpenCV: the wheels that provide cv2 overwrite each other.

mmengine and mmcv-lite require opencv-python, fiftyone requires opencv-python-headless<5;
both write the same cv2/ folder, so with both installed the cv2 a user gets depends on
the install order. `make install` keeps the headless one (the Makefile says how), and
the CVAT function's image does the same (function.yaml, function-gpu.yaml).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def cv2_distributions() -> dict[str, str]:
    """{distribution: version} of every installed distribution with files under cv2/."""
    found = {}
    for dist in importlib.metadata.distributions():
        if any(Path(str(file)).parts[:1] == ("cv2",) for file in dist.files or ()):
            found[dist.metadata["Name"]] = dist.version
    return found


def test_exactly_one_opencv_distribution_provides_cv2():
    import cv2

    owners = cv2_distributions()
    assert list(owners) == ["opencv-python-headless"], (
        f"cv2/ is written by {owners}: run `make install` (it keeps opencv-python-headless)"
    )
    # the files are that distribution's own: none left over from another version
    assert owners["opencv-python-headless"].startswith(cv2.__version__ + ".")


def test_the_function_image_installs_one_opencv_and_pillow():
    for name in ("function.yaml", "function-gpu.yaml"):
        spec = yaml.safe_load((ROOT / "nuclio" / name).read_text())
        commands = [d["value"] for d in spec["spec"]["build"]["directives"]["preCopy"]]
        install = next(c for c in commands if "mmengine" in c).split(" && ")
        packages = next(step for step in install if "mmengine" in step).split()
        assert "pillow" in packages, f"{name}: dataset/image_io.py imports PIL"
        # opencv-python arrives with mmengine and leaves before the function's files do
        after = install[install.index(next(s for s in install if "mmengine" in s)) + 1 :]
        assert after[0] == "pip uninstall -y opencv-python", name
        assert "--force-reinstall --no-deps 'opencv-python-headless<5'" in after[1], name
