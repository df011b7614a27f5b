# The two front-door commands: `make demo` and `make test`.
# Each creates .venv when missing and installs the project into it; the stamp
# file makes a second call install nothing until pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 is required, found " + sys.version.split()[0]'
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e ".[dev]"
	@# mmengine and mmcv-lite require opencv-python, fiftyone opencv-python-headless, and both
	@# write cv2/: keep headless only, then put back the files the removal took from it.
	@if $(VPY) -m pip show --quiet opencv-python >/dev/null 2>&1; then \
	  headless=$$($(VPY) -c 'from importlib.metadata import version; print(version("opencv-python-headless"))') && \
	  $(VPY) -m pip uninstall --quiet --yes opencv-python && \
	  $(VPY) -m pip install --quiet --force-reinstall --no-deps "opencv-python-headless==$$headless"; \
	fi
	@touch $(STAMP)
	@echo "Installed into $(VENV): $$($(VPY) -c 'import torch, mmseg, mmengine, fiftyone; print(f"torch {torch.__version__}, mmseg {mmseg.__version__}, mmengine {mmengine.__version__}, fiftyone {fiftyone.__version__}")')"

demo: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash demo.sh

test: $(STAMP)
	$(VPY) -m pytest

lint: $(STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .
