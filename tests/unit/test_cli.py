"""CLI paths that need no broker: validation happens before anything is sent."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
import typer
from typer.testing import CliRunner

from driftloop_cli import kafka_io, local
from driftloop_cli.generate import Generation
from driftloop_cli.main import app
from driftloop_common.contracts.events import TrainingFailed, TrainingFailedEvent
from driftloop_synthetic import OutputFormat

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


def test_the_lap_watcher_line_is_stamped_with_the_event_time() -> None:
    event = TrainingFailedEvent(
        producer="trainer",
        model_key="intent/en-us",
        occurred_at="2026-11-24T20:05:00+00:00",
        payload=TrainingFailed(request_event_id=uuid.uuid4(), reason="no labels"),
    )
    line = local.describe(event.to_bytes())
    assert line.startswith("[2026-11-24 20:05] intent/en-us")
    assert "no labels" in line


@pytest.mark.parametrize("raw", [b"", b"not json", b'{"event_type": "from.the.future"}'])
def test_the_lap_watcher_skips_what_it_cannot_read(raw: bytes) -> None:
    assert local.describe(raw) == "(an event this version cannot read)"


@pytest.mark.parametrize("command", ["generate", "replay"])
def test_generate_and_replay_take_every_generation_option_with_its_default(command: str) -> None:
    click_command = typer.main.get_command(app).get_command(None, command)
    params = {p.name: p for p in click_command.params}
    for field in dataclasses.fields(Generation):
        assert params[field.name].default == field.default, field.name
    assert "gen" not in params


def test_generate_passes_its_options_to_the_generator_as_one_generation(monkeypatch) -> None:
    seen: list[Generation] = []

    def stop(gen: Generation) -> None:
        seen.append(gen)
        raise typer.Exit(0)

    monkeypatch.setattr(Generation, "config", stop)
    args = ["generate", "-", "--per-day", "5", "--launch-at", "3", "-f", "genesys-bare"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen == [Generation(per_day=5.0, launch_at=3.0, fmt=OutputFormat.GENESYS_BARE)]


def test_an_empty_user_asks_as_cli(sent, monkeypatch) -> None:
    monkeypatch.setenv("USER", "")
    result = runner.invoke(app, ["publish", "rollback", "-m", "intent", "-l", "en-us"])
    assert result.exit_code == 0, result.output
    (event,) = sent
    assert event.payload.requested_by == "cli"
    assert event.payload.reason == "requested by hand" and event.payload.to_version is None
