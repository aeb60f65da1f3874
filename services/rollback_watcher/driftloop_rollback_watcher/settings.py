from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from driftloop_common.runtime.settings import ServiceSettings
from driftloop_rollback_watcher.watch import WatchConfig


class RollbackWatcherSettings(ServiceSettings, WatchConfig):
    """`DRIFTLOOP_…` variables; see the README's configuration table. The window and the
    rules (`DRIFTLOOP_WINDOW_MINUTES`, `DRIFTLOOP_MIN_PREDICTIONS`, …) are `WatchConfig`'s
    fields: the service hands these settings to the `RollbackWatcher` as they are."""

    # Configs refuse unknown fields (a misspelt keyword); settings ignore what is not theirs.
    model_config = SettingsConfigDict(extra="ignore")

    service_name: str = "rollback-watcher"
    http_port: int = 8700
