"""`driftloop status`: per model key, what is live and how it is doing.

Read from where the truth is: the registry (MLflow: the champion, a staged shadow or canary
version, their test scores, when they were promoted) and the services' own `/metrics`
(the rollback-watcher's label-free accuracy estimate and window, the predictor's served
versions). A service that does not answer is shown as such; nothing here writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import httpx
import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from driftloop_common.contracts.events import ModelKey
from driftloop_common.runtime.metrics import metric_prefix
from driftloop_common.storage import registry
from driftloop_common.storage.registry import Tag

__all__ = ["KeyStatus", "VersionStatus", "collect", "status"]

WATCHER, PREDICTOR = metric_prefix("rollback-watcher"), metric_prefix("predictor")
SCORES = ("test_macro_f1", "test_accuracy", "test_mean_confidence", "test_ece")


@dataclass
class VersionStatus:
    version: int
    role: str  # champion, shadow, canary
    promoted_at: str | None = None
    share_percent: float | None = None
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class KeyStatus:
    model_key: str
    registered_model: str
    versions: list[VersionStatus] = field(default_factory=list)
    # From the rollback-watcher (None: not measured yet, or the watcher did not answer).
    expected_accuracy: float | None = None
    estimate_band: tuple[float, float] | None = None
    window_predictions: int | None = None
    reference_accuracy: float | None = None
    rollback_signals: dict[str, int] = field(default_factory=dict)  # the watcher's requests
    predictor_serves: int | None = None  # the version the predictor answers with

    @property
    def champion(self) -> VersionStatus | None:
        return next((v for v in self.versions if v.role == "champion"), None)


def scrape(client: httpx.Client, url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """`/metrics` of one service as {(sample name, labels): value}; {} when it does not answer."""
    try:
        answer = client.get(url.rstrip("/") + "/metrics")
        answer.raise_for_status()
    except httpx.HTTPError:
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _versions(mlflow: Any, name: str) -> list[VersionStatus]:
    found = []
    for role in ("champion", *registry.STAGE_ALIASES):
        version = registry.version_by_alias(mlflow, name, role)
        if version is None:
            continue
        run = mlflow.get_run(version.run_id) if version.run_id else None
        metrics = run.data.metrics if run is not None else {}
        share = version.tags.get(Tag.STAGE_SHARE) if role == "canary" else None
        found.append(
            VersionStatus(
                version=int(version.version),
                role=role,
                promoted_at=version.tags.get(Tag.PROMOTED_AT) or version.tags.get(Tag.STAGE_SINCE),
                share_percent=float(share) if share else None,
                scores={k: float(metrics[k]) for k in SCORES if k in metrics},
            )
        )
    return found


def collect(
    mlflow: Any, http: httpx.Client, watcher_url: str, predictor_url: str
) -> list[KeyStatus]:
    """The status of every model key that has a registered model with a driftloop key tag
    or a `<type>-<language>` name."""
    watcher = scrape(http, watcher_url)
    predictor = scrape(http, predictor_url)
    keys = []
    for model in mlflow.search_registered_models():
        key = _model_key(model.name, model.tags)
        if key is None:
            continue
        label = str(key)
        status = KeyStatus(label, model.name, _versions(mlflow, model.name))
        status.expected_accuracy = _value(watcher, f"{WATCHER}_expected_accuracy", model_key=label)
        low = _value(watcher, f"{WATCHER}_expected_accuracy_band", model_key=label, bound="low")
        high = _value(watcher, f"{WATCHER}_expected_accuracy_band", model_key=label, bound="high")
        status.estimate_band = (low, high) if low is not None and high is not None else None
        n = _value(watcher, f"{WATCHER}_window_predictions", model_key=label)
        status.window_predictions = int(n) if n is not None else None
        status.reference_accuracy = _value(
            watcher, f"{WATCHER}_reference_accuracy", model_key=label
        )
        status.rollback_signals = {
            dict(labels)["signal"]: int(v)
            for (name, labels), v in watcher.items()
            if name == f"{WATCHER}_rollbacks_requested_total"
            and ("model_key", label) in labels
            and v > 0
        }
        serves = _value(predictor, f"{PREDICTOR}_serving_version", model_key=label)
        status.predictor_serves = int(serves) if serves else None
        keys.append(status)
    return sorted(keys, key=lambda s: s.model_key)


def _model_key(name: str, tags: dict[str, str]) -> ModelKey | None:
    for text in (tags.get(Tag.MODEL_KEY), name.replace("-", "/", 1)):
        if not text:
            continue
        try:
            key = ModelKey.parse(text)
        except ValueError:
            continue
        if key.registered_model == name:
            return key
    return None


def render(keys: Iterable[KeyStatus], console: Console) -> None:
    table = Table(title="driftloop status", show_lines=True)
    for column in ("model key", "versions", "test scores", "estimate (watcher)", "predictor"):
        table.add_column(column)
    for key in keys:
        versions = "\n".join(
            f"v{v.version} {v.role}"
            + (f" {v.share_percent:g} %" if v.share_percent else "")
            + (f" since {v.promoted_at[:19]}" if v.promoted_at else "")
            for v in key.versions
        )
        scores = "\n".join(
            f"v{v.version}: "
            + ", ".join(f"{k.removeprefix('test_')} {x:.3f}" for k, x in v.scores.items())
            for v in key.versions
            if v.scores
        )
        table.add_row(
            key.model_key,
            versions or "no champion",
            scores or "-",
            _estimate(key),
            f"v{key.predictor_serves}" if key.predictor_serves else "not answering",
        )
    console.print(table)


def _estimate(key: KeyStatus) -> str:
    if key.expected_accuracy is None:
        return "not measured"
    text = f"{key.expected_accuracy:.3f} over {key.window_predictions} predictions"
    if key.estimate_band is not None:
        text += f"\nband {key.estimate_band[0]:.3f}–{key.estimate_band[1]:.3f}"
    if key.reference_accuracy is not None:
        text += f"\nat promotion {key.reference_accuracy:.3f}"
    if key.rollback_signals:
        fired = ", ".join(f"{s} {n}" for s, n in sorted(key.rollback_signals.items()))
        text += f"\nrollbacks requested by signal: {fired}"
    return text


def status(
    mlflow_uri: Annotated[
        str | None,
        typer.Option(
            "--mlflow", help="MLflow tracking URI (default: $DRIFTLOOP_MLFLOW__TRACKING_URI)."
        ),
    ] = None,
    watcher_url: Annotated[
        str, typer.Option(help="The rollback-watcher's HTTP address.")
    ] = "http://127.0.0.1:8700",
    predictor_url: Annotated[
        str, typer.Option(help="The predictor's HTTP address.")
    ] = "http://127.0.0.1:8800",
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document, for scripts.")
    ] = False,
) -> None:
    """Per model key: champion and staged versions with their test scores, the label-free
    accuracy estimate of the live version, and the version the predictor serves."""
    uri = mlflow_uri or os.environ.get("DRIFTLOOP_MLFLOW__TRACKING_URI", "http://127.0.0.1:5000")
    with registry.translated("reading the model registry", uri=uri):
        mlflow = registry.client(uri)
        with httpx.Client(timeout=3.0) as http:
            keys = collect(mlflow, http, watcher_url, predictor_url)
    if as_json:
        print(json.dumps([asdict(k) for k in keys], indent=2))
    else:
        render(keys, Console())
