"""Where baselines come from: the champion's MLflow artifact, else the interaction store.

The trainer logs `DriftBaseline.save(folder)` under the artifact path `drift_baseline`
of the run behind each registered model version; the registered model of a key is named
`ModelKey.registered_model` (e.g. `intent-en-us`) and its live version has the alias
`champion`. With neither (a fresh install), the monitor bootstraps from the stream.

A source answers None only when it knows there is no baseline (no registered model, no
champion alias, a champion without the artifact, too few stored rows). When it cannot
tell (MLflow refuses the connection, answers 5xx, times out) it raises `RetryableError`,
and the monitor keeps the key waiting instead of bootstrapping behind a champion's back.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import AbstractContextManager

from driftloop_common.contracts.errors import PermanentError
from driftloop_common.contracts.events import EncoderInfo, ModelKey
from driftloop_common.ml.drift.baseline import ARTIFACT_PATH, DriftBaseline
from driftloop_common.runtime.logs import safe_uri
from driftloop_common.storage import registry
from driftloop_drift_monitor.monitor import BaselineSource, MonitorConfig

log = logging.getLogger(__name__)


class MlflowBaselineSource(BaselineSource):
    """The champion's baseline. MLflow's errors are translated by `registry.translated`:
    a refused connection, a timeout or a 5xx is a `RetryableError`; a run that vanished
    behind the champion a `PermanentError` (code `baseline_not_found`). Either way the
    key waits (never a bootstrap) and the operator sees it on /readyz."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri

    def load(self, key: ModelKey) -> DriftBaseline | None:
        client = registry.client(self.tracking_uri)
        name = key.registered_model
        # None for a model or alias that does not exist; raises for anything else.
        version = registry.version_by_alias(client, name, registry.CHAMPION)
        if version is None:
            log.info("no %s alias on %s yet", registry.CHAMPION, name)
            return None
        where = f"{name} v{version.version}"
        # Listed first: `download_artifacts` reports a 503 of the artifact store as
        # RESOURCE_DOES_NOT_EXIST, which must not read as "this version has no baseline".
        with self._translated(f"listing the artifacts of {where}"):
            files = client.list_artifacts(version.run_id, ARTIFACT_PATH)
        if not files:
            log.warning("%s has no %s artifact: no baseline from MLflow", where, ARTIFACT_PATH)
            return None
        with tempfile.TemporaryDirectory() as folder:
            with self._translated(f"downloading the {ARTIFACT_PATH} artifact of {where}"):
                path = client.download_artifacts(version.run_id, ARTIFACT_PATH, folder)
            try:
                baseline = DriftBaseline.load(path)
            except (OSError, ValueError, KeyError) as exc:
                raise PermanentError(
                    f"the {ARTIFACT_PATH} artifact of {where} cannot be read: {exc!r}",
                    code="bad_baseline",
                ) from exc
        return baseline.with_source(where)

    def _translated(self, doing: str) -> AbstractContextManager[None]:
        return registry.translated(doing, uri=self.tracking_uri, missing="baseline_not_found")


class StoreBaselineSource(BaselineSource):
    """No champion yet: the oldest interactions of the key's language in the store."""

    def __init__(
        self, store_url: str, config: MonitorConfig, encoder: EncoderInfo, min_rows: int = 1000
    ) -> None:
        self.store_url = store_url
        self.config = config
        self.encoder = encoder
        self.min_rows = min_rows

    def load(self, key: ModelKey) -> DriftBaseline | None:
        from driftloop_common.storage.interactions import InteractionStore, embedding_matrix

        store = InteractionStore(self.store_url)
        table = store.oldest(
            key.language,
            self.config.bootstrap_rows,
            columns=["embedding", "label"],
            encoder=self.encoder,
        )
        if table.num_rows < self.min_rows:
            log.info(
                "store %s has %d rows of %s: too few to bootstrap a baseline",
                safe_uri(self.store_url),
                table.num_rows,
                key.language,
            )
            return None
        baseline = self.config.build_baseline(
            embedding_matrix(table),
            table.column("label").to_pylist(),
            self.encoder,
            f"bootstrap: oldest {table.num_rows} rows of {key.language} in the store",
        )
        log.warning(
            "no champion baseline for %s: bootstrapped from the %d oldest stored rows",
            key,
            table.num_rows,
        )
        return baseline


class ChainedBaselineSource(BaselineSource):
    """The first source that has a baseline for the key wins. A source that raises stops
    the chain: the next one is asked only when the one before answered None, so a store
    bootstrap never stands in for a champion that MLflow could not be asked about."""

    def __init__(self, *sources: BaselineSource) -> None:
        self.sources = sources

    def load(self, key: ModelKey) -> DriftBaseline | None:
        for source in self.sources:
            if (baseline := source.load(key)) is not None:
                return baseline
        return None
