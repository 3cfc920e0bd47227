#!/usr/bin/env bash
# tests/bench/run.sh: Hancock's throughput benchmark, one command. It loads POST /v1/chat with
# wrk against, in turn,
#   (a) build/hancock serving tests/bench/scripts with LOG_LEVEL=INFO (stdout to a log file),
#   (b) the same with LOG_LEVEL=WARNING,
#   (c) tests/bench/ceiling.c, a do-nothing libuv HTTP server: the upper bound on this machine,
# each after a warm-up run, then prints requests/s, p50/p99 latency, peak RSS and errors per
# server, and the host's requests/s as a fraction of the ceiling's. docs/bench.md explains it.
#
# Environment (all optional):
#   BENCH_DURATION=10s  BENCH_WARMUP=3s  BENCH_THREADS=2  BENCH_CONNECTIONS=64
#   BENCH_TARGETS="info warning ceiling"   which of the three to run, in that order
#   BENCH_DIR=build/bench                  ceiling binary, logs, wrk output, results.txt
#   BENCH_START_TIMEOUT=10                 seconds a server gets to accept connections
#   HANCOCK_BIN=build/hancock              built first (make build, or cmake) when missing
# Exit status: 0 when every server started, answered and ran without errors; 1 otherwise.
# Everything listens and is loaded on 127.0.0.1 only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
readonly ROOT
readonly BENCH_SRC="$ROOT/tests/bench"
readonly DURATION=${BENCH_DURATION:-10s}
readonly WARMUP=${BENCH_WARMUP:-3s}
readonly THREADS=${BENCH_THREADS:-2}
readonly CONNECTIONS=${BENCH_CONNECTIONS:-64}
readonly TARGETS=${BENCH_TARGETS:-info warning ceiling}
readonly START_TIMEOUT=${BENCH_START_TIMEOUT:-10}
readonly HANCOCK_BIN=${HANCOCK_BIN:-$ROOT/build/hancock}
OUT_DIR=${BENCH_DIR:-$ROOT/build/bench}
readonly REQUEST_BODY='{"message":"hello","mode":"soc"}'

SERVER_PID=""    # the server under test, if one is running
WRK_PID=""       # the wrk run in progress, if any
FAILED=0         # set when a server failed to build, start or answer, or wrk saw errors

# Results per target (info, warning, ceiling).
declare -A LABEL=([info]="host LOG_LEVEL=INFO" [warning]="host LOG_LEVEL=WARNING" [ceiling]="ceiling")
declare -A STATUS=() RPS=() P50=() P99=() RSS_MIB=() ERRORS=() NOTE=()

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# shellcheck disable=SC2317  # run by the EXIT trap, which shellcheck does not follow
cleanup() {
  if [[ -n $WRK_PID ]]; then
    kill -TERM "$WRK_PID" 2>/dev/null || true
    wait "$WRK_PID" 2>/dev/null || true
    WRK_PID=""
  fi
  if [[ -n $SERVER_PID ]]; then
    stop_server
  fi
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# ---- helpers --------------------------------------------------------------------------------

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"
}

# A port on 127.0.0.1 that nothing listens on right now.
pick_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
    return
  fi
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  die "no free port found in 20000-49999"
}

# Waits until SERVER_PID accepts connections on port; fails when it exits or after START_TIMEOUT s.
wait_for_port() {
  local port=$1 tries=$((START_TIMEOUT * 10))
  for _ in $(seq 1 "$tries"); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# One POST /v1/chat by curl: the server must answer 200 with a request_id before it is loaded.
probe() {
  local port=$1 out=$2 code
  code=$(curl -sS -o "$out" -w '%{http_code}' --max-time 5 -H 'Content-Type: application/json' \
    --data "$REQUEST_BODY" "http://127.0.0.1:$port/v1/chat" 2>&1) || true
  if [[ $code != 200 ]] || ! grep -q '"request_id"' "$out"; then
    say "POST /v1/chat answered '$code': $(head -c 200 "$out" 2>/dev/null | tr -s '\r\n' '  ')"
    return 1
  fi
}

# Peak resident set (VmHWM) of SERVER_PID in MiB, or "n/a".
peak_rss_mib() {
  local kib
  kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null) || true
  if [[ -n $kib ]]; then
    awk -v k="$kib" 'BEGIN { printf "%.1f", k / 1024 }'
  else
    echo "n/a"
  fi
}

# SIGTERM, up to 10 s to exit, then SIGKILL.
stop_server() {
  local pid=$SERVER_PID
  SERVER_PID=""
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid ignored SIGTERM for 10 s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# Runs wrk for the given duration against port, output to a file; returns wrk's status.
run_wrk() {
  local duration=$1 port=$2 out=$3
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" -s "$BENCH_SRC/post.lua" \
    "http://127.0.0.1:$port/v1/chat" >"$out" 2>&1 &
  WRK_PID=$!
  local rc=0
  wait "$WRK_PID" || rc=$?
  WRK_PID=""
  return "$rc"
}

# The value of key in wrk's RESULT line (see post.lua).
result_field() {
  awk -v key="$2" '/^RESULT / { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) print kv[2] } }' "$1"
}

fail() {
  local target=$1
  shift
  STATUS[$target]="FAILED: $*"
  FAILED=1
  say "${LABEL[$target]}: FAILED: $*"
}

# ---- building -------------------------------------------------------------------------------

build_ceiling() {
  local flags
  flags=$(pkg-config --cflags --libs libuv) || die "libuv not found by pkg-config: apt-get install libuv1-dev"
  local -a uv_flags
  read -ra uv_flags <<<"$flags"
  say "building the ceiling server: $OUT_DIR/ceiling"
  cc -O2 -o "$OUT_DIR/ceiling" "$BENCH_SRC/ceiling.c" "${uv_flags[@]}"
}

# Builds build/hancock when it is missing; returns non-zero (with the build log's tail) on failure.
build_host() {
  if [[ -x $HANCOCK_BIN ]]; then
    return 0
  fi
  if [[ $HANCOCK_BIN != "$ROOT/build/hancock" ]]; then
    say "HANCOCK_BIN=$HANCOCK_BIN is not an executable"
    return 1
  fi
  local log="$OUT_DIR/build-host.log"
  say "build/hancock is missing: building it (log: $log)"
  if (
    cd "$ROOT"
    if [[ -f Makefile ]] && grep -qE '^build[[:space:]]*:' Makefile; then
      make build
    else
      cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j2 --target hancock
    fi
  ) >"$log" 2>&1 && [[ -x $HANCOCK_BIN ]]; then
    return 0
  fi
  tail -n 20 "$log" >&2
  return 1
}

# Warns when build/hancock is a build that would make the numbers meaningless.
check_host_build() {
  local cache="$ROOT/build/CMakeCache.txt" type
  [[ $HANCOCK_BIN == "$ROOT/build/hancock" && -f $cache ]] || return 0
  type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$cache")
  say "build/hancock: CMAKE_BUILD_TYPE=${type:-unset}"
  if grep -q '^HK_SANITIZE:BOOL=ON' "$cache"; then
    say "warning: build/ is configured with HK_SANITIZE=ON: the host's figures will be far too low"
  fi
  if [[ $type == Debug ]]; then
    say "warning: build/ is a Debug build: the host's figures will be too low"
  fi
}

# ---- one benchmark --------------------------------------------------------------------------

# bench TARGET: starts the target's server, checks it, warms up, measures, stops it.
bench() {
  local target=$1 port log err
  port=$(pick_port)
  log="$OUT_DIR/$target.log"
  err="$OUT_DIR/$target.stderr"
  say "${LABEL[$target]}: starting on 127.0.0.1:$port"
  : >"$log" # appended to, so that it can be emptied after the warm-up while the server writes it
  case $target in
    info | warning)
      local level=${target^^}
      env LOG_LEVEL="$level" "$HANCOCK_BIN" serve --listen "127.0.0.1:$port" \
        --scripts "$BENCH_SRC/scripts" >>"$log" 2>"$err" &
      ;;
    ceiling)
      "$OUT_DIR/ceiling" "$port" >>"$log" 2>"$err" &
      ;;
  esac
  SERVER_PID=$!

  if ! wait_for_port "$port"; then
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      fail "$target" "not accepting connections on port $port after ${START_TIMEOUT} s"
    else
      fail "$target" "exited at startup"
    fi
    tail -n 20 "$err" "$log" >&2 2>/dev/null || true
    stop_server
    return
  fi
  if ! probe "$port" "$OUT_DIR/$target.probe"; then
    fail "$target" "POST /v1/chat did not answer 200 with a request_id"
    tail -n 20 "$err" "$log" >&2 2>/dev/null || true
    stop_server
    return
  fi

  if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
    say "${LABEL[$target]}: warm-up $WARMUP"
    run_wrk "$WARMUP" "$port" "$OUT_DIR/$target.warmup.txt" || true
  fi
  : >"$log" # from here on the log holds the measured run (and the shutdown) only
  say "${LABEL[$target]}: wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
  local out="$OUT_DIR/$target.wrk.txt"
  if ! run_wrk "$DURATION" "$port" "$out"; then
    fail "$target" "wrk failed (see $out)"
  fi

  if kill -0 "$SERVER_PID" 2>/dev/null; then
    RSS_MIB[$target]=$(peak_rss_mib)
    stop_server
  else
    RSS_MIB[$target]="n/a"
    fail "$target" "the server exited during the run"
    tail -n 20 "$err" "$log" >&2 2>/dev/null || true
    stop_server
  fi

  if ! grep -q '^RESULT ' "$out"; then
    [[ -n ${STATUS[$target]:-} ]] || fail "$target" "no RESULT line from wrk (see $out)"
    return
  fi
  RPS[$target]=$(result_field "$out" rps)
  P50[$target]=$(result_field "$out" p50_ms)
  P99[$target]=$(result_field "$out" p99_ms)
  ERRORS[$target]=$(result_field "$out" errors)
  if [[ ${ERRORS[$target]} != 0 ]]; then
    fail "$target" "wrk saw $(result_field "$out" non2xx) non-2xx responses" \
      "and $(result_field "$out" socket_errors) socket errors"
  fi
  if [[ $target != ceiling ]]; then
    local bytes lines requests
    bytes=$(wc -c <"$log")
    lines=$(wc -l <"$log")
    requests=$(result_field "$out" requests)
    NOTE[$target]=$(awk -v f="$log" -v b="$bytes" -v l="$lines" -v r="$requests" 'BEGIN {
      printf "stdout log %s: %d bytes, %d lines over the measured run (%.2f lines, %.0f bytes per request)",
        f, b, l, (r > 0 ? l / r : 0), (r > 0 ? b / r : 0) }')
  fi
  [[ -n ${STATUS[$target]:-} ]] || STATUS[$target]=ok
}

# ---- main -----------------------------------------------------------------------------------

need wrk "apt-get install wrk"
need cc "apt-get install gcc"
need pkg-config "apt-get install pkg-config"
need curl "apt-get install curl"
[[ $THREADS =~ ^[1-9][0-9]*$ && $CONNECTIONS =~ ^[1-9][0-9]*$ ]] ||
  die "BENCH_THREADS and BENCH_CONNECTIONS must be positive integers"
((CONNECTIONS >= THREADS)) || die "BENCH_CONNECTIONS must be at least BENCH_THREADS"
[[ $START_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "BENCH_START_TIMEOUT must be a positive integer (seconds)"
for target in $TARGETS; do
  [[ -n ${LABEL[$target]:-} ]] || die "unknown target '$target' in BENCH_TARGETS (info, warning, ceiling)"
done

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
readonly OUT_DIR

host_ok=1
if [[ " $TARGETS " == *" info "* || " $TARGETS " == *" warning "* ]]; then
  if build_host; then
    check_host_build
  else
    host_ok=0
  fi
fi
if [[ " $TARGETS " == *" ceiling "* ]]; then
  build_ceiling
fi

say "$(nproc) CPUs, shared by wrk and the server;" \
  "load average $(cut -d' ' -f1 /proc/loadavg) (other work skews the figures);" \
  "$(wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2)"
for target in $TARGETS; do
  if [[ $target != ceiling && $host_ok == 0 ]]; then
    fail "$target" "build/hancock could not be built"
    continue
  fi
  bench "$target"
done

# ---- summary --------------------------------------------------------------------------------

ratio() {
  local rps=${RPS[$1]:-} ceiling=${RPS[ceiling]:-}
  if [[ $1 == ceiling ]]; then
    echo "-"
  elif [[ -n $rps && -n $ceiling ]]; then
    awk -v a="$rps" -v b="$ceiling" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'
  else
    echo "n/a"
  fi
}

summary() {
  printf '\nwrk -t%s -c%s -d%s (warm-up %s), POST /v1/chat %s\n\n' \
    "$THREADS" "$CONNECTIONS" "$DURATION" "$WARMUP" "$REQUEST_BODY"
  printf '%-24s %12s %9s %9s %13s %8s %13s\n' \
    "server" "requests/s" "p50 ms" "p99 ms" "peak RSS MiB" "errors" "rps/ceiling"
  local target
  for target in $TARGETS; do
    if [[ -z ${RPS[$target]:-} ]]; then
      printf '%-24s %s\n' "${LABEL[$target]}" "${STATUS[$target]:-FAILED}"
      continue
    fi
    printf '%-24s %12s %9s %9s %13s %8s %13s\n' "${LABEL[$target]}" "${RPS[$target]}" \
      "${P50[$target]}" "${P99[$target]}" "${RSS_MIB[$target]:-n/a}" "${ERRORS[$target]}" \
      "$(ratio "$target")"
  done
  printf '\n'
  for target in $TARGETS; do
    [[ -z ${NOTE[$target]:-} ]] || printf '%s: %s\n' "${LABEL[$target]}" "${NOTE[$target]}"
  done
  for target in $TARGETS; do
    [[ ${STATUS[$target]:-} == ok ]] || printf '%s: %s\n' "${LABEL[$target]}" "${STATUS[$target]:-FAILED}"
  done
}

summary | tee "$OUT_DIR/results.txt"
exit "$FAILED"
