#!/bin/sh
# Installs, on Debian 12, every package the build, `make run` and `make test` need, and nothing
# when they are all present already (so `make run` stays fast on a prepared machine).
# Shared by the Makefile's run and test targets; needs root (or sudo) only when something is missing.
set -eu

build_pkgs="build-essential cmake pkg-config liblua5.4-dev libuv1-dev node-llhttp
  libcurl4-openssl-dev libssl-dev zlib1g-dev"
test_pkgs="python3 python3-yaml lua-check wrk curl prometheus prometheus-alertmanager"

want="$build_pkgs"
[ "${1:-}" = "--test" ] && want="$want $test_pkgs"

missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "install-deps: installing:$missing" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
$sudo apt-get install -y -q --no-install-recommends $missing >/dev/null
