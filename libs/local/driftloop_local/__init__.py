"""Local development runners: a real Kafka broker and MLflow server started from this
machine's caches, for `driftloop up`, `make run` and the integration tests. Never imported by
a service."""
