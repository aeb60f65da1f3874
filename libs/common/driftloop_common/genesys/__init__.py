"""The Genesys Cloud adapter: the only layer that speaks Genesys's HTTP API.

- `client`: `GenesysClient` (OAuth client credentials, retries, concurrency cap, metrics)
  and its typed calls: the NLU domain API and the integration guide's model-config API.
- `models`: the bodies, camelCase on the wire.
- `batching`: request bodies under the size limit (`batch_utterances`).
- `regions`: a region's API and login hosts.

httpx and tenacity stay inside this package; callers see driftloop's error tree only
(`RetryableError`, `GenesysApiError`, `PermanentError`, `ConfigError`).
"""

from driftloop_common.contracts.errors import GenesysApiError
from driftloop_common.genesys.batching import (
    DEFAULT_BODY_LIMIT,
    batch_utterances,
    body_size,
    encode_body,
)
from driftloop_common.genesys.client import (
    GenesysClient,
    GenesysClientOptions,
    GenesysMetrics,
    backoff_delay,
)
from driftloop_common.genesys.models import (
    ConfusionCell,
    ConfusionRow,
    DetectedIntent,
    EvaluationStatus,
    MlModel,
    NluDomainRef,
    NluDomainVersion,
    NluIntent,
    NluReport,
    NluSegment,
    NluSegmentEntity,
    NluTrainResponse,
    NluUtterance,
    ReportMetric,
    ReportSummary,
    TrainingStatus,
)
from driftloop_common.genesys.regions import REGIONS, RegionHosts, base_urls, region_hosts

__all__ = [
    "DEFAULT_BODY_LIMIT",
    "REGIONS",
    "ConfusionCell",
    "ConfusionRow",
    "DetectedIntent",
    "EvaluationStatus",
    "GenesysApiError",
    "GenesysClient",
    "GenesysClientOptions",
    "GenesysMetrics",
    "MlModel",
    "NluDomainRef",
    "NluDomainVersion",
    "NluIntent",
    "NluReport",
    "NluSegment",
    "NluSegmentEntity",
    "NluTrainResponse",
    "NluUtterance",
    "RegionHosts",
    "ReportMetric",
    "ReportSummary",
    "TrainingStatus",
    "backoff_delay",
    "base_urls",
    "batch_utterances",
    "body_size",
    "encode_body",
    "region_hosts",
]
