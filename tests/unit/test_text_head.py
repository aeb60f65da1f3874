"""The text head on synthetic intents (Gaussian blobs as embeddings, keyword texts):
selection on validation only, the refit, pickling, unknown labels and input errors."""

from __future__ import annotations

import io
from dataclasses import replace

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss

from driftloop_common.ml.modeling.text_head import (
    HeadGrid,
    HeadSelection,
    TextExamples,
    TextHead,
    select_and_fit,
)

INTENTS = ("billing", "cancel", "delivery", "refund")
KEYWORDS = {
    "billing": ("invoice", "charged", "bill"),
    "cancel": ("cancel", "terminate", "stop"),
    "delivery": ("parcel", "courier", "shipping"),
    "refund": ("refund", "money back", "reimburse"),
}
FILLER = ("please", "hello", "my", "order", "account", "today", "help", "again", "thanks")
DIM = 16
CENTERS = np.random.default_rng(99).normal(size=(len(INTENTS), DIM))
SMALL = HeadGrid(embedding_C=(0.3, 3.0), lexical_C=(0.3, 1.0), blend_weight=(0.0, 0.5, 1.0))


def make(
    per_class: int,
    seed: int,
    *,
    spread: float = 0.9,
    informative_text: bool = True,
    informative_embedding: bool = True,
    intents: tuple[str, ...] = INTENTS,
) -> TextExamples:
    """`per_class` rows of each intent: a unit embedding near the intent's center (or
    anywhere) and a text of filler words with one of the intent's keywords (or none)."""
    rng = np.random.default_rng(seed)
    labels, texts, rows = [], [], []
    for name in intents:
        center = CENTERS[INTENTS.index(name)] if informative_embedding else np.zeros(DIM)
        for _ in range(per_class):
            words = list(rng.choice(FILLER, size=3))
            if informative_text:
                words.insert(int(rng.integers(4)), str(rng.choice(KEYWORDS[name])))
            texts.append(" ".join(words))
            rows.append(center + spread * rng.normal(size=DIM))
            labels.append(name)
    x = np.asarray(rows, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = rng.permutation(len(labels))
    return TextExamples(
        [texts[i] for i in order], x[order], np.asarray(labels, dtype=object)[order]
    )


@pytest.fixture(scope="module")
def splits() -> dict[str, TextExamples]:
    return {"train": make(40, 1), "validation": make(15, 2), "test": make(15, 3)}


@pytest.fixture(scope="module")
def fitted(splits) -> tuple[TextHead, HeadSelection]:
    return select_and_fit(splits["train"], splits["validation"], seed=0)


# ------------------------------------------------------------------ selection


def test_the_chosen_params_are_the_best_candidate(fitted) -> None:
    head, selection = fitted
    assert head.params == selection.params
    assert selection.params in [c["params"] for c in selection.candidates]
    best = max(c["macro_f1"] for c in selection.candidates)
    assert selection.best["macro_f1"] == best
    # every combination of the default grid, w = 0 and w = 1 without the unused member
    assert len(selection.candidates) == 2 * (3 + 3 + 9 * 9)
    assert head.labels == selection.labels == sorted(INTENTS)


def test_candidate_scores_are_the_validation_scores_of_validation_proba(fitted, splits) -> None:
    _, selection = fitted
    truth = splits["validation"].labels
    proba = selection.validation_proba
    assert proba.shape == (len(truth), len(selection.labels))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    pred = np.asarray(selection.labels, dtype=object)[proba.argmax(axis=1)]
    best = selection.best
    assert best["macro_f1"] == pytest.approx(f1_score(truth, pred, average="macro"))
    assert best["accuracy"] == pytest.approx(accuracy_score(truth, pred))
    assert best["log_loss"] == pytest.approx(log_loss(truth, proba, labels=selection.labels))


def test_validation_proba_comes_from_a_fit_on_train_alone(fitted, splits) -> None:
    """Refitting the chosen parameters on train alone reproduces validation_proba: the
    validation rows scored it, they never trained it."""
    _, selection = fitted
    p = selection.params
    only = HeadGrid(
        embedding_C=(p["embedding_C"],) if p["embedding_C"] else (1.0,),
        lexical_C=(p["lexical_C"],) if p["lexical_C"] else (),
        class_weight=(p["class_weight"],),
        blend_weight=(p["blend_weight"],),
    )
    head, again = select_and_fit(
        splits["train"], splits["validation"], grid=only, refit_on_validation=False
    )
    assert again.params == selection.params
    np.testing.assert_allclose(
        head.predict_proba(splits["validation"]), selection.validation_proba, atol=1e-3
    )


def test_the_choice_follows_what_validation_rewards() -> None:
    """Keyword texts with noise embeddings lean on the tf-idf member; blob embeddings with
    keyword-free texts lean on the embedding member."""
    words_only = dict(informative_embedding=False)
    _, by_text = select_and_fit(make(40, 1, **words_only), make(15, 2, **words_only), grid=SMALL)
    vectors_only = dict(informative_text=False, spread=0.5)
    _, by_vector = select_and_fit(
        make(40, 1, **vectors_only), make(15, 2, **vectors_only), grid=SMALL
    )
    assert by_text.params["blend_weight"] > 0.5
    assert by_vector.params["blend_weight"] < 0.5


def test_the_head_is_accurate_on_unseen_rows(fitted, splits) -> None:
    head, _ = fitted
    assert accuracy_score(splits["test"].labels, head.predict(splits["test"])) > 0.9


def test_the_same_seed_gives_the_same_head(splits) -> None:
    first = select_and_fit(splits["train"], splits["validation"], grid=SMALL, seed=3)
    second = select_and_fit(splits["train"], splits["validation"], grid=SMALL, seed=3)
    assert first[1].params == second[1].params
    assert first[1].candidates == second[1].candidates
    np.testing.assert_array_equal(
        first[0].predict_proba(splits["test"]), second[0].predict_proba(splits["test"])
    )


def test_large_train_sets_are_subsampled_for_selection_only(splits) -> None:
    lines: list[str] = []
    grid = replace(SMALL, max_selection_rows=60)
    head, selection = select_and_fit(
        splits["train"], splits["validation"], grid=grid, progress=lines.append
    )
    assert selection.fit_rows == 60  # 15 of each intent's 40
    assert head.trained_rows == 160 + 60
    assert any("subsample of 60 of 160 rows" in line for line in lines)
    assert lines[-1].startswith(f"fit {len(lines) - 2}/{len(lines) - 2}: final head on 220 rows")


# ------------------------------------------------------------------ the final head


def test_refit_on_validation_trains_on_both_splits(splits) -> None:
    """The refitted head is the optimum of the logistic loss on train + validation."""
    embedding_only = HeadGrid(embedding_C=(3.0,), lexical_C=(), class_weight=(None,))
    train, validation = splits["train"], splits["validation"]
    head, _ = select_and_fit(train, validation, grid=embedding_only)
    both = LogisticRegression(C=3.0, max_iter=10_000, tol=1e-10).fit(
        np.vstack([train.embeddings, validation.embeddings]).astype(np.float64),
        np.concatenate([train.labels, validation.labels]),
    )
    optimum = both.predict_proba(splits["test"].embeddings)
    np.testing.assert_allclose(head.predict_proba(splits["test"]), optimum, atol=1e-3)
    assert head.trained_rows == 220
    alone, _ = select_and_fit(train, validation, grid=embedding_only, refit_on_validation=False)
    assert alone.trained_rows == 160
    assert np.abs(alone.predict_proba(splits["test"]) - optimum).max() > 1e-2


def test_a_pickled_head_predicts_the_same_without_the_data(fitted, splits) -> None:
    head, _ = fitted
    buffer = io.BytesIO()
    joblib.dump(head, buffer)
    buffer.seek(0)
    loaded = joblib.load(buffer)
    test = splits["test"]
    unlabelled = TextExamples(list(test.texts), test.embeddings.copy())
    np.testing.assert_array_equal(loaded.predict_proba(unlabelled), head.predict_proba(test))
    assert loaded.labels == head.labels and loaded.params == head.params


def test_predict_ignores_labels_even_unknown_ones(fitted, splits) -> None:
    head, _ = fitted
    test = splits["test"]
    odd = TextExamples(list(test.texts), test.embeddings, np.full(len(test.texts), "no-such"))
    proba = head.predict_proba(odd)
    assert proba.shape == (len(test.texts), len(head.labels))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert set(head.predict(odd)) <= set(head.labels)
    assert head.predict_proba(TextExamples([], np.zeros((0, DIM), np.float32))).shape == (0, 4)


def test_two_classes_work() -> None:
    pair = ("cancel", "refund")
    head, selection = select_and_fit(
        make(30, 1, intents=pair), make(10, 2, intents=pair), grid=SMALL
    )
    proba = head.predict_proba(make(10, 3, intents=pair))
    assert head.labels == list(pair) and proba.shape == (20, 2)
    assert selection.validation_proba.shape == (20, 2)


def test_texts_without_ngrams_leave_the_embedding_member_alone(splits) -> None:
    blank = {k: replace(v, texts=[""] * len(v.texts)) for k, v in splits.items()}
    lines: list[str] = []
    head, selection = select_and_fit(
        blank["train"], blank["validation"], grid=SMALL, progress=lines.append
    )
    assert {c["params"]["blend_weight"] for c in selection.candidates} == {0.0}
    assert head.lexical is None
    assert any("no n-grams" in line for line in lines)
    assert accuracy_score(blank["test"].labels, head.predict(blank["test"])) > 0.9


def test_not_converging_is_recorded_not_raised(splits) -> None:
    lines: list[str] = []
    _, selection = select_and_fit(
        splits["train"],
        splits["validation"],
        grid=replace(SMALL, max_iter=1),
        progress=lines.append,
    )
    assert not any(c["converged"] for c in selection.candidates)
    assert any("(did not converge)" in line for line in lines)


# ------------------------------------------------------------------ errors


def test_train_with_one_class_is_refused(splits) -> None:
    one = make(10, 1, intents=("cancel",))
    with pytest.raises(ValueError, match=r"train has 1 class \(\['cancel'\]\).*2 or more"):
        select_and_fit(one, one)


def test_validation_labels_unseen_in_train_are_named(splits) -> None:
    train = make(10, 1, intents=("billing", "cancel"))
    validation = make(5, 2, intents=("billing", "refund", "delivery"))
    with pytest.raises(ValueError, match=r"2 label\(s\) that train lacks: 'delivery', 'refund'"):
        select_and_fit(train, validation)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": None}, "validation examples have no labels"),
        ({"texts": ["x"]}, "validation has 1 texts for 60 labels"),
        ({"embeddings": np.zeros((60, 3), np.float32)}, r"shape \(n, 16\), got \(60, 3\)"),
    ],
)
def test_malformed_validation_is_refused(splits, change, message) -> None:
    with pytest.raises(ValueError, match=message):
        select_and_fit(splits["train"], replace(splits["validation"], **change))


@pytest.mark.parametrize(
    "fields",
    [
        {"embedding_C": (0.0,)},
        {"embedding_C": (), "lexical_C": ()},
        {"class_weight": ("auto",)},
        {"blend_weight": (1.5,)},
        {"lexical_C": (), "blend_weight": (1.0,)},
        {"max_selection_rows": 1},
        {"tol": 0.0},
    ],
)
def test_bad_grids_are_refused(fields) -> None:
    with pytest.raises(ValueError, match="HeadGrid"):
        HeadGrid(**fields)
