"""The CVAT function (nuclio/main.py) in the test process, as Nuclio runs it: a folder laid
out as a bundle, its main.py imported as its own module, nuclio_sdk's test Platform."""

from __future__ import annotations

import base64
import importlib.util
import itertools
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "reef_demo_tiny.py"
_names = itertools.count()


def make_bundle(folder: Path, semantic_checkpoint: Path) -> Path:
    """main.py and the semantic model's files under the names deploy_as_zip.sh gives them."""
    from mmengine.config import Config

    folder.mkdir(parents=True)
    shutil.copy(ROOT / "nuclio" / "main.py", folder / "main.py")
    shutil.copy(ROOT / "nuclio" / "request_body.py", folder / "request_body.py")
    shutil.copy(semantic_checkpoint, folder / "best_segformer.pth")
    Config.fromfile(str(CONFIG), import_custom_modules=False).dump(
        str(folder / "best_segformer_config.py")
    )
    return folder


def load_function(folder: Path):
    """Import a bundle's main.py as its own module (the Platform finds init_context there).

    main.py puts its folder first on sys.path to import the bundle's packages; this folder
    holds none (they come from the repository), so the path is put back as it was."""
    name = f"coral_function_{next(_names)}"
    spec = importlib.util.spec_from_file_location(name, folder / "main.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    saved = list(sys.path)
    # the bundle's request_body.py reads CORAL_MAX_PIXELS when imported: each function
    # instance gets its own, as each Nuclio function process does
    sys.modules.pop("request_body", None)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


class Function:
    """One deployed function: its module and the Platform that calls it."""

    def __init__(self, folder: Path) -> None:
        import nuclio_sdk.test

        self.main = load_function(folder)
        self.platform = nuclio_sdk.test.Platform()

    def call(self, body):
        import nuclio_sdk

        return self.platform.call_handler(self.main.handler, nuclio_sdk.Event(body=body))

    def send(self, image_bytes: bytes):
        """(status, decoded JSON answer) for an image sent as CVAT sends it."""
        response = self.call(json.dumps({"image": base64.b64encode(image_bytes).decode()}))
        return response.status_code, json.loads(response.body)

    def start(self):
        """init_context, as Nuclio runs it before the first event; returns the context."""
        return self.platform._get_handler_context(self.main.handler)

    @property
    def model(self):
        return self.start().user_data.model


def load_packager():
    """nuclio/package.py as a module (nuclio/ is a folder of the bundle, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "coral_nuclio_package", ROOT / "nuclio/package.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
