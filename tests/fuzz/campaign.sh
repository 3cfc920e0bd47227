#!/bin/sh
# campaign.sh: runs every libFuzzer target of a build-fuzz tree for FUZZ_SECONDS each (what
# `make fuzz` calls) and prints, per target, seconds, executions, coverage, corpus size and
# crashes. New inputs go to a scratch corpus under the work directory, never into
# tests/fuzz/corpus/ (the seeds are read as a second, read-only corpus directory); crashing
# inputs are written there as crash-*/leak-*/timeout-*. Exits 1 when any target failed.
#
#   tests/fuzz/campaign.sh [BUILD_DIR]          (default build-fuzz)
#   FUZZ_SECONDS=60      seconds per target
#   FUZZ_TARGETS="http conn"   only these (default: every fuzz_* binary in BUILD_DIR/tests/fuzz)
#   FUZZ_PARALLEL=1      targets run at once (keep it at most the cores you may use)
#   FUZZ_NICE=10         nice level of the fuzzers
#   FUZZ_WORK=BUILD_DIR/fuzz-campaign   scratch corpora, artifacts and logs
set -u

build=${1:-build-fuzz}
here=$(cd "$(dirname "$0")" && pwd)
seconds=${FUZZ_SECONDS:-60}
parallel=${FUZZ_PARALLEL:-1}
nice_level=${FUZZ_NICE:-10}
work=${FUZZ_WORK:-$build/fuzz-campaign}

if [ ! -d "$build/tests/fuzz" ]; then
  echo "campaign.sh: no $build/tests/fuzz; configure with CC=clang cmake -S . -B $build -DHK_FUZZ=ON" >&2
  exit 2
fi
targets=${FUZZ_TARGETS:-}
if [ -z "$targets" ]; then
  for bin in "$build"/tests/fuzz/fuzz_*; do
    case $bin in *_replay) continue ;; esac
    [ -x "$bin" ] && targets="$targets ${bin##*/fuzz_}"
  done
fi
if [ -z "$targets" ]; then
  echo "campaign.sh: no libFuzzer binaries in $build/tests/fuzz (was it configured with -DHK_FUZZ=ON?)" >&2
  exit 2
fi

# Largest input per target: the HTTP-shaped targets need room for the head and request-line
# limits (16 KiB heads, 8 KiB request lines) and a body past the 8 KiB limit of fuzz_conn.
max_len() {
  case $1 in
    http | conn) echo 20000 ;;
    *) echo 4096 ;;
  esac
}

run_one() {
  name=$1
  dir=$work/$name
  mkdir -p "$dir/corpus" "$dir/artifacts"
  echo "fuzz_$name: ${seconds}s -> $dir/log.txt"
  nice -n "$nice_level" "$build/tests/fuzz/fuzz_$name" -max_total_time="$seconds" -print_final_stats=1 \
    -max_len="$(max_len "$name")" -timeout=25 -artifact_prefix="$dir/artifacts/" \
    "$dir/corpus" "$here/corpus/$name" >"$dir/log.txt" 2>&1
  echo $? >"$dir/rc"
}

running=0
for name in $targets; do
  run_one "$name" &
  running=$((running + 1))
  if [ "$running" -ge "$parallel" ]; then
    wait
    running=0
  fi
done
wait

status=0
printf '\n%-12s %8s %12s %8s %8s %14s %s\n' target seconds execs cov ft corpus result
for name in $targets; do
  dir=$work/$name
  log=$dir/log.txt
  rc=$(cat "$dir/rc" 2>/dev/null || echo 1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
  cov=$(grep -a -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
  ft=$(grep -a -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
  corpus=$(grep -a -o 'corp: [0-9]*/[0-9a-zA-Z]*' "$log" | tail -n 1 | cut -d' ' -f2)
  crashes=$(find "$dir/artifacts" -type f | wc -l)
  result=ok
  if [ "$rc" != 0 ] || [ "$crashes" != 0 ]; then
    result="FAILED (exit $rc, $crashes artifacts in $dir/artifacts)"
    status=1
  fi
  printf '%-12s %8s %12s %8s %8s %14s %s\n' "$name" "${secs:--}" "${execs:--}" "${cov:--}" "${ft:--}" \
    "${corpus:--}" "$result"
done
exit $status
