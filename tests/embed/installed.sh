#!/usr/bin/env bash
# embed.installed: installs the build into a temporary prefix, then builds examples/embed there
# twice as a user would — with pkg-config, and with CMake's find_package(hancock) — and runs
# tests/embed/test_embed.py against each. Arguments: the build directory, and extra compiler
# flags (the sanitizers when the build has them: the library then needs their runtime).
set -euo pipefail
build=$1
extra=${2:-}
src=$(pwd)
prefix=$(mktemp -d /tmp/hancock-prefix-XXXXXX)
trap 'rm -rf "$prefix"' EXIT

cmake --install "$build" --prefix "$prefix" >/dev/null
for f in include/hancock.h lib/pkgconfig/hancock.pc lib/libhancock.a lib/cmake/hancock/hancockConfig.cmake \
         share/hancock/lua/hancock.lua bin/hancock; do
  [ -e "$prefix/$f" ] || { echo "install is missing $f" >&2; exit 1; }
done
# The shared library has its soname and a versioned file name.
soname=$(objdump -p "$prefix/lib/libhancock.so" | awk '/SONAME/ {print $2}')
[ "$soname" = "libhancock.so.0" ] || { echo "unexpected soname '$soname'" >&2; exit 1; }

# Only the API is exported: every defined dynamic symbol is an hk_* function of hancock.h (plus
# the version node), nothing of the internals or of llhttp.
exported=$(nm -D --defined-only "$prefix/lib/libhancock.so" | awk '{print $3}' | sed 's/@.*//' | sort -u)
unexpected=$(echo "$exported" | grep -v -x -e HANCOCK_0 -e '' | while read -r sym; do
  grep -q -w "$sym" include/hancock.h 2>/dev/null || grep -q -w "$sym" "$prefix/include/hancock.h" || echo "$sym"
done)
[ -z "$unexpected" ] || { echo "libhancock.so exports symbols hancock.h does not declare: $unexpected" >&2; exit 1; }
for sym in hk_host_new hk_host_attach hk_counter_add hk_native_add hk_call_push_json hk_strerror; do
  echo "$exported" | grep -q -x "$sym" || { echo "libhancock.so does not export $sym" >&2; exit 1; }
done

# The header stands alone, in strict C99 and (when there is a C++ compiler) in C++.
printf '#include <hancock.h>\nint main(void) { return hk_strerror(0) == 0; }\n' > "$prefix/header.c"
cc -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only -I"$prefix/include" "$prefix/header.c"
if command -v c++ >/dev/null; then
  cp "$prefix/header.c" "$prefix/header.cpp"
  c++ -std=c++11 -pedantic -Wall -Wextra -Werror -fsyntax-only -I"$prefix/include" "$prefix/header.cpp"
fi

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
pkg-config --exists hancock
# shellcheck disable=SC2046,SC2086
cc -std=c11 -Wall -Wextra -Werror $extra examples/embed/service.c \
   $(pkg-config --cflags --libs hancock) -Wl,-rpath,"$prefix/lib" -o "$prefix/embed-pkgconfig"
echo "built with pkg-config: $(pkg-config --cflags --libs hancock)"

cmake -S examples/embed -B "$prefix/build-find-package" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_C_FLAGS="$extra" -DCMAKE_EXE_LINKER_FLAGS="$extra" >/dev/null
cmake --build "$prefix/build-find-package" >/dev/null
echo "built with find_package(hancock)"

cd "$src/tests/embed"
for bin in "$prefix/embed-pkgconfig" "$prefix/build-find-package/embed-service"; do
  # Linked against the installed library, not the build tree's.
  resolved=$(ldd "$bin" | awk '/libhancock\.so/ {print $3}')
  [ -n "$resolved" ] && [ "$(realpath "$resolved")" = "$(realpath "$prefix/lib/libhancock.so.0")" ] || {
    echo "$bin does not use the installed library:" >&2; ldd "$bin" >&2; exit 1; }
  EMBED_BIN=$bin EMBED_MODE=attach HANCOCK_SOURCE_DIR=$src python3 -m unittest test_embed
done
