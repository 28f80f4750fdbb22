PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-instances test lint install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch is pinned exactly in pyproject.toml: pip takes the local CPU wheel.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m swinkit.demo

# Mask R-CNN fine-tuning on generated fridgeObjects-style instance data (Azure ML JSONL), COCO AP, pictures.
demo-instances: $(STAMP)
	$(BIN)/python -m swinkit.demo_instances

# Two pytest-xdist workers, a test file each at a time (module fixtures are built once), one thread each
# (tests/conftest.py): 2 cores spend less time idle while a test waits on a subprocess or a server.
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
