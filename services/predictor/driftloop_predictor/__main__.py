"""`python -m driftloop_predictor` (or `driftloop service predictor`)."""

from driftloop_common.runtime.service import load_settings, run_service
from driftloop_predictor.service import PredictorService
from driftloop_predictor.settings import PredictorSettings


def main() -> None:
    settings = load_settings(PredictorSettings)
    run_service(settings, PredictorService.from_settings(settings))


if __name__ == "__main__":
    main()
