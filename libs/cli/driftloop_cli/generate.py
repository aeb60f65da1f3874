"""`driftloop generate` and `driftloop replay`: synthetic interactions to a file or to Kafka.

`generate` writes JSON lines (one Kafka message value per line); `replay` publishes such
a file, or a freshly generated stream, to `interactions.raw` keyed by conversation id.
Drift knobs take days counted from the start of the stream.

Both commands take the same generation and drift options: the fields of `Generation`,
added to each command by `with_generation_options`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import json
import sys
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Annotated, Any

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

GenerationOption = functools.partial(typer.Option, rich_help_panel="Generation")
"""`typer.Option` in the `--help` panel of generation options (generate, replay, generate-leads)."""
DriftOption = functools.partial(typer.Option, rich_help_panel="Drift (days from the start)")
"""`typer.Option` in the `--help` panel of drift options, whose values are days."""
DAY_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]
"""What a date option (`--start`, `--end`) accepts."""

_KNOWN_INTENTS = ", ".join((*INTENTS, *EMERGING_INTENTS))


@dataclass(frozen=True)
class Generation:
    """The generation and drift options of `generate` and `replay`, each field one option."""

    fmt: Annotated[
        OutputFormat,
        GenerationOption(
            "--format",
            "-f",
            help="normalized: one interaction.raw event per interaction; genesys-eventbridge: "
            "Genesys notifications (transcription, customer.end, wrapup) in EventBridge "
            "envelopes; genesys-bare: the same without the envelope.",
        ),
    ] = OutputFormat.NORMALIZED
    count: Annotated[
        int | None,
        GenerationOption(
            "--count",
            "-n",
            min=0,
            help="Interactions to generate [default: 10000].",
            show_default=False,
        ),
    ] = None
    per_day: Annotated[
        float | None,
        GenerationOption("--per-day", min=0.0, help="Interactions per day instead of --count."),
    ] = None
    days: Annotated[float, GenerationOption("--days", min=1.0, help="Days the stream spans.")] = (
        150.0
    )
    start: Annotated[
        datetime | None,
        GenerationOption(
            "--start",
            formats=DAY_FORMATS,
            help="First day (UTC). Default: --days before today 00:00 UTC, so the stream ends "
            "now; give a date to make the output reproducible.",
            show_default=False,
        ),
    ] = None
    seed: Annotated[int, GenerationOption("--seed", help="Same seed and options, same stream.")] = 0
    spanish_share: Annotated[
        float,
        GenerationOption("--spanish-share", min=0.0, max=1.0, help="Share of es-es interactions."),
    ] = 0.3
    off_topic_share: Annotated[
        float,
        GenerationOption(
            "--off-topic-share",
            min=0.0,
            max=1.0,
            help="Share of out-of-scope utterances (label out_of_scope).",
        ),
    ] = 0.02
    typo_rate: Annotated[
        float,
        GenerationOption(
            "--typo-rate", min=0.0, max=1.0, help="Chance of a typo in a chat or message."
        ),
    ] = 0.1
    shuffle_window: Annotated[
        int,
        GenerationOption(
            "--shuffle-window",
            min=0,
            help="Let messages arrive out of order (a conversation's pieces too), each at most "
            "this many places from its place in time. 0 keeps time order.",
        ),
    ] = 0
    shift_at: Annotated[
        float | None, DriftOption("--shift-at", help="Day the intent mix changes.")
    ] = None
    intent_mix: Annotated[
        str | None,
        DriftOption(
            "--intent-mix",
            help="New weights from --shift-at, e.g. billing=0.3,refund=0.2 (merged into the "
            "default mix, whose weights sum to 1; 0 removes an intent). Intents: "
            f"{_KNOWN_INTENTS}.",
        ),
    ] = None
    launch_product: Annotated[
        str | None,
        DriftOption("--launch-product", help="Launch a product: its name (new vocabulary)."),
    ] = None
    launch_at: Annotated[float, DriftOption("--launch-at", help="Day of the launch.")] = 0.0
    launch_share: Annotated[
        float,
        DriftOption(
            "--launch-share",
            min=0.0,
            max=1.0,
            help="Share of (in-scope) utterances that mention the product after the launch.",
        ),
    ] = 0.3
    new_intent_at: Annotated[
        float | None,
        DriftOption("--new-intent-at", help="Day a new intent (absent before) appears."),
    ] = None
    new_intent: Annotated[
        str, DriftOption("--new-intent", help=f"Which one: {', '.join(EMERGING_INTENTS)}.")
    ] = EMERGING_INTENTS[0]
    new_intent_weight: Annotated[
        float,
        DriftOption(
            "--new-intent-weight",
            min=0.0,
            help="Its weight (the default mix sums to 1, so ~ its share).",
        ),
    ] = 0.08
    language_shift_at: Annotated[
        float | None,
        DriftOption("--language-shift-at", help="Day the language mix changes."),
    ] = None
    spanish_share_after: Annotated[
        float,
        DriftOption(
            "--spanish-share-after",
            min=0.0,
            max=1.0,
            help="Share of es-es interactions from --language-shift-at.",
        ),
    ] = 0.6

    def config(self) -> GeneratorConfig:
        """The generator config these options describe; a bad combination exits 2."""
        if self.count is not None and self.per_day is not None:
            raise fail("give --count or --per-day, not both", 2)
        if (self.shift_at is None) != (self.intent_mix is None):
            raise fail("--shift-at and --intent-mix go together", 2)
        if self.new_intent not in EMERGING_INTENTS and self.new_intent_at is not None:
            raise fail(f"--new-intent must be one of {', '.join(EMERGING_INTENTS)}", 2)
        if self.start is None:
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            first = today - timedelta(days=self.days)
        else:
            first = self.start.replace(tzinfo=self.start.tzinfo or UTC)

        def day(offset: float) -> datetime:
            return first + timedelta(days=offset)

        drift: list[DriftSpec] = []
        try:
            if self.shift_at is not None and self.intent_mix is not None:
                weights = parse_pairs(self.intent_mix, "--intent-mix", "intent=weight")
                drift.append(DriftSpec(at=day(self.shift_at), intent_weights=weights))
            if self.launch_product is not None:
                drift.append(
                    DriftSpec(
                        at=day(self.launch_at),
                        product=self.launch_product,
                        product_share=self.launch_share,
                    )
                )
            if self.new_intent_at is not None:
                weights = {self.new_intent: self.new_intent_weight}
                drift.append(DriftSpec(at=day(self.new_intent_at), intent_weights=weights))
            if self.language_shift_at is not None:
                share = self.spanish_share_after
                drift.append(DriftSpec(at=day(self.language_shift_at), spanish_share=share))
            return GeneratorConfig(
                seed=self.seed,
                count=self._count(),
                start=first,
                end=day(self.days),
                spanish_share=self.spanish_share,
                off_topic_share=self.off_topic_share,
                typo_rate=self.typo_rate,
                drift=tuple(drift),
            )
        except ValueError as exc:
            raise fail(str(exc), 2) from exc

    def records(self, interactions: Iterable[Interaction]) -> Iterator[tuple[bytes, bytes]]:
        """The (key, value) Kafka messages of `interactions` in this format and order."""
        return kafka_records(
            interactions, self.fmt, shuffle_window=self.shuffle_window, seed=self.seed
        )

    def _count(self) -> int:
        if self.per_day is not None:
            return round(self.per_day * self.days)
        return 10_000 if self.count is None else self.count


def with_generation_options(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with the fields of `Generation` as options in place of its `gen` parameter.

    Typer reads a command's options from its signature: this one is the command's own
    parameters followed by the fields, whose values come back to it as one `Generation`.
    """
    hints = typing.get_type_hints(Generation, include_extras=True)
    shared = [
        inspect.Parameter(
            field.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=field.default,
            annotation=hints[field.name],
        )
        for field in dataclasses.fields(Generation)
    ]
    fields = [p.name for p in shared]
    own = inspect.signature(command, eval_str=True).parameters.values()

    @functools.wraps(command)
    def with_options(**options: Any) -> None:
        gen = Generation(**{name: options.pop(name) for name in fields})
        command(**options, gen=gen)

    with_options.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*(p for p in own if p.name != "gen"), *shared]
    )
    return with_options


def register(app: typer.Typer) -> None:
    """Add `generate` and `replay` to the `driftloop` command."""
    app.command("generate")(generate)
    app.command("replay")(replay)


@with_generation_options
def generate(
    output: Annotated[
        Path, typer.Argument(help="JSON-lines file to write; - for stdout.", show_default=False)
    ],
    *,
    gen: Generation,
) -> None:
    """Write synthetic interactions with scheduled drift, one Kafka message per JSON line.

    150 days with a product launch on day 90 and a new intent on day 120:

    driftloop generate demo.jsonl -f genesys-eventbridge --per-day 200 --start 2026-06-01
    --launch-product "Zephyr One" --launch-at 90 --new-intent-at 120
    """
    config = gen.config()
    _describe(config)
    written = 0
    sink: contextlib.AbstractContextManager[IO[bytes]] = (
        contextlib.nullcontext(sys.stdout.buffer) if str(output) == "-" else output.open("wb")
    )
    with progress() as bar, sink as out:
        task = bar.add_task("generating", total=config.count)
        interactions = _advancing(generate_interactions(config), lambda: bar.advance(task))
        for _, value in gen.records(interactions):
            out.write(value + b"\n")
            written += 1
    err.print(
        f"wrote {written} {gen.fmt.value} message(s) for {config.count} interaction(s) "
        f"({config.start:%Y-%m-%d} → {config.end:%Y-%m-%d}) to {output}",
        highlight=False,
    )


@with_generation_options
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
    *,
    gen: Generation,
) -> None:
    """Publish interactions to Kafka (`interactions.raw`), keyed by conversation id.

    From a file: driftloop replay demo.jsonl --rate 200

    On the fly, with the generation and drift options (ignored with a file):
    driftloop replay --per-day 100 --days 30 --launch-product "Zephyr One" --launch-at 20
    """
    if source is not None:
        records, total = _read_records(source)
    else:
        config = gen.config()
        _describe(config)
        records = gen.records(generate_interactions(config))
        total = config.count if gen.fmt is OutputFormat.NORMALIZED else None
    server = kafka_io.resolve_bootstrap(bootstrap)
    with progress() as bar:
        task = bar.add_task(f"publishing to {topic}", total=total)
        try:
            sent = publish_records(
                records,
                kafka_io.kafka_settings(server),
                topic,
                rate,
                on_acked=lambda: bar.advance(task),
            )
        except (DriftloopError, ValueError) as exc:
            raise fail(str(exc)) from exc
    err.print(f"published {sent} message(s) to {topic} on {server}", highlight=False)


# ------------------------------------------------------------------ helpers


def parse_pairs(text: str, option: str, form: str = "name=number") -> dict[str, float]:
    """`a=0.3,b=1` as {"a": 0.3, "b": 1.0}; a ValueError names `option` and the bad item."""
    values: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        try:
            values[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{option}: expected {form}, got {item!r}") from None
    return values


def describe_drift(specs: Iterable[Any], start: datetime, fields: Iterable[str]) -> None:
    """Say on stderr when each drift starts and what it sets (`fields` of the spec that are
    given), so a demo's audience knows what to look for."""
    for spec in specs:
        changes = [
            f"{name}={value}" for name in fields if (value := getattr(spec, name)) is not None
        ]
        day = (spec.at - start) / timedelta(days=1)
        err.print(
            f"drift on day {day:g} ({spec.at:%Y-%m-%d}): {', '.join(changes)}", highlight=False
        )


def _describe(config: GeneratorConfig) -> None:
    fields = ("intent_weights", "product", "product_share", "spanish_share")
    describe_drift(config.drift, config.start, fields)


def _read_records(source: Path) -> tuple[Iterator[tuple[bytes, bytes]], int | None]:
    """(key, value) pairs from a JSON-lines file (or stdin), and how many there are if known."""
    if str(source) == "-":
        return _keyed(sys.stdin.buffer, "stdin"), None
    try:
        with source.open("rb") as f:
            total = sum(1 for line in f if line.strip())
    except OSError as exc:
        raise fail(f"cannot read {source}: {exc.strerror}", 2) from exc

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


def progress() -> Progress:
    """The progress bar (on stderr) the commands show while they generate or publish."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` as an error and return the exit to raise: `raise fail(...) from exc`."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)
