"""The synthetic stream: determinism, coverage, each drift knob, and every output form."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from driftloop_cli import generate as cli
from driftloop_common.contracts.events import InteractionRawEvent, decode_event
from driftloop_synthetic import (
    CUSTOMER_END_TOPIC,
    EMERGING_INTENTS,
    INTENTS,
    LANGUAGES,
    OUT_OF_SCOPE,
    QUEUE_IDS,
    TRANSCRIPTION_TOPIC,
    WRAPUP_TOPIC,
    DriftSpec,
    GeneratorConfig,
    Interaction,
    OutputFormat,
    conversation_messages,
    generate,
    kafka_records,
    message_key,
    shuffle_within,
    to_raw_event,
)
from driftloop_synthetic.generator import LEXICONS
from tests.real_data import EVENTBRIDGE_EXAMPLES as GENESYS_EXAMPLES
from tests.unit.fakes import FakeProducer

START = datetime(2026, 1, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return START + timedelta(days=n)


def config(**changes) -> GeneratorConfig:
    return GeneratorConfig(**{"seed": 1, "count": 4000, "start": START, "end": day(150), **changes})


def split_at(interactions: list[Interaction], moment: datetime):
    before = [i for i in interactions if i.completed_at < moment]
    after = [i for i in interactions if i.completed_at >= moment]
    assert before and after
    return before, after


def share(interactions: list[Interaction], predicate) -> float:
    return sum(1 for i in interactions if predicate(i)) / len(interactions)


# ------------------------------------------------------------------ the stream


def test_same_seed_gives_the_same_stream_and_another_seed_another() -> None:
    first = list(generate(config(count=300)))
    assert first == list(generate(config(count=300)))
    other = list(generate(config(count=300, seed=2)))
    assert [i.text for i in first] != [i.text for i in other]
    assert {i.conversation_id for i in first}.isdisjoint(i.conversation_id for i in other)


def test_at_least_14_intents_are_generated_in_both_languages() -> None:
    assert len(INTENTS) >= 14
    for lexicon in LEXICONS.values():
        assert set(INTENTS) | set(EMERGING_INTENTS) | {OUT_OF_SCOPE} <= set(lexicon.intents)
    interactions = list(generate(config(count=6000, spanish_share=0.5)))
    for language in LANGUAGES:
        seen = {i.intent for i in interactions if i.language == language}
        assert set(INTENTS) <= seen, (language, set(INTENTS) - seen)


def test_timestamps_are_utc_ordered_and_span_the_configured_period() -> None:
    interactions = list(generate(config(count=2000)))
    times = [i.completed_at for i in interactions]
    assert all(t.utcoffset() == timedelta(0) for t in times)
    assert times == sorted(times)
    assert START <= times[0] and times[-1] < day(150)
    assert times[-1] - times[0] >= timedelta(days=120)


def test_records_carry_uuids_queues_and_media_types() -> None:
    interactions = list(generate(config(count=1000)))
    assert all(str(uuid.UUID(i.conversation_id)) == i.conversation_id for i in interactions)
    assert len({i.conversation_id for i in interactions}) == 1000
    assert {i.queue for i in interactions} == {
        "Billing",
        "Orders",
        "Cards",
        "Tech Support",
        "General",
    }
    assert {i.media_type for i in interactions} == {"voice", "chat", "message", "email"}


def test_one_intent_in_one_language_yields_thousands_of_distinct_texts() -> None:
    for language in LANGUAGES:
        texts = [
            i.text
            for i in generate(
                config(
                    count=3000,
                    intent_weights={"card_lost": 1.0},
                    spanish_share=1.0 if language == "es-es" else 0.0,
                    off_topic_share=0.0,
                )
            )
        ]
        assert len(set(texts)) >= 2000, language


def test_spanish_is_written_in_spanish_and_english_in_english() -> None:
    interactions = list(generate(config(count=3000, spanish_share=0.5, typo_rate=0.0)))
    english_only = re.compile(r"\b(the|my|please|thanks|want|can't)\b", re.IGNORECASE)
    spanish_only = re.compile(r"\b(el|mi|por favor|gracias|quiero|tengo)\b", re.IGNORECASE)
    for i in interactions:
        if i.language == "es-es":
            assert not english_only.search(i.text), i.text
        else:
            assert not spanish_only.search(i.text), i.text
    assert share(interactions, lambda i: bool(spanish_only.search(i.text))) > 0.3


# ------------------------------------------------------------------ drift knobs


def test_intent_mix_shift_changes_intent_shares_from_its_day() -> None:
    shift = DriftSpec(at=day(75), intent_weights={"billing": 1.0, "delivery_status": 0.0})
    before, after = split_at(list(generate(config(drift=(shift,)))), day(75))
    assert 0.05 < share(before, lambda i: i.intent == "billing") < 0.15
    assert share(after, lambda i: i.intent == "billing") > 0.4  # 1.0 / (1.0 + 0.76)
    assert share(before, lambda i: i.intent == "delivery_status") > 0.08
    assert share(after, lambda i: i.intent == "delivery_status") == 0


def test_product_launch_brings_its_name_into_the_given_share_of_utterances() -> None:
    launch = DriftSpec(at=day(90), product="Zephyr One", product_share=0.3)
    before, after = split_at(list(generate(config(drift=(launch,)))), day(90))
    mentions = lambda i: "zephyr one" in i.text.lower()  # noqa: E731 (voice is lower case)
    assert share(before, mentions) == 0
    assert 0.22 < share(after, mentions) < 0.38


def test_new_intent_is_absent_before_its_day_and_present_after() -> None:
    new = DriftSpec(at=day(100), intent_weights={"crypto_wallet": 0.1})
    before, after = split_at(list(generate(config(drift=(new,)))), day(100))
    assert not any(i.intent == "crypto_wallet" for i in before)
    assert 0.05 < share(after, lambda i: i.intent == "crypto_wallet") < 0.15
    assert any("wallet" in i.text.lower() or "monedero" in i.text.lower() for i in after)


def test_new_product_intent_talks_about_the_launched_product() -> None:
    drift = (
        DriftSpec(at=day(60), product="Zephyr One", product_share=0.0),
        DriftSpec(at=day(90), intent_weights={"refund_status_new_product": 0.2}),
    )
    after = [i for i in generate(config(drift=drift)) if i.intent == "refund_status_new_product"]
    assert after and all(i.completed_at >= day(90) for i in after)
    assert all("zephyr one" in i.text.lower() for i in after)


def test_language_shift_changes_the_spanish_share() -> None:
    shift = DriftSpec(at=day(60), spanish_share=0.8)
    before, after = split_at(list(generate(config(spanish_share=0.2, drift=(shift,)))), day(60))
    assert 0.15 < share(before, lambda i: i.language == "es-es") < 0.25
    assert 0.75 < share(after, lambda i: i.language == "es-es") < 0.85


def test_off_topic_share_sets_the_share_of_out_of_scope_utterances() -> None:
    more = DriftSpec(at=day(75), off_topic_share=0.25)
    before, after = split_at(list(generate(config(off_topic_share=0.0, drift=(more,)))), day(75))
    assert share(before, lambda i: i.intent == OUT_OF_SCOPE) == 0
    assert 0.2 < share(after, lambda i: i.intent == OUT_OF_SCOPE) < 0.3
    assert all(i.queue == "General" for i in after if i.intent == OUT_OF_SCOPE)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"start": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"end": START}, "after start"),
        ({"intent_weights": {"bogus": 1.0}}, "unknown intent"),
        ({"spanish_share": 1.5}, "between 0 and 1"),
        ({"drift": (DriftSpec(at=day(5), product_share=0.2),)}, "no product launched"),
        ({"intent_weights": {"billing": 0.0}}, "every intent weight is 0"),
    ],
)
def test_inconsistent_configs_are_rejected(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(**changes)


# ------------------------------------------------------------------ output forms


def test_normalized_records_decode_as_interaction_raw_events() -> None:
    interactions = list(generate(config(count=200)))
    records = list(kafka_records(interactions, OutputFormat.NORMALIZED))
    assert len(records) == len(interactions)
    for (key, value), interaction in zip(records, interactions, strict=True):
        event = decode_event(value, expected=(InteractionRawEvent,))
        assert key == interaction.conversation_id.encode()
        assert event.producer == "generator"
        assert str(event.model_key) == f"intent/{interaction.language}"
        assert event.payload.label == interaction.intent
        assert event.payload.text == interaction.text
        assert event.payload.completed_at == interaction.completed_at
    assert to_raw_event(interactions[0]).event_id == to_raw_event(interactions[0]).event_id


@pytest.mark.parametrize("envelope", [True, False])
def test_genesys_messages_have_the_documented_fields_and_rebuild_the_text(envelope: bool) -> None:
    seen_partial = seen_agent = False
    for interaction in generate(config(count=300)):
        fmt = OutputFormat.GENESYS_EVENTBRIDGE if envelope else OutputFormat.GENESYS_BARE
        values = [v for _, v in kafka_records([interaction], fmt)]
        messages = [json.loads(v) for v in values]
        notes = [m["detail"] if envelope else m for m in messages]
        cid = interaction.conversation_id
        if envelope:
            assert all(
                m["detail-type"].replace("{id}", cid) == n["topicName"]
                for m, n in zip(messages, notes, strict=True)
            )
        else:
            assert all(
                set(m) == {"topicName", "version", "eventBody", "metadata"} for m in messages
            )
        topics = [n["topicName"] for n in notes]
        assert topics[-2:] == [
            CUSTOMER_END_TOPIC.replace("{id}", cid),
            WRAPUP_TOPIC.replace("{id}", cid),
        ]
        assert all(t == TRANSCRIPTION_TOPIC.replace("{id}", cid) for t in topics[:-2])
        bodies = [n["eventBody"] for n in notes]
        assert all(b["conversationId"] == cid for b in bodies)
        assert [b["eventTime"] for b in bodies] == sorted(b["eventTime"] for b in bodies)

        finals, partials = [], []
        for body in bodies[:-2]:
            assert {
                "eventTime",
                "conversationId",
                "communicationId",
                "sessionStartTimeMs",
                "transcriptionStartTimeMs",
                "transcripts",
            } <= set(body)
            (transcript,) = body["transcripts"]
            assert (
                transcript["dialect"] == {"en-us": "en-US", "es-es": "es-ES"}[interaction.language]
            )
            assert transcript["engineProvider"] == "GENESYS"
            assert transcript["channel"] in {"EXTERNAL", "INTERNAL"}
            (alt,) = transcript["alternatives"]
            assert 0 < alt["confidence"] <= 1
            assert [w["word"] for w in alt["words"]] == alt["transcript"].split()
            assert all(
                {"confidence", "offsetMs", "durationMs", "word"} == set(w) for w in alt["words"]
            )
            seen_agent |= transcript["channel"] == "INTERNAL"
            seen_partial |= not transcript["isFinal"]
            if transcript["channel"] == "EXTERNAL":
                (finals if transcript["isFinal"] else partials).append((transcript, alt))
        assert 1 <= len(finals) <= 3
        ordered = sorted(finals, key=lambda f: f[1]["offsetMs"])
        assert " ".join(alt["transcript"] for _, alt in ordered) == interaction.text
        for transcript, alt in partials:  # an early, shorter guess at the first final
            first, first_alt = ordered[0]
            assert transcript["utteranceId"] == first["utteranceId"]
            assert first_alt["transcript"].startswith(alt["transcript"])
            assert len(alt["transcript"]) < len(first_alt["transcript"])

        end, wrapup = bodies[-2:]
        assert end["eventTime"] == round(interaction.completed_at.timestamp() * 1000)
        assert end["mediaType"] == interaction.media_type.upper()
        assert end["direction"] == "INBOUND" and end["interactingDurationMs"] > 0
        assert end["queueId"] == wrapup["queueId"] == QUEUE_IDS[interaction.queue]
        assert wrapup["wrapupCode"] == interaction.intent
        assert {
            "participantId",
            "sessionId",
            "userId",
            "wrapupDurationMs",
            "mediaType",
            "direction",
        } <= set(wrapup)
    assert seen_partial and seen_agent


def test_genesys_rendering_is_deterministic_per_conversation() -> None:
    interaction = next(generate(config(count=1)))
    assert conversation_messages(interaction) == conversation_messages(interaction)


def test_eventbridge_form_matches_the_real_genesys_example_files() -> None:
    examples = sorted(GENESYS_EXAMPLES.glob("*conversation-end*.json"))
    if not examples:
        pytest.skip(f"no Genesys example files under {GENESYS_EXAMPLES}")
    real = [json.loads(p.read_text()) for p in examples]
    ours = [json.loads(v) for _, v in kafka_records(generate(config(count=20)))]
    iso = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")
    for message in ours:
        for example in real:
            assert set(message) == set(example)
            assert set(message["detail"]) == set(example["detail"])
            for key in ("version", "account", "region", "resources"):
                assert message[key] == example[key]
        assert iso.match(message["time"]) and iso.match(message["detail"]["timestamp"])
        assert message["detail"]["version"] == real[0]["detail"]["version"]
        assert set(message["detail"]["metadata"]) == set(real[0]["detail"]["metadata"])
    ends = [m for m in ours if m["detail-type"] == real[0]["detail-type"]]
    assert len(ends) == 20
    required = set.intersection(*(set(r["detail"]["eventBody"]) for r in real))
    for message in ends:
        body = message["detail"]["eventBody"]
        assert required <= set(body)
        for key in required:
            assert type(body[key]) is type(real[0]["detail"]["eventBody"][key]), key


def test_shuffled_records_keep_every_message_and_move_none_beyond_the_window() -> None:
    interactions = list(generate(config(count=200)))
    ordered = list(kafka_records(interactions))
    shuffled = list(kafka_records(interactions, shuffle_window=8, seed=3))
    assert sorted(shuffled) == sorted(ordered)
    assert shuffled != ordered
    position = {record: n for n, record in enumerate(shuffled)}
    assert max(abs(position[r] - n) for n, r in enumerate(ordered)) <= 8

    def per_conversation(records):
        pieces: dict[bytes, list[bytes]] = {}
        for key, value in records:
            pieces.setdefault(key, []).append(value)
        return pieces

    # the pieces of some conversations now arrive in another order than they were emitted
    before, after = per_conversation(ordered), per_conversation(shuffled)
    assert any(before[key] != after[key] for key in before)


def test_shuffle_within_zero_window_keeps_order_and_bounds_hold_for_any_seed() -> None:
    items = list(range(500))
    for seed in range(5):
        out = list(shuffle_within(items, 5, np.random.default_rng(seed)))
        assert sorted(out) == items
        assert max(abs(pos - item) for pos, item in enumerate(out)) <= 5
    assert list(shuffle_within(items, 0, np.random.default_rng(0))) == items


def test_message_key_is_the_conversation_id_in_every_format() -> None:
    interaction = next(generate(config(count=1)))
    for fmt in OutputFormat:
        for key, value in kafka_records([interaction], fmt):
            assert message_key(json.loads(value)) == key == interaction.conversation_id.encode()
    with pytest.raises(ValueError):
        message_key({"detail": {"eventBody": {}}})


# ------------------------------------------------------------------ CLI


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    cli.register(app)
    return app


runner = CliRunner()


def test_cli_generate_writes_json_lines_with_the_requested_drift(app, tmp_path) -> None:
    out = tmp_path / "stream.jsonl"
    args = [
        "generate",
        str(out),
        "--count",
        "1500",
        "--days",
        "130",
        "--start",
        "2026-01-01",
        "--launch-product",
        "Zephyr One",
        "--launch-at",
        "65",
        "--launch-share",
        "0.5",
        "--new-intent-at",
        "100",
        "--new-intent-weight",
        "0.2",
        "--seed",
        "4",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    events = [decode_event(line) for line in out.read_bytes().splitlines()]
    assert len(events) == 1500
    launch, new = START + timedelta(days=65), START + timedelta(days=100)
    named = [e for e in events if "zephyr one" in e.payload.text.lower()]
    assert named and all(e.payload.completed_at >= launch for e in named)
    crypto = [e for e in events if e.payload.label == "crypto_wallet"]
    assert crypto and all(e.payload.completed_at >= new for e in crypto)
    again = tmp_path / "again.jsonl"
    assert runner.invoke(app, [*args[:1], str(again), *args[2:]]).exit_code == 0
    assert again.read_bytes() == out.read_bytes()


def test_cli_generate_genesys_format_and_bad_options(app, tmp_path) -> None:
    out = tmp_path / "genesys.jsonl"
    result = runner.invoke(app, ["generate", str(out), "-n", "50", "-f", "genesys-bare"])
    assert result.exit_code == 0, result.output
    messages = [json.loads(line) for line in out.read_text().splitlines()]
    assert len({m["eventBody"]["conversationId"] for m in messages}) == 50
    bad = runner.invoke(app, ["generate", str(out), "--intent-mix", "billing=0.5"])
    assert bad.exit_code == 2 and "--shift-at" in bad.output
    bad = runner.invoke(app, ["generate", str(out), "--shift-at", "3", "--intent-mix", "nope=1"])
    assert bad.exit_code == 2 and "unknown intent" in bad.output


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> FakeProducer:
    fake = FakeProducer([])
    monkeypatch.setattr(cli, "make_producer", lambda settings, client_id: fake)
    monkeypatch.setenv("DRIFTLOOP_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    return fake


def test_cli_replay_publishes_a_file_keyed_by_conversation_id(app, tmp_path, producer) -> None:
    out = tmp_path / "stream.jsonl"
    args = ["generate", str(out), "-n", "30", "-f", "genesys-eventbridge", "--shuffle-window", "5"]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, ["replay", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_bytes().splitlines()
    assert [value for _, value, _, _ in producer.sent] == lines
    assert {topic for topic, *_ in producer.sent} == {"interactions.raw"}
    for _, value, key, _ in producer.sent:
        assert key == json.loads(value)["detail"]["eventBody"]["conversationId"].encode()


def test_cli_replay_generates_on_the_fly(app, producer) -> None:
    result = runner.invoke(app, ["replay", "-n", "40", "-f", "normalized", "--rate", "10000"])
    assert result.exit_code == 0, result.output
    assert len(producer.sent) == 40
    assert all(
        decode_event(value).payload.conversation_id.encode() == key
        for _, value, key, _ in producer.sent
    )


def test_cli_replay_reports_a_broker_failure(app, producer) -> None:
    producer.fail_times = 1
    result = runner.invoke(app, ["replay", "-n", "5"])
    assert result.exit_code == 1
    assert "could not publish" in result.output
