# The two commands the README promises; everything else lives in scripts/.
.PHONY: run test install lint

run:  ## set up what is missing, run Kafka + every service locally (Ctrl-C stops)
	scripts/run.sh

test:  ## set up what is missing, run the whole test suite (starts a real Kafka)
	scripts/test.sh

install:  ## only set up: .venv, Java/Maven if missing, Kafka jars
	scripts/install.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
