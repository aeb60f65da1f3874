"""The `driftloop` command line: publish events, tail topics, run Kafka and the loop locally."""
