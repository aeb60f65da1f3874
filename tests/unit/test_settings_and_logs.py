"""Settings come from the environment, fail fast with the variable's name, and hide secrets."""

from __future__ import annotations

import json
import logging

import pytest

from driftloop_common import logs
from driftloop_common.errors import ConfigError
from driftloop_common.logs import configure_logging, redact
from driftloop_common.settings import ServiceSettings, load_settings


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
    logs._SECRETS.clear()


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
