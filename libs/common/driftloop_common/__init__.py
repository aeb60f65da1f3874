"""driftloop_common: what every driftloop service shares, in four layers.

- `contracts`: the wire contracts (events, topics, the error tree). Pydantic only.
- `runtime`: the service loop, the Kafka adapter, the HTTP app, metrics, logs, settings.
- `ml`: the encoder, drift statistics and model families' building blocks.
- `storage`: the interaction store, feature tables and the MLflow registry adapter.

Importing this package, or `contracts`, loads no web or Kafka library: a producer that only
builds events pays for pydantic alone. Services depend on this package, never on each other.
"""

from driftloop_common import contracts
from driftloop_common.contracts import *  # noqa: F403 (the contracts' public names, re-exported)

__all__ = list(contracts.__all__)
