"""`python -m driftloop_collector` (or `driftloop service collector`)."""

from __future__ import annotations

import logging

from driftloop_collector.pipeline import Collector
from driftloop_collector.settings import CollectorSettings
from driftloop_common import topics
from driftloop_common.encoder import TextEncoder
from driftloop_common.metrics import LoopMetrics
from driftloop_common.runtime import run_service
from driftloop_common.settings import load_settings
from driftloop_common.store import InteractionStore

log = logging.getLogger(__name__)


def main() -> None:
    settings = load_settings(CollectorSettings)
    encoder = TextEncoder(
        precision=settings.encoder_precision, num_threads=settings.encoder_threads
    ).load()
    metrics = LoopMetrics(settings.service_name)
    collector = Collector(
        settings, encoder=encoder, store=InteractionStore(settings.store_url), metrics=metrics
    )
    run_service(
        settings,
        topics=[topics.INTERACTIONS_RAW],
        decode=collector.decode,
        handle=collector.handle,
        metrics=metrics,
        ready_checks={"model_loaded": lambda: encoder.loaded},
        flush=collector.flush,
        flush_due_in=collector.flush_due_in,
        commit_floor=collector.commit_floor,
        on_assigned=collector.on_assigned,
        on_revoked=collector.on_revoked,
    )


if __name__ == "__main__":
    main()
