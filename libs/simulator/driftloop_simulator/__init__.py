"""A Genesys Cloud simulator: OAuth, the NLU domain API, the integration guide's
model-config API, rate limits, size limits and switchable faults, in one FastAPI app.

    from driftloop_simulator import SimulatorSettings, create_app
    app = create_app(SimulatorSettings(token_ttl_s=5, training_delay_s=0.5))

`driftloop simulator --port 8089` (or `python -m driftloop_simulator`) serves it.
"""

from driftloop_simulator.app import create_app, serve
from driftloop_simulator.settings import FaultSettings, SimulatorSettings, load_settings

__all__ = ["FaultSettings", "SimulatorSettings", "create_app", "load_settings", "serve"]
