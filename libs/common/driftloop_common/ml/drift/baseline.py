"""The drift baseline: a champion's training-data statistics, stored with its model version.

The trainer calls `build_baseline` on the embeddings it trained on and logs the result
as an artifact (`save` writes `baseline.json` + `baseline.npz` into a folder); the
drift-monitor `load`s the live champion's. The baseline is split once, at random:

    reference (70 %)  projection, bin edges and reference counts are fitted here
    holdout   (30 %)  kept as projected rows (at most `max_holdout`): windows drawn from
                      it are independent of the reference, so they show how much a
                      *stable* window of a given size scores by chance (the null)

Bin edges are fitted once per baseline: sorting dominates the cost of a fit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from driftloop_common.contracts.events import EncoderInfo
from driftloop_common.ml.drift.projection import Projection
from driftloop_common.ml.drift.psi import DEFAULT_BINS, bin_counts, fit_edges

FORMAT_VERSION = 1
ARTIFACT_PATH = "drift_baseline"
"""Artifact folder of a model version's run that holds its baseline (see `save`)."""


@dataclass(frozen=True)
class DriftBaseline:
    encoder: EncoderInfo
    projection: Projection
    edges: NDArray[np.float64]  # (bins - 1, k)
    reference_counts: NDArray[np.int64]  # (k, bins)
    holdout: NDArray[np.float32]  # (m, k) projected rows, independent of the reference
    reference_labels: dict[str, int] = field(default_factory=dict)
    holdout_labels: tuple[str, ...] = ()  # aligned with `holdout` where labels were known
    source: str = "unknown"  # e.g. "intent-en-us v7" or "bootstrap: oldest 5000 rows"
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def bins(self) -> int:
        return int(self.reference_counts.shape[1])

    @property
    def n_reference(self) -> int:
        return int(self.reference_counts[0].sum())

    @property
    def label_set(self) -> frozenset[str]:
        return frozenset(self.reference_labels)

    @property
    def fingerprint(self) -> str:
        """Identifies the statistics (for caching null distributions)."""
        digest = hashlib.sha256()
        for array in (self.edges, self.reference_counts, self.holdout):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(json.dumps(self.reference_labels, sort_keys=True).encode())
        return digest.hexdigest()[:16]

    def with_source(self, source: str) -> DriftBaseline:
        return dataclasses.replace(self, source=source)

    # ------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            folder / "baseline.npz",
            mean=self.projection.mean,
            components=self.projection.components,
            edges=self.edges,
            reference_counts=self.reference_counts,
            holdout=self.holdout,
        )
        meta = {
            "format_version": FORMAT_VERSION,
            "encoder": self.encoder.model_dump(),
            "explained_variance_ratio": self.projection.explained_variance_ratio,
            "reference_labels": self.reference_labels,
            "holdout_labels": list(self.holdout_labels),
            "source": self.source,
            "created_at": self.created_at,
            "bins": self.bins,
            "components": self.projection.k,
            "n_reference": self.n_reference,
        }
        (folder / "baseline.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> DriftBaseline:
        folder = Path(folder)
        meta = json.loads((folder / "baseline.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported baseline format {meta.get('format_version')!r}")
        with np.load(folder / "baseline.npz") as arrays:
            projection = Projection(
                mean=arrays["mean"],
                components=arrays["components"],
                explained_variance_ratio=float(meta["explained_variance_ratio"]),
            )
            return cls(
                encoder=EncoderInfo(**meta["encoder"]),
                projection=projection,
                edges=arrays["edges"],
                reference_counts=arrays["reference_counts"],
                holdout=arrays["holdout"],
                reference_labels={k: int(v) for k, v in meta["reference_labels"].items()},
                holdout_labels=tuple(meta["holdout_labels"]),
                source=meta["source"],
                created_at=meta["created_at"],
            )


def build_baseline(
    embeddings: NDArray[np.floating],
    *,
    encoder: EncoderInfo,
    labels: Sequence[str | None] | None = None,
    bins: int = DEFAULT_BINS,
    holdout_share: float = 0.3,
    max_holdout: int = 10_000,
    variance: float = 0.95,
    max_components: int = 128,
    components: int | None = None,
    raw_dimensions: bool = False,
    source: str = "unknown",
    seed: int = 0,
) -> DriftBaseline:
    """Fit a baseline on training embeddings (rows) and their labels (None = unlabelled)."""
    x = np.asarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} embeddings")
    if n < 2 * bins * 5:
        raise ValueError(f"a baseline needs at least {2 * bins * 5} rows, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_holdout = min(max(int(n * holdout_share), bins * 5), max_holdout)
    holdout_idx, reference_idx = order[:n_holdout], order[n_holdout:]
    reference = x[reference_idx]
    projection = Projection.fit(
        reference,
        variance=variance,
        max_components=max_components,
        components=components,
        raw=raw_dimensions,
    )
    projected = projection.transform(reference)
    edges = fit_edges(projected, bins)
    reference_labels: dict[str, int] = {}
    holdout_labels: tuple[str, ...] = ()
    if labels is not None:
        counted = Counter(labels[i] for i in reference_idx if labels[i] is not None)
        reference_labels = dict(sorted(counted.items()))
        holdout_with_label = [i for i in holdout_idx if labels[i] is not None]
        if len(holdout_with_label) == len(holdout_idx):
            holdout_labels = tuple(str(labels[i]) for i in holdout_idx)
    return DriftBaseline(
        encoder=encoder,
        projection=projection,
        edges=edges,
        reference_counts=bin_counts(projected, edges),
        holdout=projection.transform(x[holdout_idx]),
        reference_labels=reference_labels,
        holdout_labels=holdout_labels,
        source=source,
    )
