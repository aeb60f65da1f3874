"""drift-monitor: calibrated drift checks per model key against the champion's training data."""
