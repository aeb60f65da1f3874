"""`python -m driftloop_auditor` (or `driftloop service auditor`)."""

from driftloop_auditor.service import Auditor
from driftloop_auditor.settings import AuditorSettings
from driftloop_common.runtime.service import load_settings, run_service


def main() -> None:
    settings = load_settings(AuditorSettings)
    run_service(settings, Auditor(settings))


if __name__ == "__main__":
    main()
