"""Reading one time window of training or evaluation rows, for either model family."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from driftloop_common.contracts.events import EncoderInfo
from driftloop_common.ml.modeling.splits import Window
from driftloop_common.ml.modeling.text_head import TextExamples
from driftloop_common.storage.features import FeatureTableStore
from driftloop_common.storage.interactions import InteractionStore, embedding_matrix

LEADS_TABLE = "leads"


def text_examples(
    store_url: str,
    language: str,
    window: Window,
    encoder: EncoderInfo,
    *,
    labelled: bool | None = True,
) -> TextExamples:
    """Interactions of `window` with embeddings of exactly `encoder`.

    `labelled`: True → only labelled rows, False → only unlabelled rows, None → all.
    """
    table = InteractionStore(store_url).read(
        language,
        window.start,
        window.end,
        columns=["text", "label", "embedding"],
        encoder=encoder,
        labelled_only=bool(labelled),
    )
    if labelled is False:
        table = table.filter(pc.is_null(table.column("label")))
    labels = np.asarray(table.column("label").to_pylist(), dtype=object)
    texts = ["" if t is None else t for t in table.column("text").to_pylist()]
    return TextExamples(texts, embedding_matrix(table), labels if labelled else None)


def feature_rows(store_url: str, language: str, window: Window, target: str) -> pd.DataFrame:
    """Rows of the lead feature table in `window` that have a target value."""
    frame = FeatureTableStore(store_url, table=LEADS_TABLE).read(language, window.start, window.end)
    return frame[frame[target].notna()].reset_index(drop=True)
