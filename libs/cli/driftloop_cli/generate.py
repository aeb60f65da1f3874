"""`driftloop generate` and `driftloop replay`: synthetic interactions to a file or to Kafka.

`generate` writes JSON lines (one Kafka message value per line); `replay` publishes such
a file, or a freshly generated stream, to `interactions.raw` keyed by conversation id.
Drift knobs take days counted from the start of the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from driftloop_cli import kafka_io
from driftloop_common.contracts import topics
from driftloop_common.contracts.errors import DriftloopError, RetryableError
from driftloop_common.runtime.kafka import kafka_errors, make_producer
from driftloop_common.runtime.settings import KafkaSettings
from driftloop_synthetic import (
    EMERGING_INTENTS,
    INTENTS,
    DriftSpec,
    GeneratorConfig,
    Interaction,
    OutputFormat,
    kafka_records,
    message_key,
)
from driftloop_synthetic import generate as generate_interactions

err = Console(stderr=True)

_GEN = "Generation"
_DRIFT = "Drift (days from the start)"
_KNOWN_INTENTS = ", ".join((*INTENTS, *EMERGING_INTENTS))

FormatOpt = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        "-f",
        help="normalized: one interaction.raw event per interaction; genesys-eventbridge: "
        "Genesys notifications (transcription, customer.end, wrapup) in EventBridge "
        "envelopes; genesys-bare: the same without the envelope.",
        rich_help_panel=_GEN,
    ),
]
CountOpt = Annotated[
    int | None,
    typer.Option(
        "--count",
        "-n",
        min=0,
        help="Interactions to generate [default: 10000].",
        show_default=False,
        rich_help_panel=_GEN,
    ),
]
PerDayOpt = Annotated[
    float | None,
    typer.Option(
        "--per-day",
        min=0.0,
        help="Interactions per day instead of --count.",
        rich_help_panel=_GEN,
    ),
]
DaysOpt = Annotated[
    float, typer.Option("--days", min=1.0, help="Days the stream spans.", rich_help_panel=_GEN)
]
StartOpt = Annotated[
    datetime | None,
    typer.Option(
        "--start",
        formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"],
        help="First day (UTC). Default: --days before today 00:00 UTC, so the stream ends "
        "now; give a date to make the output reproducible.",
        show_default=False,
        rich_help_panel=_GEN,
    ),
]
SeedOpt = Annotated[
    int, typer.Option("--seed", help="Same seed and options, same stream.", rich_help_panel=_GEN)
]
SpanishShareOpt = Annotated[
    float,
    typer.Option(
        "--spanish-share",
        min=0.0,
        max=1.0,
        help="Share of es-es interactions.",
        rich_help_panel=_GEN,
    ),
]
OffTopicOpt = Annotated[
    float,
    typer.Option(
        "--off-topic-share",
        min=0.0,
        max=1.0,
        help="Share of out-of-scope utterances (label out_of_scope).",
        rich_help_panel=_GEN,
    ),
]
TypoOpt = Annotated[
    float,
    typer.Option(
        "--typo-rate",
        min=0.0,
        max=1.0,
        help="Chance of a typo in a chat or message.",
        rich_help_panel=_GEN,
    ),
]
ShuffleOpt = Annotated[
    int,
    typer.Option(
        "--shuffle-window",
        min=0,
        help="Let messages arrive out of order (a conversation's pieces too), each at most "
        "this many places from its place in time. 0 keeps time order.",
        rich_help_panel=_GEN,
    ),
]
ShiftAtOpt = Annotated[
    float | None,
    typer.Option("--shift-at", help="Day the intent mix changes.", rich_help_panel=_DRIFT),
]
IntentMixOpt = Annotated[
    str | None,
    typer.Option(
        "--intent-mix",
        help="New weights from --shift-at, e.g. billing=0.3,refund=0.2 (merged into the "
        "default mix, whose weights sum to 1; 0 removes an intent). Intents: "
        f"{_KNOWN_INTENTS}.",
        rich_help_panel=_DRIFT,
    ),
]
LaunchProductOpt = Annotated[
    str | None,
    typer.Option(
        "--launch-product",
        help="Launch a product: its name (new vocabulary).",
        rich_help_panel=_DRIFT,
    ),
]
LaunchAtOpt = Annotated[
    float, typer.Option("--launch-at", help="Day of the launch.", rich_help_panel=_DRIFT)
]
LaunchShareOpt = Annotated[
    float,
    typer.Option(
        "--launch-share",
        min=0.0,
        max=1.0,
        help="Share of (in-scope) utterances that mention the product after the launch.",
        rich_help_panel=_DRIFT,
    ),
]
NewIntentAtOpt = Annotated[
    float | None,
    typer.Option(
        "--new-intent-at",
        help="Day a new intent (absent before) appears.",
        rich_help_panel=_DRIFT,
    ),
]
NewIntentOpt = Annotated[
    str,
    typer.Option(
        "--new-intent", help=f"Which one: {', '.join(EMERGING_INTENTS)}.", rich_help_panel=_DRIFT
    ),
]
NewIntentWeightOpt = Annotated[
    float,
    typer.Option(
        "--new-intent-weight",
        min=0.0,
        help="Its weight (the default mix sums to 1, so ~ its share).",
        rich_help_panel=_DRIFT,
    ),
]
LanguageShiftAtOpt = Annotated[
    float | None,
    typer.Option(
        "--language-shift-at", help="Day the language mix changes.", rich_help_panel=_DRIFT
    ),
]
SpanishShareAfterOpt = Annotated[
    float,
    typer.Option(
        "--spanish-share-after",
        min=0.0,
        max=1.0,
        help="Share of es-es interactions from --language-shift-at.",
        rich_help_panel=_DRIFT,
    ),
]


def register(app: typer.Typer) -> None:
    """Add `generate` and `replay` to the `driftloop` command."""
    app.command("generate")(generate)
    app.command("replay")(replay)


def generate(
    output: Annotated[
        Path, typer.Argument(help="JSON-lines file to write; - for stdout.", show_default=False)
    ],
    fmt: FormatOpt = OutputFormat.NORMALIZED,
    count: CountOpt = None,
    per_day: PerDayOpt = None,
    days: DaysOpt = 150.0,
    start: StartOpt = None,
    seed: SeedOpt = 0,
    spanish_share: SpanishShareOpt = 0.3,
    off_topic_share: OffTopicOpt = 0.02,
    typo_rate: TypoOpt = 0.1,
    shuffle_window: ShuffleOpt = 0,
    shift_at: ShiftAtOpt = None,
    intent_mix: IntentMixOpt = None,
    launch_product: LaunchProductOpt = None,
    launch_at: LaunchAtOpt = 0.0,
    launch_share: LaunchShareOpt = 0.3,
    new_intent_at: NewIntentAtOpt = None,
    new_intent: NewIntentOpt = EMERGING_INTENTS[0],
    new_intent_weight: NewIntentWeightOpt = 0.08,
    language_shift_at: LanguageShiftAtOpt = None,
    spanish_share_after: SpanishShareAfterOpt = 0.6,
) -> None:
    """Write synthetic interactions with scheduled drift, one Kafka message per JSON line.

    150 days with a product launch on day 90 and a new intent on day 120:

    driftloop generate demo.jsonl -f genesys-eventbridge --per-day 200 --start 2026-06-01
    --launch-product "Zephyr One" --launch-at 90 --new-intent-at 120
    """
    config = _config(
        count=count,
        per_day=per_day,
        days=days,
        start=start,
        seed=seed,
        spanish_share=spanish_share,
        off_topic_share=off_topic_share,
        typo_rate=typo_rate,
        shift_at=shift_at,
        intent_mix=intent_mix,
        launch_product=launch_product,
        launch_at=launch_at,
        launch_share=launch_share,
        new_intent_at=new_intent_at,
        new_intent=new_intent,
        new_intent_weight=new_intent_weight,
        language_shift_at=language_shift_at,
        spanish_share_after=spanish_share_after,
    )
    _describe(config)
    written = 0
    sink: contextlib.AbstractContextManager[IO[bytes]] = (
        contextlib.nullcontext(sys.stdout.buffer) if str(output) == "-" else output.open("wb")
    )
    with _progress() as progress, sink as out:
        task = progress.add_task("generating", total=config.count)
        interactions = _advancing(generate_interactions(config), lambda: progress.advance(task))
        for _, value in kafka_records(interactions, fmt, shuffle_window=shuffle_window, seed=seed):
            out.write(value + b"\n")
            written += 1
    err.print(
        f"wrote {written} {fmt.value} message(s) for {config.count} interaction(s) "
        f"({config.start:%Y-%m-%d} → {config.end:%Y-%m-%d}) to {output}",
        highlight=False,
    )


def replay(
    source: Annotated[
        Path | None,
        typer.Argument(
            help="JSON-lines file written by `driftloop generate` (- for stdin). Without it, "
            "interactions are generated on the fly with the generation and drift options.",
            show_default=False,
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate",
            "-r",
            min=0.001,
            help="Messages per second (default: as fast as the broker takes them).",
            show_default=False,
        ),
    ] = None,
    topic: Annotated[str, typer.Option("--topic", help="Topic to publish to.")] = (
        topics.INTERACTIONS_RAW
    ),
    bootstrap: kafka_io.BootstrapOpt = None,
    fmt: FormatOpt = OutputFormat.NORMALIZED,
    count: CountOpt = None,
    per_day: PerDayOpt = None,
    days: DaysOpt = 150.0,
    start: StartOpt = None,
    seed: SeedOpt = 0,
    spanish_share: SpanishShareOpt = 0.3,
    off_topic_share: OffTopicOpt = 0.02,
    typo_rate: TypoOpt = 0.1,
    shuffle_window: ShuffleOpt = 0,
    shift_at: ShiftAtOpt = None,
    intent_mix: IntentMixOpt = None,
    launch_product: LaunchProductOpt = None,
    launch_at: LaunchAtOpt = 0.0,
    launch_share: LaunchShareOpt = 0.3,
    new_intent_at: NewIntentAtOpt = None,
    new_intent: NewIntentOpt = EMERGING_INTENTS[0],
    new_intent_weight: NewIntentWeightOpt = 0.08,
    language_shift_at: LanguageShiftAtOpt = None,
    spanish_share_after: SpanishShareAfterOpt = 0.6,
) -> None:
    """Publish interactions to Kafka (`interactions.raw`), keyed by conversation id.

    From a file: driftloop replay demo.jsonl --rate 200

    On the fly, with the generation and drift options (ignored with a file):
    driftloop replay --per-day 100 --days 30 --launch-product "Zephyr One" --launch-at 20
    """
    if source is not None:
        records, total = _read_records(source)
    else:
        config = _config(
            count=count,
            per_day=per_day,
            days=days,
            start=start,
            seed=seed,
            spanish_share=spanish_share,
            off_topic_share=off_topic_share,
            typo_rate=typo_rate,
            shift_at=shift_at,
            intent_mix=intent_mix,
            launch_product=launch_product,
            launch_at=launch_at,
            launch_share=launch_share,
            new_intent_at=new_intent_at,
            new_intent=new_intent,
            new_intent_weight=new_intent_weight,
            language_shift_at=language_shift_at,
            spanish_share_after=spanish_share_after,
        )
        _describe(config)
        records = kafka_records(
            generate_interactions(config), fmt, shuffle_window=shuffle_window, seed=seed
        )
        total = config.count if fmt is OutputFormat.NORMALIZED else None
    server = kafka_io.resolve_bootstrap(bootstrap)
    with _progress() as progress:
        task = progress.add_task(f"publishing to {topic}", total=total)
        try:
            sent = publish_records(
                records,
                kafka_io.kafka_settings(server),
                topic,
                rate,
                on_acked=lambda: progress.advance(task),
            )
        except (DriftloopError, ValueError) as exc:
            raise _fail(str(exc)) from exc
    err.print(f"published {sent} message(s) to {topic} on {server}", highlight=False)


# ------------------------------------------------------------------ helpers


def _config(
    *,
    count: int | None,
    per_day: float | None,
    days: float,
    start: datetime | None,
    seed: int,
    spanish_share: float,
    off_topic_share: float,
    typo_rate: float,
    shift_at: float | None,
    intent_mix: str | None,
    launch_product: str | None,
    launch_at: float,
    launch_share: float,
    new_intent_at: float | None,
    new_intent: str,
    new_intent_weight: float,
    language_shift_at: float | None,
    spanish_share_after: float,
) -> GeneratorConfig:
    """The generator config from the command line's options; a bad combination exits 2."""
    if count is not None and per_day is not None:
        raise _fail("give --count or --per-day, not both", 2)
    if (shift_at is None) != (intent_mix is None):
        raise _fail("--shift-at and --intent-mix go together", 2)
    if new_intent not in EMERGING_INTENTS and new_intent_at is not None:
        raise _fail(f"--new-intent must be one of {', '.join(EMERGING_INTENTS)}", 2)
    if start is None:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        first = today - timedelta(days=days)
    else:
        first = start.replace(tzinfo=start.tzinfo or UTC)

    def day(offset: float) -> datetime:
        return first + timedelta(days=offset)

    drift: list[DriftSpec] = []
    try:
        if shift_at is not None and intent_mix is not None:
            drift.append(DriftSpec(at=day(shift_at), intent_weights=_parse_mix(intent_mix)))
        if launch_product is not None:
            drift.append(
                DriftSpec(at=day(launch_at), product=launch_product, product_share=launch_share)
            )
        if new_intent_at is not None:
            drift.append(
                DriftSpec(at=day(new_intent_at), intent_weights={new_intent: new_intent_weight})
            )
        if language_shift_at is not None:
            drift.append(DriftSpec(at=day(language_shift_at), spanish_share=spanish_share_after))
        return GeneratorConfig(
            seed=seed,
            count=_count(count, per_day, days),
            start=first,
            end=day(days),
            spanish_share=spanish_share,
            off_topic_share=off_topic_share,
            typo_rate=typo_rate,
            drift=tuple(drift),
        )
    except ValueError as exc:
        raise _fail(str(exc), 2) from exc


def _count(count: int | None, per_day: float | None, days: float) -> int:
    if per_day is not None:
        return round(per_day * days)
    return 10_000 if count is None else count


def _parse_mix(text: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--intent-mix: expected intent=weight, got {item!r}") from None
    return weights


def _describe(config: GeneratorConfig) -> None:
    """Say on stderr when each drift starts, so a demo's audience knows what to look for."""
    for spec in config.drift:
        changes = [
            f"{name}={value}"
            for name in ("intent_weights", "product", "product_share", "spanish_share")
            if (value := getattr(spec, name)) is not None
        ]
        day = (spec.at - config.start) / timedelta(days=1)
        err.print(f"drift on day {day:g} ({spec.at:%Y-%m-%d}): {', '.join(changes)}")


def _read_records(source: Path) -> tuple[Iterator[tuple[bytes, bytes]], int | None]:
    """(key, value) pairs from a JSON-lines file (or stdin), and how many there are if known."""
    if str(source) == "-":
        return _keyed(sys.stdin.buffer, "stdin"), None
    try:
        with source.open("rb") as f:
            total = sum(1 for line in f if line.strip())
    except OSError as exc:
        raise _fail(f"cannot read {source}: {exc.strerror}", 2) from exc

    def lines() -> Iterator[bytes]:
        with source.open("rb") as f:
            yield from f

    return _keyed(lines(), str(source)), total


def _keyed(lines: Iterable[bytes], name: str) -> Iterator[tuple[bytes, bytes]]:
    for number, line in enumerate(lines, 1):
        if not (value := line.strip()):
            continue
        try:
            key = message_key(json.loads(value))
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"{name}, line {number}: not a driftloop message ({exc})") from exc
        yield key, value


def publish_records(
    records: Iterable[tuple[bytes, bytes]],
    settings: KafkaSettings,
    topic: str,
    rate: float | None,
    *,
    on_acked: Callable[[], None],
) -> int:
    """Send every record (at `rate` per second if given) and wait for the acks; return count."""

    async def run() -> int:
        producer = make_producer(settings, client_id="replay")
        sent = 0
        try:
            with kafka_errors(f"could not publish to {topic}", settings):
                await asyncio.wait_for(producer.start(), 30)
                loop = asyncio.get_running_loop()
                began = loop.time()
                in_flight: list[asyncio.Future[object]] = []
                for key, value in records:
                    if rate is not None and (delay := began + sent / rate - loop.time()) > 0:
                        await asyncio.sleep(delay)
                    ack = await producer.send(topic, value, key=key)
                    ack.add_done_callback(lambda _: on_acked())
                    in_flight.append(ack)
                    sent += 1
                    if len(in_flight) >= 1000:  # surface broker errors early, bound memory
                        await asyncio.gather(*in_flight)
                        in_flight.clear()
                await asyncio.gather(*in_flight)
                return sent
        except RetryableError as exc:
            raise RetryableError(f"{exc}, after {sent} message(s)") from exc
        finally:
            await producer.stop()

    return asyncio.run(run())


def _advancing(items: Iterable[Interaction], step: Callable[[], None]) -> Iterator[Interaction]:
    for item in items:
        yield item
        step()


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)
