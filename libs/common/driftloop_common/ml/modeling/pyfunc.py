"""What a registered model version is: an MLflow pyfunc that takes raw input.

- `TextClassifier`: text in (a DataFrame with a `text` column, a list of strings or one
  string) → `label` and `confidence` per row. It holds only the fitted head; the sentence
  encoder is loaded offline from its Python package on first use, never copied into a
  version (90 MB per version otherwise). `predict_examples` skips the encoder for callers
  that already hold embeddings of the same encoder and precision (the evaluator, reading
  the interaction store).
- `TabularScorer`: records in (a DataFrame or a list of dicts) → `score` per row, and
  per-feature attributions through `explain`.

Both pickle with the version (MLflow's `python_model`); the classes are imported by module
path when a version is loaded, so any driftloop service (or a user with `pip install
driftloop`) can load any version.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import mlflow.pyfunc
import numpy as np
import pandas as pd

from driftloop_common.contracts.events import EncoderInfo
from driftloop_common.ml.modeling.calibration import apply_temperature

# Our models accept a DataFrame, a list or a string and log an explicit signature; MLflow's
# type-hint validation would reject the first two.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")


class _Examples(Protocol):
    texts: list[str]
    embeddings: np.ndarray


class _Head(Protocol):
    labels: list[str]

    def predict_proba(self, examples: Any) -> np.ndarray: ...


class _Regressor(Protocol):
    def predict(self, frame: pd.DataFrame) -> np.ndarray: ...

    def explain(self, frame: pd.DataFrame) -> list[dict[str, float]]: ...


def _texts(model_input: Any) -> list[str]:
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        if "text" not in model_input.columns:
            raise ValueError(f"input needs a 'text' column, got {list(model_input.columns)}")
        column = model_input["text"]
    elif isinstance(model_input, Mapping):
        column = pd.Series(model_input.get("text", []))
    else:
        column = pd.Series(list(model_input))
    return ["" if value is None else str(value) for value in column.tolist()]


@dataclass
class ExampleBank:
    """A stratified sample of a version's training rows (a few per label): their unit-norm
    stored embeddings (float16), labels and texts, so an answer can be explained by the
    training examples nearest to it. Pickled with the version (≈ 1 MB for 77 labels)."""

    labels: list[str]
    texts: list[str]
    embeddings: np.ndarray  # (n, dim) float16, rows of norm 1

    @classmethod
    def sample(
        cls,
        texts: Sequence[str],
        embeddings: np.ndarray,
        labels: Sequence[Any],
        per_label: int = 10,
        seed: int = 0,
    ) -> ExampleBank:
        rng = np.random.default_rng(seed)
        by_label: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            by_label.setdefault(str(label), []).append(i)
        keep = sorted(
            int(i)
            for rows in by_label.values()
            for i in rng.choice(rows, size=min(per_label, len(rows)), replace=False)
        )
        vectors = np.asarray(embeddings, dtype=np.float32)[keep]
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return cls(
            [str(labels[i]) for i in keep],
            [str(texts[i]) for i in keep],
            vectors.astype(np.float16),
        )

    def nearest(self, embedding: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The `k` rows most similar to `embedding` (cosine), most similar first."""
        query = np.asarray(embedding, dtype=np.float32)
        query = query / max(float(np.linalg.norm(query)), 1e-12)
        similarity = self.embeddings.astype(np.float32) @ query
        best = np.argsort(-similarity, kind="stable")[:k]
        return [(int(i), float(similarity[i])) for i in best]


class TextClassifier(mlflow.pyfunc.PythonModel):
    """A text classification version: the MiniLM encoder (by reference) + a fitted head.

    `temperature` (fitted on validation, `ml.modeling.calibration`) rescales the head's
    probabilities in every `predict*`, so every reader gets calibrated confidences.
    `abstain_floor`: the confidence below which validation answers were wrong more often
    than right (the predictor abstains below it where a model key asks for that). Both are
    class attributes too: versions pickled before they existed load with 1.0 and 0.0.
    """

    temperature: float = 1.0
    abstain_floor: float = 0.0
    examples: ExampleBank | None = None  # for `/explain`; None before it existed

    def __init__(
        self,
        head: _Head,
        encoder: EncoderInfo,
        *,
        temperature: float = 1.0,
        abstain_floor: float = 0.0,
    ) -> None:
        self.head = head
        self.encoder = encoder
        self.temperature = temperature
        self.abstain_floor = abstain_floor
        self._text_encoder: Any = None

    @property
    def labels(self) -> list[str]:
        return list(self.head.labels)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_text_encoder"] = None  # never pickle the weights into a version
        return state

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._text_encoder is None:
            from driftloop_common.ml.encoder import TextEncoder

            self._text_encoder = TextEncoder(precision=self.encoder.precision).load()
            if self._text_encoder.info.id != self.encoder.id:
                raise RuntimeError(
                    f"this version needs encoder {self.encoder.id}, the installed package "
                    f"provides {self._text_encoder.info.id}"
                )
        return self._text_encoder.encode(texts)

    def warm_up(self) -> None:
        """Load the encoder and score one text, so that the first request of a server that
        just loaded this version does not wait for that (≈ 10 s on 2 CPUs)."""
        self.predict_proba(["hello, I have a question about my account"])

    def nearest_examples(self, texts: list[str], k: int = 5) -> list[list[tuple[int, float]]]:
        """Per text, the indices and cosine similarities of the `k` nearest rows of
        `self.examples` (in the stored embeddings' space: the MiniLM encoder's)."""
        if self.examples is None or not texts:
            return [[] for _ in texts]
        return [self.examples.nearest(vector, k) for vector in self._encode(texts)]

    def predict_examples_proba(self, examples: _Examples) -> np.ndarray:
        """Class probabilities for texts that already have embeddings of `self.encoder`."""
        return apply_temperature(self.head.predict_proba(examples), self.temperature)

    def predict_examples(self, examples: _Examples) -> pd.DataFrame:
        return self._frame(self.predict_examples_proba(examples))

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        from driftloop_common.ml.modeling.text_head import TextExamples

        return self.predict_examples_proba(
            TextExamples(texts=texts, embeddings=self._encode(texts))
        )

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        """Raw text in; a DataFrame with `label` and `confidence` out."""
        return self._frame(self.predict_proba(_texts(model_input)))

    def _frame(self, proba: np.ndarray) -> pd.DataFrame:
        best = proba.argmax(axis=1) if len(proba) else np.zeros(0, dtype=int)
        return pd.DataFrame(
            {
                "label": np.asarray(self.head.labels, dtype=object)[best],
                "confidence": proba[np.arange(len(best)), best] if len(best) else [],
            }
        )


class TabularScorer(mlflow.pyfunc.PythonModel):
    """A tabular scoring version: preprocessing + regressor, records in, `score` out."""

    def __init__(self, model: _Regressor, features: Sequence[str]) -> None:
        self.model = model
        self.features = list(features)

    def _records(self, model_input: Any) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        missing = [name for name in self.features if name not in frame.columns]
        if missing:
            raise ValueError(f"input lacks feature columns {missing}")
        return frame

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return pd.DataFrame({"score": self.model.predict(self._records(model_input))})

    def explain(self, model_input: Any) -> list[dict[str, float]]:
        return self.model.explain(self._records(model_input))
