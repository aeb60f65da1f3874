"""What training and evaluation share: temporal splits, metrics, the MLflow pyfunc models
(what a registered version *is*), and report figures. The trainer, the evaluator and the
predictor all load models through here, so they never depend on each other."""
