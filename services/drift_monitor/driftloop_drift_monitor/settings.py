from __future__ import annotations

from pydantic import Field

from driftloop_common.runtime.settings import MlflowSettings, ServiceSettings


class DriftMonitorSettings(ServiceSettings):
    """`DRIFTLOOP_…` variables; see the README's configuration table."""

    service_name: str = "drift-monitor"
    http_port: int = 8200
    window_hours: float = Field(default=24.0, gt=0)
    min_rows: int = Field(default=500, gt=0)
    min_labelled: int = Field(default=200, gt=0)
    check_every_rows: int = Field(default=500, gt=0)
    alpha: float = Field(default=0.01, gt=0, lt=1)
    detectors: tuple[str, ...] = ("component_psi", "label", "domain_classifier")
    cooldown_hours: float = Field(default=6.0, ge=0)
    new_intent_min_examples: int = Field(default=50, gt=0)
    bins: int = Field(default=10, ge=2)
    pca_variance: float = Field(default=0.95, gt=0, le=1)
    max_components: int = Field(default=128, gt=0)
    raw_dimensions: bool = False
    bootstrap_rows: int = Field(default=5000, gt=0)
    # Rows stamped more than this ahead of the clock are skipped (counted), never windowed.
    max_ahead_hours: float = Field(default=24.0, gt=0)
    # Event ids remembered per key to count a re-emitted interaction once (they leave with
    # the window; past this many the oldest hours go first). About 130 bytes each.
    dedup_max_ids: int = Field(default=1_000_000, gt=0)
    # A failed baseline load (MLflow down) is retried after 1 s, doubling up to the cap.
    baseline_retry_initial_s: float = Field(default=1.0, gt=0)
    baseline_retry_max_s: float = Field(default=60.0, gt=0)
    # Rows kept per key while its baseline cannot be loaded (an event with a 384-value
    # embedding holds about 12 kB); past this the flush fails and a restart re-reads Kafka.
    baseline_pending_max_rows: int = Field(default=5000, gt=0)
    store_url: str | None = None  # interaction store, to bootstrap a baseline without champion
    encoder_precision: str = Field(default="fp32", pattern="^(fp32|int8)$")  # of the baseline
    # Threads of the BLAS libraries (numpy's and scipy's OpenBLAS), process-wide; 0 leaves
    # their default (one per CPU). A window update projects a few hundred rows: a second
    # thread gains nothing and, on busy shared cores, waits milliseconds to be scheduled.
    blas_threads: int = Field(default=1, ge=0)
    mlflow: MlflowSettings | None = None  # the champion's baseline artifact lives there
