"""The tabular family (lead scoring): a ColumnTransformer saved with a gradient-boosted
regressor, hyperparameters chosen on validation RMSE.

    numeric      → median imputation → standard scaling  ┐
    categorical  → constant "missing" → one-hot           ├→ GradientBoostingRegressor
                   (categories unseen in training: all 0) ┘

`TabularModel` is the whole fitted pipeline plus what serving needs (the spec, the chosen
parameters, per-feature baselines for `explain`); it pickles with joblib and is what
`driftloop_common.ml.modeling.pyfunc.TabularScorer` wraps in a registered version.

Selection fits the preprocessing once on the training rows, then one regressor per
combination of the grid's other parameters with the largest `n_estimators`; the smaller
`n_estimators` of the grid are scored on the way (`staged_predict`), so a grid of
2 learning rates × 2 depths × 3 tree counts costs 4 fits, not 12.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from driftloop_common.ml.modeling.metrics import regression_scores

MISSING = "missing"
"""The category missing categorical values are imputed with."""

DEFAULT_GRID: Mapping[str, Sequence[Any]] = {
    "learning_rate": (0.05, 0.1),
    "max_depth": (2, 3),
    "n_estimators": (100, 200, 400),
}
FIXED_PARAMS: Mapping[str, Any] = {"min_samples_leaf": 10, "subsample": 1.0}
"""Regressor parameters outside the grid (a grid entry overrides them)."""


@dataclass(frozen=True)
class TabularSpec:
    """Which columns a tabular model reads and predicts.

    `bounds` clips predictions (a probability: `(0.0, 1.0)`); `None` leaves them as is.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    target: str
    bounds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not self.features:
            raise ValueError("a tabular spec needs at least one feature")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"a feature is listed twice: {self.features}")
        if self.target in self.features:
            raise ValueError(f"the target {self.target!r} is also a feature")
        if self.bounds is not None and not self.bounds[0] < self.bounds[1]:
            raise ValueError(f"bounds must be (low, high) with low < high, got {self.bounds}")

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical)


LEAD_SCORE_SPEC = TabularSpec(
    numeric=("company_size", "pages_visited", "time_on_site_s", "prior_contacts"),
    categorical=("industry", "campaign_source"),
    target="conversion_probability",
    bounds=(0.0, 1.0),
)
"""The lead table of `driftloop_synthetic.leads` (model type `lead-score`)."""


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """`rmse`, `mae` and `r2` (lower, lower, higher is better; `r2` is 0 for a constant
    target). Raises `ValueError` for empty, unequal-length or non-finite inputs."""
    truth, pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if truth.shape != pred.shape or truth.ndim != 1:
        raise ValueError(f"y_true {truth.shape} and y_pred {pred.shape}: need equal 1-d shapes")
    if not (np.isfinite(truth).all() and np.isfinite(pred).all()):
        raise ValueError("y_true and y_pred must be finite (no NaN or inf)")
    return regression_scores(truth, pred)


class TabularModel:
    """A fitted tabular model: `pipeline` (sklearn `Pipeline`: `preprocess` → `regressor`)
    with its `spec`, the chosen `params`, and the training `baseline` of each feature."""

    def __init__(
        self,
        pipeline: Pipeline,
        spec: TabularSpec,
        params: Mapping[str, Any],
        baseline: Mapping[str, Any],
        rows: int,
    ) -> None:
        self.pipeline = pipeline
        self.spec = spec
        self.params = dict(params)
        self.baseline = dict(baseline)
        """Per feature: the training median (numeric) or most frequent value (categorical)."""
        self.rows = rows
        """Rows the model was fitted on."""
        self.sklearn_version = sklearn.__version__
        self._owners = _owners(pipeline.named_steps["preprocess"], spec)

    def __repr__(self) -> str:
        return f"TabularModel(target={self.spec.target!r}, params={self.params}, rows={self.rows})"

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """One prediction per row of `frame` (clipped to `spec.bounds`).

        Extra columns are ignored; missing values are imputed; categories never seen in
        training count as none of the known ones. A missing feature column is a ValueError.
        """
        return self._predict(features(frame, self.spec))

    def metrics(self, frame: pd.DataFrame) -> dict[str, float]:
        """`regression_metrics` of this model on `frame` (which must hold the target)."""
        return regression_metrics(target(frame, self.spec), self.predict(frame))

    def feature_importances(self) -> dict[str, float]:
        """Impurity-based importance per original feature (its one-hot columns summed).

        Sums to 1, in `spec.features` order; all 0 when the model found no split at all
        (a constant target).
        """
        raw = self.pipeline.named_steps["regressor"].feature_importances_
        summed = dict.fromkeys(self.spec.features, 0.0)
        for owner, value in zip(self._owners, raw, strict=True):
            summed[owner] += float(value)
        total = sum(summed.values())
        return {name: value / total if total > 0 else 0.0 for name, value in summed.items()}

    def explain(self, frame: pd.DataFrame) -> list[dict[str, float]]:
        """Per row, per original feature: how much the prediction moves because of it.

        The attribution of feature f is `predict(row) − predict(row with f set to its
        baseline)`, the baseline being the training median (numeric) or most frequent
        value (categorical), as in `self.baseline`. Honest and simple, not Shapley values:
        a feature at its baseline (or a missing numeric value, imputed with that same
        median) gets 0, and when features interact the attributions need not add up to
        `predict(row) − predict(all baselines)`. Costs one prediction per feature per row.
        """
        x = features(frame, self.spec)
        n = len(x)
        if n == 0:
            return []
        variants = [x]
        for name in self.spec.features:
            moved = x.copy()
            moved[name] = self.baseline[name]
            variants.append(moved)
        scores = self._predict(pd.concat(variants, ignore_index=True)).reshape(-1, n)
        deltas = scores[0] - scores[1:]  # (features, rows)
        return [
            {name: float(deltas[j, i]) for j, name in enumerate(self.spec.features)}
            for i in range(n)
        ]

    def _predict(self, x: pd.DataFrame) -> np.ndarray:
        pred = np.asarray(self.pipeline.predict(x), dtype=float)
        return pred if self.spec.bounds is None else np.clip(pred, *self.spec.bounds)


@dataclass(frozen=True, eq=False)
class TabularSelection:
    """What selection saw: the chosen `params`; every candidate, in grid order, as
    `{"params": {...}, "rmse": validation RMSE}` (plain dicts, ready for JSON); and the
    chosen candidate's validation predictions (fitted on the training rows only, clipped
    like `predict`)."""

    params: dict[str, Any]
    candidates: tuple[dict[str, Any], ...]
    validation_pred: np.ndarray

    @property
    def validation_rmse(self) -> float:
        return min(float(c["rmse"]) for c in self.candidates)


def select_and_fit_tabular(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    spec: TabularSpec = LEAD_SCORE_SPEC,
    *,
    grid: Mapping[str, Sequence[Any]] | None = None,
    refit_on_validation: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[TabularModel, TabularSelection]:
    """Choose the regressor's parameters on validation RMSE, then fit the final model.

    `grid` maps `GradientBoostingRegressor` parameters to the values to try (default
    `DEFAULT_GRID`); the final model is refitted on train + validation when
    `refit_on_validation`, else on train alone. `progress` receives one line per fit.
    Raises `ValueError` naming the column when a feature column is missing, the target is
    missing, not numeric or has missing values, and for empty frames or a bad grid.
    """
    say = progress or (lambda _: None)
    grid = _checked_grid(DEFAULT_GRID if grid is None else grid)
    x_train, y_train = features(train, spec), target(train, spec)
    x_val, y_val = features(validation, spec), target(validation, spec)
    for name, x in (("train", x_train), ("validation", x_val)):
        if len(x) == 0:
            raise ValueError(f"the {name} frame has no rows")

    preprocess = _preprocessor(spec).fit(x_train)
    xt_train, xt_val = preprocess.transform(x_train), preprocess.transform(x_val)
    tree_counts = sorted(set(grid.get("n_estimators", (FIXED_PARAMS.get("n_estimators", 100),))))
    others = {name: values for name, values in grid.items() if name != "n_estimators"}
    combos = [
        dict(zip(others, values, strict=True)) for values in itertools.product(*others.values())
    ]
    candidates: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any], np.ndarray] | None = None
    for i, combo in enumerate(combos, 1):
        params = {**FIXED_PARAMS, **combo, "n_estimators": tree_counts[-1]}
        regressor = GradientBoostingRegressor(random_state=seed, **params)
        regressor.fit(xt_train, y_train)
        wanted = set(tree_counts)
        for trees, pred in enumerate(regressor.staged_predict(xt_val), 1):
            if trees not in wanted:
                continue
            pred = np.clip(pred, *spec.bounds) if spec.bounds is not None else pred
            rmse = regression_metrics(y_val, pred)["rmse"]
            chosen = {**params, "n_estimators": trees}
            candidates.append({"params": chosen, "rmse": rmse})
            if best is None or rmse < best[0]:
                best = (rmse, chosen, pred)
        assert best is not None  # every combination scores at least one tree count
        say(f"fit {i}/{len(combos) + 1}: {_describe(combo)}; best validation RMSE {best[0]:.4f}")
    assert best is not None  # the grid is never empty
    _, params, validation_pred = best

    final_x, final_y = x_train, y_train
    if refit_on_validation:
        final_x = pd.concat([x_train, x_val], ignore_index=True)
        final_y = np.concatenate([y_train, y_val])
    say(
        f"fit {len(combos) + 1}/{len(combos) + 1}: final model on {len(final_x)} rows, "
        f"{_describe(params)}"
    )
    pipeline = Pipeline(
        [
            ("preprocess", _preprocessor(spec)),
            ("regressor", GradientBoostingRegressor(random_state=seed, **params)),
        ]
    )
    pipeline.fit(final_x, final_y)
    model = TabularModel(pipeline, spec, params, _baseline(pipeline, final_x, spec), len(final_x))
    selection = TabularSelection(
        params=dict(params), candidates=tuple(candidates), validation_pred=validation_pred
    )
    return model, selection


# ------------------------------------------------------------------ helpers


def features(frame: pd.DataFrame, spec: TabularSpec) -> pd.DataFrame:
    """The spec's feature columns in a form every sklearn step accepts.

    Numeric: float64 with NaN for missing (nullable integers included). Categorical:
    object holding str, with NaN for missing (a number used as a category becomes its
    string, so `1` and `"1"` are one category).
    """
    _require_columns(frame, spec.features)
    columns: dict[str, Any] = {}
    for name in spec.numeric:
        try:
            values = pd.to_numeric(frame[name])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"numeric feature {name!r} holds non-numeric values: {exc}") from exc
        columns[name] = pd.Series(values).to_numpy(dtype=float, na_value=np.nan)
    for name in spec.categorical:
        column = frame[name]
        values = column.astype(str).to_numpy(dtype=object)
        values[column.isna().to_numpy()] = np.nan
        columns[name] = values
    return pd.DataFrame(columns, columns=list(spec.features))


def target(frame: pd.DataFrame, spec: TabularSpec) -> np.ndarray:
    """The target column as float64; `ValueError` unless it is numeric and complete."""
    _require_columns(frame, (spec.target,))
    column = frame[spec.target]
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        raise ValueError(f"target {spec.target!r} must be numeric, got dtype {column.dtype}")
    values = column.to_numpy(dtype=float, na_value=np.nan)
    if (missing := int(np.isnan(values).sum())) > 0:
        raise ValueError(f"target {spec.target!r} is missing in {missing} row(s)")
    return values


def _require_columns(frame: pd.DataFrame, names: Sequence[str]) -> None:
    if missing := [name for name in names if name not in frame.columns]:
        raise ValueError(f"missing column(s) {missing}; the frame has {list(frame.columns)}")


def _preprocessor(spec: TabularSpec) -> ColumnTransformer:
    numeric = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
        ]
    )
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    return ColumnTransformer(
        [("num", numeric, list(spec.numeric)), ("cat", categorical, list(spec.categorical))],
        remainder="drop",
    )


def _owners(preprocess: ColumnTransformer, spec: TabularSpec) -> list[str]:
    """The original feature behind each column the preprocessor outputs, in order."""
    owners: list[str] = []
    if spec.numeric:
        owners.extend(spec.numeric)  # one column each (empty features are kept)
    if spec.categorical:
        encoder = preprocess.named_transformers_["cat"].named_steps["onehot"]
        for name, categories in zip(spec.categorical, encoder.categories_, strict=True):
            owners.extend([name] * len(categories))
    return owners


def _baseline(pipeline: Pipeline, x: pd.DataFrame, spec: TabularSpec) -> dict[str, Any]:
    """Training median of each numeric feature (the imputer's) and the most frequent
    value of each categorical one (NaN if it was always missing)."""
    baseline: dict[str, Any] = {}
    if spec.numeric:
        numeric = pipeline.named_steps["preprocess"].named_transformers_["num"]
        medians = numeric.named_steps["impute"].statistics_
        baseline.update(zip(spec.numeric, (float(m) for m in medians), strict=True))
    for name in spec.categorical:
        counts = x[name].value_counts(dropna=True)
        baseline[name] = str(counts.index[0]) if len(counts) else np.nan
    return baseline


def _checked_grid(grid: Mapping[str, Sequence[Any]]) -> dict[str, tuple[Any, ...]]:
    known = GradientBoostingRegressor().get_params()
    if unknown := sorted(set(grid) - set(known)):
        raise ValueError(f"unknown GradientBoostingRegressor parameter(s) in grid: {unknown}")
    if "random_state" in grid:
        raise ValueError("random_state comes from seed, not from the grid")
    checked = {name: tuple(values) for name, values in grid.items()}
    if empty := sorted(name for name, values in checked.items() if not values):
        raise ValueError(f"grid values must not be empty: {empty}")
    counts = checked.get("n_estimators", ())
    if any(not isinstance(n, int | np.integer) or n < 1 for n in counts):
        raise ValueError(f"n_estimators must be positive integers, got {counts}")
    return checked


def _describe(params: Mapping[str, Any]) -> str:
    return " ".join(f"{name}={value}" for name, value in params.items())
