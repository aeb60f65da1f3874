"""One real Kafka broker per run (or `DRIFTLOOP_KAFKA_BOOTSTRAP`); fresh names per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from driftloop_local.kafka import LocalKafka
from tests.integration.history import SyntheticHistory


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if external := os.environ.get("DRIFTLOOP_KAFKA_BOOTSTRAP"):
        yield external
        return
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.start(timeout_s=180)
    finally:
        broker.stop()


@pytest.fixture
def fresh_name() -> Callable[[str], str]:
    """Unique topic / group names, so tests never see each other's messages or offsets."""
    run = uuid.uuid4().hex[:8]
    return lambda base: f"test-{base}-{run}"


@pytest.fixture(scope="session")
def history() -> SyntheticHistory:
    """100 days of embedded en-us traffic ending now (embedded once per session)."""
    return SyntheticHistory.build(count=2400, days=100)


@pytest.fixture
def fresh_language() -> str:
    """A language tag no other test uses, so model keys, registered models and store
    partitions are this test's own (`en-t1a2b3c4`)."""
    return f"en-t{uuid.uuid4().hex[:7]}"
