#!/usr/bin/env bash
# Sets up what is missing, then runs the whole test suite (unit + integration on a real
# Kafka broker that the tests start themselves). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/pytest "$@"
