#!/usr/bin/env bash
# Sets up what is missing, then runs the whole loop locally on embedded defaults:
# a Kafka broker on 127.0.0.1, the topics and every service. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/driftloop up "$@"
