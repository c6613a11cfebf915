# The two set-up commands for a fresh machine (see README):
#   make demo   create .venv, install sam-edge, run the main job
#   make test   create .venv, install sam-edge with the test extras, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out/demo
PYTEST_ARGS ?=

.PHONY: demo test install bench clean

# torch==2.13.0 is the CPU build on disk; installing it first keeps any resolver from reaching
# for a CUDA build from the registry.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,export,bench]"
	touch $@

install: $(VENV)/.installed

# Main job: the demo teacher with its bundled weights (trained here on synthetic data), or
# MODEL=sam_vit_h CHECKPOINT=path/to/sam_vit_h_4b8939.pth for the official model.
MODEL ?= sam_demo_teacher
# The demo teacher's logits are soft and its IoU head modest (median predicted IoU ~0.25 on a grid
# of points): SAM's default filters (0.88 / 0.95) keep no mask, so the demo lowers them.
EVERYTHING_ARGS ?= $(if $(filter sam_demo_teacher,$(MODEL)),--pred-iou-thresh 0.4 --stability-score-thresh 0.3,)
CHECKPOINT ?=
CKPT_ARG := $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT),)
demo: install
	$(BIN)/sam-edge models
	$(BIN)/sam-edge segment sam_edge/assets/astronaut.jpg --model $(MODEL) $(CKPT_ARG) \
		--point 190,120 --point 60,330,0 --multimask --out $(OUT)/segment
	$(BIN)/sam-edge everything sam_edge/assets/astronaut.jpg --model $(MODEL) $(CKPT_ARG) \
		--points-per-side 16 $(EVERYTHING_ARGS) --out $(OUT)/everything/masks.json
	@echo "demo outputs in $(OUT)/"

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m benchmarks.core_latency

clean:
	rm -rf $(VENV) out build *.egg-info
