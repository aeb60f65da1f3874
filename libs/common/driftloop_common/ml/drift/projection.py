"""Project embeddings onto the baseline's principal components before binning.

PSI per raw MiniLM dimension mostly measures noise in 384 correlated coordinates; the
leading principal components of the baseline carry the variance that moves when the
traffic changes. `components=None` keeps enough to explain `variance` (95 %), capped at
`max_components`; `raw=True` keeps the raw dimensions (identity projection).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Projection:
    mean: NDArray[np.float32]  # (dim,)
    components: NDArray[np.float32]  # (k, dim): rows are unit principal axes, or identity
    explained_variance_ratio: float

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(
        cls,
        x: NDArray[np.floating],
        *,
        variance: float = 0.95,
        max_components: int = 128,
        components: int | None = None,
        raw: bool = False,
    ) -> Projection:
        x = np.asarray(x, dtype=np.float64)
        dim = x.shape[1]
        if raw:
            return cls(np.zeros(dim, np.float32), np.eye(dim, dtype=np.float32), 1.0)
        mean = x.mean(axis=0)
        centered = x - mean
        covariance = centered.T @ centered / max(x.shape[0] - 1, 1)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues = np.clip(eigenvalues[order], 0.0, None)
        eigenvectors = eigenvectors[:, order]
        ratio = np.cumsum(eigenvalues) / eigenvalues.sum()
        if components is None:
            components = int(np.searchsorted(ratio, variance) + 1)
        k = max(1, min(components, max_components, dim))
        return cls(
            mean=mean.astype(np.float32),
            components=eigenvectors[:, :k].T.astype(np.float32),
            explained_variance_ratio=float(ratio[k - 1]),
        )

    def transform(self, x: NDArray[np.floating]) -> NDArray[np.float32]:
        x = np.asarray(x, dtype=np.float32)
        return (x - self.mean) @ self.components.T
