# aha — build, test, run, bench.
#   make            build/aha-engine (and build/aha-server once it exists)
#   make test       install missing Debian packages, build with ASan+UBSan, run every test
#   make run        set up, build, pretrain the tiny demo model if absent, start PostgreSQL
#                   under var/ (unless AHA_DATABASE_URL is set) and the server
#   make bench      benchmarks (figures on stdout)
#   make CUDA=1     also compile kernels/cuda/ with nvcc
#   make ref        regenerate the PyTorch reference fixtures in tests/ref/

CC      ?= gcc
NVCC    ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc))
PYTHON  := /usr/bin/python3
ARCH    ?= -march=native
WARN    := -Wall -Wextra -Wshadow -Wno-unused-parameter
# Open MPI: the engine's data parallelism (engine/dist.c; `mpirun -np P
# aha-engine train ...`); an engine started without a launcher never
# initialises it.
MPI_CFLAGS := $(shell pkg-config --cflags ompi-c 2>/dev/null)
MPI_LIBS   := $(shell pkg-config --libs ompi-c 2>/dev/null)
CFLAGS_COMMON := -std=c11 -D_GNU_SOURCE -g $(WARN) -fopenmp -I. -Ikernels -Iengine $(MPI_CFLAGS)
CFLAGS  ?= -O2 $(ARCH)
LIBS    := -ldnnl -ljansson -lpcre2-8 -lutf8proc -lcurl -lm -fopenmp $(MPI_LIBS)
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# Debian packages the build and the tests need (make deps installs the missing
# ones). Node.js and npm (the tokenizer parity tests) are checked by command,
# since a nodesource nodejs bundles npm and conflicts with Debian's npm.
DEB_PKGS := gcc make pkg-config libdnnl-dev libjansson-dev libpcre2-dev libutf8proc-dev libcurl4-openssl-dev libopenmpi-dev openmpi-bin \
            libcriterion-dev python3 python3-torch python3-numpy libopenblas0-pthread chromium
# libopenblas0-pthread: PyTorch's BLAS for the reference scripts and the bench
# baseline (without it Debian's torch falls back to netlib's reference BLAS).
# chromium: the dashboard's browser test (tests/web/).

LIB_SRCS  := $(wildcard kernels/*.c kernels/cpu/*.c) $(filter-out engine/main.c,$(wildcard engine/*.c))
ENGINE_MAIN := engine/main.c
TEST_SRCS := $(wildcard tests/unit/*.c) tests/ref_io.c

OBJ_DIR  := build/obj
SOBJ_DIR := build/san
LIB_OBJS  := $(LIB_SRCS:%.c=$(OBJ_DIR)/%.o)
SLIB_OBJS := $(LIB_SRCS:%.c=$(SOBJ_DIR)/%.o)
STEST_OBJS := $(TEST_SRCS:%.c=$(SOBJ_DIR)/%.o)

CUDA_SRCS := $(wildcard kernels/cuda/*.cu)
CUDA_LIBS := -L/usr/local/cuda/lib64 -Wl,-rpath,/usr/local/cuda/lib64 -lcudart -lcublas
ifeq ($(CUDA),1)
CUDA_OBJS := $(CUDA_SRCS:%.cu=$(OBJ_DIR)/%.o)
LIBS += $(CUDA_LIBS)
endif

.PHONY: all deps test unit-test cuda-check run bench ref clean demo-r1-zero demo-r1
all: build/aha-engine build/aha-engine-san build/aha-server build/aha-server-san

build/aha-engine: $(LIB_OBJS) $(OBJ_DIR)/$(ENGINE_MAIN:.c=.o) $(CUDA_OBJS)
	$(CC) $(CFLAGS) $^ -o $@ $(LIBS)

# The engine with sanitizers, used by the CLI-level tests.
build/aha-engine-san: $(SLIB_OBJS) $(SOBJ_DIR)/$(ENGINE_MAIN:.c=.o)
	$(CC) -O1 $(ARCH) $(SAN) $^ -o $@ $(LIBS)

build/unit-tests: $(SLIB_OBJS) $(STEST_OBJS)
	$(CC) -O1 $(ARCH) $(SAN) $^ -o $@ $(LIBS) -lcriterion

$(OBJ_DIR)/%.o: %.c $(wildcard */*.h */*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) $(CFLAGS) -MMD -MP -c $< -o $@

$(SOBJ_DIR)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_COMMON) -O1 $(ARCH) $(SAN) -MMD -MP -c $< -o $@

$(OBJ_DIR)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) -O2 -I. -Ikernels -c $< -o $@

-include $(wildcard build/*/*.d build/*/*/*.d build/*/*/*/*.d)

# aha-server (HTTP, PostgreSQL): its sources, libraries and packages.
include server/server.mk
DEB_PKGS += $(SERVER_DEB_PKGS)

# Install missing Debian packages (as root), or say exactly what to run.
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done; \
	  command -v npm >/dev/null || echo nodejs npm); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing Debian packages; run:"; echo "  sudo apt-get install -y $$missing"; exit 1; \
	  fi; \
	fi

# Criterion runs each test in a child process whose LeakSanitizer report does
# not change the exit status, so the log is searched for reports as well.
UNIT_RUN = ASAN_OPTIONS=detect_leaks=1 ./build/unit-tests --jobs 1 2>&1 | tee build/unit-tests.log; \
	status=$${PIPESTATUS[0]}; \
	if grep -qE "LeakSanitizer|runtime error:|AddressSanitizer" build/unit-tests.log; then \
	  echo "unit tests: sanitizer reports above"; exit 1; fi; exit $$status
SHELL := /bin/bash

unit-test: build/unit-tests
	@$(UNIT_RUN)

# Compiles and links the CUDA backend whenever nvcc exists, so it never rots
# on machines without a GPU (it cannot run here; tests/gpu/ runs it).
cuda-check:
	@if [ -n "$(NVCC)" ]; then \
	  $(MAKE) --no-print-directory $(CUDA_SRCS:%.cu=$(OBJ_DIR)/%.o) && \
	  printf '#include "backend.h"\nint main(void){return backend_cuda()==0;}\n' > build/cuda_link_check.c && \
	  $(CC) -Ikernels build/cuda_link_check.c $(CUDA_SRCS:%.cu=$(OBJ_DIR)/%.o) -o build/cuda-link-check $(CUDA_LIBS) -lstdc++ && \
	  echo "cuda-check: kernels/cuda compiled and linked with $(NVCC)"; \
	else echo "cuda-check: nvcc not found, skipped"; fi

test: deps
	$(MAKE) -j$$(nproc) build/aha-engine build/aha-engine-san build/aha-server build/aha-server-san build/unit-tests
	$(MAKE) cuda-check
	bash tests/tokenizer/run.sh
	@$(UNIT_RUN)
	@fail=0; for t in tests/cli/*.sh; do echo "== $$t"; bash "$$t" || fail=1; done; exit $$fail
	@echo "== tests/integration/test_server.py"
	$(PYTHON) tests/integration/test_server.py --server build/aha-server-san --engine build/aha-engine
	@echo "== tests/integration/test_sse.py"
	$(PYTHON) tests/integration/test_sse.py --server build/aha-server-san --engine build/aha-engine
	@echo "== tests/integration/test_catalog.py"
	$(PYTHON) tests/integration/test_catalog.py --server build/aha-server-san --engine build/aha-engine
	@echo "== tests/integration/test_runs.py"
	$(PYTHON) tests/integration/test_runs.py --server build/aha-server-san --engine build/aha-engine
	$(MAKE) build/integrations-driver && $(PYTHON) tests/integration/test_integrations.py --driver build/integrations-driver
	@echo "== tests/web/test_dashboard.py"
	$(PYTHON) tests/web/test_dashboard.py --server build/aha-server-san --engine build/aha-engine

# server/integrations.c alone (MLflow, webhooks) under sanitizers, scripted
# over stdin by tests/integration/test_integrations.py.
build/integrations-driver: $(SOBJ_DIR)/tests/integration/integrations_driver.o \
                           $(SOBJ_DIR)/server/integrations.o $(SOBJ_DIR)/server/util.o
	$(CC) -O1 $(ARCH) $(SAN) $^ -o $@ -ljansson -lcurl -lcrypto -lpthread -lm

var/models/tiny-base/model.safetensors: | build/aha-engine
	@mkdir -p var/data var/models
	./build/aha-engine datagen arithmetic --n 20000 --seed 1 --format text --out var/data/arith-text.jsonl
	./build/aha-engine pretrain --config tiny --data var/data/arith-text.jsonl --steps 300 --out var/models/tiny-base

run: deps
	$(MAKE) build/aha-engine build/aha-server
	$(MAKE) var/models/tiny-base/model.safetensors
	./build/aha-engine sample --model var/models/tiny-base --prompt $$'User: What is 12 + 7?\nAssistant:' --max-tokens 64 --temperature 0.7 --seed 1
	bash scripts/run.sh

# The R1-Zero demo of issue #6 (demo/r1_zero.sh): pretrain a tiny base on
# synthetic arithmetic, GRPO it with accuracy + format rewards, evaluate both
# on held-out problems; prints one JSON line. About 15 minutes on 2 shared
# cores (OMP_NUM_THREADS=1 is faster than 2 threads on a loaded machine).
demo-r1-zero: build/aha-engine
	bash demo/r1_zero.sh

# The R1 recipe beside R1-Zero on one tiny base (demo/r1.sh, demo/r1.json):
# cold-start SFT, GRPO, rejection sampling, SFT on the kept samples, GRPO;
# every model evaluated on held-out problems; prints one JSON line.
demo-r1: build/aha-engine
	bash demo/r1.sh

build/tokenizer-bench: $(OBJ_DIR)/bench/tokenizer_bench.o $(LIB_OBJS) $(CUDA_OBJS)
	$(CC) $(CFLAGS) $^ -o $@ $(LIBS)

bench: deps
	$(MAKE) build/aha-engine build/aha-server build/tokenizer-bench
	./build/aha-engine bench matmul
	bash bench/train.sh build/aha-engine
	./build/aha-engine bench generate --config small
	./build/aha-engine bench generate --config small --context 1024 --concurrency 16 --rounds 1 --profile
	./build/aha-engine bench generate --config small --context 1024 --concurrency 1 --rounds 1 --profile
	./build/aha-engine bench generate --config small --context 1024 --concurrency 16 --rounds 1 --profile --kv-dtype q8
	./build/aha-engine bench generate --config small --layers 32 --rounds 1
	./build/aha-engine bench generate --config small --dtype bf16
	./build/aha-engine bench generate --config small --dtype q8
	./build/aha-engine bench generate --config small --dtype q4
	./build/aha-engine bench generate --config medium --rounds 1
	./build/aha-engine bench generate --config medium --rounds 1 --dtype bf16
	./build/aha-engine bench generate --config medium --rounds 1 --dtype q8
	./build/aha-engine bench generate --config medium --rounds 1 --dtype q4
	./build/aha-engine bench grpo --config tiny --prompts 4 --group 8 --max-tokens 64
	$(PYTHON) tests/integration/bench_server.py --server build/aha-server --engine build/aha-engine
	$(PYTHON) tests/integration/bench_runs.py --server build/aha-server
	$(PYTHON) tests/integration/bench_sse.py --server build/aha-server
	bash bench/tokenizer_bench.sh

ref:
	$(PYTHON) tests/ref/gen_ops.py
	$(PYTHON) tests/ref/gen_model.py
	$(PYTHON) tests/ref/gen_grpo.py
	$(PYTHON) tests/ref/gen_kd.py

clean:
	rm -rf build
