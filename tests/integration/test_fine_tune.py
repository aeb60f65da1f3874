"""The optional fine-tuning path runs on the CPU on a tiny set, end to end: the encoder is
fine-tuned, the version carries its own weights, loads with MLflow and classifies raw text."""

from __future__ import annotations

from datetime import timedelta

import mlflow.pyfunc
import numpy as np
import pytest

from driftloop_common.contracts.events import (
    InteractionEmbedded,
    ModelTrainedEvent,
    TrainingRequested,
    TrainingRequestedEvent,
)
from driftloop_common.ml.modeling.finetune import FINE_TUNED_ID, FineTunedClassifier
from driftloop_common.runtime.settings import MlflowSettings
from driftloop_common.storage.interactions import InteractionStore
from driftloop_common.storage.registry import Tag
from driftloop_trainer.training import Trainer, TrainerConfig
from tests.integration.history import SyntheticHistory

pytestmark = pytest.mark.integration
INTENTS = ("card_lost", "password_reset", "delivery_status")


def test_fine_tuning_on_a_tiny_set_registers_a_self_contained_version(
    mlflow_uri: str, history: SyntheticHistory, fresh_language: str, tmp_path
) -> None:
    rows = [
        (i, v)
        for i, v in zip(history.interactions, history.vectors, strict=True)
        if i.intent in INTENTS
    ][::4]  # a few dozen rows: one CPU epoch in seconds
    store = str(tmp_path / "store")
    InteractionStore(store).append(
        InteractionEmbedded(
            conversation_id=i.conversation_id,
            language=fresh_language,
            completed_at=i.completed_at,
            embedding=v.tolist(),
            encoder=history.encoder,
            label=i.intent,
            text=i.text,
        )
        for i, v in rows
    )
    config = TrainerConfig(
        mlflow=MlflowSettings(tracking_uri=mlflow_uri),
        store_url=store,
        train_days=(90, 20),
        validation_days=(20, 6),
        test_days=(6, 0),
        min_train_rows=10,
        min_validation_rows=3,
        min_test_rows=3,
        fine_tune="true",
        fine_tune_epochs=1,
    )
    request = TrainingRequestedEvent(
        producer="test",
        model_key=f"intent/{fresh_language}",
        payload=TrainingRequested(
            reason="manual", requested_by="test", as_of=history.end + timedelta(hours=1)
        ),
    )
    steps: list[str] = []
    result = Trainer(config).train(request, steps.append)
    assert isinstance(result, ModelTrainedEvent), result
    assert any("fine-tuning epoch 1/1" in step for step in steps)
    assert set(result.payload.labels) == set(INTENTS)

    client = mlflow.MlflowClient(mlflow_uri)
    version = client.get_model_version(result.payload.registered_model, result.payload.version)
    assert version.tags[Tag.ENCODER].startswith(FINE_TUNED_ID)
    mlflow.set_tracking_uri(mlflow_uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}")
    assert isinstance(loaded.unwrap_python_model(), FineTunedClassifier)
    texts = [i.text for i, _ in rows[:5]]
    predicted = loaded.predict({"text": texts})
    assert set(predicted["label"]) <= set(INTENTS)
    assert np.all((predicted["confidence"] > 0) & (predicted["confidence"] <= 1))
