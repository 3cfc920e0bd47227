#!/bin/sh
# Installs, on Debian 12, every package the build, `make run` and `make test` need, and nothing
# when they are all present already (so `make run` stays fast on a prepared machine).
# Shared by the Makefile's run and test targets; needs root (or sudo) only when something is missing.
#   install-deps.sh          the build and `make run`
#   install-deps.sh --test   also `make test` and `make bench`
#   install-deps.sh --bench  also the peers of tests/bench/compare (`make compare`): nginx with the
#                            Lua module, Flask + prometheus_client under gunicorn, Node.js and npm
set -eu

build_pkgs="build-essential cmake pkg-config liblua5.4-dev libuv1-dev node-llhttp
  libcurl4-openssl-dev libssl-dev zlib1g-dev"
# docker-compose (1.29): tests/deploy_test.sh checks that the compose file parses with it.
test_pkgs="python3 python3-yaml lua-check wrk curl prometheus prometheus-alertmanager docker-compose
  chromium"
bench_pkgs="nginx libnginx-mod-http-lua lua-cjson python3-flask python3-prometheus-client gunicorn"

want="$build_pkgs"
case "${1:-}" in
  --test) want="$want $test_pkgs" ;;
  --bench)
    want="$want $test_pkgs $bench_pkgs"
    # Node.js may come from another repository that bundles npm: only ask Debian for what is missing.
    command -v node >/dev/null 2>&1 || want="$want nodejs"
    command -v npm >/dev/null 2>&1 || want="$want npm"
    ;;
esac

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
