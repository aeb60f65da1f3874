"""`python -m driftloop_trainer` (or `driftloop service trainer`)."""

from driftloop_common.runtime.service import load_settings, run_service
from driftloop_trainer.service import TrainerService
from driftloop_trainer.settings import TrainerSettings


def main() -> None:
    settings = load_settings(TrainerSettings)
    run_service(settings, TrainerService.from_settings(settings))


if __name__ == "__main__":
    main()
