"""`python -m driftloop_auditor` (or `driftloop service auditor`)."""

from __future__ import annotations

from driftloop_auditor.handlers import handle
from driftloop_auditor.settings import AuditorSettings
from driftloop_common.events import EVENT_TYPES, decode_event
from driftloop_common.runtime import run_service
from driftloop_common.service import Record
from driftloop_common.settings import load_settings

ACCEPTED = tuple(
    cls
    for name, cls in EVENT_TYPES.items()
    if name not in {"interaction.raw", "interaction.embedded", "prediction", "audit"}
)


def decode(record: Record) -> object:
    return decode_event(record.value or b"", expected=ACCEPTED)


def main() -> None:
    settings = load_settings(AuditorSettings)
    run_service(settings, topics=settings.topics, decode=decode, handle=handle)


if __name__ == "__main__":
    main()
