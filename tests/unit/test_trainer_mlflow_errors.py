"""MLflow's errors as the trainer (and `registry`) report them: in driftloop's tree, and never
with the password of a tracking URI such as `http://user:pw@host` in the text."""

from __future__ import annotations

import asyncio

import pytest
from mlflow.exceptions import MlflowException, RestException

from driftloop_common.contracts.errors import PermanentError, RetryableError
from driftloop_common.contracts.events import (
    TrainingReason,
    TrainingRequested,
    TrainingRequestedEvent,
)
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_common.runtime.settings import MlflowSettings
from driftloop_common.storage import registry
from driftloop_local.processes import free_port
from driftloop_trainer.service import TrainerMetrics, TrainerService
from driftloop_trainer.training import Trainer, TrainerConfig

PASSWORD = "pw-9f2c"


def test_an_unreachable_mlflow_is_retryable_and_its_password_never_printed(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refused connection at once
    uri = f"http://bob:{PASSWORD}@127.0.0.1:{free_port()}"
    trainer = Trainer(
        TrainerConfig(mlflow=MlflowSettings(tracking_uri=uri), store_url=str(tmp_path))
    )
    service = TrainerService(trainer, TrainerMetrics(LoopMetrics("trainer-e")))
    request = TrainingRequestedEvent(
        producer="test",
        model_key="intent/en-us",
        payload=TrainingRequested(reason=TrainingReason.MANUAL, requested_by="t"),
    )
    with pytest.raises(RetryableError) as failed:
        asyncio.run(service.handle(request))
    assert PASSWORD not in str(failed.value)
    assert "bob:" in str(failed.value)  # still says which server


def rest(code: str) -> RestException:
    """What MLflow's REST client raises for an error response with this `error_code`."""
    return RestException({"error_code": code, "message": f"{code} from the server"})


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        (rest("RESOURCE_DOES_NOT_EXIST"), PermanentError, "missing"),
        (rest("INVALID_PARAMETER_VALUE"), PermanentError, "mlflow_rejected"),
        (rest("TEMPORARILY_UNAVAILABLE"), RetryableError, None),
        (rest("INTERNAL_ERROR"), RetryableError, None),
        (rest("REQUEST_LIMIT_EXCEEDED"), RetryableError, None),
        (rest("PERMISSION_DENIED"), RetryableError, None),  # our credentials, not the input
        (rest("ENDPOINT_NOT_FOUND"), RetryableError, None),  # a wrong URI, not the input
        (rest("503"), RetryableError, None),  # a proxy in front of MLflow
        (MlflowException("API request to http://h failed with timeout"), RetryableError, None),
        (ConnectionResetError("reset by peer"), RetryableError, None),
    ],
)
def test_mlflow_errors_are_sorted_into_retryable_and_permanent(
    error: Exception, kind: type, code: str | None
) -> None:
    translated = registry.mlflow_error(error, "reading", uri="http://h", missing="missing")
    assert type(translated) is kind
    if code is not None:
        assert translated.code == code


def test_a_uri_password_quoted_inside_an_error_is_masked() -> None:
    uri = f"http://bob:{PASSWORD}@mlflow:5000"
    inner = MlflowException(f"API request to {uri}/api/2.0/mlflow/runs/get failed")
    text = str(registry.mlflow_error(inner, "reading the run", uri=uri))
    assert PASSWORD not in text
    assert text.count("bob:") == 2  # the server named, twice, without its password
