#!/usr/bin/env bash
# dnsd's two entry points on a fresh Debian machine with Python 3.11:
#   ./dev.sh demo   set everything up, then run dnsd on its embedded demo cluster (port 1053)
#   ./dev.sh test   set everything up, then run the test suite
# Everything Python goes into .venv; Debian packages (python3-venv, bind9-dnsutils for dig)
# are installed with apt-get when missing (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv

apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

setup() {
  local extras=$1
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
      rm -rf "$VENV"
      apt_install python3-venv
      "$PY" -m venv "$VENV"
    fi
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extras]"
}

case "${1:-}" in
  demo)
    shift
    setup fast
    exec "$VENV/bin/dnsd" demo "$@"
    ;;
  test)
    shift
    missing=""
    command -v dig >/dev/null 2>&1 || missing="$missing bind9-dnsutils"
    command -v shellcheck >/dev/null 2>&1 || missing="$missing shellcheck"
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    [ -z "$missing" ] || apt_install $missing
    setup test,fast
    "$VENV/bin/ruff" check dnsd tests
    exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo|test [args...]" >&2
    exit 2
    ;;
esac
