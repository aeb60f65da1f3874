"""Synthetic embedded history for training tests: generated and embedded once, written into
any store under any language tag (so each test owns its model keys)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from driftloop_common.contracts.events import EncoderInfo, InteractionEmbedded
from driftloop_common.ml.encoder import TextEncoder
from driftloop_common.storage.interactions import InteractionStore
from driftloop_synthetic import GeneratorConfig, Interaction, generate


@dataclass(frozen=True)
class SyntheticHistory:
    interactions: list[Interaction]
    vectors: np.ndarray
    encoder: EncoderInfo
    end: datetime

    @classmethod
    def build(cls, *, count: int, days: float, seed: int = 3) -> SyntheticHistory:
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        config = GeneratorConfig(
            seed=seed,
            count=count,
            start=end - timedelta(days=days),
            end=end,
            spanish_share=0.0,
        )
        interactions = list(generate(config))
        encoder = TextEncoder().load()
        vectors = encoder.encode([i.text for i in interactions])
        return cls(interactions, vectors, encoder.info, end)

    def write(
        self,
        store_url: str,
        language: str,
        *,
        shuffle_labels: bool = False,
        unlabelled_last: timedelta = timedelta(hours=12),
        seed: int = 0,
    ) -> int:
        """Store every interaction as `language`; the last `unlabelled_last` without labels
        (wrap-up not in yet); `shuffle_labels` makes a worthless training set."""
        labels = [i.intent for i in self.interactions]
        if shuffle_labels:
            labels = list(np.random.default_rng(seed).permutation(labels))
        cutoff = self.end - unlabelled_last
        rows = [
            InteractionEmbedded(
                conversation_id=f"{language}-{i.conversation_id}",
                language=language,
                completed_at=i.completed_at,
                embedding=vector.tolist(),
                encoder=self.encoder,
                label=label if i.completed_at < cutoff else None,
                text=i.text,
            )
            for i, vector, label in zip(self.interactions, self.vectors, labels, strict=True)
        ]
        InteractionStore(store_url).append(rows)
        return len(rows)
