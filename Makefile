# The two commands a new user needs, and a few more. Everything goes through CMake; this file
# only adds dependency installation (deploy/install-deps.sh) and picks build directories.
#   make run              install what is missing, build, serve scripts/ on :5000
#   make test             install what is missing, build, run the whole suite (ctest)
#   make test SANITIZE=1  the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-tsan        the unit tests and the 4-worker black-box suites under ThreadSanitizer
#                         (build-tsan; one documented run, not part of CI: docs/testing.md)
#   make fuzz FUZZ_SECONDS=60  build build-fuzz (clang, libFuzzer + ASan/UBSan) and run every fuzz
#                         target that long, new inputs in a scratch corpus (tests/fuzz/campaign.sh,
#                         docs/fuzzing.md); fails when a target finds a crash
#   make bench            wrk against the real binary (tests/bench/run.sh)
#   make compare          the host against nginx+Lua, Flask, Node and a do-nothing responder
#                         (tests/bench/compare/run.sh; installs their packages with --bench)
#   make install PREFIX=P the binary, libhancock (static, shared), hancock.h, pkg-config and CMake
#                         package files under P (default /usr/local): docs/embedding.md
#   make stack            hancock + Prometheus (generated rules) + Alertmanager, natively, on free
#                         127.0.0.1 ports (docs/deploy.md); Ctrl-C or SIGTERM stops all three
#   make fleet            three hancock replicas + one Prometheus finding them through file_sd
#                         (tests/fleet/fleet.py, docs/deploy.md); Ctrl-C or SIGTERM stops them all

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

.PHONY: all build run test bench compare stack fleet deps deps-test clean install test-tsan fuzz

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

# libFuzzer needs clang; build-fuzz is its own tree (hk_core instrumented too). FUZZ_SECONDS per
# target (default 60); FUZZ_TARGETS, FUZZ_PARALLEL, FUZZ_NICE, FUZZ_WORK: see tests/fuzz/campaign.sh.
fuzz:
	@CC=clang cmake -S . -B build-fuzz -DHK_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60) ./tests/fuzz/campaign.sh build-fuzz

bench: deps-test
	@$(MAKE) --no-print-directory build BUILD_TYPE=Release
	./tests/bench/run.sh

compare:
	@$(MAKE) --no-print-directory build BUILD_TYPE=Release
	./tests/bench/compare/run.sh

test-tsan: deps-test
	@cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHK_TSAN=ON -DHK_WERROR=$(if $(filter 1,$(WERROR)),ON,OFF) >/dev/null
	@cmake --build build-tsan -j $(JOBS)
	cd build-tsan && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
	  ctest --output-on-failure -j $(JOBS) --timeout 300 -R '^(unit|blackbox4|embed)\.'

PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD_DIR) --prefix $(PREFIX)

# exec: make then waits on stack.py itself, which a SIGTERM to make reaches (make passes it on to
# its children) and which stops its own children and removes its temporary directory.
stack: deps-test build
	exec env HANCOCK_BIN=$(BUILD_DIR)/hancock python3 tests/stack/stack.py

# As stack: exec, so that a SIGTERM to make reaches fleet.py, which stops what it started.
fleet: deps-test build
	exec env HANCOCK_BIN=$(BUILD_DIR)/hancock python3 tests/fleet/fleet.py

clean:
	rm -rf build build-asan
