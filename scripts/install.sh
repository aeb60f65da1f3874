#!/usr/bin/env bash
# Installs what is missing on a fresh machine, then does nothing on later runs:
# Java 17 + Maven (Debian packages, only to run the Kafka broker), uv, the virtual
# environment from uv.lock, and the Apache Kafka jars from Maven Central.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }
say() { printf '==> %s\n' "$*" >&2; }

if ! have java || ! have mvn; then
  if have apt-get && [ "$(id -u)" = 0 ]; then
    say "installing Java 17 and Maven (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
  else
    say "Java 17+ and Maven are needed to run the local Kafka broker; install them first"
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  say "Python 3.11+ is needed ($PYTHON is $("$PYTHON" --version 2>&1))"
  exit 1
fi

if have uv; then
  UV=(uv)
else
  if ! "$PYTHON" -m uv --version >/dev/null 2>&1; then
    say "installing uv"
    "$PYTHON" -m pip install --quiet uv 2>/dev/null || "$PYTHON" -m pip install --quiet --user uv
  fi
  UV=("$PYTHON" -m uv)
fi

say "syncing .venv with uv.lock (the first run downloads torch and friends)"
UV_PYTHON_DOWNLOADS=never "${UV[@]}" sync --frozen --quiet --python "$(command -v "$PYTHON")"

.venv/bin/driftloop kafka fetch >/dev/null
say "ready: .venv and the Kafka jars are in place"
