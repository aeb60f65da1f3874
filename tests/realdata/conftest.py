"""Session fixtures for the real-data tests: every text is embedded once per session.

Embeddings are cached in a temporary folder of the session (never in the repository): on
2 cores all-MiniLM-L6-v2 embeds ~13k short texts in ~40 s, and every scenario reuses them.
"""

from __future__ import annotations

import pytest

from driftloop_common.contracts.events import EncoderInfo
from driftloop_common.ml.drift.baseline import build_baseline
from driftloop_common.ml.encoder import TextEncoder
from tests.realdata import Banking, EmbeddingCache, Language, Pool, mix, tod

TOD_STREAM_ROWS = 2000  # per language: the live pool; the baselines use whole files


@pytest.fixture(scope="session")
def encoder() -> TextEncoder:
    return TextEncoder()  # loaded by the first encode, i.e. only when something is embedded


@pytest.fixture(scope="session")
def encoder_info(encoder: TextEncoder) -> EncoderInfo:
    return encoder.info


@pytest.fixture(scope="session")
def embed(encoder: TextEncoder, tmp_path_factory: pytest.TempPathFactory) -> EmbeddingCache:
    return EmbeddingCache(tmp_path_factory.mktemp("embeddings"), encoder.encode)


@pytest.fixture(scope="session")
def banking(embed: EmbeddingCache, encoder_info: EncoderInfo) -> Banking:
    return Banking.build(embed, encoder_info)


def _language(
    embed: EmbeddingCache, info: EncoderInfo, language: str, baseline_split: str, model_key: str
) -> Language:
    train = tod(language, baseline_split)
    live = tod(language, "test", limit=TOD_STREAM_ROWS, seed=1)
    baseline = build_baseline(
        embed(train["text"].tolist()),
        encoder=info,
        labels=train["intent"].tolist(),
        source=f"{model_key}: fb-multilingual-tod {language}/{baseline_split}",
    )
    return Language(
        baseline=baseline,
        prior=mix(live["intent"]),
        pool=Pool(embed(live["text"].tolist()), live["intent"].to_numpy()),
    )


@pytest.fixture(scope="session")
def spanish(embed: EmbeddingCache, encoder_info: EncoderInfo) -> Language:
    """es-es: baseline from es/train (3,616 rows), live traffic from es/test."""
    return _language(embed, encoder_info, "es", "train", "intent-es-es")


@pytest.fixture(scope="session")
def english(embed: EmbeddingCache, encoder_info: EncoderInfo) -> Language:
    """en-us: baseline from en/eval (4,181 rows: the shared copy has no en/train), live
    traffic from en/test."""
    return _language(embed, encoder_info, "en", "eval", "intent-en-us")
