from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from driftloop_common.ml.encoder import Precision
from driftloop_common.runtime.settings import MlflowSettings, ServiceSettings
from driftloop_drift_monitor.monitor import MonitorConfig


class DriftMonitorSettings(ServiceSettings, MonitorConfig):
    """`DRIFTLOOP_…` variables; see the README's configuration table. How the monitor
    windows and checks are `MonitorConfig`'s fields: the service hands these settings to
    the `DriftMonitor` as they are."""

    # Configs refuse unknown fields (a misspelt keyword); settings ignore what is not theirs.
    model_config = SettingsConfigDict(extra="ignore")

    service_name: str = "drift-monitor"
    http_port: int = 8200
    # Rows kept per key while its baseline cannot be loaded (an event with a 384-value
    # embedding holds about 12 kB); past this the flush fails and a restart re-reads Kafka.
    baseline_pending_max_rows: int = Field(default=5000, gt=0)
    store_url: str | None = None  # interaction store, to bootstrap a baseline without champion
    encoder_precision: Precision = "fp32"  # of the baseline
    # Threads of the BLAS libraries (numpy's and scipy's OpenBLAS), process-wide; 0 leaves
    # their default (one per CPU). A window update projects a few hundred rows: a second
    # thread gains nothing and, on busy shared cores, waits milliseconds to be scheduled.
    blas_threads: int = Field(default=1, ge=0)
    mlflow: MlflowSettings | None = None  # the champion's baseline artifact lives there
