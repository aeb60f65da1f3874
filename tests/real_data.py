"""Where the real, licensed data sets live: `$DRIFTLOOP_REAL_DATA`, else `../shared/data`.

They are not part of the project; tests that use them skip with a clear reason when absent.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("DRIFTLOOP_REAL_DATA", ROOT.parent / "shared" / "data"))
EVENTBRIDGE_EXAMPLES = REAL_DATA / "genesys-eventbridge" / "input"
