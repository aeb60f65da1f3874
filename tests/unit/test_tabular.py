"""The tabular family on generated leads: selection, accuracy, unknown categories,
importances, explanations, pickling and input errors."""

from __future__ import annotations

import io
from dataclasses import replace

import joblib
import numpy as np
import pandas as pd
import pytest

from driftloop_common.ml.modeling.tabular import (
    LEAD_SCORE_SPEC,
    TabularModel,
    TabularSelection,
    TabularSpec,
    regression_metrics,
    select_and_fit_tabular,
)
from driftloop_synthetic import leads as synthetic

GRID = {"learning_rate": (0.1,), "max_depth": (2, 3), "n_estimators": (40, 120)}
SPEC = LEAD_SCORE_SPEC


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    rows = synthetic.generate_leads(synthetic.LeadConfig(seed=11, count=1600))
    return {"train": rows.iloc[:1000], "validation": rows.iloc[1000:1300], "test": rows.iloc[1300:]}


@pytest.fixture(scope="module")
def fitted(frames) -> tuple[TabularModel, TabularSelection]:
    return select_and_fit_tabular(frames["train"], frames["validation"], grid=GRID, seed=0)


@pytest.fixture(scope="module")
def model(fitted) -> TabularModel:
    return fitted[0]


def test_the_spec_matches_the_generated_lead_table() -> None:
    assert SPEC.numeric == synthetic.NUMERIC_FEATURES
    assert SPEC.categorical == synthetic.CATEGORICAL_FEATURES
    assert SPEC.target == synthetic.TARGET
    assert set(SPEC.features) | {SPEC.target} <= set(synthetic.COLUMNS)


# ------------------------------------------------------------------ accuracy


def test_beats_a_constant_predictor_by_far(model: TabularModel, frames) -> None:
    test = frames["test"]
    constant = np.full(len(test), frames["train"][SPEC.target].mean())
    baseline = regression_metrics(test[SPEC.target], constant)
    scores = model.metrics(test)
    assert set(scores) == {"rmse", "mae", "r2"}
    assert scores["rmse"] < 0.5 * baseline["rmse"]
    assert scores["mae"] < 0.5 * baseline["mae"]
    assert scores["r2"] > 0.7


def test_predictions_are_probabilities_even_on_odd_rows(model: TabularModel, frames) -> None:
    odd = frames["test"].head(4).copy()
    odd["pages_visited"] = [500, 0, 1, 2]
    odd["time_on_site_s"] = [1e6, 0.0, np.nan, np.nan]
    odd["company_size"] = pd.array([None, None, 1, 10**7], dtype="Int64")
    pred = model.predict(odd)
    assert pred.shape == (4,) and np.isfinite(pred).all()
    assert ((pred >= 0) & (pred <= 1)).all()


def test_bounds_clip_predictions(frames) -> None:
    narrow = replace(SPEC, bounds=(0.2, 0.3))
    tiny = {"learning_rate": (0.1,), "max_depth": (2,), "n_estimators": (20,)}
    model, selection = select_and_fit_tabular(
        frames["train"], frames["validation"], narrow, grid=tiny
    )
    pred = model.predict(frames["test"])
    assert pred.min() == 0.2 and pred.max() == 0.3
    assert selection.validation_pred.min() == 0.2 and selection.validation_pred.max() == 0.3
    unclipped = TabularModel(
        model.pipeline, replace(SPEC, bounds=None), model.params, model.baseline, model.rows
    )
    assert unclipped.predict(frames["test"]).max() > 0.3


# ----------------------------------------------------------------- selection


def test_selection_scores_every_candidate_and_keeps_the_best(fitted, frames) -> None:
    model, selection = fitted
    assert len(selection.candidates) == 4  # 2 depths × 2 tree counts
    tried = {(c["params"]["max_depth"], c["params"]["n_estimators"]) for c in selection.candidates}
    assert tried == {(2, 40), (2, 120), (3, 40), (3, 120)}
    best = min(selection.candidates, key=lambda c: c["rmse"])
    assert selection.params == best["params"] == model.params
    truth = frames["validation"][SPEC.target]
    assert regression_metrics(truth, selection.validation_pred)["rmse"] == pytest.approx(
        best["rmse"]
    )
    assert model.rows == 1300  # refitted on train + validation


def test_without_refit_the_model_is_the_selected_candidate(fitted, frames) -> None:
    _, selection = fitted
    model, again = select_and_fit_tabular(
        frames["train"], frames["validation"], grid=GRID, refit_on_validation=False, seed=0
    )
    assert model.rows == 1000
    assert again.params == selection.params
    np.testing.assert_allclose(model.predict(frames["validation"]), again.validation_pred)


def test_progress_reports_each_fit(frames) -> None:
    lines: list[str] = []
    tiny = {"learning_rate": (0.1,), "max_depth": (2, 3), "n_estimators": (10,)}
    select_and_fit_tabular(frames["train"], frames["validation"], grid=tiny, progress=lines.append)
    assert [line.split(":")[0] for line in lines] == ["fit 1/3", "fit 2/3", "fit 3/3"]


# ------------------------------------------------------- categories, importance


def test_unknown_and_missing_categories_do_not_crash(model: TabularModel, frames) -> None:
    rows = frames["test"].head(6).copy()
    known = model.predict(rows)
    rows.loc[rows.index[:2], "campaign_source"] = "tiktok"
    rows.loc[rows.index[2], "industry"] = "space_mining"
    rows.loc[rows.index[3], "industry"] = None
    pred = model.predict(rows)
    assert np.isfinite(pred).all() and ((pred >= 0) & (pred <= 1)).all()
    np.testing.assert_array_equal(pred[4:], known[4:])


def test_importances_per_original_feature_sum_to_one_and_find_the_truth(
    model: TabularModel, frames
) -> None:
    importances = model.feature_importances()
    assert list(importances) == list(SPEC.features)  # one-hot columns summed back
    assert sum(importances.values()) == pytest.approx(1.0)
    assert all(v >= 0 for v in importances.values())
    # The true strongest driver: the feature whose replacement by its typical value moves
    # the generator's noise-free log-odds the most.
    complete = synthetic.generate_leads(synthetic.LeadConfig(seed=11, count=1600, missing_rate=0))
    logit = synthetic.conversion_logit(complete)
    effect = {}
    for name in SPEC.features:
        typical = complete.copy()
        column = complete[name]
        typical[name] = column.median() if name in SPEC.numeric else column.mode()[0]
        effect[name] = float(np.std(logit - synthetic.conversion_logit(typical)))
    strongest = max(effect, key=effect.__getitem__)
    assert max(importances, key=importances.__getitem__) == strongest


# ------------------------------------------------------------------- explain


def test_explain_is_the_prediction_change_when_a_feature_is_set_to_its_baseline(
    model: TabularModel, frames
) -> None:
    rows = frames["test"].head(5)
    explained = model.explain(rows)
    assert len(explained) == 5
    assert all(list(e) == list(SPEC.features) for e in explained)
    for name in ("pages_visited", "campaign_source"):
        moved = rows.copy()
        moved[name] = model.baseline[name]
        expected = model.predict(rows) - model.predict(moved)
        np.testing.assert_allclose([e[name] for e in explained], expected)
    assert any(abs(e["pages_visited"]) > 0.01 for e in explained)
    assert model.explain(rows.head(0)) == []


def test_a_lead_at_every_baseline_has_nothing_to_explain(model: TabularModel) -> None:
    typical = pd.DataFrame([model.baseline])
    assert model.baseline["campaign_source"] in synthetic.CAMPAIGN_SOURCES
    assert model.explain(typical) == [dict.fromkeys(SPEC.features, 0.0)]


# ------------------------------------------------------------------- pickling


def test_pickle_round_trip_with_joblib(model: TabularModel, frames) -> None:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    loaded = joblib.load(buffer)
    np.testing.assert_array_equal(loaded.predict(frames["test"]), model.predict(frames["test"]))
    assert loaded.feature_importances() == model.feature_importances()
    assert (loaded.spec, loaded.params, loaded.baseline) == (
        model.spec,
        model.params,
        model.baseline,
    )


# --------------------------------------------------------------------- errors


def test_a_missing_feature_column_is_named(model: TabularModel, frames) -> None:
    without = frames["train"].drop(columns="prior_contacts")
    with pytest.raises(ValueError, match="prior_contacts"):
        select_and_fit_tabular(without, frames["validation"], grid=GRID)
    with pytest.raises(ValueError, match="prior_contacts"):
        model.predict(frames["test"].drop(columns="prior_contacts"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"conversion_probability": "high"}, "target 'conversion_probability' must be numeric"),
        ({"conversion_probability": np.nan}, "target 'conversion_probability' is missing"),
        ({"pages_visited": "lots"}, "numeric feature 'pages_visited'"),
    ],
)
def test_bad_columns_are_value_errors_naming_them(frames, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        select_and_fit_tabular(frames["train"].assign(**change), frames["validation"], grid=GRID)


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"learning_rate": ()}, "must not be empty"),
        ({"depth": (2,)}, "unknown GradientBoostingRegressor parameter"),
        ({"n_estimators": (0,)}, "positive integers"),
        ({"random_state": (1,)}, "seed"),
    ],
)
def test_bad_grids_are_rejected(frames, grid: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        select_and_fit_tabular(frames["train"], frames["validation"], grid=grid)


def test_empty_frames_are_rejected(frames) -> None:
    with pytest.raises(ValueError, match="validation frame has no rows"):
        select_and_fit_tabular(frames["train"], frames["validation"].head(0), grid=GRID)


def test_bad_specs_are_rejected() -> None:
    with pytest.raises(ValueError, match="also a feature"):
        TabularSpec(numeric=("a",), categorical=(), target="a")
    with pytest.raises(ValueError, match="at least one feature"):
        TabularSpec(numeric=(), categorical=(), target="y")
    with pytest.raises(ValueError, match="listed twice"):
        TabularSpec(numeric=("a",), categorical=("a",), target="y")


# -------------------------------------------------------------------- metrics


def test_regression_metrics_on_a_tiny_example() -> None:
    scores = regression_metrics([0.0, 1.0, 2.0], [0.0, 1.0, 4.0])
    assert scores["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert scores["mae"] == pytest.approx(2 / 3)
    assert scores["r2"] == pytest.approx(1 - 4 / 2)
    assert regression_metrics([1.0, 2.0], [1.0, 2.0]) == {"rmse": 0.0, "mae": 0.0, "r2": 1.0}


@pytest.mark.parametrize(
    ("truth", "pred"), [([1.0, 2.0], [1.0]), ([], []), ([1.0, np.nan], [1.0, 2.0])]
)
def test_regression_metrics_reject_bad_input(truth: list, pred: list) -> None:
    with pytest.raises(ValueError):
        regression_metrics(truth, pred)
