import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import settings

ROOT = Path(__file__).resolve().parents[1]


def test_env_example_documents_every_variable_with_its_default():
    text = (ROOT / ".env.example").read_text()
    documented = dict(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=(.*)$", text, flags=re.M))
    for _name, variable, default, _doc in settings.setting_fields():
        assert variable in documented, f"{variable} is missing from .env.example"
        assert documented[variable].strip() == str(default), variable


@pytest.fixture(autouse=True)
def private_environment(monkeypatch):
    """load_dotenv writes into os.environ: give each test a copy that is thrown away."""
    monkeypatch.setattr(os, "environ", dict(os.environ))


def test_env_file_is_read_and_the_shell_wins(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("CORAL_IMAGE_SIZE=1024\nCORAL_TAXONOMY=coarse\n")
    monkeypatch.setenv("CORAL_ENV_FILE", str(env_file))
    monkeypatch.setenv("CORAL_TAXONOMY", "fine")  # set in the shell
    monkeypatch.delenv("CORAL_IMAGE_SIZE", raising=False)
    loaded = settings.load_settings()
    assert loaded.image_size == 1024
    assert loaded.taxonomy == "fine"


def test_flags_override_and_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("CORAL_IMAGE_SIZE", "512")
    assert settings.load_settings(image_size=None).image_size == 512
    assert settings.load_settings(image_size=256).image_size == 256
    assert settings.load_settings(data_root="x").data_root == Path("x")
    monkeypatch.setenv("CORAL_IMAGE_SIZE", "big")
    with pytest.raises(ValueError, match="CORAL_IMAGE_SIZE='big' is not a valid int"):
        settings.load_settings()


FIFTYONE_SESSION = r"""
import logging, sys
# as the scripts log: FiftyOne's own handler and this one would each print a warning
logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
if sys.argv[1] == "settings":
    import settings  # noqa: F401  (every tool imports it before FiftyOne)
import fiftyone as fo
dataset = fo.Dataset()
dataset.add_sample(fo.Sample(filepath="/nowhere/quadrat.jpg"))
print("SAMPLES", len(dataset))
dataset.delete()
"""


def _fiftyone_session(tmp_path, first_import: str, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "session.py"
    script.write_text(FIFTYONE_SESSION)
    environment = {**os.environ, "FIFTYONE_DATABASE_DIR": str(tmp_path / "db"), **env}
    return subprocess.run(
        [sys.executable, str(script), first_import],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_fiftyone_starts_without_the_oldest_mongodb_warning(tmp_path):
    quiet = _fiftyone_session(tmp_path, "settings")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "SAMPLES 1" in quiet.stdout
    assert settings.OLDEST_MONGODB_NOTICE not in quiet.stdout + quiet.stderr
    # without the project's settings the same session prints it (twice): the check can fail
    loud = _fiftyone_session(tmp_path, "fiftyone-alone")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert (loud.stdout + loud.stderr).count(settings.OLDEST_MONGODB_NOTICE) >= 1


def test_a_real_database_error_still_surfaces(tmp_path):
    with socket.socket() as sock:  # a port where no mongod listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=2000"
    failed = _fiftyone_session(tmp_path, "settings", FIFTYONE_DATABASE_URI=uri)
    assert failed.returncode != 0
    assert "Could not connect to `mongod`" in failed.stderr


def test_only_the_oldest_version_notice_is_quieted():
    database_logger = logging.getLogger(settings.FIFTYONE_DATABASE_LOGGER)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep(level=logging.DEBUG)
    database_logger.addHandler(handler)
    try:
        database_logger.warning(settings.OLDEST_MONGODB_NOTICE + ". Please refer to ...")
        database_logger.warning("Your MongoDB feature compatibility is greater than your server")
        database_logger.error("MongoDB error while updating database's feature compatibility")
    finally:
        database_logger.removeHandler(handler)
    assert [(r.levelname, r.getMessage()[:30]) for r in seen] == [
        ("WARNING", "Your MongoDB feature compatibi"),
        ("ERROR", "MongoDB error while updating d"),
    ]


def test_env_example_names_every_coral_variable_the_code_reads():
    """Variables read outside settings.py (the CVAT functions, the CPU runtimes, the
    caches) are listed too, so a user finds each in one file. The search covers every
    tracked Python and YAML file outside tests/ and bench/."""
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*(CORAL_[A-Z0-9_]+)=", example, re.M))
    tracked = subprocess.run(
        ["git", "ls-files", "*.py", "*.yaml"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    read = set()
    for name in tracked:
        if name.startswith(("tests/", "bench/")):
            continue
        read |= set(re.findall(r"[\"'\s](CORAL_[A-Z0-9_]*[A-Z0-9])\b", (ROOT / name).read_text()))
    read -= {"CORAL_SAM"}  # a prefix in an error message ("CORAL_SAM_*"), not a variable
    assert len(read) > 15  # the search found the variables
    assert read <= listed, f"missing from .env.example: {sorted(read - listed)}"
