"""The text trainer's default head on Banking77: above the literature without fine-tuning.

Published full-data accuracy is about 93–94 %; frozen all-MiniLM-L6-v2 + logistic
regression reaches 92.9–93.0 % here. The issue's bar for the default head is 93.5 % test
accuracy with everything chosen on a validation split of train.csv. Measured
(`bench/bench_banking77.py`, docs/benchmarks.md): 93.67 % accuracy, 93.65 % macro-F1 with
this split (seed 0); 93.67–93.99 % over the validation splits of seeds 0–4. The margin at
seed 0 is 5 test rows: the head is deterministic (a converged logistic regression, seeded
liblinear), so this holds run to run; a different BLAS or scikit-learn could move it.

Cost: the head fits in ~20 s on 2 cores; embedding the 13k texts takes ~60 s, once per
session (the `embed` cache is shared with the drift tests, which embed the same texts).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

from driftloop_common.ml.modeling.text_head import TextExamples, select_and_fit
from tests.realdata import BANKING77, EmbeddingCache, banking77, missing

SKIP_REASON = missing(BANKING77)
pytestmark = [
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
    pytest.mark.timeout(600),  # embeds ~13k texts unless the session already has them
]


def test_the_default_head_beats_the_literature_on_banking77(embed: EmbeddingCache) -> None:
    train, test = banking77("train"), banking77("test")
    x_train, x_test = embed(train["text"].tolist()), embed(test["text"].tolist())
    labels = train["category"].to_numpy(dtype=object)
    fit_rows, val_rows = train_test_split(
        np.arange(len(train)), test_size=0.2, stratify=labels, random_state=0
    )

    def rows(idx: np.ndarray) -> TextExamples:
        return TextExamples([train["text"].iloc[i] for i in idx], x_train[idx], labels[idx])

    head, selection = select_and_fit(rows(fit_rows), rows(val_rows), seed=0)
    pred = head.predict(TextExamples(test["text"].tolist(), x_test))
    truth = test["category"].to_numpy(dtype=object)

    assert head.trained_rows == len(train)
    assert selection.fit_rows == len(fit_rows)
    accuracy, macro_f1 = accuracy_score(truth, pred), f1_score(truth, pred, average="macro")
    assert accuracy >= 0.935, f"test accuracy {accuracy:.4f}, chose {selection.params}"
    assert macro_f1 >= 0.935, f"test macro-F1 {macro_f1:.4f}, chose {selection.params}"
