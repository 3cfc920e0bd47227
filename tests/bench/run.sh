#!/usr/bin/env bash
# tests/bench/run.sh: Hancock's benchmark, one command. Two parts:
#
# 1. Throughput. It loads POST /v1/chat with wrk against, in turn,
#   (a) build/hancock serving tests/bench/scripts with LOG_LEVEL=INFO (stdout to a log file),
#   (b) the same with LOG_LEVEL=WARNING,
#   (c) tests/bench/ceiling.c, a do-nothing libuv HTTP server: the upper bound on this machine,
# each after a warm-up run, then prints requests/s, p50/p99 latency, peak RSS and errors per
# server, and the host's requests/s as a fraction of the ceiling's. With BENCH_BASELINE set to
# another hancock binary (an older commit's build), (a) and (b) are each followed by the same
# run against that binary, and the table adds the ratio host/baseline (current/baseline).
#
# 2. GET /metrics rendering. For each series count N, it starts build/hancock on
# tests/bench/scripts_metrics (whose script creates N counter series at load, N from
# BENCH_SERIES), times full scrapes, plain and gzip, one at a time with curl, and reads the
# host's peak RSS (VmHWM) before and after them.
#
# docs/bench.md explains both tables.
#
# Environment (all optional):
#   BENCH_DURATION=10s  BENCH_WARMUP=3s  BENCH_THREADS=2  BENCH_CONNECTIONS=64
#   BENCH_TARGETS="info warning ceiling"   which wrk runs, in that order ("" for none)
#   BENCH_BASELINE=/path/to/hancock        also measure this binary after info and warning
#   BENCH_METRICS=1                        0 skips the /metrics part
#   BENCH_SERIES_COUNTS="100 10000 250000" the series counts N of the /metrics part
#   BENCH_SCRAPES=                         timed scrapes per N and encoding (default 20,
#                                          5 from 100000 series up)
#   BENCH_DIR=build/bench                  ceiling binary, logs, wrk output, results.txt
#   BENCH_START_TIMEOUT=10                 seconds a server gets to accept connections
#                                          (the /metrics part allows at least 120)
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
readonly TARGETS=${BENCH_TARGETS-info warning ceiling}
BASELINE=${BENCH_BASELINE:-}
readonly METRICS=${BENCH_METRICS:-1}
readonly SERIES_COUNTS=${BENCH_SERIES_COUNTS:-100 10000 250000}
readonly SCRAPES=${BENCH_SCRAPES:-}
readonly START_TIMEOUT=${BENCH_START_TIMEOUT:-10}
# Loading 250,000 series from Lua takes a while: the /metrics part waits at least this long.
readonly METRICS_START_TIMEOUT=$((START_TIMEOUT > 120 ? START_TIMEOUT : 120))
readonly HANCOCK_BIN=${HANCOCK_BIN:-$ROOT/build/hancock}
OUT_DIR=${BENCH_DIR:-$ROOT/build/bench}
readonly REQUEST_BODY='{"message":"hello","mode":"soc"}'

SERVER_PID=""    # the server under test, if one is running
WRK_PID=""       # the wrk run in progress, if any
FAILED=0         # set when a server failed to build, start or answer, or wrk saw errors
RUN=()           # the wrk runs in order: TARGETS, each host run followed by its baseline run

# Results per wrk run (info, base-info, warning, base-warning, ceiling).
declare -A LABEL=([info]="host LOG_LEVEL=INFO" [warning]="host LOG_LEVEL=WARNING" [ceiling]="ceiling"
  [base-info]="baseline LOG_LEVEL=INFO" [base-warning]="baseline LOG_LEVEL=WARNING")
declare -A STATUS=() RPS=() P50=() P99=() RSS_MIB=() ERRORS=() NOTE=()

# Results per series count N of the /metrics part.
declare -A M_STATUS=() M_SAMPLES=() M_BYTES=() M_MEDIAN=() M_MAX=() M_GZ_BYTES=() M_GZ_MEDIAN=()
declare -A M_GZ_MAX=() M_RSS_BEFORE=() M_HWM_AFTER=() M_GROWTH_KIB=() M_SCRAPES=() M_HWM_RESET=()

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

# Waits until SERVER_PID accepts connections on port; fails when it exits or after the timeout
# (seconds, START_TIMEOUT by default).
wait_for_port() {
  local port=$1 tries=$((${2:-$START_TIMEOUT} * 10))
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

# A field of SERVER_PID's /proc status in KiB (VmHWM: peak resident set, VmRSS: resident now),
# or nothing.
status_kib() {
  awk -v key="$1:" '$1 == key { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || true
}

# KiB to MiB with one decimal; "n/a" for nothing.
mib() {
  if [[ -n $1 ]]; then
    awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'
  else
    echo "n/a"
  fi
}

# Peak resident set (VmHWM) of SERVER_PID in MiB, or "n/a".
peak_rss_mib() {
  mib "$(status_kib VmHWM)"
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

# check_build BINARY: prints the build type found in the CMakeCache.txt beside a hancock binary
# (a CMake build directory) and warns about a build that would make the numbers meaningless.
# Sets BUILD_TYPE to that type, or "unknown" when there is no cache beside the binary.
BUILD_TYPE=""
check_build() {
  local bin=$1 dir cache
  dir=$(dirname "$bin")
  cache="$dir/CMakeCache.txt"
  BUILD_TYPE=unknown
  if [[ ! -f $cache ]]; then
    say "$bin: no CMakeCache.txt beside it, build type unknown"
    return 0
  fi
  BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$cache")
  BUILD_TYPE=${BUILD_TYPE:-unset}
  say "$bin: CMAKE_BUILD_TYPE=$BUILD_TYPE"
  if grep -q '^HK_SANITIZE:BOOL=ON' "$cache"; then
    say "warning: $dir is configured with HK_SANITIZE=ON: its figures will be far too low"
  fi
  if [[ $BUILD_TYPE == Debug ]]; then
    say "warning: $dir is a Debug build: its figures will be too low"
  fi
}

# Checks the host's build and, with BENCH_BASELINE, the baseline's: both should be built alike.
check_builds() {
  local host_type
  check_build "$HANCOCK_BIN"
  host_type=$BUILD_TYPE
  [[ -n $BASELINE ]] || return 0
  check_build "$BASELINE"
  if [[ $BUILD_TYPE != "$host_type" && $BUILD_TYPE != unknown && $host_type != unknown ]]; then
    say "warning: the host ($host_type) and the baseline ($BUILD_TYPE) are not the same build" \
      "type: host/baseline then measures the build type too"
  fi
  if [[ $BASELINE -ef $HANCOCK_BIN ]]; then
    say "warning: BENCH_BASELINE is the host binary itself: host/baseline only shows the noise"
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
    info | warning | base-info | base-warning)
      local level=${target#base-} bin=$HANCOCK_BIN
      [[ $target != base-* ]] || bin=$BASELINE
      env LOG_LEVEL="${level^^}" "$bin" serve --listen "127.0.0.1:$port" \
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

# ---- GET /metrics rendering -----------------------------------------------------------------

# scrape PORT OUT [gzip]: one GET /metrics by curl, the body saved to OUT as it came (gzip
# compressed with "gzip"); prints "<status> <seconds> <bytes>", bytes as transferred.
scrape() {
  local port=$1 out=$2
  local -a headers=()
  [[ ${3:-} != gzip ]] || headers=(-H 'Accept-Encoding: gzip')
  curl -sS -o "$out" -w '%{http_code} %{time_total} %{size_download}' --max-time 120 \
    "${headers[@]}" "http://127.0.0.1:$port/metrics" || true
}

# Median and maximum in ms of the seconds on stdin, one a line: "median max".
ms_stats() {
  sort -g | awk '{ v[NR] = $1 * 1000 }
    END {
      if (NR == 0) { print "n/a n/a"; exit }
      m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%.2f %.2f\n", m, v[NR]
    }'
}

metrics_fail() {
  local n=$1
  shift
  M_STATUS[$n]="FAILED: $*"
  FAILED=1
  say "/metrics, $n series: FAILED: $*"
}

# The sample lines (not # comments) of an exposition on stdin, all and the fixture's:
# "<all> <bench_series_*>".
count_samples() {
  awk '!/^#/ { all++ } /^bench_series_/ { bench++ } END { printf "%d %d\n", all, bench }'
}

# timed_scrapes N PORT COUNT OUT [gzip]: COUNT scrapes one after the other. Sets SCRAPE_TIMES
# (seconds, one a line) and SCRAPE_BYTES (the last one's size); fails at the first that is not
# a 200.
SCRAPE_TIMES=""
SCRAPE_BYTES=""
timed_scrapes() {
  local n=$1 port=$2 count=$3 out=$4 encoding=${5:-} code secs bytes i
  SCRAPE_TIMES=""
  SCRAPE_BYTES=""
  for ((i = 0; i < count; i++)); do
    read -r code secs bytes <<<"$(scrape "$port" "$out" "$encoding")"
    if [[ $code != 200 ]]; then
      metrics_fail "$n" "GET /metrics${encoding:+ ($encoding)} answered '$code'"
      return 1
    fi
    SCRAPE_TIMES+="$secs"$'\n'
    SCRAPE_BYTES=$bytes
  done
}

# metrics_bench N: starts the host with N fixture series, checks one scrape, times the plain and
# the gzip scrapes, reads the peak RSS around them, stops the host.
metrics_bench() {
  local n=$1 port dir log err count code secs bytes all bench median max
  dir="$OUT_DIR/metrics-$n"
  log="$dir/host.log"
  err="$dir/host.stderr"
  mkdir -p "$dir"
  count=${SCRAPES:-$((n >= 100000 ? 5 : 20))}
  M_SCRAPES[$n]=$count
  port=$(pick_port)
  say "/metrics, $n series: starting the host on 127.0.0.1:$port"
  env LOG_LEVEL=WARNING BENCH_SERIES="$n" HANCOCK_SCRIPT_ENV=BENCH_SERIES "$HANCOCK_BIN" serve --listen "127.0.0.1:$port" \
    --scripts "$BENCH_SRC/scripts_metrics" >"$log" 2>"$err" &
  SERVER_PID=$!
  if ! wait_for_port "$port" "$METRICS_START_TIMEOUT"; then
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      metrics_fail "$n" "not accepting connections on port $port after $METRICS_START_TIMEOUT s"
    else
      metrics_fail "$n" "the host exited at startup"
    fi
    tail -n 20 "$err" "$log" >&2 2>/dev/null || true
    stop_server
    return
  fi

  # From here on VmHWM is the scrapes' own peak: writing 5 to clear_refs resets it to the
  # current resident set (Linux 4.0 and later). Without the reset it still holds the peak of
  # loading the script, which may hide what the scrapes use.
  M_HWM_RESET[$n]=yes
  if ! { echo 5 >"/proc/$SERVER_PID/clear_refs"; } 2>/dev/null; then
    M_HWM_RESET[$n]=no
    say "/metrics, $n series: cannot reset VmHWM (/proc/$SERVER_PID/clear_refs)"
  fi
  M_RSS_BEFORE[$n]=$(status_kib VmHWM)

  # One scrape, not timed: it must answer 200 with every fixture series in it.
  read -r code secs bytes <<<"$(scrape "$port" "$dir/check.txt")"
  read -r all bench < <(count_samples <"$dir/check.txt")
  if [[ $code != 200 ]]; then
    metrics_fail "$n" "GET /metrics answered '$code'"
  elif [[ $bench != "$n" ]]; then
    metrics_fail "$n" "GET /metrics holds $bench bench_series_* samples instead of $n"
  fi
  if [[ -n ${M_STATUS[$n]:-} ]]; then
    tail -n 20 "$err" "$log" >&2 2>/dev/null || true
    stop_server
    return
  fi

  say "/metrics, $n series: $count scrapes, then $count with Accept-Encoding: gzip"
  if timed_scrapes "$n" "$port" "$count" "$dir/metrics.txt"; then
    read -r median max < <(printf '%s' "$SCRAPE_TIMES" | ms_stats)
    M_MEDIAN[$n]=$median
    M_MAX[$n]=$max
    M_BYTES[$n]=$SCRAPE_BYTES
    read -r all bench < <(count_samples <"$dir/metrics.txt")
    M_SAMPLES[$n]=$all
    [[ $bench == "$n" ]] || metrics_fail "$n" "a scrape held $bench bench_series_* samples instead of $n"
  fi
  if [[ -z ${M_STATUS[$n]:-} ]] && timed_scrapes "$n" "$port" "$count" "$dir/metrics.txt.gz" gzip; then
    read -r median max < <(printf '%s' "$SCRAPE_TIMES" | ms_stats)
    M_GZ_MEDIAN[$n]=$median
    M_GZ_MAX[$n]=$max
    M_GZ_BYTES[$n]=$SCRAPE_BYTES
    if ! gzip -t "$dir/metrics.txt.gz" 2>/dev/null; then
      metrics_fail "$n" "the Accept-Encoding: gzip response is not gzip ($dir/metrics.txt.gz)"
    else
      read -r all bench < <(gzip -dc "$dir/metrics.txt.gz" | count_samples)
      [[ $bench == "$n" ]] ||
        metrics_fail "$n" "a gzip scrape held $bench bench_series_* samples instead of $n"
    fi
  fi

  if kill -0 "$SERVER_PID" 2>/dev/null; then
    M_HWM_AFTER[$n]=$(status_kib VmHWM)
    if [[ -n ${M_HWM_AFTER[$n]} && -n ${M_RSS_BEFORE[$n]} ]]; then
      M_GROWTH_KIB[$n]=$((M_HWM_AFTER[$n] - M_RSS_BEFORE[$n]))
    fi
  else
    metrics_fail "$n" "the host exited during the scrapes"
    tail -n 20 "$err" "$log" >&2 2>/dev/null || true
  fi
  stop_server
  [[ -n ${M_STATUS[$n]:-} ]] || M_STATUS[$n]=ok
}

# ---- main -----------------------------------------------------------------------------------

for target in $TARGETS; do
  [[ $target == info || $target == warning || $target == ceiling ]] ||
    die "unknown target '$target' in BENCH_TARGETS (info, warning, ceiling)"
  RUN+=("$target")
  if [[ -n $BASELINE && $target != ceiling ]]; then
    RUN+=("base-$target")
  fi
done
readonly RUN
[[ $METRICS == 0 || $METRICS == 1 ]] || die "BENCH_METRICS must be 0 or 1"
for n in $SERIES_COUNTS; do
  [[ $n =~ ^[0-9]+$ ]] || die "BENCH_SERIES_COUNTS must list non-negative integers, not '$n'"
done
[[ -z $SCRAPES || $SCRAPES =~ ^[1-9][0-9]*$ ]] || die "BENCH_SCRAPES must be a positive integer"
[[ $THREADS =~ ^[1-9][0-9]*$ && $CONNECTIONS =~ ^[1-9][0-9]*$ ]] ||
  die "BENCH_THREADS and BENCH_CONNECTIONS must be positive integers"
((CONNECTIONS >= THREADS)) || die "BENCH_CONNECTIONS must be at least BENCH_THREADS"
[[ $START_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "BENCH_START_TIMEOUT must be a positive integer (seconds)"
if [[ -n $BASELINE ]]; then
  [[ -f $BASELINE && -x $BASELINE ]] || die "BENCH_BASELINE=$BASELINE is not an executable file"
  BASELINE="$(cd "$(dirname "$BASELINE")" && pwd)/$(basename "$BASELINE")"
  [[ " $TARGETS " == *" info "* || " $TARGETS " == *" warning "* ]] ||
    say "warning: BENCH_BASELINE is set but BENCH_TARGETS has neither info nor warning: it is not run"
fi
readonly BASELINE

need curl "apt-get install curl"
if ((${#RUN[@]} > 0)); then
  need wrk "apt-get install wrk"
fi
if [[ " $TARGETS " == *" ceiling "* ]]; then
  need cc "apt-get install gcc"
  need pkg-config "apt-get install pkg-config"
fi
if [[ $METRICS == 1 ]]; then
  need gzip "apt-get install gzip"
fi

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
readonly OUT_DIR

host_ok=1
if [[ " $TARGETS " == *" info "* || " $TARGETS " == *" warning "* || $METRICS == 1 ]]; then
  if build_host; then
    check_builds
    say "host: $HANCOCK_BIN ($("$HANCOCK_BIN" --version 2>&1 | head -n 1))"
    [[ -z $BASELINE ]] || say "baseline: $BASELINE ($("$BASELINE" --version 2>&1 | head -n 1))"
  else
    host_ok=0
  fi
fi
if [[ " $TARGETS " == *" ceiling "* ]]; then
  build_ceiling
fi

# What was measured where, for the top of results.txt.
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) || commit=unknown
if [[ $commit != unknown && -n $(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" status --porcelain \
  --untracked-files=no 2>/dev/null) ]]; then
  commit+=" with uncommitted changes"
fi
MACHINE="$(nproc) CPUs, shared by the load generator and the server;"
MACHINE+=" load average $(cut -d' ' -f1 /proc/loadavg) at the start"
HEADER="tests/bench/run.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit; $MACHINE"
readonly MACHINE HEADER
say "$MACHINE (other work skews the figures)"
((${#RUN[@]} == 0)) || say "$(wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2)"
for target in "${RUN[@]}"; do
  if [[ $target != ceiling && $target != base-* && $host_ok == 0 ]]; then
    fail "$target" "build/hancock could not be built"
    continue
  fi
  bench "$target"
done

if [[ $METRICS == 1 ]]; then
  for n in $SERIES_COUNTS; do
    if [[ $host_ok == 0 ]]; then
      metrics_fail "$n" "build/hancock could not be built"
      continue
    fi
    metrics_bench "$n"
  done
fi

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

# The host's requests/s over the baseline's, for the host rows; "-" for the others.
vs_baseline() {
  local rps=${RPS[$1]:-} base=${RPS[base-$1]:-}
  if [[ $1 == ceiling || $1 == base-* ]]; then
    echo "-"
  elif [[ -n $rps && -n $base ]]; then
    awk -v a="$rps" -v b="$base" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'
  else
    echo "n/a"
  fi
}

wrk_summary() {
  local target extra_head="" extra
  [[ -z $BASELINE ]] || extra_head=$(printf ' %15s' "host/baseline")
  printf '\nwrk -t%s -c%s -d%s (warm-up %s), POST /v1/chat %s\n' \
    "$THREADS" "$CONNECTIONS" "$DURATION" "$WARMUP" "$REQUEST_BODY"
  [[ -z $BASELINE ]] || printf 'baseline: %s\n' "$BASELINE"
  printf '\n%-28s %12s %9s %9s %13s %8s %13s%s\n' \
    "server" "requests/s" "p50 ms" "p99 ms" "peak RSS MiB" "errors" "rps/ceiling" "$extra_head"
  for target in "${RUN[@]}"; do
    if [[ -z ${RPS[$target]:-} ]]; then
      printf '%-28s %s\n' "${LABEL[$target]}" "${STATUS[$target]:-FAILED}"
      continue
    fi
    extra=""
    [[ -z $BASELINE ]] || extra=$(printf ' %15s' "$(vs_baseline "$target")")
    printf '%-28s %12s %9s %9s %13s %8s %13s%s\n' "${LABEL[$target]}" "${RPS[$target]}" \
      "${P50[$target]}" "${P99[$target]}" "${RSS_MIB[$target]:-n/a}" "${ERRORS[$target]}" \
      "$(ratio "$target")" "$extra"
  done
  printf '\n'
  for target in "${RUN[@]}"; do
    [[ -z ${NOTE[$target]:-} ]] || printf '%s: %s\n' "${LABEL[$target]}" "${NOTE[$target]}"
  done
  for target in "${RUN[@]}"; do
    [[ ${STATUS[$target]:-} == ok ]] || printf '%s: %s\n' "${LABEL[$target]}" "${STATUS[$target]:-FAILED}"
  done
}

metrics_summary() {
  local n scrapes="" reset=yes
  for n in $SERIES_COUNTS; do
    scrapes+="${scrapes:+, }${M_SCRAPES[$n]:-?} at $n"
    [[ ${M_HWM_RESET[$n]:-yes} == yes ]] || reset=no
  done
  printf '\nGET /metrics (text format 0.0.4), one scrape at a time by curl (time_total);'
  printf ' scrapes per encoding: %s\n\n' "$scrapes"
  printf '%8s %8s %11s %10s %9s %11s %10s %9s %10s %10s %10s\n' "series" "other" "bytes" \
    "median ms" "max ms" "gzip bytes" "median ms" "max ms" "RSS MiB" "peak MiB" "growth"
  printf '%8s %8s %11s %10s %9s %11s %10s %9s %10s %10s %10s\n' "" "samples" "" "" "" "" \
    "(gzip)" "(gzip)" "before" "scraping" "KiB"
  for n in $SERIES_COUNTS; do
    if [[ -z ${M_GZ_BYTES[$n]:-} ]]; then
      printf '%8s %s\n' "$n" "${M_STATUS[$n]:-FAILED}"
      continue
    fi
    printf '%8s %8s %11s %10s %9s %11s %10s %9s %10s %10s %10s\n' "$n" \
      "$((M_SAMPLES[$n] - n))" "${M_BYTES[$n]}" "${M_MEDIAN[$n]}" "${M_MAX[$n]}" \
      "${M_GZ_BYTES[$n]}" "${M_GZ_MEDIAN[$n]}" "${M_GZ_MAX[$n]}" "$(mib "${M_RSS_BEFORE[$n]:-}")" \
      "$(mib "${M_HWM_AFTER[$n]:-}")" "${M_GROWTH_KIB[$n]:-n/a}"
  done
  printf '\n'
  printf 'series: the fixture'"'"'s counter series (tests/bench/scripts_metrics); other samples: the\n'
  printf 'other sample lines of the same scrape, the host'"'"'s own families. RSS before: VmHWM reset to\n'
  printf 'VmRSS before the first scrape; peak scraping: VmHWM after the last; growth: their difference.\n'
  [[ $reset == yes ]] ||
    printf 'VmHWM could not be reset: "RSS before" is then the peak of loading the script.\n'
  for n in $SERIES_COUNTS; do
    [[ ${M_STATUS[$n]:-} == ok ]] || printf '%s series: %s\n' "$n" "${M_STATUS[$n]:-FAILED}"
  done
}

summary() {
  printf '%s\n' "$HEADER"
  ((${#RUN[@]} == 0)) || wrk_summary
  [[ $METRICS == 0 ]] || metrics_summary
}

summary | tee "$OUT_DIR/results.txt"
exit "$FAILED"
