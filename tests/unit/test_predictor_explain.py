"""`/v2/models/{name}/explain` (token occlusion for text, attributions for tabular) and
tabular records in the Open Inference Protocol's infer, with fake models and one real
`TabularScorer` fitted on generated leads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from driftloop_common.contracts.events import ModelKey, ModelType, PredictionEvent
from driftloop_common.families import FAMILIES
from driftloop_common.families.tabular import TabularFamily
from driftloop_common.ml.modeling.pyfunc import TabularScorer
from driftloop_common.ml.modeling.tabular import LEAD_SCORE_SPEC, select_and_fit_tabular
from driftloop_predictor.batching import Scored
from driftloop_predictor.explain import MAX_EXPLAIN_ROWS, MAX_TOKENS, token_effects
from driftloop_predictor.scoring import TABULAR_TYPES
from driftloop_synthetic import leads as synthetic
from tests.unit.test_predictor_data_action import (
    AUTH,
    LEAD,
    LEAD_ROW,
    TEXT,
    BrokenModel,
    KeywordModel,
    LeadModel,
    Served,
    http,
    score_records_in_batchers,
    started,
)


def infer_url(name: str) -> str:
    return f"/v2/models/{name}/infer"


def explain_url(name: str) -> str:
    return f"/v2/models/{name}/explain"


def text_body(texts: list[Any]) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}


DATATYPES = {"time_on_site_s": "FP64", "industry": "BYTES", "campaign_source": "BYTES"}


def columns(rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Records as named columns, one input per feature (INT64 for the counts)."""
    return {
        "inputs": [
            {
                "name": name,
                "shape": [len(rows)],
                "datatype": DATATYPES.get(name, "INT64"),
                "data": [row[name] for row in rows],
            }
            for name in rows[0]
        ],
        **extra,
    }


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    score_records_in_batchers(monkeypatch)
    models = {TEXT: KeywordModel(), LEAD: LeadModel()}
    svc = await started(models)
    async with http(svc) as client:
        yield svc, models, client
    await svc.models.aclose()


def test_the_tabular_types_are_the_tabular_family() -> None:
    assert {t for t in ModelType if FAMILIES[t] is TabularFamily} == TABULAR_TYPES


# ------------------------------------------------------------------ tabular infer


async def test_tabular_records_as_named_columns_answer_a_score(served: Any) -> None:
    svc, models, client = served
    other = {**LEAD_ROW, "industry": "retail", "company_size": 10}
    body = columns([LEAD_ROW, other], id="r-2", parameters={"conversation_id": "c-3"})
    response = await client.post(infer_url(LEAD), json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == LEAD and answer["model_version"] == "1"
    assert answer["id"] == "r-2"
    (output,) = answer["outputs"]
    assert output["name"] == "score" and output["datatype"] == "FP32"
    assert output["shape"] == [2]
    expected = models[LEAD]._score(LEAD_ROW)
    assert output["data"][0] == pytest.approx(expected)
    events = await svc.flush()
    assert [e.payload.label for e in events if isinstance(e, PredictionEvent)] == ["score"] * 2
    assert {e.payload.conversation_id for e in events if isinstance(e, PredictionEvent)} == {"c-3"}


async def test_tabular_metadata_names_the_feature_inputs(served: Any) -> None:
    _, _, client = served
    meta = (await client.get(f"/v2/models/{LEAD}", headers=AUTH)).json()
    assert [i["name"] for i in meta["inputs"]] == list(LeadModel.features)
    assert meta["outputs"] == [{"name": "score", "datatype": "FP32", "shape": [-1]}]


def without(name: str) -> dict[str, Any]:
    return columns([{k: v for k, v in LEAD_ROW.items() if k != name}])


def retyped(name: str, datatype: str, data: list[Any]) -> dict[str, Any]:
    body = columns([LEAD_ROW])
    for column in body["inputs"]:
        if column["name"] == name:
            column.update(datatype=datatype, data=data)
    return body


def unequal() -> dict[str, Any]:
    body = columns([LEAD_ROW, LEAD_ROW])
    body["inputs"][0].update(shape=[1], data=[1])
    return body


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (without("industry"), "missing input(s) ['industry']"),
        (retyped("pages_visited", "INT64", [2.5]), "integers"),
        (retyped("industry", "BYTES", [3]), "strings"),
        (retyped("industry", "BOOL", [True]), "datatype BOOL"),
        (unequal(), "same number of rows"),
        (columns([LEAD_ROW], parameters={"top_k": 2}), "top_k"),
    ],
)
async def test_a_bad_tabular_request_is_400_naming_the_problem(
    served: Any, body: dict[str, Any], fragment: str
) -> None:
    svc, _, client = served
    response = await client.post(infer_url(LEAD), json=body, headers=AUTH)
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert await svc.flush() == []


# ------------------------------------------------------------------ explain: tabular


async def test_tabular_attributions_sum_to_the_move_from_the_baseline_lead(served: Any) -> None:
    svc, models, client = served
    rows = [LEAD_ROW, {**LEAD_ROW, "pages_visited": 4, "industry": "retail"}]
    response = await client.post(explain_url(LEAD), json=columns(rows), headers=AUTH)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_version"] == "1" and "note" not in answer
    baseline = models[LEAD]._score(LeadModel.BASELINE)
    for row, explanation in zip(rows, answer["explanations"], strict=True):
        attributions = explanation["attributions"]
        assert set(attributions) == set(LeadModel.features)
        assert explanation["score"] == pytest.approx(models[LEAD]._score(row))
        assert sum(attributions.values()) == pytest.approx(explanation["score"] - baseline)
    second = answer["explanations"][1]["attributions"]
    assert second["pages_visited"] == 0.0 and second["industry"] == 0.0  # at the baseline
    assert answer["explanations"][0]["attributions"]["industry"] == pytest.approx(0.1)
    assert await svc.flush() == []  # an explanation is not a prediction


async def test_a_real_tabular_version_is_served_and_explained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    score_records_in_batchers(monkeypatch)
    rows = synthetic.generate_leads(synthetic.LeadConfig(seed=3, count=700))
    grid = {"learning_rate": (0.1,), "max_depth": (2,), "n_estimators": (30,)}
    fitted, _ = select_and_fit_tabular(rows.iloc[:500], rows.iloc[500:], grid=grid, seed=0)
    scorer = TabularScorer(fitted, LEAD_SCORE_SPEC.features)
    lead = {name: rows.iloc[0][name] for name in LEAD_SCORE_SPEC.features}
    lead = {
        k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in lead.items()
    }

    svc = await started({LEAD: scorer}, serve=[ModelKey.parse("lead-score/en-us")])
    async with http(svc) as client:
        meta = (await client.get(f"/v2/models/{LEAD}", headers=AUTH)).json()
        body = columns([lead])
        for column in body["inputs"]:
            column["datatype"] = "FP64" if column["name"] in LEAD_SCORE_SPEC.numeric else "BYTES"
        inferred = (await client.post(infer_url(LEAD), json=body, headers=AUTH)).json()
        explained = (await client.post(explain_url(LEAD), json=body, headers=AUTH)).json()
    await svc.models.aclose()
    expected = float(scorer.predict(None, [lead])["score"][0])
    assert inferred["outputs"][0]["data"] == [pytest.approx(expected)]
    (explanation,) = explained["explanations"]
    assert explanation["score"] == pytest.approx(expected)
    assert explanation["attributions"] == pytest.approx(scorer.explain([lead])[0])
    assert [i["datatype"] for i in meta["inputs"]] == ["FP64"] * 4 + ["BYTES"] * 2


# ------------------------------------------------------------------ explain: text


async def test_text_tokens_are_ordered_by_their_effect_on_the_label(
    served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    svc, _, client = served
    caplog.set_level("DEBUG")
    body = {**text_body(["please cancel my invoice bill"]), "id": "x-1"}
    response = await client.post(explain_url(TEXT), json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "x-1" and answer["model_version"] == "1"
    assert "no training examples" in answer["note"]
    (explanation,) = answer["explanations"]
    assert explanation["label"] == "billing"
    assert explanation["nearest"] == [] and explanation["tokens_total"] == 5
    tokens = explanation["tokens"]
    assert [t["token"] for t in tokens] == ["bill", "invoice", "my", "please", "cancel"]
    effects = [t["effect"] for t in tokens]
    assert effects == sorted(effects, reverse=True)
    assert effects[0] > effects[1] > 0  # both billing words carried the label
    assert effects[2] == pytest.approx(0.0)  # "my" weighs nothing
    assert effects[-1] < 0  # "cancel" argued against billing
    assert [t["position"] for t in tokens] == [4, 3, 2, 0, 1]
    assert await svc.flush() == []  # no prediction events for explanations
    assert "invoice" not in caplog.text


async def test_only_the_first_tokens_are_occluded(served: Any) -> None:
    _, models, client = served
    text = " ".join(["bill"] + ["word"] * (MAX_TOKENS + 10))
    response = await client.post(explain_url(TEXT), json=text_body([text]), headers=AUTH)
    (explanation,) = response.json()["explanations"]
    assert explanation["tokens_total"] == MAX_TOKENS + 11
    assert len(explanation["tokens"]) == MAX_TOKENS
    assert explanation["tokens"][0]["token"] == "bill"
    assert models[TEXT].calls == 1  # every variant in one model call


def test_without_probabilities_a_changed_label_loses_all_its_confidence() -> None:
    original = Scored(["billing"], [0.8])
    variants = Scored(["billing", "cancel", "billing"], [0.7, 0.9, 0.8])
    effects = token_effects(original, variants, ["a", "b", "c"])
    assert [(e["token"], round(e["effect"], 6)) for e in effects] == [
        ("b", 0.8),
        ("a", 0.1),
        ("c", 0.0),
    ]


async def test_explain_limits_versions_and_failures(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    svc = await started({TEXT: BrokenModel()}, serve=[ModelKey.parse("intent/en-us")])
    async with http(svc) as client:
        failed = await client.post(
            explain_url(TEXT), json=text_body(["secret words"]), headers=AUTH
        )
        many = text_body(["x"] * (MAX_EXPLAIN_ROWS + 1))
        too_many = await client.post(explain_url(TEXT), json=many, headers=AUTH)
        versioned = f"/v2/models/{TEXT}/versions/9/explain"
        old = await client.post(versioned, json=text_body(["x"]), headers=AUTH)
        no_token = await client.post(explain_url(TEXT), json=text_body(["x"]))
        large = await client.post(explain_url(TEXT), json=text_body(["x" * 5000]), headers=AUTH)
        bad = await client.post(explain_url(TEXT), content=b"{nope", headers=AUTH)
        unknown = await client.post(
            explain_url("sentiment-en-us"), json=text_body(["x"]), headers=AUTH
        )
    await svc.models.aclose()
    assert failed.status_code == 500
    assert failed.json() == {"error": f"{TEXT} v1 failed on this request"}
    assert "secret words" not in caplog.text
    assert too_many.status_code == 422 and str(MAX_EXPLAIN_ROWS) in too_many.json()["error"]
    assert old.status_code == 404 and "v1" in old.json()["error"]
    assert no_token.status_code == 401
    assert large.status_code == 413
    assert bad.status_code == 400 and bad.json()["error"]
    assert unknown.status_code == 404 and "error" in unknown.json()


async def test_the_live_version_can_be_named(served: Any) -> None:
    _, _, client = served
    url = f"/v2/models/{TEXT}/versions/1/explain"
    response = await client.post(url, json=text_body(["bill"]), headers=AUTH)
    assert response.status_code == 200
    assert np.isfinite(response.json()["explanations"][0]["tokens"][0]["effect"])


# ------------------------------------------------------------------ explain: nearest examples


def test_the_example_bank_keeps_a_few_rows_per_label_and_finds_the_closest() -> None:
    from driftloop_common.ml.modeling.pyfunc import ExampleBank

    rng = np.random.default_rng(3)
    labels = ["a"] * 30 + ["b"] * 4 + ["c"] * 12
    vectors = rng.standard_normal((len(labels), 8)).astype(np.float32)
    texts = [f"row {i}" for i in range(len(labels))]
    bank = ExampleBank.sample(texts, vectors, labels, per_label=5, seed=1)
    assert sorted(bank.labels) == ["a"] * 5 + ["b"] * 4 + ["c"] * 5
    assert np.allclose(np.linalg.norm(bank.embeddings.astype(np.float32), axis=1), 1, atol=1e-3)
    assert bank.labels == ExampleBank.sample(texts, vectors, labels, 5, seed=1).labels  # seeded
    kept = int(texts.index(bank.texts[7]))
    [(first, similarity), *rest] = bank.nearest(vectors[kept] * 3.0, k=3)  # scale-free
    assert bank.texts[first] == texts[kept] and similarity == pytest.approx(1.0, abs=1e-3)
    assert len(rest) == 2 and all(s <= similarity for _, s in rest)


class ExampleModel(KeywordModel):
    """A `TextClassifier`-shaped fake that keeps an example bank: a word's "embedding" is a
    one-hot of the first keyword it holds."""

    VOCABULARY = ("bill", "invoice", "cancel", "stop", "please")

    def __init__(self) -> None:
        from driftloop_common.ml.modeling.pyfunc import ExampleBank

        super().__init__()
        texts = ["my bill is wrong", "another invoice", "cancel it", "stop now"]
        labels = ["billing", "billing", "cancel", "cancel"]
        self.examples = ExampleBank.sample(texts, self._encode(texts), labels, per_label=5)

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.VOCABULARY)), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                if word in self.VOCABULARY:
                    out[row, self.VOCABULARY.index(word)] += 1.0
        return out + 1e-3

    def nearest_examples(self, texts: list[str], k: int = 5) -> list[list[tuple[int, float]]]:
        assert self.examples is not None
        return [self.examples.nearest(v, k) for v in self._encode(texts)]


@pytest.mark.parametrize("show_texts", [False, True])
async def test_text_explanations_name_the_nearest_training_examples(show_texts: bool) -> None:
    svc = await started({TEXT: ExampleModel()}, explain_texts=show_texts)
    async with http(svc) as client:
        response = await client.post(
            explain_url(TEXT), json=text_body(["cancel please"]), headers=AUTH
        )
    await svc.models.aclose()
    answer = response.json()
    assert response.status_code == 200 and "note" not in answer
    nearest = answer["explanations"][0]["nearest"]
    assert [n["label"] for n in nearest][:1] == ["cancel"] and len(nearest) == 4
    assert nearest[0]["similarity"] >= nearest[-1]["similarity"]
    assert ("text" in nearest[0]) is show_texts  # other customers' words only when asked
    if show_texts:
        assert nearest[0]["text"] == "cancel it"
