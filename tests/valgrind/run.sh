#!/usr/bin/env bash
# The black-box suite with every server process under valgrind's memcheck (by hand, not in CI:
# it takes ~25 minutes on 2 cores). Each suite runs once, at --workers 1; memcheck writes one log
# per server process into the output directory, and any error or definite leak makes that process
# exit 99. Prints the suites' outcomes and the logs that are not empty.
#   tests/valgrind/run.sh [BUILD_DIR] [OUT_DIR]
set -uo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build}
out=${2:-$(mktemp -d /tmp/hancock-valgrind-XXXXXX)}
command -v valgrind >/dev/null || { echo "valgrind not installed (apt-get install valgrind)" >&2; exit 2; }
mkdir -p "$out/suites"
wrapper="$out/hancock-vg"
cat > "$wrapper" <<WRAP
#!/bin/sh
exec valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \\
  --show-leak-kinds=definite --log-file=$out/memcheck.%p "$build/hancock" "\$@"
WRAP
chmod +x "$wrapper"
cd "$src/tests/blackbox"
ls test_*.py | sed 's/\.py$//' | xargs -P2 -I{} sh -c \
  "HANCOCK_BIN=$wrapper HANCOCK_SOURCE_DIR=$src HANCOCK_TEST_WORKERS=1 python3 -m unittest {} \
     > $out/suites/{}.txt 2>&1; echo \"{} exit \$?\""
logs=$(ls "$out"/memcheck.* 2>/dev/null | wc -l)
dirty=$(find "$out" -name 'memcheck.*' -size +0c | wc -l)
echo "server processes under memcheck: $logs; logs with errors or definite leaks: $dirty ($out)"
[ "$dirty" -eq 0 ]
