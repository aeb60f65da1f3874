"""Calibration of the text family: ECE on hand-computable cases, temperature scaling on
synthetic logits, the abstain floor rule, the temperature inside a pickled version (and an
old pickle without one), the trainer's metrics and the evaluator's ECE."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from scipy.special import softmax

from driftloop_common.contracts.events import EncoderInfo
from driftloop_common.families.base import FamilyOptions, SplitData
from driftloop_common.families.rules import EvaluationOptions
from driftloop_common.families.text import TextFamily
from driftloop_common.ml.encoder import MODEL_ID
from driftloop_common.ml.modeling.calibration import (
    abstain_floor,
    apply_temperature,
    calibrate,
    fit_temperature,
)
from driftloop_common.ml.modeling.metrics import expected_calibration_error
from driftloop_common.ml.modeling.pyfunc import TextClassifier
from driftloop_common.ml.modeling.splits import Window
from driftloop_common.ml.modeling.text_head import TextExamples
from tests.unit.test_text_head import make

ENCODER = EncoderInfo(id="test-encoder", precision="fp32")


def logits(n: int, classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=3.0, size=(n, classes))


def draw(proba: np.ndarray, seed: int) -> np.ndarray:
    """One class per row, drawn from that row's probabilities."""
    u = np.random.default_rng(seed).random((len(proba), 1))
    return (proba.cumsum(axis=1) < u).sum(axis=1).clip(max=proba.shape[1] - 1)


# ------------------------------------------------------------------ ECE


def test_ece_of_one_bin_is_the_gap_between_accuracy_and_confidence() -> None:
    # all in the bin (0.867, 0.933]: accuracy 0.5, confidence 0.9
    assert expected_calibration_error([0.9] * 4, [True, True, False, False]) == pytest.approx(0.4)


def test_ece_weighs_each_bin_by_its_rows() -> None:
    # bin of 0.2: accuracy 0 (gap 0.2, 2 rows); bin of 0.8: accuracy 2/3 (gap 0.1333, 3 rows)
    conf = [0.2, 0.2, 0.8, 0.8, 0.8]
    correct = [False, False, True, True, False]
    expected = 2 / 5 * 0.2 + 3 / 5 * abs(2 / 3 - 0.8)
    assert expected_calibration_error(conf, correct) == pytest.approx(expected)


def test_ece_bins_are_closed_on_the_right() -> None:
    # 1/2 falls into (0, 1/2] with 0.1, not into (1/2, 1] with 1.0
    together = expected_calibration_error([0.1, 0.5, 1.0], [False, True, True], bins=2)
    assert together == pytest.approx((abs(0.5 - 0.3) * 2 + 0.0) / 3)
    assert expected_calibration_error([0.0, 1.0], [False, True]) == 0.0


def test_ece_of_calibrated_data_is_near_zero_and_of_over_confident_data_large() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, size=50_000)
    assert expected_calibration_error(conf, rng.random(conf.size) < conf) < 0.01
    # claims 0.99, right 60 % of the time
    over = np.full(10_000, 0.99)
    assert expected_calibration_error(over, rng.random(over.size) < 0.6) == pytest.approx(
        0.39, abs=0.02
    )


def test_ece_refuses_what_it_cannot_score() -> None:
    with pytest.raises(ValueError, match="no rows"):
        expected_calibration_error([], [])
    with pytest.raises(ValueError, match="2 confidences for 1"):
        expected_calibration_error([0.5, 0.6], [True])


# ------------------------------------------------------------------ temperature


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_temperature_scaling_recovers_a_known_temperature(true_temperature: float) -> None:
    """The model says softmax(z); the classes are drawn from softmax(z / T*): T* is found."""
    z = logits(20_000, 5, seed=1)
    truth = draw(softmax(z / true_temperature, axis=1), seed=2)
    found = fit_temperature(softmax(z, axis=1), truth)
    assert found == pytest.approx(true_temperature, rel=0.05)


def test_a_calibrated_model_keeps_a_temperature_near_one() -> None:
    proba = softmax(logits(20_000, 5, seed=3), axis=1)
    assert fit_temperature(proba, draw(proba, seed=4)) == pytest.approx(1.0, abs=0.05)


def test_a_temperature_keeps_the_ranking_and_one_keeps_the_probabilities() -> None:
    proba = softmax(logits(200, 4, seed=5), axis=1)
    scaled = apply_temperature(proba, 2.0)
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0)
    np.testing.assert_array_equal(scaled.argmax(axis=1), proba.argmax(axis=1))
    assert (scaled.max(axis=1) < proba.max(axis=1)).all()  # T > 1 softens
    assert apply_temperature(proba, 1.0) is proba


def test_calibrate_scales_only_above_the_ece_threshold() -> None:
    z = logits(5_000, 5, seed=6)
    proba = softmax(z, axis=1)
    over_confident = draw(softmax(z / 3.0, axis=1), seed=7)
    fixed = calibrate(proba, over_confident, above_ece=0.02)
    assert fixed.temperature == pytest.approx(3.0, rel=0.1)
    assert fixed.validation_ece < 0.03 < 0.1 < fixed.validation_ece_raw
    # the floor is chosen on what the version will answer: the calibrated confidences
    correct = proba.argmax(axis=1) == over_confident
    answered = apply_temperature(proba, fixed.temperature).max(axis=1)
    assert fixed.abstain_floor == abstain_floor(answered, correct) > 0

    calibrated = draw(proba, seed=8)
    kept = calibrate(proba, calibrated, above_ece=0.02)
    assert kept.validation_ece_raw < 0.02
    assert kept.temperature == 1.0 and kept.validation_ece == kept.validation_ece_raw
    assert calibrate(proba, calibrated, above_ece=0.0).temperature != 1.0  # 0: always
    never = calibrate(proba, over_confident, above_ece=0.02, scale=False)
    assert never.temperature == 1.0 and never.validation_ece == never.validation_ece_raw


# ------------------------------------------------------------------ abstain floor


def test_the_floor_is_the_threshold_that_turns_away_most_net_wrong_answers() -> None:
    conf = [0.1, 0.2, 0.3, 0.4, 0.9, 0.95]
    correct = [False, False, True, False, True, True]
    # below 0.3: 2 wrong; below 0.9: 3 wrong, 1 right (also 2): the lower threshold wins
    assert abstain_floor(conf, correct) == 0.3


def test_no_floor_when_abstaining_never_helps() -> None:
    assert abstain_floor([0.3, 0.5, 0.9], [True, True, True]) == 0.0
    assert abstain_floor([0.3, 0.5, 0.9], [True, False, True]) == 0.0  # 1 right, then 1 wrong
    assert abstain_floor([], []) == 0.0


def test_tied_confidences_are_abstained_on_together() -> None:
    # at 0.5: 2 wrong and 1 right share the confidence; below 0.8 they net 1
    assert abstain_floor([0.5, 0.5, 0.5, 0.8], [False, False, True, True]) == 0.8
    assert abstain_floor([0.5, 0.5, 0.5, 0.8], [False, True, True, True]) == 0.0


# ------------------------------------------------------------------ the version


class ProbaHead:
    """A head whose 'embeddings' are the probabilities it returns."""

    def __init__(self) -> None:
        self.labels = ["a", "b", "c"]

    def predict_proba(self, examples: Any) -> np.ndarray:
        return np.asarray(examples.embeddings, dtype=np.float64)


class FakeEncoder:
    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.vectors[: len(texts)]


PROBA = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.34, 0.33, 0.33]])


def examples(proba: np.ndarray = PROBA, labels: list[str] | None = None) -> TextExamples:
    labelled = None if labels is None else np.asarray(labels, dtype=object)
    return TextExamples([f"t{i}" for i in range(len(proba))], proba, labelled)


def test_every_predict_returns_the_calibrated_probabilities() -> None:
    model = pickle.loads(pickle.dumps(TextClassifier(ProbaHead(), ENCODER, temperature=2.0)))
    assert model.temperature == 2.0
    expected = apply_temperature(PROBA, 2.0)
    np.testing.assert_allclose(model.predict_examples_proba(examples()), expected)
    model._text_encoder = FakeEncoder(PROBA)
    np.testing.assert_allclose(model.predict_proba(["x", "y", "z"]), expected)
    answer = model.predict(None, ["x", "y", "z"])
    np.testing.assert_allclose(answer["confidence"], expected.max(axis=1))
    assert answer["label"].tolist() == ["a", "b", "a"]


def test_a_version_pickled_before_calibration_predicts_as_before() -> None:
    old = TextClassifier.__new__(TextClassifier)  # the state an older driftloop pickled
    old.__dict__.update(head=ProbaHead(), encoder=ENCODER, _text_encoder=None)
    loaded = pickle.loads(pickle.dumps(old))
    assert "temperature" not in loaded.__dict__
    assert loaded.temperature == 1.0 and loaded.abstain_floor == 0.0
    np.testing.assert_array_equal(loaded.predict_examples_proba(examples()), PROBA)
    assert loaded.predict_examples(examples())["confidence"].tolist() == [0.7, 0.6, 0.34]


# ------------------------------------------------------------------ trainer and evaluator


def noisy(per_class: int, seed: int) -> TextExamples:
    """Overlapping intents (~75 % accuracy): the probabilities have something to calibrate."""
    return make(per_class, seed, spread=2.0, informative_text=False)


@pytest.fixture(scope="module")
def text_fit() -> Any:
    frames = {split: noisy(30, seed) for seed, split in enumerate(("validation", "test"), 2)}
    frames["train"] = noisy(40, 1)
    data = SplitData(frames, {s: f.labels for s, f in frames.items()}, categorical=True)
    family = TextFamily("unused", FamilyOptions(calibrate_above_ece=0.0))
    return family.fit(data, seed=0, progress=lambda _: None)


def test_the_trainer_records_calibration_and_scores_test_on_calibrated_probabilities(
    text_fit: Any,
) -> None:
    model, metrics = text_fit.pyfunc, text_fit.metrics
    assert metrics["calibration_temperature"] == model.temperature != 1.0
    assert metrics["abstain_floor"] == model.abstain_floor
    assert 0 < metrics["abstain_floor"] < 1
    assert 0 <= metrics["validation_ece"] <= 1 and 0 <= metrics["validation_ece_raw"] <= 1
    test = noisy(30, 3)
    proba = model.predict_examples_proba(test)  # with the fitted temperature
    pred = np.asarray(model.labels, dtype=object)[proba.argmax(axis=1)]
    assert metrics["test_mean_confidence"] == pytest.approx(proba.max(axis=1).mean())
    assert metrics["test_ece"] == pytest.approx(
        expected_calibration_error(proba.max(axis=1), pred == test.labels)
    )
    assert metrics["test_accuracy"] == pytest.approx(np.mean(pred == test.labels))
    assert "Calibration: validation ECE" in TextFamily("unused", FamilyOptions()).report(text_fit)


def test_the_trainer_setting_reaches_the_family_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from driftloop_trainer.settings import TrainerSettings

    assert TrainerSettings().calibrate_above_ece == 0.02
    monkeypatch.setenv("DRIFTLOOP_CALIBRATE_ABOVE_ECE", "0")
    assert TrainerSettings().calibrate_above_ece == 0.0


def test_the_evaluator_reports_both_models_ece(monkeypatch: pytest.MonkeyPatch) -> None:
    """ECE of each model on the same test rows: reported, and the verdict does not read it."""
    labels = ["a", "b", "a"]  # the third row: right with confidence 0.34
    test = examples(PROBA, labels)

    def stored(store_url: str, language: str, window: Window, encoder: EncoderInfo, **kw: Any):
        if kw.get("labelled", True):
            return test
        return TextExamples([], np.zeros((0, 3)), None)

    monkeypatch.setattr("driftloop_common.families.text.text_examples", stored)
    challenger = TextClassifier(ProbaHead(), ENCODER, temperature=0.5)
    champion = TextClassifier(ProbaHead(), ENCODER)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    window = Window(now - timedelta(days=1), now)
    family = TextFamily("unused", FamilyOptions())
    options = EvaluationOptions(min_evaluation_rows=1)
    outcome = family.evaluate("en-us", window, now, challenger, champion, options)

    correct = np.array([True, True, True])
    sharpened = apply_temperature(PROBA, 0.5).max(axis=1)
    assert outcome.metrics["challenger_ece"] == pytest.approx(
        expected_calibration_error(sharpened, correct)
    )
    assert outcome.metrics["champion_ece"] == pytest.approx(
        expected_calibration_error(PROBA.max(axis=1), correct)
    )
    alone = family.evaluate("en-us", window, now, champion, None, options)
    assert "champion_ece" not in alone.metrics
    assert alone.metrics["challenger_ece"] == outcome.metrics["champion_ece"]
    assert not any("ece" in check.lower() for check in outcome.verdict.checks)


class EmbeddingHead:
    """Answers from the embeddings' first three dimensions (softmaxed): it needs the
    real encoder's vectors."""

    labels = ("a", "b", "c")

    def predict_proba(self, examples: Any) -> np.ndarray:
        first = np.exp(np.asarray(examples.embeddings, dtype=np.float64)[:, :3])
        return first / first.sum(axis=1, keepdims=True)


def test_warm_up_loads_the_encoder_so_the_first_request_does_not() -> None:
    minilm = EncoderInfo(id=MODEL_ID, precision="fp32")
    model = pickle.loads(pickle.dumps(TextClassifier(EmbeddingHead(), minilm)))
    assert model._text_encoder is None  # a loaded version has no encoder yet

    model.warm_up()

    assert model._text_encoder is not None and model._text_encoder.loaded
    assert model.predict_proba(["my card was declined"]).shape == (1, 3)
