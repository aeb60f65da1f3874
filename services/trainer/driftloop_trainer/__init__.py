"""The trainer: `training.requested` → a temporal split from the store → a fitted model,
an MLflow run and a registered version aliased `challenger` → `model.trained`."""
