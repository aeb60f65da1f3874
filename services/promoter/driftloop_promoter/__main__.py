"""`python -m driftloop_promoter` (or `driftloop service promoter`)."""

from driftloop_common.runtime.service import load_settings, run_service
from driftloop_promoter.service import PromoterService
from driftloop_promoter.settings import PromoterSettings


def main() -> None:
    settings = load_settings(PromoterSettings)
    run_service(settings, PromoterService.from_settings(settings))


if __name__ == "__main__":
    main()
