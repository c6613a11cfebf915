# The two set-up commands for a fresh machine (see README):
#   make demo   create .venv, install sam-edge, run the main job (sam-edge pipeline, configs/demo.yaml)
#   make test   create .venv, install sam-edge with the test extras, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out/demo
PYTEST_ARGS ?=

.PHONY: demo teacher-demo test install bench clean

# torch==2.13.0 is the CPU build on disk; installing it first keeps any resolver from reaching
# for a CUDA build from the registry.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,export,bench]"
	touch $@

install: $(VENV)/.installed

# Main job: the whole pipeline on the demo config (synthetic data -> bundled demo teacher ->
# teacher cache -> distilled student -> evaluation -> verified ONNX / ExecuTorch / TFLite / Core ML
# artifacts -> host benchmark -> report in $(RUN)/report/), then the exported student segments the
# shipped photo through onnxruntime. Rerunning skips finished stages.
CONFIG ?= configs/demo.yaml
RUN    ?= runs/demo
demo: install
	$(BIN)/sam-edge pipeline --config $(CONFIG) --out $(RUN)
	$(BIN)/sam-edge segment sam_edge/assets/astronaut.jpg --artifacts $(RUN)/export --format onnx \
		--point 190,120 --point 60,330,0 --multimask --out $(OUT)/segment
	@echo "demo outputs: $(RUN)/report/report.md, $(RUN)/export/, $(OUT)/segment/"

# The PyTorch teacher on the shipped photo (or MODEL=sam_vit_h CHECKPOINT=path/to/sam_vit_h_4b8939.pth).
MODEL ?= sam_demo_teacher
# The demo teacher's logits are soft and its IoU head modest (median predicted IoU ~0.25 on a grid
# of points): SAM's default filters (0.88 / 0.95) keep no mask, so the demo lowers them.
EVERYTHING_ARGS ?= $(if $(filter sam_demo_teacher,$(MODEL)),--pred-iou-thresh 0.4 --stability-score-thresh 0.3,)
CHECKPOINT ?=
CKPT_ARG := $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT),)
teacher-demo: install
	$(BIN)/sam-edge segment sam_edge/assets/astronaut.jpg --model $(MODEL) $(CKPT_ARG) \
		--point 190,120 --point 60,330,0 --multimask --out $(OUT)/teacher/segment
	$(BIN)/sam-edge everything sam_edge/assets/astronaut.jpg --model $(MODEL) $(CKPT_ARG) \
		--points-per-side 16 $(EVERYTHING_ARGS) --out $(OUT)/teacher/everything/masks.json

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m benchmarks.core_latency

clean:
	rm -rf $(VENV) out build *.egg-info
