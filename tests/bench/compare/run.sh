#!/usr/bin/env bash
# tests/bench/compare/run.sh: Hancock side by side with what a user would run instead, one
# command. On 127.0.0.1 it starts, one at a time, servers that all serve the same chat-shaped
# route (POST /v1/chat: validate the JSON body, count the request by endpoint and by mode, observe
# a latency histogram, answer {response, mode, request_id} with X-Request-ID) and GET /metrics:
#
#   host       build/hancock on tests/bench/compare/host, LOG_LEVEL=WARNING (no request log)
#   host-log   the same with LOG_LEVEL=INFO, its JSON log (stdout) written to a file
#   nginx      nginx + libnginx-mod-http-lua, metrics in a lua_shared_dict, access_log off
#   nginx-log  the same writing a JSON access log (the host's request_completed fields)
#   flask      Flask + prometheus_client under gunicorn (gthread), the original stack
#   node       Node.js express + prom-client (npm ci into build/compare/node; cluster above 1)
#   ceiling    tests/bench/ceiling.c, a do-nothing libuv responder: this machine's upper bound
#
# Each server is checked first (tests/bench/compare/check.py: status, JSON, validation, and the
# counters on /metrics growing with the traffic); a server that fails its check or its start is
# reported with its log's tail and left out of the rest of the run. Then wrk loads it for
# BENCH_WARMUP (thrown away) and BENCH_DURATION (measured). Rounds are interleaved (every server
# once, then every server again, ...) so that drift on the machine hits every server alike. Two
# layouts: "pinned" puts the server on one CPU with taskset and wrk on another; "shared" lets
# both float over every CPU. Each server runs as many workers as its layout has CPUs (--workers
# for the host, which falls back to 1 with a note when it refuses more).
#
# A second part starts each server (not the ceiling) with BENCH_SERIES counter series created at
# start-up and times BENCH_SCRAPES GET /metrics one after the other with curl on one connection.
#
# It prints, per layout, the medians over the rounds of requests/s, p50 and p99 latency, the peak
# RSS (VmHWM summed over the server's processes, highest round) and host/peer, the host's
# requests/s over the peer's (the log variants against host-log); then the same for the scrapes.
# docs/bench.md ("Comparing with the alternatives") explains the tables.
#
# Usage: tests/bench/compare/run.sh [--help]
# Environment (all optional):
#   BENCH_DURATION=10s  BENCH_WARMUP=3s  BENCH_ROUNDS=3  BENCH_CONNECTIONS=64
#   BENCH_THREADS=                         wrk threads (default: 1 pinned, one per CPU shared)
#   BENCH_LAYOUTS="pinned shared"          which layouts, in that order
#   BENCH_PEERS="host host-log nginx nginx-log flask node ceiling"   which servers, in that order
#   BENCH_METRICS=1                        0 skips the /metrics part
#   BENCH_SERIES=10000  BENCH_SCRAPES=50   series created at start, timed scrapes per round
#   BENCH_START_TIMEOUT=30                 seconds a server gets to accept connections
#   BENCH_INSTALL=1                        0 skips deploy/install-deps.sh --bench
#   BENCH_DIR=build/compare                logs, wrk output, node_modules, results.txt
#   HANCOCK_BIN=build/hancock              built (Release, as make bench does) when missing
# Exit status: 0 when every server started, passed its check and ran without errors; 1 otherwise.
# Everything listens and is loaded on 127.0.0.1 only, on ports picked free at run time.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
readonly ROOT
readonly SELF="$ROOT/tests/bench/compare/run.sh"
readonly COMPARE_SRC="$ROOT/tests/bench/compare"
readonly BENCH_SRC="$ROOT/tests/bench"

usage() {
  sed -n '2,/^set -euo/p' "$SELF" | sed -e '$d' -e 's/^# \{0,1\}//'
}

case ${1:-} in
  -h | --help)
    usage
    exit 0
    ;;
  "") ;;
  *)
    printf 'compare: unknown argument %s (try --help)\n' "$1" >&2
    exit 2
    ;;
esac

readonly DURATION=${BENCH_DURATION:-10s}
readonly WARMUP=${BENCH_WARMUP:-3s}
readonly ROUNDS=${BENCH_ROUNDS:-3}
readonly CONNECTIONS=${BENCH_CONNECTIONS:-64}
readonly THREADS=${BENCH_THREADS:-}
readonly LAYOUTS=${BENCH_LAYOUTS-pinned shared}
readonly PEERS=${BENCH_PEERS-host host-log nginx nginx-log flask node ceiling}
readonly METRICS=${BENCH_METRICS:-1}
readonly SERIES=${BENCH_SERIES:-10000}
readonly SCRAPES=${BENCH_SCRAPES:-50}
readonly START_TIMEOUT=${BENCH_START_TIMEOUT:-30}
readonly INSTALL=${BENCH_INSTALL:-1}
HANCOCK_BIN=$(realpath -m "${HANCOCK_BIN:-$ROOT/build/hancock}")
readonly HANCOCK_BIN
OUT_DIR=${BENCH_DIR:-$ROOT/build/compare}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd) # absolute: nginx, gunicorn and node run from other directories
readonly OUT_DIR
readonly NODE_DIR="$OUT_DIR/node"
readonly REQUEST_BODY='{"message":"hello","mode":"soc"}'

declare -A LABEL=([host]="hancock" [host-log]="hancock +JSON log" [nginx]="nginx+Lua"
  [nginx-log]="nginx+Lua +JSON log" [flask]="Flask+gunicorn" [node]="Node express"
  [ceiling]="ceiling (libuv)")
# The row each peer's host/peer ratio is taken against.
declare -A REFERENCE=([host]=host [host-log]=host-log [nginx]=host [nginx-log]=host-log
  [flask]=host [node]=host [ceiling]=host)
readonly -A LABEL REFERENCE

SERVER_PID=""      # the server under test (a session leader: its processes share its session)
CLIENT_PID=""      # the wrk or curl in progress
FAILED=0           # set by any failure; the exit status
START_SECONDS=$SECONDS
declare -A CORES=() THREADS_OF=() HOST_WORKERS=() DISABLED=()
# Per "layout:peer:round": wrk results; per "layout:peer": notes, worker description, status.
declare -A RPS=() P50=() P99=() RSS=() ERRORS=() NOTE=() WORKERS_OF=() STATUS=()
# Per "layout:peer:round" of the /metrics part (read through rounds_of's nameref, which
# ShellCheck does not follow: hence the SC2034 directives where they are set).
declare -A M_RATE=() M_MEDIAN=() M_BYTES=() M_SAMPLES=() M_RSS=()

say() { printf 'compare: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

# ---- processes ------------------------------------------------------------------------------

# The processes of the server's session, one pid a line.
server_pids() {
  [[ -n $SERVER_PID ]] || return 0
  ps -o pid= -s "$SERVER_PID" 2>/dev/null | tr -d ' ' || true
}

# SIGTERM to the server's whole process group, up to 10 s for all of it to exit, then SIGKILL.
stop_server() {
  local pid=$SERVER_PID
  [[ -n $pid ]] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    [[ -n $(server_pids) ]] || break
    sleep 0.1
  done
  if [[ -n $(server_pids) ]]; then
    say "server $pid (and its children) ignored SIGTERM for 10 s: killing them"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  SERVER_PID=""
}

# shellcheck disable=SC2317  # run by the EXIT trap, which shellcheck does not follow
cleanup() {
  if [[ -n $CLIENT_PID ]]; then
    kill -TERM "$CLIENT_PID" 2>/dev/null || true
    wait "$CLIENT_PID" 2>/dev/null || true
    CLIENT_PID=""
  fi
  stop_server
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# launch OUT ERR COMMAND...: starts COMMAND in a session of its own (so that stop_server reaches
# every process it forks), stdout appended to OUT, stderr to ERR. Sets SERVER_PID.
launch() {
  local out=$1 err=$2
  shift 2
  setsid "$@" >>"$out" 2>"$err" </dev/null &
  SERVER_PID=$!
  # setsid forks when its caller leads a process group; a background job here never does.
  local sid
  sid=$(ps -o sid= -p "$SERVER_PID" 2>/dev/null | tr -d ' ' || true)
  if [[ -n $sid && $sid != "$SERVER_PID" ]]; then
    sleep 0.2 # setsid may not have called setsid(2) yet
    sid=$(ps -o sid= -p "$SERVER_PID" 2>/dev/null | tr -d ' ' || true)
    [[ -z $sid || $sid == "$SERVER_PID" ]] || die "setsid did not make $SERVER_PID a session leader"
  fi
}

# run_client OUT COMMAND...: runs a client (wrk, curl) in the background, stdout and stderr to
# OUT, so that a signal can stop it; returns its status. (Only the client's output is redirected:
# a trap that runs meanwhile still reports on the script's stderr.)
run_client() {
  local out=$1
  shift
  "$@" >"$out" 2>&1 &
  CLIENT_PID=$!
  local rc=0
  wait "$CLIENT_PID" || rc=$?
  CLIENT_PID=""
  return "$rc"
}

# ---- helpers --------------------------------------------------------------------------------

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"
}

positive_int() {
  [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"
}

# wrk's duration syntax (10, 10s, 2m, 1h) in seconds, or a failure.
seconds_of() {
  local value=$1
  [[ $value =~ ^([0-9]+)([smh]?)$ ]] || return 1
  case ${BASH_REMATCH[2]} in
    m) echo $((BASH_REMATCH[1] * 60)) ;;
    h) echo $((BASH_REMATCH[1] * 3600)) ;;
    *) echo "${BASH_REMATCH[1]}" ;;
  esac
}

# A port on 127.0.0.1 that nothing listens on right now.
pick_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Waits until SERVER_PID's session accepts connections on port; fails when it exits first or after
# START_TIMEOUT seconds.
wait_for_port() {
  local port=$1
  for _ in $(seq 1 $((START_TIMEOUT * 10))); do
    kill -0 "$SERVER_PID" 2>/dev/null || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# The CPUs this process may run on, one a line (from Cpus_allowed_list: "0-3,6").
allowed_cpus() {
  local list range
  list=$(awk '/^Cpus_allowed_list:/ { print $2 }' /proc/self/status)
  IFS=, read -ra ranges <<<"$list"
  for range in "${ranges[@]}"; do
    if [[ $range == *-* ]]; then
      seq "${range%-*}" "${range#*-}"
    else
      echo "$range"
    fi
  done
}

# VmHWM summed over the server's processes, in KiB (empty when none could be read).
peak_rss_kib() {
  local pid sum="" kib
  for pid in $(server_pids); do
    kib=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    [[ -z $kib ]] || sum=$((${sum:-0} + kib))
  done
  echo "$sum"
}

mib() {
  if [[ -n ${1:-} ]]; then
    awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'
  else
    echo "n/a"
  fi
}

# The median of the numbers given as arguments ("" when there are none).
median() {
  (($# > 0)) || return 0
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.10g\n", m }'
}

# The largest of the numbers given as arguments.
maximum() {
  (($# > 0)) || return 0
  printf '%s\n' "$@" | sort -g | tail -n 1
}

# The value of key in wrk's RESULT line (tests/bench/post.lua).
result_field() {
  awk -v key="$2" '/^RESULT / { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) print kv[2] } }' "$1"
}

# peer_failed LAYOUT PEER TAG MESSAGE: reports a failure loudly, with the logs' tails, and leaves
# the peer out of the rest of the run.
peer_failed() {
  local layout=$1 peer=$2 tag=$3
  shift 3
  FAILED=1
  STATUS["$layout:$peer"]="FAILED: $*"
  DISABLED[$peer]=1
  say "${LABEL[$peer]} ($layout): FAILED: $*"
  local file
  for file in "$OUT_DIR/$tag".{check,stderr,log} "$OUT_DIR/nginx/error.log"; do
    if [[ -s $file && ($file != */nginx/* || $peer == nginx*) ]]; then
      printf -- '--- tail of %s\n' "$file" >&2
      tail -n 20 "$file" >&2 || true
    fi
  done
  say "${LABEL[$peer]} is left out of the rest of the run"
}

# ---- preparing ------------------------------------------------------------------------------

prepare() {
  positive_int BENCH_ROUNDS "$ROUNDS"
  positive_int BENCH_CONNECTIONS "$CONNECTIONS"
  positive_int BENCH_SERIES "$SERIES"
  positive_int BENCH_SCRAPES "$SCRAPES"
  positive_int BENCH_START_TIMEOUT "$START_TIMEOUT"
  [[ -z $THREADS ]] || positive_int BENCH_THREADS "$THREADS"
  seconds_of "$DURATION" >/dev/null || die "BENCH_DURATION must look like 10s, 2m or 10, got '$DURATION'"
  [[ $WARMUP == 0 ]] || seconds_of "$WARMUP" >/dev/null ||
    die "BENCH_WARMUP must look like 3s or 0, got '$WARMUP'"
  local peer layout
  for peer in $PEERS; do
    [[ -n ${LABEL[$peer]:-} ]] || die "BENCH_PEERS: unknown peer '$peer' (known: ${!LABEL[*]})"
  done
  for layout in $LAYOUTS; do
    [[ $layout == pinned || $layout == shared ]] || die "BENCH_LAYOUTS: unknown layout '$layout'"
  done

  if [[ $INSTALL != 0 ]]; then
    say "deploy/install-deps.sh --bench"
    "$ROOT/deploy/install-deps.sh" --bench || die "deploy/install-deps.sh --bench failed"
  fi
  need python3 "apt-get install python3"
  need wrk "apt-get install wrk"
  need curl "apt-get install curl"
  need taskset "apt-get install util-linux"
  need setsid "apt-get install util-linux"
  need ps "apt-get install procps"
  need cc "apt-get install build-essential"
  need pkg-config "apt-get install pkg-config"
  for peer in $PEERS; do
    case $peer in
      nginx*) need nginx "deploy/install-deps.sh --bench (nginx, libnginx-mod-http-lua, lua-cjson)" ;;
      flask) need gunicorn "deploy/install-deps.sh --bench (gunicorn, python3-flask, python3-prometheus-client)" ;;
      node)
        need node "deploy/install-deps.sh --bench (nodejs)"
        need npm "deploy/install-deps.sh --bench (npm)"
        ;;
    esac
  done

  mapfile -t CPUS < <(allowed_cpus)
  for layout in $LAYOUTS; do
    if [[ $layout == pinned ]]; then
      ((${#CPUS[@]} >= 2)) || die "the pinned layout needs 2 CPUs, this process may use ${#CPUS[*]}" \
        "(BENCH_LAYOUTS=shared runs without it)"
      CORES[pinned]=1
      THREADS_OF[pinned]=${THREADS:-1}
    else
      CORES[shared]=${#CPUS[@]}
      THREADS_OF[shared]=${THREADS:-${#CPUS[@]}}
    fi
  done
  SERVER_CPU=${CPUS[0]}
  CLIENT_CPU=${CPUS[1]:-${CPUS[0]}}

  build_ceiling
  [[ " $PEERS " != *" host"* ]] || build_host
  [[ " $PEERS " != *" node "* ]] || install_node
}

build_ceiling() {
  local flags
  flags=$(pkg-config --cflags --libs libuv) || die "libuv not found by pkg-config: apt-get install libuv1-dev"
  local -a uv_flags
  read -ra uv_flags <<<"$flags"
  cc -O2 -o "$OUT_DIR/ceiling" "$BENCH_SRC/ceiling.c" "${uv_flags[@]}" || die "cannot build tests/bench/ceiling.c"
}

# build/hancock as `make bench` builds it (Release) when it is missing; a warning for a build
# whose figures would mean little.
build_host() {
  if [[ ! -x $HANCOCK_BIN ]]; then
    [[ $HANCOCK_BIN -ef "$ROOT/build/hancock" || $HANCOCK_BIN == "$ROOT/build/hancock" ]] || die "HANCOCK_BIN=$HANCOCK_BIN is not an executable"
    say "build/hancock is missing: make build BUILD_TYPE=Release (log: $OUT_DIR/build-host.log)"
    if ! make -C "$ROOT" --no-print-directory build BUILD_TYPE=Release >"$OUT_DIR/build-host.log" 2>&1; then
      tail -n 20 "$OUT_DIR/build-host.log" >&2
      die "building build/hancock failed"
    fi
  fi
  local cache type
  cache="$(dirname "$HANCOCK_BIN")/CMakeCache.txt"
  HOST_BUILD=unknown
  if [[ -f $cache ]]; then
    type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$cache")
    HOST_BUILD=${type:-unset}
    grep -q '^HK_SANITIZE:BOOL=ON' "$cache" && HOST_BUILD+=", sanitized"
  fi
  say "$HANCOCK_BIN: CMAKE_BUILD_TYPE=$HOST_BUILD"
  [[ $HOST_BUILD == Release ]] ||
    say "warning: the host is not a Release build: make compare (or make bench) builds one"
}

# express and prom-client from the committed package-lock.json, into build/compare/node; npm ci
# runs again only when the lock file changed.
install_node() {
  mkdir -p "$NODE_DIR"
  cp "$COMPARE_SRC/node/app.js" "$NODE_DIR/app.js"
  if [[ -d $NODE_DIR/node_modules ]] && cmp -s "$COMPARE_SRC/node/package-lock.json" "$NODE_DIR/package-lock.json"; then
    return 0
  fi
  cp "$COMPARE_SRC/node/package.json" "$COMPARE_SRC/node/package-lock.json" "$NODE_DIR/"
  say "npm ci in $NODE_DIR"
  if ! (cd "$NODE_DIR" && npm ci --no-audit --no-fund) >"$OUT_DIR/npm-ci.log" 2>&1; then
    tail -n 20 "$OUT_DIR/npm-ci.log" >&2
    rm -f "$NODE_DIR/package-lock.json"
    die "npm ci failed (log: $OUT_DIR/npm-ci.log)"
  fi
}

# ---- starting a peer ------------------------------------------------------------------------

PEER_PORT=""        # where the started peer serves /v1/chat
PEER_METRICS_URL="" # and /metrics
PEER_WORKERS=""     # what it runs, for the table: "2", "2x4 threads", ...

# start_peer PEER LAYOUT SERIES TAG: starts PEER for LAYOUT with SERIES fixture series, its
# output in OUT_DIR/TAG.*, and waits until it accepts connections. Returns 1 (after reporting)
# when it does not start.
start_peer() {
  local peer=$1 layout=$2 series=$3 tag=$4
  local log="$OUT_DIR/$tag.log" err="$OUT_DIR/$tag.stderr" workers=${CORES[$layout]}
  local -a pin=()
  [[ $layout != pinned ]] || pin=(taskset -c "$SERVER_CPU")
  PEER_PORT=$(pick_port)
  PEER_METRICS_URL="http://127.0.0.1:$PEER_PORT/metrics"
  PEER_WORKERS=$workers
  rm -rf "${OUT_DIR:?}/$tag".* # the previous run's files, which a failure report would show
  : >"$log"
  local metrics_port=""
  case $peer in
    host | host-log)
      local level=WARNING
      [[ $peer != host-log ]] || level=INFO
      workers=${HOST_WORKERS[$layout]:-$workers}
      launch "$log" "$err" env LOG_LEVEL=$level HK_COMPARE_SERIES="$series" "${pin[@]}" \
        "$HANCOCK_BIN" serve --listen "127.0.0.1:$PEER_PORT" --workers "$workers" \
        --scripts "$COMPARE_SRC/host"
      if ! wait_for_port "$PEER_PORT" && ! kill -0 "$SERVER_PID" 2>/dev/null && ((workers > 1)) &&
        grep -q -- '--workers' "$err"; then
        # This build refuses more than one worker: say so once, run with one.
        NOTE["$layout:host-workers"]="the host refused --workers $workers ($(head -n 1 "$err")): it ran with 1"
        say "${NOTE["$layout:host-workers"]}"
        HOST_WORKERS[$layout]=1
        stop_server
        start_peer "$@"
        return
      fi
      PEER_WORKERS=$workers
      ;;
    nginx | nginx-log)
      local prefix="$OUT_DIR/nginx" access_log="access_log off;" user=""
      rm -rf "$prefix"
      mkdir -p "$prefix"
      [[ $peer != nginx-log ]] || access_log="access_log $log chat_json buffer=64k flush=1s;"
      # As root, nginx switches its workers to "nobody", which could not write the prefix.
      [[ $(id -u) != 0 ]] || user="user $(id -un) $(id -gn);"
      sed -e "s|@USER@|$user|" -e "s|@WORKERS@|$workers|" -e "s|@PREFIX@|$prefix|g" \
        -e "s|@LUA_DIR@|$COMPARE_SRC/nginx|" -e "s|@SERIES@|$series|" \
        -e "s|@ACCESS_LOG@|$access_log|" -e "s|@PORT@|$PEER_PORT|" \
        "$COMPARE_SRC/nginx/nginx.conf.in" >"$prefix/nginx.conf"
      launch /dev/null "$err" "${pin[@]}" nginx -p "$prefix" -c "$prefix/nginx.conf"
      ;;
    flask)
      local prom_dir="$OUT_DIR/flask-prometheus"
      local -a multiprocess=(-u PROMETHEUS_MULTIPROC_DIR)
      rm -rf "$prom_dir"
      if ((workers > 1)); then
        mkdir -p "$prom_dir"
        multiprocess=(PROMETHEUS_MULTIPROC_DIR="$prom_dir")
      fi
      launch "$log" "$err" env "${multiprocess[@]}" COMPARE_SERIES="$series" "${pin[@]}" \
        gunicorn -c "$COMPARE_SRC/flask/gunicorn.conf.py" --chdir "$COMPARE_SRC/flask" \
        --bind "127.0.0.1:$PEER_PORT" --workers "$workers" app:app
      PEER_WORKERS="${workers}x4 threads"
      ;;
    node)
      if ((workers > 1)); then
        metrics_port=$(pick_port)
        PEER_METRICS_URL="http://127.0.0.1:$metrics_port/metrics"
      fi
      launch "$log" "$err" env PORT="$PEER_PORT" WORKERS="$workers" METRICS_PORT="$metrics_port" \
        COMPARE_SERIES="$series" NODE_ENV=production "${pin[@]}" node "$NODE_DIR/app.js"
      ((workers == 1)) || PEER_WORKERS="$workers (cluster)"
      ;;
    ceiling)
      launch "$log" "$err" "${pin[@]}" "$OUT_DIR/ceiling" "$PEER_PORT"
      PEER_WORKERS=1
      ;;
  esac
  local port
  for port in "$PEER_PORT" $metrics_port; do
    if ! wait_for_port "$port"; then
      if kill -0 "$SERVER_PID" 2>/dev/null; then
        peer_failed "$layout" "$peer" "$tag" "not accepting connections on 127.0.0.1:$port after $START_TIMEOUT s"
      else
        local status=0
        wait "$SERVER_PID" || status=$?
        peer_failed "$layout" "$peer" "$tag" "exited at start-up (status $status)"
      fi
      stop_server
      return 1
    fi
  done
  WORKERS_OF["$layout:$peer"]=$PEER_WORKERS
}

# check_peer PEER LAYOUT TAG [SERIES]: the contract, before any load (check.py; for the ceiling,
# which has no /metrics and one fixed answer, a 200 with a request_id).
check_peer() {
  local peer=$1 layout=$2 tag=$3 series=${4:-}
  local out="$OUT_DIR/$tag.check"
  if [[ $peer == ceiling ]]; then
    local code
    code=$(curl -sS -o "$out" -w '%{http_code}' --max-time 5 -H 'Content-Type: application/json' \
      --data "$REQUEST_BODY" "http://127.0.0.1:$PEER_PORT/v1/chat" 2>&1) || true
    [[ $code == 200 ]] && grep -q '"request_id"' "$out" && return 0
    peer_failed "$layout" "$peer" "$tag" "POST /v1/chat answered '$code'"
    return 1
  fi
  local -a args=(--url "http://127.0.0.1:$PEER_PORT" --metrics-url "$PEER_METRICS_URL")
  [[ -z $series ]] || args+=(--series "$series")
  if ! timeout 120 python3 "$COMPARE_SRC/check.py" "${args[@]}" >"$out" 2>&1; then
    peer_failed "$layout" "$peer" "$tag" "$(tail -n 1 "$out")"
    return 1
  fi
}

# ---- one throughput run ---------------------------------------------------------------------

wrk_command() {
  local layout=$1 duration=$2 out=$3
  local -a pin=()
  [[ $layout != pinned ]] || pin=(taskset -c "$CLIENT_CPU")
  local guard
  guard=$(($(seconds_of "$duration") + 60))
  run_client "$out" timeout -k 5 "$guard" "${pin[@]}" wrk -t"${THREADS_OF[$layout]}" \
    -c"$CONNECTIONS" -d"$duration" -s "$BENCH_SRC/post.lua" "http://127.0.0.1:$PEER_PORT/v1/chat"
}

bench_peer() {
  local layout=$1 peer=$2 round=$3
  local tag="$layout-$peer" key="$layout:$peer:$round"
  say "${LABEL[$peer]} ($layout, round $round/$ROUNDS)"
  start_peer "$peer" "$layout" 0 "$tag" || return 0
  check_peer "$peer" "$layout" "$tag" || {
    stop_server
    return 0
  }
  if [[ $WARMUP != 0 ]]; then
    wrk_command "$layout" "$WARMUP" "$OUT_DIR/$tag.warmup.txt" || true
  fi
  local log="$OUT_DIR/$tag.log" out="$OUT_DIR/$tag.wrk.txt"
  [[ $peer != *-log ]] || : >"$log" # from here on the log holds the measured run only
  if ! wrk_command "$layout" "$DURATION" "$out"; then
    peer_failed "$layout" "$peer" "$tag" "wrk failed: $(tail -n 3 "$out" | tr '\n' ' ')"
    stop_server
    return 0
  fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    peer_failed "$layout" "$peer" "$tag" "the server exited during the run"
    stop_server
    return 0
  fi
  RSS[$key]=$(peak_rss_kib)
  stop_server
  if ! grep -q '^RESULT ' "$out"; then
    peer_failed "$layout" "$peer" "$tag" "no RESULT line from wrk (see $out)"
    return 0
  fi
  RPS[$key]=$(result_field "$out" rps)
  P50[$key]=$(result_field "$out" p50_ms)
  P99[$key]=$(result_field "$out" p99_ms)
  ERRORS[$key]=$(result_field "$out" errors)
  if [[ ${ERRORS[$key]} != 0 ]]; then
    FAILED=1
    STATUS["$layout:$peer"]="FAILED: round $round: wrk saw $(result_field "$out" non2xx) non-2xx responses and $(result_field "$out" socket_errors) socket errors"
    say "${LABEL[$peer]} ($layout): ${STATUS["$layout:$peer"]}"
  fi
  if [[ $peer == *-log ]]; then
    local bytes lines requests
    bytes=$(wc -c <"$log")
    lines=$(wc -l <"$log")
    requests=$(result_field "$out" requests)
    NOTE["$layout:$peer"]=$(awk -v b="$bytes" -v l="$lines" -v r="$requests" 'BEGIN {
      printf "%.2f lines, %.0f bytes of JSON log per request", (r > 0 ? l / r : 0), (r > 0 ? b / r : 0) }')
    # Hundreds of MB: keep the first lines as a sample.
    head -n 1000 "$log" >"$log.head" && mv "$log.head" "$log"
  fi
  say "  $(printf '%.0f' "${RPS[$key]}") requests/s, p50 ${P50[$key]} ms, p99 ${P99[$key]} ms, peak RSS $(mib "${RSS[$key]}") MiB"
}

# ---- one /metrics run -----------------------------------------------------------------------

metrics_peer() {
  local layout=$1 peer=$2 round=$3
  local tag="$layout-$peer-metrics" key="$layout:$peer:$round"
  say "${LABEL[$peer]} with $SERIES series ($layout, round $round/$ROUNDS): $SCRAPES scrapes"
  start_peer "$peer" "$layout" "$SERIES" "$tag" || return 0
  check_peer "$peer" "$layout" "$tag" "$SERIES" || {
    stop_server
    return 0
  }
  # shellcheck disable=SC2034
  M_SAMPLES[$key]=$(sed -n 's/.*; \([0-9]*\) samples.*/\1/p' "$OUT_DIR/$tag.check")
  local -a pin=() args=()
  [[ $layout != pinned ]] || pin=(taskset -c "$CLIENT_CPU")
  for ((i = 0; i < SCRAPES; i++)); do
    args+=(-o /dev/null "$PEER_METRICS_URL")
  done
  local out="$OUT_DIR/$tag.scrapes"
  if ! run_client "$out" "${pin[@]}" curl -sS --max-time 60 \
    -w '%{http_code} %{num_connects} %{size_download} %{time_total}\n' "${args[@]}"; then
    peer_failed "$layout" "$peer" "$tag" "curl failed: $(grep -v '^[0-9]' "$out" | head -n 2 | tr '\n' ' ')"
    stop_server
    return 0
  fi
  M_RSS[$key]=$(peak_rss_kib)
  stop_server
  local summary
  summary=$(awk -v want="$SCRAPES" '
    $1 != 200 { bad++ } { n++; connects += $2; bytes = $3; t += $4 }
    END {
      if (n != want || bad > 0) printf "bad %d of %d scrapes answered 200\n", n - bad, want
      else printf "ok %.2f %d %d\n", n / t, bytes, connects
    }' "$out")
  local status rate bytes connects median
  read -r status rate bytes connects <<<"$summary"
  if [[ $status != ok ]]; then
    peer_failed "$layout" "$peer" "$tag" "GET /metrics: ${summary#bad } (see $out)"
    return 0
  fi
  local -a times
  mapfile -t times < <(awk '{ print $4 * 1000 }' "$out")
  median=$(printf '%.2f' "$(median "${times[@]}")")
  ((connects == 1)) || say "warning: curl opened $connects connections for the scrapes, not 1"
  # shellcheck disable=SC2034
  {
    M_RATE[$key]=$rate
    M_MEDIAN[$key]=$median
    M_BYTES[$key]=$bytes
  }
  say "  $rate scrapes/s, median $median ms, $bytes bytes, peak RSS $(mib "${M_RSS[$key]}") MiB"
}

# ---- summary --------------------------------------------------------------------------------

# The values of an array over the rounds of layout:peer ("" for a missing round).
rounds_of() {
  local -n values=$1
  local layout=$2 peer=$3 round
  for ((round = 1; round <= ROUNDS; round++)); do
    [[ -z ${values["$layout:$peer:$round"]:-} ]] || echo "${values["$layout:$peer:$round"]}"
  done
}

ratio() {
  if [[ -n $1 && -n $2 ]]; then
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
  else
    echo "-"
  fi
}

throughput_table() {
  local layout=$1 peer
  local -A med_rps=()
  for peer in $PEERS; do
    local -a r
    mapfile -t r < <(rounds_of RPS "$layout" "$peer")
    med_rps[$peer]=$(median "${r[@]}")
  done
  if [[ $layout == pinned ]]; then
    printf '\nlayout pinned: each server on CPU %s (taskset), wrk -t%s on CPU %s\n' "$SERVER_CPU" \
      "${THREADS_OF[$layout]}" "$CLIENT_CPU"
  else
    printf '\nlayout shared: servers and wrk -t%s float over %s CPUs\n' "${THREADS_OF[$layout]}" "${CORES[$layout]}"
  fi
  printf 'POST /v1/chat %s, wrk -c%s -d%s (warm-up %s), median of %s rounds\n\n' "$REQUEST_BODY" \
    "$CONNECTIONS" "$DURATION" "$WARMUP" "$ROUNDS"
  printf '%-21s %-15s %11s %17s %8s %8s %9s %7s %9s\n' "server" "workers" "requests/s" "min-max" \
    "p50 ms" "p99 ms" "peak RSS" "errors" "host/peer"
  printf '%-21s %-15s %11s %17s %8s %8s %9s %7s %9s\n' "" "" "" "" "" "" "MiB" "" ""
  for peer in $PEERS; do
    local -a rps p50 p99 rss errors
    mapfile -t rps < <(rounds_of RPS "$layout" "$peer")
    if ((${#rps[@]} == 0)); then
      printf '%-21s %s\n' "${LABEL[$peer]}" "${STATUS["$layout:$peer"]:-not run}"
      continue
    fi
    mapfile -t p50 < <(rounds_of P50 "$layout" "$peer")
    mapfile -t p99 < <(rounds_of P99 "$layout" "$peer")
    mapfile -t rss < <(rounds_of RSS "$layout" "$peer")
    mapfile -t errors < <(rounds_of ERRORS "$layout" "$peer")
    local error_sum=0 e
    for e in "${errors[@]}"; do error_sum=$((error_sum + e)); done
    local range
    range=$(printf '%.0f-%.0f' "$(printf '%s\n' "${rps[@]}" | sort -g | head -n 1)" "$(maximum "${rps[@]}")")
    local ref=${REFERENCE[$peer]}
    printf '%-21s %-15s %11.0f %17s %8.3f %8.3f %9s %7s %9s\n' "${LABEL[$peer]}" \
      "${WORKERS_OF["$layout:$peer"]:-?}" "${med_rps[$peer]}" "$range" "$(median "${p50[@]}")" \
      "$(median "${p99[@]}")" "$(mib "$(maximum "${rss[@]}")")" "$error_sum" \
      "$(ratio "${med_rps[$ref]:-}" "${med_rps[$peer]}")"
  done
  printf '\nhost/peer: hancock'"'"'s median requests/s over the row'"'"'s (the +JSON log rows over hancock +JSON log'"'"'s);\n'
  printf 'above 1 the host is faster. peak RSS: VmHWM summed over the server'"'"'s processes, highest round.\n'
  for peer in $PEERS; do
    [[ -z ${NOTE["$layout:$peer"]:-} ]] || printf '%s: %s\n' "${LABEL[$peer]}" "${NOTE["$layout:$peer"]}"
  done
  [[ -z ${NOTE["$layout:host-workers"]:-} ]] || printf 'note: %s\n' "${NOTE["$layout:host-workers"]}"
  for peer in $PEERS; do
    [[ -z ${STATUS["$layout:$peer"]:-} ]] || printf '%s: %s\n' "${LABEL[$peer]}" "${STATUS["$layout:$peer"]}"
  done
}

metrics_table() {
  local layout=$1 peer host_rate=""
  local -a r
  mapfile -t r < <(rounds_of M_RATE "$layout" host)
  host_rate=$(median "${r[@]}")
  printf '\nlayout %s: GET /metrics with %s bench_series_total series, %s scrapes one after the other\n' \
    "$layout" "$SERIES" "$SCRAPES"
  printf 'by curl on one connection (plain text, no gzip), median of %s rounds\n\n' "$ROUNDS"
  printf '%-21s %-15s %10s %10s %10s %9s %9s %9s\n' "server" "workers" "scrapes/s" "median ms" "bytes" \
    "samples" "peak RSS" "host/peer"
  printf '%-21s %-15s %10s %10s %10s %9s %9s %9s\n' "" "" "" "" "" "" "MiB" ""
  for peer in $(metrics_peers); do
    local -a rate median bytes samples rss
    mapfile -t rate < <(rounds_of M_RATE "$layout" "$peer")
    if ((${#rate[@]} == 0)); then
      printf '%-21s %s\n' "${LABEL[$peer]}" "${STATUS["$layout:$peer"]:-not run}"
      continue
    fi
    mapfile -t median < <(rounds_of M_MEDIAN "$layout" "$peer")
    mapfile -t bytes < <(rounds_of M_BYTES "$layout" "$peer")
    mapfile -t samples < <(rounds_of M_SAMPLES "$layout" "$peer")
    mapfile -t rss < <(rounds_of M_RSS "$layout" "$peer")
    local rate_median
    rate_median=$(median "${rate[@]}")
    printf '%-21s %-15s %10.1f %10.2f %10s %9s %9s %9s\n' "${LABEL[$peer]}" \
      "${WORKERS_OF["$layout:$peer"]:-?}" "$rate_median" "$(median "${median[@]}")" \
      "$(maximum "${bytes[@]}")" "$(maximum "${samples[@]}")" "$(mib "$(maximum "${rss[@]}")")" \
      "$(ratio "$host_rate" "$rate_median")"
  done
  printf '\nscrapes/s: scrapes over the sum of their curl time_total; samples: sample lines of one scrape;\n'
  printf 'peak RSS: VmHWM summed over the server'"'"'s processes, series and scrapes included.\n'
}

# The peers of the /metrics part: those with a /metrics, log variants aside.
metrics_peers() {
  local peer
  for peer in $PEERS; do
    [[ $peer == ceiling || $peer == *-log ]] || echo "$peer"
  done
}

header() {
  local commit load versions
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  [[ -z $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]] || commit+=" (modified)"
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  printf 'tests/bench/compare, %s, commit %s; %s CPUs (%s allowed); load average %s at the start\n' \
    "$(date -u '+%Y-%m-%d %H:%M UTC')" "$commit" "$(nproc --all)" "${#CPUS[@]}" "$load"
  versions="$("$HANCOCK_BIN" --version 2>/dev/null | head -n 1) (${HOST_BUILD:-?})"
  versions+="; $(nginx -v 2>&1 | sed 's/^nginx version: //') + lua $(dpkg-query -W -f='${Version}' libnginx-mod-http-lua 2>/dev/null || echo '?')"
  versions+="; gunicorn $(gunicorn --version 2>/dev/null | tr -dc '0-9.'), flask $(dpkg-query -W -f='${Version}' python3-flask 2>/dev/null || echo '?')"
  versions+=", prometheus_client $(dpkg-query -W -f='${Version}' python3-prometheus-client 2>/dev/null || echo '?')"
  versions+="; node $(node --version 2>/dev/null || echo '?')"
  versions+=", express $(node -p 'require(process.argv[1]).version' "$NODE_DIR/node_modules/express/package.json" 2>/dev/null || echo '?')"
  versions+=", prom-client $(node -p 'require(process.argv[1]).version' "$NODE_DIR/node_modules/prom-client/package.json" 2>/dev/null || echo '?')"
  printf '%s\n' "$versions"
}

# ---- main -----------------------------------------------------------------------------------

prepare
HEADER=$(header)
say "$HEADER"

for layout in $LAYOUTS; do
  for ((round = 1; round <= ROUNDS; round++)); do
    for peer in $PEERS; do
      [[ -n ${DISABLED[$peer]:-} ]] || bench_peer "$layout" "$peer" "$round"
    done
  done
  if [[ $METRICS != 0 ]]; then
    for ((round = 1; round <= ROUNDS; round++)); do
      for peer in $(metrics_peers); do
        [[ -n ${DISABLED[$peer]:-} ]] || metrics_peer "$layout" "$peer" "$round"
      done
    done
  fi
done

summary() {
  printf '%s\n' "$HEADER"
  local layout
  for layout in $LAYOUTS; do
    throughput_table "$layout"
  done
  if [[ $METRICS != 0 ]]; then
    for layout in $LAYOUTS; do
      metrics_table "$layout"
    done
  fi
  printf '\nwhole run: %d s\n' $((SECONDS - START_SECONDS))
}

summary | tee "$OUT_DIR/results.txt"
exit "$FAILED"
