# The two set-up commands for a fresh machine (see README):
#   make demo   create .venv, install sam-edge, run the main job (sam-edge pipeline, configs/demo.yaml)
#   make test   create .venv, install sam-edge with the test extras, run the test suite
#   make web    the browser demo from a fresh clone: install, ONNX export, onnxruntime-web, serve
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out/demo
PYTEST_ARGS ?=

.PHONY: demo teacher-demo test install bench clean web

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

# Browser demo (apps/web/README.md): export the bundled demo student to ONNX fp32 into
# runs/web-export unless an export is there, fetch onnxruntime-web from npm into apps/web/vendor/
# unless it is there (apps/web/vendor.sh: npm ci + copy), then serve the page on
# http://127.0.0.1:$(PORT)/ until Ctrl+C. `make web ARTIFACTS=runs/demo/export` serves the export
# `make demo` made instead (any `sam-edge export` directory with ONNX fp32 works).
WEB_EXPORT := runs/web-export
ARTIFACTS  ?= $(WEB_EXPORT)
PORT       ?= 8000
WEB_VENDOR := $(addprefix apps/web/vendor/,ort.wasm.min.js ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm)
web: install
	@if [ ! -f "$(ARTIFACTS)/manifest.json" ]; then \
		if [ "$(ARTIFACTS)" = "$(WEB_EXPORT)" ]; then \
			echo "make web: exporting the bundled demo student (ONNX fp32) into $(ARTIFACTS)"; \
			$(BIN)/sam-edge export --model repvit_demo_student --formats onnx --precision fp32 --out "$(ARTIFACTS)" || exit 1; \
		else \
			echo "make web: ARTIFACTS=$(ARTIFACTS) holds no export (no manifest.json); run 'make demo' first for runs/demo/export, or leave ARTIFACTS out" >&2; \
			exit 1; \
		fi; \
	fi
	@for f in $(WEB_VENDOR); do [ -f "$$f" ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
		command -v npm >/dev/null 2>&1 || { echo "make web: npm is needed once to fetch onnxruntime-web into apps/web (Debian: apt-get install npm)" >&2; exit 1; }; \
		bash apps/web/vendor.sh; \
	fi
	$(BIN)/sam-edge serve --artifacts "$(ARTIFACTS)" --port $(PORT)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m benchmarks.core_latency

clean:
	rm -rf $(VENV) out build *.egg-info
