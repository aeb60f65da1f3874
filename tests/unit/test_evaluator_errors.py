"""The evaluator's MLflow errors in driftloop's tree, and its trust boundary.

A `model.trained` naming a version that is gone is permanent (→ DLQ), not retried for ever;
MLflow down is retried; a payload naming a registered model other than its model key's is
refused before anything is loaded; no message carries the tracking URI's password.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import mlflow
import pytest
from mlflow.exceptions import RestException

from driftloop_common.contracts.errors import PermanentError, RetryableError
from driftloop_common.contracts.events import ModelTrained, ModelTrainedEvent
from driftloop_common.runtime.settings import MlflowSettings
from driftloop_evaluator.evaluation import Evaluator, EvaluatorConfig
from driftloop_local.processes import free_port

PASSWORD = "s3cr3t-pw"


@pytest.fixture(autouse=True)
def _keep_mlflow_uri(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The evaluator sets MLflow's global tracking URI: put it back afterwards."""
    from mlflow.tracking._tracking_service import utils

    saved = utils._tracking_uri
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refused connection at once
    yield
    mlflow.set_tracking_uri(saved)


class FakeClient:
    """Answers every call with `error` (or refuses to be called at all) and records them."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if self.error is None:
                raise AssertionError(f"MLflow must not be asked anything ({name})")
            raise self.error

        return call


def trained(registered_model: str = "intent-en-us", version: int = 7) -> ModelTrainedEvent:
    return ModelTrainedEvent(
        producer="trainer",
        model_key="intent/en-us",
        payload=ModelTrained(
            request_event_id=uuid.uuid4(),
            registered_model=registered_model,
            version=version,
            semver="1.0.0",
            run_id="r",
        ),
    )


def evaluator(client: Any = None, uri: str = "http://127.0.0.1:9") -> Evaluator:
    made = Evaluator(EvaluatorConfig(mlflow=MlflowSettings(tracking_uri=uri), store_url="unused"))
    if client is not None:
        made.client = client
    return made


def rest_error(code: str, message: str) -> RestException:
    """What MLflow's REST client raises for an error response (as the server sends it)."""
    return RestException({"error_code": code, "message": message})


def test_a_version_that_is_gone_is_permanent() -> None:
    client = FakeClient(
        rest_error(
            "RESOURCE_DOES_NOT_EXIST", "Model Version (name=intent-en-us, version=7) not found"
        )
    )
    with pytest.raises(PermanentError) as refused:
        evaluator(client).evaluate(trained())
    assert refused.value.code == "version_not_found"
    assert "not found" in str(refused.value)
    assert client.calls == ["get_model_version"]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("TEMPORARILY_UNAVAILABLE", "the database is restarting"),
        ("INTERNAL_ERROR", "something broke"),
        ("REQUEST_LIMIT_EXCEEDED", "slow down"),
    ],
)
def test_a_failing_or_busy_server_is_retried(code: str, message: str) -> None:
    with pytest.raises(RetryableError):
        evaluator(FakeClient(rest_error(code, message))).evaluate(trained())


def test_an_unreachable_server_is_retried_and_its_password_never_printed() -> None:
    uri = f"http://alice:{PASSWORD}@127.0.0.1:{free_port()}"
    with pytest.raises(RetryableError) as failed:
        evaluator(uri=uri).evaluate(trained())
    text = str(failed.value)
    assert PASSWORD not in text
    assert "alice:" in text and "127.0.0.1" in text  # still says where


def test_a_payload_naming_another_registered_model_is_refused_before_loading() -> None:
    client = FakeClient()  # any call fails the test
    with pytest.raises(PermanentError) as refused:
        evaluator(client).evaluate(trained(registered_model="lead-score-en-us"))
    assert refused.value.code == "model_mismatch"
    assert client.calls == []
