"""Where baselines come from: the champion's MLflow artifact, else the interaction store.

The trainer logs `DriftBaseline.save(folder)` under the artifact path `drift_baseline`
of the run behind each registered model version; the registered model of a key is named
`ModelKey.registered_model` (e.g. `intent-en-us`) and its live version has the alias
`champion`. With neither (a fresh install), the monitor bootstraps from the stream.
"""

from __future__ import annotations

import logging
import tempfile

from driftloop_common import registry
from driftloop_common.drift.baseline import ARTIFACT_PATH, DriftBaseline
from driftloop_common.events import EncoderInfo, ModelKey
from driftloop_drift_monitor.monitor import BaselineSource, MonitorConfig

log = logging.getLogger(__name__)


class MlflowBaselineSource(BaselineSource):
    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri

    def load(self, key: ModelKey) -> DriftBaseline | None:
        from mlflow.exceptions import MlflowException

        client = registry.client(self.tracking_uri)
        name = key.registered_model
        version = registry.version_by_alias(client, name, registry.CHAMPION)
        if version is None:
            log.info("no %s alias on %s yet", registry.CHAMPION, name)
            return None
        with tempfile.TemporaryDirectory() as folder:
            try:
                path = client.download_artifacts(version.run_id, ARTIFACT_PATH, folder)
            except MlflowException as exc:
                log.warning(
                    "%s v%s has no %s artifact: %s", name, version.version, ARTIFACT_PATH, exc
                )
                return None
            baseline = DriftBaseline.load(path)
        return baseline.with_source(f"{name} v{version.version}")


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
        from driftloop_common.store import InteractionStore, embedding_matrix

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
                self.store_url,
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
    """The first source that has a baseline for the key wins."""

    def __init__(self, *sources: BaselineSource) -> None:
        self.sources = sources

    def load(self, key: ModelKey) -> DriftBaseline | None:
        for source in self.sources:
            if (baseline := source.load(key)) is not None:
                return baseline
        return None
