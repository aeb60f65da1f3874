"""The predictor: serves each model key's champion over the Open Inference Protocol v2."""
