"""The predictor's Genesys Architect data action (`/genesys/data-action/{name}`) with fake
models, and the contracts in `deploy/genesys/`: their schemas, their request template
rendered against the real endpoint, their translation map applied to its answer."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from driftloop_common.contracts.events import ModelKey, PredictionEvent
from driftloop_common.ml.modeling.pyfunc import TabularScorer
from driftloop_common.runtime.metrics import LoopMetrics
from driftloop_predictor import models as served_models
from driftloop_predictor.models import StagedVersion
from driftloop_predictor.scoring import is_tabular, score_records
from driftloop_predictor.service import PredictorService
from driftloop_predictor.settings import PredictorSettings

ROOT = Path(__file__).resolve().parents[2]
GENESYS = ROOT / "deploy" / "genesys"
TEXT = "intent-en-us"
LEAD = "lead-score-en-us"
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# ------------------------------------------------------------------ fakes


class KeywordModel:
    """A `TextClassifier`-shaped fake: softmax over keyword weights per label."""

    labels = ("billing", "cancel", "other")
    WEIGHTS: ClassVar[dict[str, dict[str, float]]] = {
        "billing": {"bill": 3.0, "invoice": 1.5},
        "cancel": {"cancel": 3.0, "stop": 1.0},
        "other": {"please": 0.5},
    }

    def __init__(self) -> None:
        self.calls = 0

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        words = [text.lower().split() for text in texts]
        weights = [self.WEIGHTS[label] for label in self.labels]
        rows = [[sum(wt.get(w, 0.0) for w in ws) for wt in weights] for ws in words]
        logits = np.array(rows, dtype=float).reshape(len(texts), len(self.labels))
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


class LeadModel:
    """A `TabularScorer`-shaped fake: a linear score, and attributions against baselines
    (exact for a linear model: they sum to score − score of the baseline lead)."""

    features = (
        "company_size",
        "pages_visited",
        "time_on_site_s",
        "prior_contacts",
        "industry",
        "campaign_source",
    )
    BASELINE: ClassVar[dict[str, Any]] = {
        "company_size": 50,
        "pages_visited": 4,
        "time_on_site_s": 120.0,
        "prior_contacts": 1,
        "industry": "retail",
        "campaign_source": "email",
    }

    def _score(self, row: dict[str, Any]) -> float:
        return (
            0.05
            + 0.002 * row["company_size"]
            + 0.03 * row["pages_visited"]
            + 0.0005 * row["time_on_site_s"]
            + 0.02 * row["prior_contacts"]
            + (0.1 if row["industry"] == "software" else 0.0)
            + (0.05 if row["campaign_source"] == "webinar" else 0.0)
        )

    def predict(self, context: Any, records: list[dict[str, Any]]) -> pd.DataFrame:
        for row in records:
            if missing := [f for f in self.features if f not in row]:
                raise ValueError(f"input lacks feature columns {missing}")
        return pd.DataFrame({"score": [self._score(row) for row in records]})

    def explain(self, records: list[dict[str, Any]]) -> list[dict[str, float]]:
        return [
            {f: self._score(row) - self._score({**row, f: self.BASELINE[f]}) for f in self.features}
            for row in records
        ]


class BrokenModel(KeywordModel):
    def predict_proba(self, texts: list[str]) -> np.ndarray:
        raise ValueError(f"cannot score {texts}")


class Loader:
    """Version 1 of each registered model is champion; nothing staged."""

    def __init__(self, models: dict[str, Any], champion: bool = True) -> None:
        self.models = models
        self.champion_version = 1 if champion else None

    def champion(self, name: str) -> int | None:
        return self.champion_version if name in self.models else None

    def staged(self, name: str) -> StagedVersion | None:
        return None

    def load(self, name: str, version: int) -> Any:
        return self.models[name]


LEAD_ROW = {
    "company_size": 200,
    "pages_visited": 9,
    "time_on_site_s": 300.5,
    "prior_contacts": 2,
    "industry": "software",
    "campaign_source": "webinar",
}


def settings(**overrides: Any) -> PredictorSettings:
    values: dict[str, Any] = {
        "api_token": SecretStr(TOKEN),
        "max_body_bytes": 4096,
        "max_batch": 8,
        "batch_wait_ms": 1.0,
        "serve": [ModelKey.parse("intent/en-us"), ModelKey.parse("lead-score/en-us")],
        **overrides,
    }
    return PredictorSettings(_env_file=None, **values)  # type: ignore[call-arg]


def score_records_in_batchers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stands in for the one line of `ServedModels` that picks a version's score function
    by model type (`score_records` for tabular types) until it is there: the batcher of a
    `LeadModel` or a `TabularScorer` scores records."""
    text_scoring = served_models.score_text

    def by_model(model: Any, items: list[Any]) -> Any:
        tabular = isinstance(model, LeadModel | TabularScorer)
        return (score_records if tabular else text_scoring)(model, items)

    assert is_tabular(ModelKey.parse("lead-score/en-us").model_type)
    monkeypatch.setattr(served_models, "score_text", by_model)


async def started(models: dict[str, Any], **overrides: Any) -> PredictorService:
    svc = PredictorService(settings(**overrides), Loader(models), LoopMetrics("predictor"))
    await svc.on_start()
    return svc


def http(svc: PredictorService) -> httpx.AsyncClient:
    app = FastAPI()
    routes = svc.routes()
    assert routes is not None
    app.include_router(routes)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://predictor")


Served = tuple[PredictorService, dict[str, Any], httpx.AsyncClient]


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    score_records_in_batchers(monkeypatch)
    models = {TEXT: KeywordModel(), LEAD: LeadModel()}
    svc = await started(models)
    async with http(svc) as client:
        yield svc, models, client
    await svc.models.aclose()


def action_url(name: str) -> str:
    return f"/genesys/data-action/{name}"


# ------------------------------------------------------------------ the route


async def test_a_text_model_answers_flat_json_and_publishes_a_prediction(served: Any) -> None:
    svc, _, client = served
    body = {"text": "where is my bill", "conversationId": "c-7"}
    response = await client.post(action_url(TEXT), json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"label", "confidence", "modelVersion", "modelName"}
    assert answer["label"] == "billing"
    assert answer["modelVersion"] == "1" and answer["modelName"] == TEXT
    assert 0.5 < answer["confidence"] <= 1.0
    (event,) = await svc.flush()
    assert isinstance(event, PredictionEvent)
    assert event.payload.label == "billing"
    assert event.payload.conversation_id == "c-7"
    assert b"where is my bill" not in event.to_bytes()


async def test_a_tabular_model_answers_its_score(served: Any) -> None:
    svc, models, client = served
    body = {**LEAD_ROW, "conversationId": "c-8", "unrelated": [1, 2]}
    response = await client.post(action_url(LEAD), json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = models[LEAD]._score(LEAD_ROW)
    assert answer == {
        "label": "score",
        "confidence": pytest.approx(min(expected, 1.0)),
        "score": pytest.approx(expected),
        "modelVersion": "1",
        "modelName": LEAD,
    }
    (event,) = await svc.flush()
    assert isinstance(event, PredictionEvent)
    assert str(event.model_key) == "lead-score/en-us"
    assert event.payload.conversation_id == "c-8"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"conversationId": "c-1"}, "'text'"),
        ({"text": "   "}, "empty"),
        ({"text": 7}, "string"),
        ({"text": "bill", "conversationId": 5}, "conversationId"),
        (["bill"], "object"),
    ],
)
async def test_a_bad_text_body_is_400_and_scores_nothing(
    served: Any, body: Any, fragment: str
) -> None:
    svc, models, client = served
    response = await client.post(action_url(TEXT), json=body, headers=AUTH)
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert models[TEXT].calls == 0
    assert await svc.flush() == []


async def test_not_json_is_400(served: Any) -> None:
    _, _, client = served
    response = await client.post(action_url(TEXT), content=b"{nope", headers=AUTH)
    assert response.status_code == 400 and response.json() == {"error": "the body is not JSON"}


async def test_a_missing_or_malformed_feature_is_400_naming_it(served: Any) -> None:
    _, _, client = served
    missing = {k: v for k, v in LEAD_ROW.items() if k != "industry"}
    response = await client.post(action_url(LEAD), json=missing, headers=AUTH)
    assert response.status_code == 400 and "industry" in response.json()["error"]
    nested = {**LEAD_ROW, "pages_visited": {"n": 3}}
    response = await client.post(action_url(LEAD), json=nested, headers=AUTH)
    assert response.status_code == 400 and "pages_visited" in response.json()["error"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
async def test_the_token_is_required(served: Any, headers: dict[str, str]) -> None:
    _, models, client = served
    response = await client.post(action_url(TEXT), json={"text": "bill"}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "missing or wrong bearer token"}
    assert models[TEXT].calls == 0


async def test_an_oversized_body_is_413(served: Any) -> None:
    _, models, client = served
    response = await client.post(action_url(TEXT), json={"text": "x" * 5000}, headers=AUTH)
    assert response.status_code == 413 and "4096 bytes" in response.json()["error"]
    assert models[TEXT].calls == 0


async def test_an_unknown_model_is_404_and_one_not_loaded_503() -> None:
    svc = PredictorService(settings(), Loader({}, champion=False), LoopMetrics("predictor"))
    await svc.on_start()
    async with http(svc) as client:
        other = await client.post(action_url("sentiment-en-us"), json={"text": "x"}, headers=AUTH)
        waiting = await client.post(action_url(TEXT), json={"text": "x"}, headers=AUTH)
    assert other.status_code == 404 and "error" in other.json()
    assert waiting.status_code == 503 and "not loaded" in waiting.json()["error"]


async def test_a_failing_model_is_500_without_the_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    svc = await started({TEXT: BrokenModel()}, serve=[ModelKey.parse("intent/en-us")])
    async with http(svc) as client:
        response = await client.post(action_url(TEXT), json={"text": "secret words"}, headers=AUTH)
    await svc.models.aclose()
    assert response.status_code == 500
    assert response.json() == {"error": f"{TEXT} v1 failed on this request"}
    assert "secret words" not in caplog.text
    assert await svc.flush() == []


# ------------------------------------------------------------------ the contracts Genesys imports

ACTIONS = {
    "classify-text.data-action.json": (
        TEXT,
        {"modelName": TEXT, "text": 'my "bill"\nis wrong', "conversationId": "c-1"},
    ),
    "score-lead.data-action.json": (LEAD, {"modelName": LEAD, **LEAD_ROW, "conversationId": "c-2"}),
}

# The JSON Schema (draft-04) keywords the contracts may use, and the checks below know.
KEYWORDS = {"$schema", "title", "description", "type", "properties", "required"}
KEYWORDS |= {"additionalProperties", "items", "enum", "minimum", "maximum", "minLength"}
TYPES = {
    "string": str,
    "number": (int, float),
    "integer": int,
    "boolean": bool,
    "object": dict,
    "array": list,
}


def check_schema(schema: dict[str, Any]) -> None:
    """A well-formed draft-04 schema of the subset the contracts use."""
    assert set(schema) <= KEYWORDS, set(schema) - KEYWORDS
    assert schema["type"] in TYPES
    if schema["type"] == "object":
        properties = schema.get("properties", {})
        assert set(schema.get("required", [])) <= set(properties)
        for sub in properties.values():
            assert set(sub) - {"$schema"} <= KEYWORDS
            check_schema({"type": sub["type"], **sub})


def validate(instance: Any, schema: dict[str, Any]) -> None:
    """`instance` against the subset of `check_schema` (type, required, properties)."""
    kind = TYPES[schema["type"]]
    assert isinstance(instance, kind) and not (
        schema["type"] in {"number", "integer"} and isinstance(instance, bool)
    ), (instance, schema["type"])
    if schema["type"] == "object":
        missing = set(schema.get("required", [])) - set(instance)
        assert not missing, missing
        for name, sub in schema.get("properties", {}).items():
            if name in instance:
                validate(instance[name], sub)


def render(template: str, values: dict[str, Any]) -> str:
    """The Velocity the contracts use: `$esc.jsonString(${input.x})`, `$esc.url(${input.x})`,
    `${input.x}` and `${credentials.x}`."""
    escaped = {
        r"\$esc\.jsonString\(\$\{input\.(\w+)\}\)": lambda v: json.dumps(v)[1:-1],
        r"\$esc\.url\(\$\{input\.(\w+)\}\)": lambda v: urllib.parse.quote(str(v), safe=""),
        r"\$\{input\.(\w+)\}": lambda v: json.dumps(v) if not isinstance(v, str) else v,
    }
    for pattern, encode in escaped.items():
        template = re.sub(pattern, lambda m, e=encode: e(values["input"][m.group(1)]), template)
    template = re.sub(r"\$\{credentials\.(\w+)\}", lambda m: values["credentials"][m[1]], template)
    assert "$" not in template, template
    return template


def json_path(document: Any, path: str) -> Any:
    """A `$.field` / `$.a.b` JSONPath, as the translation maps use."""
    assert re.fullmatch(r"\$(\.\w+)+", path), path
    for part in path[2:].split("."):
        document = document[part]
    return document


def load_action(file: str) -> dict[str, Any]:
    action = json.loads((GENESYS / file).read_text())
    assert action["integrationType"] == "custom-rest-actions"
    assert action["actionType"] == "custom"
    assert set(action["config"]) == {"request", "response"}
    return action


@pytest.mark.parametrize("file", sorted(ACTIONS))
def test_the_contract_schemas_are_json_schema(file: str) -> None:
    contract = load_action(file)["contract"]
    for schema in (contract["input"]["inputSchema"], contract["output"]["successSchema"]):
        assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
        check_schema(schema)
    validate(ACTIONS[file][1], contract["input"]["inputSchema"])


@pytest.mark.parametrize("file", sorted(ACTIONS))
def test_the_contract_schemas_pass_the_draft_04_metaschema(file: str) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    contract = load_action(file)["contract"]
    for schema in (contract["input"]["inputSchema"], contract["output"]["successSchema"]):
        jsonschema.Draft4Validator.check_schema(schema)
    jsonschema.Draft4Validator(contract["input"]["inputSchema"]).validate(ACTIONS[file][1])


@pytest.mark.parametrize("file", sorted(ACTIONS))
async def test_the_action_as_genesys_runs_it_against_the_endpoint(served: Any, file: str) -> None:
    svc, models, client = served
    action = load_action(file)
    name, sample = ACTIONS[file]
    request, response_config = action["config"]["request"], action["config"]["response"]
    values = {"input": sample, "credentials": {"apiToken": TOKEN}}

    url = urllib.parse.urlsplit(render(request["requestUrlTemplate"], values))
    assert url.scheme == "https" and url.path == action_url(name)
    headers = {k: render(v, values) for k, v in request["headers"].items()}
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    body = render(request["requestTemplate"], values)
    assert request["requestType"] == "POST"
    answer = await client.post(url.path, content=body.encode(), headers=headers)
    assert answer.status_code == 200, answer.text

    translation = response_config["translationMap"]
    assert set(translation) == set(response_config["translationMapDefaults"])
    extracted = {field: json_path(answer.json(), path) for field, path in translation.items()}
    output = json.loads(
        re.sub(
            r"\$\{(\w+)\}",
            lambda m: json.dumps(extracted[m[1]]),
            response_config["successTemplate"],
        )
    )
    validate(output, action["contract"]["output"]["successSchema"])
    assert output["modelName"] == name and output["modelVersion"] == "1"
    if name == TEXT:
        assert output["label"] == "billing"
    else:
        assert output["score"] == pytest.approx(models[LEAD]._score(LEAD_ROW))
    properties = action["contract"]["output"]["successSchema"]["properties"]
    for field, default in response_config["translationMapDefaults"].items():
        validate(json.loads(default), properties[field])
    (event,) = await svc.flush()
    assert isinstance(event, PredictionEvent)
    assert event.payload.conversation_id == sample["conversationId"]
