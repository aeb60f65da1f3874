"""Tabular regressors (lead-score): rows of a feature table (`storage.features`) and a
preprocessing + gradient-boosting pipeline (`ml.modeling.tabular`), chosen on validation
RMSE. Judged by RMSE against the champion and an R² floor."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from driftloop_common.contracts.events import ModelKey
from driftloop_common.families.base import (
    FamilyBase,
    FittedModel,
    Outcome,
    Progress,
    SplitData,
)
from driftloop_common.families.rules import EvaluationOptions, regression_verdict
from driftloop_common.ml.modeling.metrics import regression_scores
from driftloop_common.ml.modeling.pyfunc import TabularScorer
from driftloop_common.ml.modeling.reports import markdown_table
from driftloop_common.ml.modeling.splits import SPLITS, Window
from driftloop_common.ml.modeling.tabular import LEAD_SCORE_SPEC, TabularSelection
from driftloop_common.storage.examples import feature_rows
from driftloop_common.storage.registry import metric_name


@dataclass(kw_only=True)
class TabularFit(FittedModel):
    importances: dict[str, float]
    scores: dict[str, dict[str, float]]  # validation and test: rmse, mae, r2
    selection: TabularSelection


class TabularFamily(FamilyBase):
    """Feature-table rows → preprocessing + gradient boosting, chosen on validation RMSE."""

    name = "tabular-regressor"
    encoder_id = "none"

    # ------------------------------------------------------------- training

    def load(self, key: ModelKey, windows: dict[str, Window]) -> SplitData:
        target = LEAD_SCORE_SPEC.target
        frames = {
            split: feature_rows(self.store_url, key.language, window, target)
            for split, window in windows.items()
        }
        targets = {s: f[target].to_numpy(dtype=float) for s, f in frames.items()}
        return SplitData(frames, targets, categorical=False)

    def fit(self, data: SplitData, *, seed: int, progress: Progress) -> TabularFit:
        from mlflow.models import infer_signature

        from driftloop_common.ml.modeling.tabular import select_and_fit_tabular

        spec = LEAD_SCORE_SPEC
        train, validation, test = (data.frames[s] for s in SPLITS)
        model, selection = select_and_fit_tabular(
            train,
            validation,
            spec,
            refit_on_validation=self.options.refit_on_validation,
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
        return TabularFit(
            pyfunc=scorer,
            labels=frozenset(features),
            params=dict(selection.params),
            metrics=metrics,
            counts=data.counts(),
            signature=signature,
            input_example=example,
            importances=importances,
            scores={"validation": val_scores, "test": test_scores},
            selection=selection,
        )

    def write_artifacts(self, fitted: TabularFit, folder: Path) -> None:
        (folder / "feature_importances.json").write_text(json.dumps(fitted.importances, indent=1))
        candidates = fitted.selection.candidates
        (folder / "candidates.json").write_text(json.dumps(candidates, indent=1, default=str))

    def report(self, fitted: TabularFit) -> str:
        scores = fitted.scores
        importances = sorted(fitted.importances.items(), key=lambda kv: -kv[1])
        return "\n\n".join(
            [
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
        return self.requirements("driftloop", "mlflow", "scikit-learn", "numpy", "pandas")

    # ----------------------------------------------------------- evaluation

    def evaluate(
        self,
        language: str,
        window: Window,
        as_of: datetime,
        challenger: TabularScorer,
        champion: Any | None,
        options: EvaluationOptions,
    ) -> Outcome:
        if not isinstance(champion, TabularScorer):
            champion = None  # a family change: nothing comparable
        rows = feature_rows(self.store_url, language, window, LEAD_SCORE_SPEC.target)
        if (short := self.too_few_rows(window, len(rows), options)) is not None:
            return short
        truth = rows[LEAD_SCORE_SPEC.target].to_numpy(dtype=float)
        ch = regression_scores(truth, challenger.predict(None, rows)["score"].to_numpy())
        metrics = {"test_rows": float(len(rows))} | {f"challenger_{k}": v for k, v in ch.items()}
        cp = None
        if champion is not None:
            cp = regression_scores(truth, champion.predict(None, rows)["score"].to_numpy())
            metrics |= {f"champion_{k}": v for k, v in cp.items()}
        verdict = regression_verdict(ch, cp, options)
        table = [[k, ch[k], cp[k] if cp else ""] for k in ("rmse", "mae", "r2")]
        report = [markdown_table(["metric", "challenger", "champion"], table)]
        return Outcome(verdict, metrics, report)
