"""`python -m driftloop_collector` (or `driftloop service collector`)."""

from driftloop_collector.service import Collector
from driftloop_collector.settings import CollectorSettings
from driftloop_common.runtime.service import load_settings, run_service


def main() -> None:
    settings = load_settings(CollectorSettings)
    run_service(settings, Collector.from_settings(settings))


if __name__ == "__main__":
    main()
