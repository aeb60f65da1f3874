"""The evaluator: `model.trained` → challenger vs champion on the newest test window,
a shadow comparison on recent unlabelled traffic → `model.evaluated`."""
