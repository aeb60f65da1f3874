"""Optional full fine-tuning of the MiniLM encoder with a linear head (torch).

Off by default: on 2 CPU cores an epoch over 10k texts takes many minutes, and the frozen
encoder + a tuned head already reaches the published Banking77 level. On a GPU it is
worth trying (`DRIFTLOOP_FINE_TUNE=auto` uses it when CUDA is present). The epoch count is
chosen on validation (the best epoch's weights are kept). The fine-tuned encoder is part of
the version (its weights are the model), so such a version's encoder id differs from the
frozen one and its semantic version is a major bump.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driftloop_common.contracts.events import EncoderInfo
from driftloop_common.ml.encoder import MAX_SEQ_LENGTH, MODEL_ID, model_dir
from driftloop_common.ml.modeling.calibration import apply_temperature
from driftloop_common.ml.modeling.pyfunc import TextClassifier, _texts

FINE_TUNED_ID = f"{MODEL_ID}+fine-tuned"


@dataclass(frozen=True)
class FineTuneConfig:
    epochs: int = 3
    batch_size: int = 32
    encoder_lr: float = 2e-5
    head_lr: float = 1e-3
    max_length: int = 128
    device: str = "auto"  # auto: cuda when available, else cpu
    seed: int = 0


def use_fine_tuning(setting: str) -> bool:
    """`true` / `false` / `auto` (only with a CUDA device)."""
    if setting == "auto":
        import torch

        return bool(torch.cuda.is_available())
    return setting == "true"


class _Labels:
    def __init__(self, labels: list[str]) -> None:
        self.labels = labels


class _Classifier:
    """Encoder + mean pooling + L2 norm + a linear layer (scaled: unit vectors are small)."""

    def __init__(self, encoder: Any, n_labels: int) -> None:
        import torch

        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, n_labels)
        self.scale = 20.0

    def parameters(self) -> list[Any]:
        return [*self.encoder.parameters(), *self.head.parameters()]

    def logits(self, batch: dict[str, Any]) -> Any:
        import torch

        hidden = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self.head(torch.nn.functional.normalize(mean, dim=1)) * self.scale


def _offline() -> None:
    """The weights come from the package or the version: never the Hub, and no tqdm bars
    in service logs."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _batches(tokenizer: Any, texts: list[str], size: int, max_length: int, device: str):
    for start in range(0, len(texts), size):
        batch = tokenizer(
            texts[start : start + size],
            padding=True,
            truncation=True,
            max_length=min(max_length, MAX_SEQ_LENGTH),
            return_tensors="pt",
        )
        yield start, {k: v.to(device) for k, v in batch.items()}


def _proba(model: _Classifier, tokenizer: Any, texts: list[str], config: FineTuneConfig) -> Any:
    import torch

    device = _device(config.device)
    model.encoder.eval()
    out = []
    with torch.inference_mode():
        for _, batch in _batches(tokenizer, texts, 128, config.max_length, device):
            out.append(torch.softmax(model.logits(batch), dim=1).float().cpu().numpy())
    model.encoder.train()
    return np.vstack(out) if out else np.zeros((0, model.head.out_features), np.float32)


@dataclass
class FineTuned:
    folder: Path  # encoder weights + tokenizer + head.pt, to log with the version
    labels: list[str]
    validation_proba: np.ndarray
    epochs: int
    history: list[dict[str, float]]


def fine_tune(
    train_texts: list[str],
    train_labels: np.ndarray,
    validation_texts: list[str],
    validation_labels: np.ndarray,
    config: FineTuneConfig,
    progress: Callable[[str], None] = lambda _: None,
) -> FineTuned:
    """Fine-tune; keep the epoch with the best validation macro-F1."""
    import torch
    from sklearn.metrics import f1_score
    from transformers import AutoModel, AutoTokenizer

    _offline()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = _device(config.device)
    labels = sorted({str(x) for x in train_labels})
    index = {label: i for i, label in enumerate(labels)}
    y = torch.tensor([index[str(x)] for x in train_labels])
    tokenizer = AutoTokenizer.from_pretrained(model_dir(), local_files_only=True)
    encoder = AutoModel.from_pretrained(model_dir(), local_files_only=True).to(device)
    model = _Classifier(encoder, len(labels))
    model.head.to(device)
    optimizer = torch.optim.AdamW(
        [
            {"params": list(encoder.parameters()), "lr": config.encoder_lr},
            {"params": list(model.head.parameters()), "lr": config.head_lr},
        ]
    )
    encoder.train()
    best: tuple[float, int, Any, Any, np.ndarray] | None = None
    history = []
    for epoch in range(1, config.epochs + 1):
        order = rng.permutation(len(train_texts))
        texts = [train_texts[i] for i in order]
        losses = []
        batches = _batches(tokenizer, texts, config.batch_size, config.max_length, device)
        for start, batch in batches:
            target = y[order[start : start + config.batch_size]].to(device)
            loss = torch.nn.functional.cross_entropy(model.logits(batch), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        proba = _proba(model, tokenizer, validation_texts, config)
        predicted = np.asarray(labels, dtype=object)[proba.argmax(axis=1)]
        f1 = float(f1_score(validation_labels.astype(str), predicted, average="macro"))
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "validation_f1": f1})
        progress(f"fine-tuning epoch {epoch}/{config.epochs}: validation macro-F1 {f1:.4f}")
        if best is None or f1 > best[0]:
            best = (
                f1,
                epoch,
                copy.deepcopy(encoder.state_dict()),
                copy.deepcopy(model.head.state_dict()),
                proba,
            )
    assert best is not None
    _, epoch, encoder_state, head_state, proba = best
    encoder.load_state_dict(encoder_state)
    folder = Path(tempfile.mkdtemp(prefix="driftloop-finetune-"))
    encoder.to("cpu").save_pretrained(folder / "encoder")
    tokenizer.save_pretrained(folder / "encoder")
    torch.save({"head": head_state, "labels": labels, "scale": model.scale}, folder / "head.pt")
    return FineTuned(folder, labels, proba, epoch, history)


class FineTunedClassifier(TextClassifier):
    """A version whose encoder is its own fine-tuned weights (artifact `fine_tuned`)."""

    def __init__(self, labels: list[str], max_length: int = 128) -> None:
        super().__init__(_Labels(labels), EncoderInfo(id=FINE_TUNED_ID, precision="fp32"))
        self.max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_model"] = state["_tokenizer"] = None
        return state

    def load_context(self, context: Any) -> None:
        self._load(Path(context.artifacts["fine_tuned"]))

    def _load(self, folder: Path) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        _offline()
        saved = torch.load(folder / "head.pt", map_location="cpu")
        encoder = AutoModel.from_pretrained(folder / "encoder", local_files_only=True)
        model = _Classifier(encoder, len(saved["labels"]))
        model.head.load_state_dict(saved["head"])
        model.scale = saved["scale"]
        encoder.eval()
        self._model = model
        self._tokenizer = AutoTokenizer.from_pretrained(folder / "encoder", local_files_only=True)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("load this model with mlflow.pyfunc.load_model")
        proba = _proba(self._model, self._tokenizer, texts, FineTuneConfig(device="cpu"))
        return apply_temperature(proba, self.temperature)

    def predict_examples_proba(self, examples: Any) -> np.ndarray:
        return self.predict_proba(list(examples.texts))  # its own encoder, from the text

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return self._frame(self.predict_proba(_texts(model_input)))
