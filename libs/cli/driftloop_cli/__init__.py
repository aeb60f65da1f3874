"""The `driftloop` command line: publish events by hand, tail topics, run Kafka and the loop locally."""
