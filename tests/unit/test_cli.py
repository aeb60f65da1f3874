"""CLI paths that need no broker: validation happens before anything is sent."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from driftloop_cli import kafka_io
from driftloop_cli.main import app

runner = CliRunner()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    monkeypatch.setattr(kafka_io, "publish", lambda settings, event: calls.append(event) or (0, 0))
    monkeypatch.setenv("DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    return calls


def test_invalid_event_file_names_the_field_exits_nonzero_and_sends_nothing(tmp_path, sent) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "event_type": "training.requested",
                "producer": "me",
                "model_key": "intent/en-us",
                "payload": {"reason": "because", "requested_by": "me"},
            }
        )
    )
    result = runner.invoke(app, ["publish", "event", str(bad)])
    assert result.exit_code == 2
    assert "payload.reason" in result.output
    assert sent == []


def test_valid_event_file_is_sent_to_its_topic(tmp_path, sent) -> None:
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {
                "event_type": "rollback.requested",
                "producer": "me",
                "model_key": "intent/es-es",
                "occurred_at": "2026-11-24T10:00:00Z",
                "event_id": "0b7e0e1c-7b58-4a0b-9a55-5f9a2a3c0a11",
                "correlation_id": "0b7e0e1c-7b58-4a0b-9a55-5f9a2a3c0a12",
                "payload": {"reason": "bad release", "requested_by": "me", "to_version": 4},
            }
        )
    )
    result = runner.invoke(app, ["publish", "event", str(good)])
    assert result.exit_code == 0, result.output
    assert [e.topic for e in sent] == ["rollback.requested"]
    assert "0b7e0e1c-7b58-4a0b-9a55-5f9a2a3c0a11" in result.stdout


def test_publish_retrain_builds_a_manual_request(sent) -> None:
    result = runner.invoke(
        app,
        [
            "publish",
            "retrain",
            "--model-type",
            "intent",
            "--language",
            "EN-US",
            "--reason",
            "new product launch",
        ],
    )
    assert result.exit_code == 0, result.output
    (event,) = sent
    assert event.event_type == "training.requested"
    assert str(event.model_key) == "intent/en-us"
    assert event.payload.reason == "manual" and event.payload.note == "new product launch"
    assert str(event.event_id) in result.stdout


def test_bad_language_is_rejected_before_sending(sent) -> None:
    result = runner.invoke(app, ["publish", "rollback", "-m", "intent", "-l", "klingon!"])
    assert result.exit_code == 2
    assert "BCP 47" in result.output
    assert sent == []


@pytest.mark.parametrize("command", [[], ["publish"], ["kafka"], ["topics"], ["tail", "--help"]])
def test_help_is_available_everywhere(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"] if command[-1:] != ["--help"] else command)
    assert result.exit_code == 0
    assert "Usage" in result.output
