"""The classifier head of the text families: MiniLM embeddings and the raw text, blended.

    embedding (384-d, unit norm) → multinomial logistic regression  → p_emb  ┐
    text → tf-idf of word 1–2-grams → one-vs-rest linear SVM        → d      │
           softmax(d / T), T fitted on the validation log loss      → p_lex  ┘
    p = (1 − w) · p_emb + w · p_lex

On Banking77 the embedding alone reaches 92.9 % test accuracy; the lexical member alone is
weaker (~88 % on validation) but wrong on different rows, and the blend gains about a point
of validation macro-F1 on every split tried, and reaches 93.7 % test accuracy
(docs/benchmarks.md, "Banking77: intent head (issue 4)").
The lexical member also carries the head where the English MiniLM is weak (other languages,
product names): `w` ranges over 0…1, so selection can lean on either member.

Selection (`select_and_fit`), all on the validation rows, never anything else:

- one logistic regression per (embedding C, class weight) and one linear SVM per
  (lexical C, class weight), fitted on the training rows — or, above
  `HeadGrid.max_selection_rows`, on a seeded stratified subsample of them (every class
  kept), so selection costs the same at 50k rows as at 20k;
- each SVM's temperature T minimises its validation log loss (temperature scaling: one
  parameter, it calibrates the scores without changing their ranking);
- every blend weight `w` of every pair sharing a class weight is a candidate, scored
  without fitting anything more; the best validation macro-F1 wins (ties: accuracy, then
  log loss, then grid order).

The final head is refitted with the chosen parameters on train + validation
(`refit_on_validation`) or on all of train, keeping T and w. Everything is deterministic
given `seed` (the subsample and liblinear's coordinate order).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

CLASS_WEIGHTS = (None, "balanced")


@dataclass(frozen=True)
class TextExamples:
    """Rows of one split: raw texts, their stored embeddings and (when labelled) labels."""

    texts: list[str]
    embeddings: np.ndarray  # (n, dim) float32
    labels: np.ndarray | None = None  # str labels, None for unlabelled


@dataclass(frozen=True)
class HeadGrid:
    """The search space of `select_and_fit`. Defaults, and why:

    - `embedding_C` (10, 30, 100): inverse L2 strength of the embedding logistic
      regression; on Banking77 C = 1 loses 2 points, 10–100 are within noise.
    - `lexical_C` (0.3, 1, 3): the linear SVM's C on tf-idf features; empty: no lexical
      member (embedding only).
    - `class_weight` (None, "balanced"): applied to both members.
    - `blend_weight` 0, 0.1 … 1: the lexical member's share (0: embedding only,
      1: lexical only). Scoring a weight costs no fit.
    - `max_selection_rows` 20,000: candidates are fitted on a stratified subsample of
      train above this (the final head always uses every row).
    - `max_iter` 1,000: per fit, for lbfgs and liblinear; not converging is recorded in the
      candidates (`converged`), not raised.
    - `tol` 1e-6: lbfgs's tolerance for the embedding member. At sklearn's 1e-4 a float32
      fit stops so early that the order of the training rows alone moved validation
      probabilities by up to 0.14 (C = 100, Banking77), enough to change the chosen
      candidate and 0.2 points of test accuracy; at 1e-6, by 0.002. Each fit starts from
      the previous C's solution (and the final fit from its selection fit), which pays for
      most of the extra iterations.
    - `word_ngrams` (1, 2) (every word, one-letter ones and numbers included);
      `char_ngrams` None, or e.g. (2, 5) to add `char_wb` n-grams seen in 2+ texts. On
      Banking77 they add nothing measurable (validation macro-F1 0.9332 vs 0.9333 with
      words alone, mean of 3 splits) and cost ~8× the non-zeros: the SVM took 64 s instead
      of 7 s on 50k rows. `max_features` 100,000 per analyzer (the most frequent).
    - `blas_threads` 1: BLAS threads while fitting (None: the library's default). The
      logistic regression's products are small; on 2 cores shared with other processes,
      2 OpenBLAS threads made a fit 5–17× slower than 1 (1.3 s vs 6.8–22 s, 8k rows).
    """

    embedding_C: tuple[float, ...] = (10.0, 30.0, 100.0)
    lexical_C: tuple[float, ...] = (0.3, 1.0, 3.0)
    class_weight: tuple[str | None, ...] = CLASS_WEIGHTS
    blend_weight: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
    max_selection_rows: int = 20_000
    max_iter: int = 1000
    tol: float = 1e-6
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] | None = None
    max_features: int = 100_000
    blas_threads: int | None = 1

    def __post_init__(self) -> None:
        for name in ("embedding_C", "lexical_C"):
            values = getattr(self, name)
            if any(not (isinstance(c, int | float) and c > 0) for c in values):
                raise ValueError(f"HeadGrid.{name} must hold positive numbers, got {values}")
        if not self.embedding_C and not self.lexical_C:
            raise ValueError("HeadGrid needs embedding_C or lexical_C values")
        if not self.class_weight or any(w not in CLASS_WEIGHTS for w in self.class_weight):
            raise ValueError(
                f"HeadGrid.class_weight must be a non-empty subset of {CLASS_WEIGHTS}, "
                f"got {self.class_weight}"
            )
        if not self.blend_weight or any(not 0.0 <= w <= 1.0 for w in self.blend_weight):
            raise ValueError(f"HeadGrid.blend_weight must lie in [0, 1], got {self.blend_weight}")
        if not self.feasible_weights():
            raise ValueError(
                f"HeadGrid.blend_weight {self.blend_weight} needs "
                + ("lexical_C values (w > 0)" if 0.0 not in self.blend_weight else "embedding_C")
            )
        if self.max_selection_rows < 2 or self.max_iter < 1 or self.max_features < 1:
            raise ValueError("HeadGrid.max_selection_rows, max_iter, max_features must be >= 1")
        if not self.tol > 0:
            raise ValueError(f"HeadGrid.tol must be positive, got {self.tol}")
        if self.blas_threads is not None and self.blas_threads < 1:
            raise ValueError(f"HeadGrid.blas_threads must be >= 1, got {self.blas_threads}")
        for name in ("word_ngrams", "char_ngrams"):
            if getattr(self, name) is None and name == "char_ngrams":
                continue
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ValueError(f"HeadGrid.{name} must be (low, high), 1 <= low <= high")

    def feasible_weights(self) -> tuple[float, ...]:
        """The blend weights the members allow (w > 0 needs lexical_C, w < 1 embedding_C)."""
        return tuple(
            w
            for w in dict.fromkeys(float(w) for w in self.blend_weight)
            if (w == 0.0 or self.lexical_C) and (w == 1.0 or self.embedding_C)
        )


@dataclass(frozen=True, eq=False)
class HeadSelection:
    """What selection saw.

    `candidates`, in grid order: `{"params": {...}, "macro_f1", "accuracy", "log_loss",
    "converged"}` on the validation rows (plain values, ready for JSON). `validation_proba`:
    the chosen candidate fitted on the training rows only (on the `fit_rows`-row
    subsample when train has more than `HeadGrid.max_selection_rows`), columns `labels`.
    """

    params: dict[str, Any]
    candidates: list[dict[str, Any]]
    validation_proba: np.ndarray
    labels: list[str]
    fit_rows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> dict[str, Any]:
        """The chosen candidate with its validation scores."""
        return next(c for c in self.candidates if c["params"] == self.params)


class _Lexical:
    """tf-idf n-grams of the text → a one-vs-rest linear SVM's scores."""

    def __init__(self, grid: HeadGrid) -> None:
        self.vectorizers = [
            TfidfVectorizer(
                ngram_range=grid.word_ngrams,
                token_pattern=r"(?u)\b\w+\b",  # one-letter words and digits too ("I", "2")
                sublinear_tf=True,
                max_features=grid.max_features,
                dtype=np.float32,
            )
        ]
        if grid.char_ngrams is not None:
            self.vectorizers.append(
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=grid.char_ngrams,
                    min_df=2,
                    sublinear_tf=True,
                    max_features=grid.max_features,
                    dtype=np.float32,
                )
            )
        self.svm: LinearSVC | None = None

    def fit_features(self, texts: Sequence[str]) -> sp.csr_matrix | None:
        """Fit the vectorizers; None when the texts hold no usable n-gram (empty texts)."""
        kept, blocks = [], []
        for vectorizer in self.vectorizers:
            try:
                blocks.append(vectorizer.fit_transform(texts))
            except ValueError:  # empty vocabulary, or min_df above the document count
                continue
            kept.append(vectorizer)
        self.vectorizers = kept
        return self._stack(blocks) if blocks else None

    def features(self, texts: Sequence[str]) -> sp.csr_matrix:
        return self._stack([v.transform(texts) for v in self.vectorizers])

    def _stack(self, blocks: list[sp.spmatrix]) -> sp.csr_matrix:
        # Each block has unit-norm rows; scaled so that every row of the whole has norm ≤ 1.
        return sp.csr_matrix(sp.hstack(blocks, format="csr") / math.sqrt(len(blocks)))

    def fit_svm(
        self,
        x: sp.csr_matrix,
        y: np.ndarray,
        c: float,
        class_weight: str | None,
        grid: HeadGrid,
        seed: int,
    ) -> bool:
        self.svm = LinearSVC(
            C=c, class_weight=class_weight, max_iter=grid.max_iter, random_state=seed
        )
        return _fit_quietly(self.svm, x, y)

    def scores(self, x: sp.csr_matrix) -> np.ndarray:
        """(n, classes) decision scores (a binary SVM's one column as ±d/2)."""
        assert self.svm is not None
        d = np.asarray(self.svm.decision_function(x), dtype=np.float64)
        return np.column_stack([-d / 2, d / 2]) if d.ndim == 1 else d


class TextHead:
    """A fitted head: `predict_proba(examples)` → (n, len(labels)), rows sum to 1.

    Reads `examples.embeddings` (and `examples.texts` when the lexical member is used),
    never their labels. Pickles with joblib; needs nothing of the training data.
    """

    def __init__(
        self,
        labels: list[str],
        params: dict[str, Any],
        dim: int,
        embedding: LogisticRegression | None,
        lexical: _Lexical | None,
        trained_rows: int,
    ) -> None:
        self.labels = labels
        self.params = params
        self.dim = dim
        self.embedding = embedding
        self.lexical = lexical
        self.trained_rows = trained_rows

    def predict_proba(self, examples: TextExamples) -> np.ndarray:
        x = _embeddings(examples, "examples", self.dim)
        n = x.shape[0]
        if n == 0:
            return np.zeros((0, len(self.labels)))
        w = float(self.params["blend_weight"])
        proba = np.zeros((n, len(self.labels)))
        if self.embedding is not None and w < 1.0:
            proba += (1.0 - w) * self.embedding.predict_proba(x)
        if self.lexical is not None and w > 0.0:
            if len(examples.texts) != n:
                raise ValueError(f"examples have {len(examples.texts)} texts for {n} embeddings")
            scores = self.lexical.scores(self.lexical.features(list(examples.texts)))
            proba += w * softmax(scores / float(self.params["lexical_temperature"]), axis=1)
        return proba

    def predict(self, examples: TextExamples) -> np.ndarray:
        """The most probable label of each row (object array of str)."""
        proba = self.predict_proba(examples)
        return np.asarray(self.labels, dtype=object)[proba.argmax(axis=1)]

    def __repr__(self) -> str:
        return f"TextHead({len(self.labels)} labels, {self.params}, {self.trained_rows} rows)"


def select_and_fit(
    train: TextExamples,
    validation: TextExamples,
    *,
    grid: HeadGrid | None = None,
    refit_on_validation: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[TextHead, HeadSelection]:
    """Choose hyperparameters on validation, then fit the final head (on train+validation
    when refit_on_validation).

    Raises `ValueError` when a split lacks labels or rows, texts/embeddings/labels disagree
    in length, train has fewer than 2 classes, or validation has labels train lacks
    (named). `progress` receives one line per fit.
    """
    grid = grid or HeadGrid()
    say = progress or (lambda _: None)
    data = _Data.checked(train, validation)
    with threadpool_limits(limits=grid.blas_threads, user_api="blas"):
        started = time.perf_counter()
        members = _Members.fit(data, grid, seed, say)
        candidates, params, validation_proba = _choose(data, grid, members)
        selected = time.perf_counter()
        chosen = next(c for c in candidates if c["params"] is params)
        say(
            f"chose {params} of {len(candidates)} candidates: validation macro-F1 "
            f"{chosen['macro_f1']:.4f}, accuracy {chosen['accuracy']:.4f}"
        )
        head = _final_head(data, grid, params, refit_on_validation, seed, say, members)
    selection = HeadSelection(
        params=dict(params),
        candidates=candidates,
        validation_proba=validation_proba,
        labels=list(data.labels),
        fit_rows=members.rows,
        seconds={
            "selection": selected - started,
            "final_fit": time.perf_counter() - selected,
        },
    )
    return head, selection


@dataclass(frozen=True)
class _Data:
    """Both splits checked: str labels, float32 embeddings, validation labels as columns."""

    train: TextExamples
    validation: TextExamples
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    labels: list[str]
    truth: np.ndarray  # validation labels as column indices of `labels`

    @classmethod
    def checked(cls, train: TextExamples, validation: TextExamples) -> _Data:
        y_train, y_val = _labels(train, "train"), _labels(validation, "validation")
        x_train = _embeddings(train, "train")
        x_val = _embeddings(validation, "validation", x_train.shape[1])
        for name, x, y in (("train", x_train, y_train), ("validation", x_val, y_val)):
            if len(x) != len(y):
                raise ValueError(f"{name} has {len(x)} embeddings for {len(y)} labels")
        labels = sorted(set(y_train.tolist()))
        if len(labels) < 2:
            raise ValueError(
                f"train has {len(labels)} class ({labels}); a classifier needs 2 or more"
            )
        unseen = sorted(set(y_val.tolist()) - set(labels))
        if unseen:
            shown = ", ".join(repr(u) for u in unseen[:10]) + (" …" if len(unseen) > 10 else "")
            raise ValueError(
                f"validation has {len(unseen)} label(s) that train lacks: {shown}; "
                "the head cannot be scored on classes it never saw"
            )
        truth = np.searchsorted(np.asarray(labels, dtype=object), y_val)
        return cls(train, validation, x_train, y_train, x_val, y_val, labels, truth)


@dataclass
class _Members:
    """Validation probabilities of every member fitted for selection, by (C, class weight):
    embedding → (proba, converged); lexical → (proba, temperature, converged); and the
    embedding models themselves (small: classes × dim), to warm-start the final fit."""

    rows: int
    weights: tuple[float, ...]
    embedding: dict[tuple[float, str | None], tuple[np.ndarray, bool]]
    lexical: dict[tuple[float, str | None], tuple[np.ndarray, float, bool]]
    models: dict[tuple[float, str | None], LogisticRegression]
    fits: int

    @classmethod
    def fit(cls, data: _Data, grid: HeadGrid, seed: int, say: Callable[[str], None]) -> _Members:
        rows = _stratified_subsample(data.y_train, grid.max_selection_rows, seed)
        if rows is None:
            texts, x, y = list(data.train.texts), data.x_train, data.y_train
        else:
            texts, x, y = (
                [data.train.texts[i] for i in rows],
                data.x_train[rows],
                data.y_train[rows],
            )
            say(f"selection on a stratified subsample of {len(y):,} of {len(data.y_train):,} rows")
        weights = grid.feasible_weights()
        lexical = _Lexical(grid) if any(w > 0.0 for w in weights) else None
        if lexical is not None:
            x_lex = lexical.fit_features(texts)
            if x_lex is None:
                say("the texts hold no n-grams: embedding member only")
                weights, lexical = tuple(w for w in weights if w == 0.0), None
                if not weights:
                    raise ValueError("the texts hold no n-grams and the grid has no weight 0")
            else:
                x_lex_val = lexical.features(list(data.validation.texts))
        embedding_cs = grid.embedding_C if any(w < 1.0 for w in weights) else ()
        lexical_cs = grid.lexical_C if lexical is not None else ()
        total = len(grid.class_weight) * (len(embedding_cs) + len(lexical_cs)) + 1
        members = cls(len(y), weights, {}, {}, {}, 0)

        def done(what: str, tic: float, converged: bool) -> None:
            members.fits += 1
            note = "" if converged else " (did not converge)"
            seconds = time.perf_counter() - tic
            say(f"fit {members.fits}/{total}: {what} on {len(y):,} rows, {seconds:.1f} s{note}")

        for class_weight in grid.class_weight:
            start = None  # each C starts from the previous C's solution
            for c in sorted(embedding_cs):
                tic = time.perf_counter()
                model, converged = _fit_embedding(c, class_weight, grid, x, y, start)
                members.embedding[(c, class_weight)] = (model.predict_proba(data.x_val), converged)
                members.models[(c, class_weight)] = start = model
                done(f"embedding LR C={c:g} class_weight={class_weight}", tic, converged)
            for c in lexical_cs:
                assert lexical is not None
                tic = time.perf_counter()
                converged = lexical.fit_svm(x_lex, y, c, class_weight, grid, seed)
                scores = lexical.scores(x_lex_val)
                temperature = _temperature(scores, data.truth)
                proba = softmax(scores / temperature, axis=1)
                members.lexical[(c, class_weight)] = (proba, temperature, converged)
                what = f"tf-idf SVM C={c:g} class_weight={class_weight} (T={temperature:.3g})"
                done(what, tic, converged)
        return members


def _choose(
    data: _Data, grid: HeadGrid, members: _Members
) -> tuple[list[dict[str, Any]], dict[str, Any], np.ndarray]:
    """Every blend of fitted members sharing a class weight, scored on validation; the
    candidates in grid order, the chosen parameters and their validation probabilities."""
    candidates: list[dict[str, Any]] = []
    best: tuple[tuple[float, float, float], dict[str, Any], np.ndarray] | None = None
    for class_weight in grid.class_weight:
        for w in members.weights:
            for ec in grid.embedding_C if w < 1.0 else (None,):
                for lc in grid.lexical_C if w > 0.0 else (None,):
                    proba = np.zeros((len(data.truth), len(data.labels)))
                    converged, temperature = True, None
                    if ec is not None:
                        p_emb, ok = members.embedding[(ec, class_weight)]
                        proba += (1.0 - w) * p_emb
                        converged &= ok
                    if lc is not None:
                        p_lex, temperature, ok = members.lexical[(lc, class_weight)]
                        proba += w * p_lex
                        converged &= ok
                    params = {
                        "embedding_C": ec,
                        "lexical_C": lc,
                        "class_weight": class_weight,
                        "blend_weight": w,
                        "lexical_temperature": temperature,
                    }
                    scores = _scores(data.truth, proba, len(data.labels))
                    candidates.append({"params": params, **scores, "converged": converged})
                    key = (scores["macro_f1"], scores["accuracy"], -scores["log_loss"])
                    if best is None or key > best[0]:
                        best = (key, params, proba)
    assert best is not None  # a checked grid always yields a candidate
    return candidates, best[1], best[2]


def _final_head(
    data: _Data,
    grid: HeadGrid,
    params: dict[str, Any],
    refit_on_validation: bool,
    seed: int,
    say: Callable[[str], None],
    members: _Members,
) -> TextHead:
    """The chosen members refitted on train (+ validation), with the chosen T and w."""
    tic = time.perf_counter()
    parts = [data.train, data.validation] if refit_on_validation else [data.train]
    x = np.vstack([data.x_train, data.x_val]) if refit_on_validation else data.x_train
    y = np.concatenate([data.y_train, data.y_val]) if refit_on_validation else data.y_train
    converged = True
    embedding = None
    if params["embedding_C"] is not None:
        key = (params["embedding_C"], params["class_weight"])
        embedding, ok = _fit_embedding(*key, grid, x, y, start=members.models[key])
        converged &= ok
        assert [str(c) for c in embedding.classes_] == data.labels
    lexical = None
    if params["lexical_C"] is not None:
        lexical = _Lexical(grid)
        x_lex = lexical.fit_features([t for part in parts for t in part.texts])
        assert x_lex is not None  # these texts include those that had n-grams in selection
        converged &= lexical.fit_svm(
            x_lex, y, params["lexical_C"], params["class_weight"], grid, seed
        )
    note = "" if converged else " (did not converge)"
    seconds = time.perf_counter() - tic
    fits = members.fits + 1
    say(f"fit {fits}/{fits}: final head on {len(y):,} rows, {seconds:.1f} s{note}")
    return TextHead(data.labels, dict(params), data.x_train.shape[1], embedding, lexical, len(y))


# ------------------------------------------------------------------ helpers


def _labels(examples: TextExamples, name: str) -> np.ndarray:
    if examples.labels is None:
        raise ValueError(f"{name} examples have no labels")
    labels = np.asarray(examples.labels, dtype=object)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"{name} has no rows")
    if any(label is None for label in labels):
        raise ValueError(f"{name} has rows without a label")
    if len(examples.texts) != len(labels):
        raise ValueError(f"{name} has {len(examples.texts)} texts for {len(labels)} labels")
    return np.asarray([str(label) for label in labels], dtype=object)


def _embeddings(examples: TextExamples, name: str, dim: int | None = None) -> np.ndarray:
    x = np.asarray(examples.embeddings, dtype=np.float32)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, dim)"
        raise ValueError(f"{name} embeddings must have shape {want}, got {x.shape}")
    return x


def _fit_embedding(
    c: float,
    class_weight: str | None,
    grid: HeadGrid,
    x: np.ndarray,
    y: np.ndarray,
    start: LogisticRegression | None,
) -> tuple[LogisticRegression, bool]:
    """Multinomial LR (lbfgs) on float32 rows (about twice as fast as float64), starting
    from `start`'s coefficients when given; (model, converged)."""
    model = LogisticRegression(
        C=c,
        class_weight=class_weight,
        max_iter=grid.max_iter,
        tol=grid.tol,
        warm_start=start is not None,
    )
    if start is not None:
        model.coef_, model.intercept_ = start.coef_.copy(), start.intercept_.copy()
    converged = _fit_quietly(model, x, y)
    model.warm_start = False
    return model, converged


def _fit_quietly(model: Any, x: Any, y: np.ndarray) -> bool:
    """Fit; True unless sklearn warned that the solver did not converge (that warning is
    recorded in the candidates instead; any other warning is passed on)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    converged = True
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            converged = False
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return converged


def _stratified_subsample(labels: np.ndarray, max_rows: int, seed: int) -> np.ndarray | None:
    """Sorted row indices of a seeded subsample of about `max_rows` rows keeping each
    class's share (at least one row per class); None when there are `max_rows` or fewer."""
    n = len(labels)
    if n <= max_rows:
        return None
    rng = np.random.default_rng(seed)
    classes, codes = np.unique(labels, return_inverse=True)
    keep = []
    for k in range(len(classes)):
        members = np.flatnonzero(codes == k)
        take = max(1, round(len(members) * max_rows / n))
        keep.append(rng.permutation(members)[:take])
    return np.sort(np.concatenate(keep))


def _temperature(scores: np.ndarray, truth: np.ndarray) -> float:
    """T minimising the log loss of softmax(scores / T) on the validation rows."""
    rows = np.arange(len(truth))

    def loss(log_t: float) -> float:
        return float(-log_softmax(scores / math.exp(log_t), axis=1)[rows, truth].mean())

    found = minimize_scalar(loss, bounds=(math.log(1e-3), math.log(1e2)), method="bounded")
    return float(math.exp(found.x))


def _scores(truth: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy, macro-F1 (over the classes present in truth or predictions, as sklearn's
    `f1_score(average="macro")`) and log loss of validation probabilities."""
    pred = proba.argmax(axis=1)
    hits = pred == truth
    tp = np.bincount(truth[hits], minlength=n_classes)
    true_n = np.bincount(truth, minlength=n_classes)
    pred_n = np.bincount(pred, minlength=n_classes)
    present = (true_n + pred_n) > 0
    f1 = 2 * tp[present] / (true_n[present] + pred_n[present])
    p_true = np.clip(proba[np.arange(len(truth)), truth], 1e-15, 1.0)
    return {
        "macro_f1": float(f1.mean()),
        "accuracy": float(hits.mean()),
        "log_loss": float(-np.log(p_true).mean()),
    }
