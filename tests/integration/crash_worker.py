"""A service process for the crash tests: handles messages, and
- with --crash-before-commit kills itself with SIGKILL after producing its outputs but
  before committing the offset;
- with --die-on-poison kills itself with SIGKILL while handling a request whose note is
  "poison" (as an OOM kill would), notes records in flight and dead-letters after two deaths;
  it stops cleanly after handling a request whose note is "last".

    python -m tests.integration.crash_worker BOOTSTRAP SOURCE OUT GROUP EFFECTS_DIR \
        [--crash-before-commit | --die-on-poison]

Its handler's effect is idempotent (one file per event id); every call is logged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from driftloop_common.contracts.events import Event
from driftloop_common.runtime.loop import RetryPolicy
from tests.integration.helpers import audit_of, real_loop


async def main(
    bootstrap: str, source: str, out: str, group: str, effects: Path, crash: bool, poison: bool
) -> None:
    loop = None

    async def handle(event: Event) -> list[Event]:
        with (effects / "calls.log").open("a") as calls:
            calls.write(f"{event.event_id}\n")
        if poison:
            note = event.payload.note
            if note == "poison":
                os.kill(os.getpid(), signal.SIGKILL)
            if note == "last":
                loop.stop()
            return audit_of(event)
        (effects / f"effect-{event.event_id}").touch(exist_ok=True)  # the idempotent effect
        if not crash:
            loop.stop()  # handle one message, commit, exit cleanly
        return audit_of(event)

    loop = real_loop(bootstrap, topics=[source], group=group, handle=handle, out_topic=out)
    if poison:
        loop.track_in_flight = True
        loop.retry = RetryPolicy(attempts=3, initial_backoff_s=0.1, max_failures=2)
    if crash:

        async def die_instead_of_committing(offsets: object) -> None:
            os.kill(os.getpid(), signal.SIGKILL)

        loop.consumer.commit = die_instead_of_committing
    await loop.run()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(
            *args[:4],
            Path(args[4]),
            crash="--crash-before-commit" in args,
            poison="--die-on-poison" in args,
        )
    )
