"""Settings come from the environment, fail fast with the variable's name, and hide secrets."""

from __future__ import annotations

import json
import logging

import pytest

from driftloop_common.contracts.errors import ConfigError
from driftloop_common.runtime import logs
from driftloop_common.runtime.logs import configure_logging, redact
from driftloop_common.runtime.settings import ServiceSettings, load_settings


def test_nested_kafka_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS", "b1:9096,b2:9096")
    monkeypatch.setenv("DRIFTLOOP_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DRIFTLOOP_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("DRIFTLOOP_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("DRIFTLOOP_KAFKA__SASL_PASSWORD", "s3cr3t-value")
    settings = load_settings(ServiceSettings)
    kwargs = settings.kafka.client_kwargs()
    assert kwargs["bootstrap_servers"] == "b1:9096,b2:9096"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_password"] == "s3cr3t-value"
    assert "ssl_context" in kwargs
    assert "s3cr3t-value" not in repr(settings)
    assert "s3cr3t-value" not in settings.model_dump_json()


def test_sasl_without_credentials_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRIFTLOOP_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ConfigError, match=r"DRIFTLOOP_KAFKA.*needs sasl_mechanism"):
        load_settings(ServiceSettings)


def test_missing_tls_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DRIFTLOOP_KAFKA__SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("DRIFTLOOP_KAFKA__SSL_CAFILE", str(tmp_path / "missing-ca.pem"))
    with pytest.raises(ConfigError, match="ssl_cafile: no such file"):
        load_settings(ServiceSettings)


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_HTTP_PORT", "eighty")
    with pytest.raises(ConfigError, match="DRIFTLOOP_HTTP_PORT"):
        load_settings(ServiceSettings)


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logs.forget_secrets()


def test_json_log_lines_carry_context_and_never_a_secret(
    capsys: pytest.CaptureFixture, restore_logging
) -> None:
    configure_logging("INFO", json=True, service="unit")
    redact("hunter2-password")
    logging.getLogger("t").info(
        "connecting with hunter2-password", extra={"topic": "audit", "offset": 7}
    )
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["message"] == "connecting with **********"
    assert (record["service"], record["topic"], record["offset"]) == ("unit", "audit", 7)
    assert record["level"] == "INFO"
    try:
        raise RuntimeError("token hunter2-password rejected")
    except RuntimeError:
        logging.getLogger("t").exception("failed", extra={"detail": "hunter2-password"})
    line = capsys.readouterr().err
    assert "hunter2-password" not in line
    assert line.count("**********") >= 2  # in the traceback and in the extra field


@pytest.mark.parametrize(
    "secret",
    [
        'pa"ss\\word',  # quotes and backslashes: JSON-escaped in a JSON log line
        "pässwörd-ü",  # non-ASCII: \u-escaped by the JSON formatter
        "p@ss/w:rd&x",  # URL-encoded inside a URI
        "abc",  # shorter than 4 characters
    ],
)
def test_a_secret_never_reaches_a_log_line_in_any_spelling(
    secret: str, capsys: pytest.CaptureFixture, restore_logging
) -> None:
    from urllib.parse import quote

    configure_logging("INFO", json=True, service="unit")
    redact(secret)
    log = logging.getLogger("t")
    log.info("as is: %s", secret)
    log.info("in a URI: https://svc:%s@host/", quote(secret, safe=""))
    log.info("inside JSON: %s", json.dumps({"password": secret}))
    log.info("extra field", extra={"detail": secret})
    lines = capsys.readouterr().err.strip().splitlines()[-4:]
    for line in lines:
        record = json.loads(line)  # every line is still valid JSON
        text = record["message"] + str(record.get("detail", ""))
        assert secret not in text and quote(secret, safe="") not in text
        assert secret not in line and json.dumps(secret)[1:-1] not in line
        assert logs.MASK in line


def test_uri_settings_lose_their_password_in_messages_and_logs() -> None:
    from driftloop_common.runtime.logs import safe_uri
    from driftloop_common.runtime.service import all_secrets
    from driftloop_common.runtime.settings import MlflowSettings

    class WithMlflow(ServiceSettings):
        mlflow: MlflowSettings = MlflowSettings(tracking_uri="https://ops:t0k%40n@mlflow:5000/")

    assert safe_uri("https://ops:t0k%40n@mlflow:5000/x") == f"https://ops:{logs.MASK}@mlflow:5000/x"
    assert safe_uri("http://mlflow:5000") == "http://mlflow:5000"
    assert "t0k@n" in all_secrets(WithMlflow())  # the redactor learns the decoded password
    assert "t0k%40n" in all_secrets(WithMlflow())  # and the one written in the URI
    assert safe_uri("http://u:p@[::1]:5000/") == f"http://u:{logs.MASK}@[::1]:5000/"
    assert safe_uri("http://u:p@host:99999/") == f"http://u:{logs.MASK}@host:99999/"


def test_dlq_topics_are_created_with_a_retention() -> None:
    from driftloop_common.runtime.kafka import topic_configs

    assert topic_configs("interactions.raw.dlq", 3_600_000) == {"retention.ms": "3600000"}
    assert topic_configs("interactions.raw") == {"message.timestamp.type": "LogAppendTime"}
    assert topic_configs("model.trained") is None


async def test_consumers_wait_a_poll_interval_on_rebalance_and_can_be_static_members() -> None:
    from driftloop_common.runtime.kafka import make_consumer
    from driftloop_common.runtime.settings import KafkaSettings

    consumer = make_consumer(
        KafkaSettings(),
        group_id="trainer",
        client_id="trainer",
        max_poll_interval_ms=3_600_000,
        group_instance_id="trainer-0",
    )
    assert consumer._rebalance_timeout_ms == 3_600_000  # not the 10 s session timeout
    assert consumer._group_instance_id == "trainer-0"
