"""`python -m driftloop_rollback_watcher` (or `driftloop service rollback-watcher`)."""

from driftloop_common.runtime.service import load_settings, run_service
from driftloop_rollback_watcher.service import RollbackWatcherService
from driftloop_rollback_watcher.settings import RollbackWatcherSettings


def main() -> None:
    settings = load_settings(RollbackWatcherSettings)
    run_service(settings, RollbackWatcherService.from_settings(settings))


if __name__ == "__main__":
    main()
