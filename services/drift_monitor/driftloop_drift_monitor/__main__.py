"""`python -m driftloop_drift_monitor` (or `driftloop service drift-monitor`)."""

from driftloop_common.runtime.service import load_settings, run_service
from driftloop_drift_monitor.service import DriftMonitorService
from driftloop_drift_monitor.settings import DriftMonitorSettings


def main() -> None:
    settings = load_settings(DriftMonitorSettings)
    run_service(settings, DriftMonitorService.from_settings(settings))


if __name__ == "__main__":
    main()
