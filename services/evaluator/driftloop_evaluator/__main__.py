"""`python -m driftloop_evaluator` (or `driftloop service evaluator`)."""

from driftloop_common.runtime.service import load_settings, run_service
from driftloop_evaluator.service import EvaluatorService
from driftloop_evaluator.settings import EvaluatorSettings


def main() -> None:
    settings = load_settings(EvaluatorSettings)
    run_service(settings, EvaluatorService.from_settings(settings))


if __name__ == "__main__":
    main()
