"""The simulator's NLU engine: bag-of-words nearest centroid, pure and deterministic.

Each utterance becomes an L2-normalised TF-IDF vector (IDF from the training utterances, so
words every intent uses weigh little); an intent is the normalised mean of its utterances'
vectors; a text goes to the intent of highest cosine, and the
probabilities are a softmax of the cosines. Crude, but it learns from the utterances it is
given, so a version trained on mislabelled utterances scores badly in its report and
answers `detect` badly, as a real domain would.

The report is measured on a deterministic holdout: per intent, the ~20 % of utterances
with the smallest hash (never an intent's only utterance), scored by a model fitted on the
rest. `detect` uses a model fitted on every utterance.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

WORD = re.compile(r"\w+", re.UNICODE)
SHARPNESS = 10.0  # softmax temperature⁻¹ over cosines in [0, 1]
HOLDOUT_FRACTION = 0.2

Vector = dict[str, float]


@dataclass(frozen=True)
class Example:
    text: str
    intent: str


def words(text: str) -> Counter[str]:
    return Counter(word.lower() for word in WORD.findall(text))


def vectorize(text: str, idf: dict[str, float]) -> Vector:
    """TF-IDF, L2-normalised; words never seen in training are dropped."""
    return _normalised({w: c * idf[w] for w, c in words(text).items() if w in idf})


def _normalised(vector: Vector) -> Vector:
    norm = math.sqrt(sum(v * v for v in vector.values()))
    return {k: v / norm for k, v in vector.items()} if norm else {}


def _dot(a: Vector, b: Vector) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(k, 0.0) for k, v in a.items())


class CentroidModel:
    """One centroid per intent; intents are kept in name order so ties break the same way."""

    def __init__(self, centroids: dict[str, Vector], idf: dict[str, float]) -> None:
        self.centroids = dict(sorted(centroids.items()))
        self.idf = idf

    @classmethod
    def fit(cls, examples: Iterable[Example]) -> CentroidModel:
        examples = list(examples)
        df: Counter[str] = Counter()
        for example in examples:
            df.update(words(example.text).keys())
        n = len(examples)
        idf = {w: math.log((1 + n) / (1 + d)) + 0.1 for w, d in df.items()}
        sums: dict[str, Vector] = defaultdict(dict)
        for example in examples:
            total = sums[example.intent]
            for word, value in vectorize(example.text, idf).items():
                total[word] = total.get(word, 0.0) + value
        return cls({intent: _normalised(total) for intent, total in sums.items()}, idf)

    @property
    def intents(self) -> list[str]:
        return list(self.centroids)

    def detect(self, text: str) -> list[tuple[str, float]]:
        """Every intent with its probability, most likely first."""
        if not self.centroids:
            return []
        vector = vectorize(text, self.idf)
        scores = {name: _dot(vector, c) for name, c in self.centroids.items()}
        top = max(scores.values())
        weights = {name: math.exp(SHARPNESS * (s - top)) for name, s in scores.items()}
        total = sum(weights.values())
        ranked = sorted(weights.items(), key=lambda item: (-item[1], item[0]))
        return [(name, w / total) for name, w in ranked]

    def predict(self, text: str) -> str | None:
        ranked = self.detect(text)
        return ranked[0][0] if ranked else None


def _rank(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def split_holdout(
    examples: Sequence[Example], fraction: float = HOLDOUT_FRACTION
) -> tuple[list[Example], list[Example]]:
    """(train, holdout): per intent, round(n × fraction) utterances (at least one when the
    intent has two or more), the ones with the smallest hash."""
    by_intent: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_intent[example.intent].append(example)
    train: list[Example] = []
    holdout: list[Example] = []
    for intent in sorted(by_intent):
        group = sorted(by_intent[intent], key=lambda e: (_rank(e.text), e.text))
        n_hold = 0 if len(group) < 2 else max(1, round(len(group) * fraction))
        holdout.extend(group[:n_hold])
        train.extend(group[n_hold:])
    return train, holdout


@dataclass(frozen=True)
class Report:
    """`confusion[actual][predicted]` counts and the summary metrics (macro averages)."""

    confusion: dict[str, dict[str, int]]
    metrics: dict[str, float]

    def to_wire(self) -> dict[str, object]:
        return {
            "confusionMatrix": [
                {
                    "name": actual,
                    "columns": [{"name": p, "value": float(n)} for p, n in row.items()],
                }
                for actual, row in self.confusion.items()
            ],
            "summary": {"metrics": [{"name": k, "value": v} for k, v in self.metrics.items()]},
        }


def evaluate(examples: Sequence[Example]) -> Report:
    """Fit on the training part, score the holdout (the whole set when no holdout exists)."""
    train, holdout = split_holdout(examples)
    model = CentroidModel.fit(train)
    scored = holdout or list(examples)
    labels = sorted({e.intent for e in examples})
    confusion = {a: dict.fromkeys(labels, 0) for a in labels}
    for example in scored:
        predicted = model.predict(example.text)
        if predicted is not None:
            confusion[example.intent][predicted] += 1
    return Report(confusion=confusion, metrics=_metrics(confusion, len(scored)))


def _metrics(confusion: dict[str, dict[str, int]], n: int) -> dict[str, float]:
    correct = sum(confusion[label][label] for label in confusion)
    supported = [label for label in confusion if sum(confusion[label].values())]
    precisions, recalls, f1s = [], [], []
    for label in supported:
        tp = confusion[label][label]
        predicted = sum(row[label] for row in confusion.values())
        actual = sum(confusion[label].values())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        precisions.append(precision)
        recalls.append(recall)
        f1s.append(f1)

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 6) if values else 0.0

    return {
        "accuracy": round(correct / n, 6) if n else 0.0,
        "precision": mean(precisions),
        "recall": mean(recalls),
        "f1_score": mean(f1s),
    }
