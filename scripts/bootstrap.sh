#!/usr/bin/env bash
# Prepare a fresh Debian/Ubuntu machine for `make test` / `make demo`:
#   - a Python >= 3.11 with venv (installs python3-venv through apt if it is missing),
#   - the project in .venv with the requested extras, at the versions of requirements/dev.lock,
#   - Prometheus and promtool on PATH (Debian package `prometheus`, run as a plain process, no systemd).
#   - node_exporter on PATH (Debian package `prometheus-node-exporter`, likewise).
# Anything that cannot be installed is reported with what to do, and the script fails.
# `bootstrap.sh dev --no-prometheus` stops before Prometheus: `make test-fast` runs only the tests
# that need no peer, so it must work on a machine where Prometheus cannot be installed.
set -euo pipefail

extras="${1:-dev}"
with_prometheus=1
[ "${2:-}" = "--no-prometheus" ] && with_prometheus=0
venv="${VENV:-.venv}"
python="${PYTHON:-}"

say() { printf 'bootstrap: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else return 1
  fi
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  say "installing with apt-get: $*"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq >/dev/null || return 1
  as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null || return 1
}

if [ -z "$python" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      python="$candidate"; break
    fi
  done
fi
if [ -z "$python" ]; then
  say "Python 3.11 or newer is required (python3.11 not found). On Debian/Ubuntu: apt-get install python3.11 python3.11-venv"
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    apt_install "python${version}-venv" || apt_install python3-venv || {
      say "cannot create a virtualenv: install python3-venv (apt-get install python${version}-venv) and retry"
      exit 1
    }
    "$python" -m venv "$venv"
  fi
fi

# The versions CI tested: requirements/dev.lock (`make lock` refreshes it from pyproject.toml), and a
# pinned pip, so a fresh machine installs the same set as CI rather than whatever is newest today.
# The stamp holds a digest of everything that decides the install, not an mtime: a changed lock,
# pyproject.toml or pip pin re-installs (a checkout that changes the lock leaves older mtimes too).
pip_version=26.3
lock=requirements/dev.lock
# The build backends (setuptools, wheel) pip puts in its isolated build environments, pinned too.
build_lock=requirements/build.lock
stamp="$venv/.installed-$extras"
want=$(cat pyproject.toml sandbox/pyproject.toml "$lock" "$build_lock" | sha256sum | cut -d' ' -f1)
want="$want pip==$pip_version extras=$extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing vigil-operator[$extras] into $venv, versions from $lock"
  "$venv/bin/python" -m pip install -q "pip==$pip_version" >/dev/null
  # The lock as constraints: only what [$extras] needs is installed, each at its locked version,
  # and pip fails if the lock cannot satisfy pyproject.toml (run `make lock` then).
  "$venv/bin/python" -m pip install -q -c "$lock" --build-constraint "$build_lock" -e ".[$extras]"
  # The sandbox and test peers (sandbox/, vigil_sandbox): their own distribution, never in the operator's
  # wheel; their dependencies are the [sandbox] extra just installed.
  case "$extras" in *dev*|*sandbox*) "$venv/bin/python" -m pip install -q --no-deps -c "$lock" \
    --build-constraint "$build_lock" -e ./sandbox ;; esac
  printf '%s\n' "$want" > "$stamp"
fi

if [ "$with_prometheus" = 0 ]; then
  say "ready: $("$venv/bin/python" --version) (Prometheus not checked: --no-prometheus)"
  exit 0
fi

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  apt_install prometheus || {
    say "Prometheus is not on PATH and could not be installed automatically."
    say "Install the 'prometheus' package (it provides prometheus and promtool, version 2.42 or newer), or put"
    say "both binaries from https://prometheus.io/download/ on PATH, then run this again."
    exit 1
  }
  # The Debian package may start a service where an init system exists; Vigil runs its own processes.
  as_root service prometheus stop >/dev/null 2>&1 || true
fi
# node_exporter, for the test of the host-metric examples (tests/integration/test_host_metrics.py).
if ! command -v prometheus-node-exporter >/dev/null 2>&1 && ! command -v node_exporter >/dev/null 2>&1; then
  apt_install prometheus-node-exporter || {
    say "prometheus-node-exporter is not on PATH and could not be installed automatically."
    say "Install the Debian package 'prometheus-node-exporter', or put node_exporter from"
    say "https://prometheus.io/download/ on PATH, then run this again."
    exit 1
  }
  as_root service prometheus-node-exporter stop >/dev/null 2>&1 || true
fi
# Chromium and its WebDriver, for the dashboard's browser tests (tests/dashboard/).
if ! command -v chromedriver >/dev/null 2>&1 && [ ! -x /usr/bin/chromedriver ]; then
  apt_install chromium chromium-driver || {
    say "chromium-driver is not on PATH and could not be installed automatically."
    say "Install the Debian packages 'chromium' and 'chromium-driver' (Ubuntu: the chromium snap does not"
    say "ship chromedriver; use Debian's packages or Google's chrome-for-testing), then run this again."
    exit 1
  }
fi
say "ready: $("$venv/bin/python" --version), $(prometheus --version 2>&1 | head -n 1)"
