# The two commands a new user needs, and a few more. Everything goes through CMake; this file
# only adds dependency installation (deploy/install-deps.sh) and picks build directories.
#   make run              install what is missing, build, serve scripts/ on :5000
#   make test             install what is missing, build, run the whole suite (ctest)
#   make test SANITIZE=1  the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench            wrk against the real binary (tests/bench/run.sh)
#   make compare          the host against nginx+Lua, Flask, Node and a do-nothing responder
#                         (tests/bench/compare/run.sh; installs their packages with --bench)
#   make stack            hancock + Prometheus (generated rules) + Alertmanager, natively, on free
#                         127.0.0.1 ports (docs/deploy.md); Ctrl-C or SIGTERM stops all three

SANITIZE ?= 0
WERROR ?= $(if $(CI),1,0)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD_TYPE ?= RelWithDebInfo

ifeq ($(SANITIZE),1)
BUILD_DIR ?= build-asan
else
BUILD_DIR ?= build
endif

CMAKE_FLAGS = -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DHK_SANITIZE=$(if $(filter 1,$(SANITIZE)),ON,OFF) \
              -DHK_WERROR=$(if $(filter 1,$(WERROR)),ON,OFF)

.PHONY: all build run test bench compare stack deps deps-test clean

all: build

deps:
	@./deploy/install-deps.sh

deps-test:
	@./deploy/install-deps.sh --test

build: deps
	@cmake -S . -B $(BUILD_DIR) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	./$(BUILD_DIR)/hancock serve --scripts scripts

test: deps-test build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 300

bench: deps-test
	@$(MAKE) --no-print-directory build BUILD_TYPE=Release
	./tests/bench/run.sh

compare:
	@$(MAKE) --no-print-directory build BUILD_TYPE=Release
	./tests/bench/compare/run.sh

# exec: make then waits on stack.py itself, which a SIGTERM to make reaches (make passes it on to
# its children) and which stops its own children and removes its temporary directory.
stack: deps-test build
	exec env HANCOCK_BIN=$(BUILD_DIR)/hancock python3 tests/stack/stack.py

clean:
	rm -rf build build-asan
