import os
import re
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
