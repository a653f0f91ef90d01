# make demo / make test set everything up on a fresh machine (Python >= 3.10 and the package registries).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-slow bench venv assets clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/kdgen data install emoji  # the RGB dataset: built once from the npm package emoji-datasource-google
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/kdgen demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/gan_demo.py
	$(BIN)/python benchmarks/diffusion_steps.py
	$(BIN)/python benchmarks/hinton.py
	$(BIN)/python benchmarks/feature_spaces.py
	$(BIN)/python benchmarks/rgb_emoji.py

# Re-make the shipped assets (see src/kdgen/assets/README.md for what each command made).
assets: $(STAMP)
	$(BIN)/kdgen train-features configs/features/mnist5k.yaml
	$(BIN)/kdgen train-teacher configs/gan/mnist5k-teacher.yaml
	$(BIN)/kdgen train-teacher configs/diffusion/mnist5k-ddpm.yaml
	$(BIN)/kdgen train-features configs/features/emoji.yaml
	$(BIN)/kdgen train-teacher configs/img2img/emoji-sr4-teacher.yaml  # -> assets/sr4-emoji
	$(BIN)/kdgen train-teacher configs/img2img/mnist5k-denoise-teacher.yaml  # -> assets/denoise-mnist5k
	$(BIN)/kdgen train-teacher configs/gan/emoji-teacher.yaml
	$(BIN)/kdgen train-teacher configs/diffusion/emoji-ddpm.yaml

clean:
	rm -rf runs .pytest_cache
