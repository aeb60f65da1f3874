"""Genesys Cloud regions: the region's host → its API and login base URLs.

A region is named by its host (`mypurecloud.com`, `euw2.pure.cloud`…), as Genesys's SDKs
and `GenesysSettings.region` do; the AWS region it runs in (`us-east-1`…) is accepted too.
The API lives at `https://api.<host>`, the OAuth token endpoint at `https://login.<host>`.
"""

from __future__ import annotations

from dataclasses import dataclass

from driftloop_common.contracts.errors import ConfigError
from driftloop_common.runtime.settings import GenesysSettings

# region host → the AWS region it runs in
REGIONS: dict[str, str] = {
    "mypurecloud.com": "us-east-1",
    "use2.us-gov-pure.cloud": "us-east-2",
    "usw2.pure.cloud": "us-west-2",
    "cac1.pure.cloud": "ca-central-1",
    "sae1.pure.cloud": "sa-east-1",
    "mypurecloud.ie": "eu-west-1",
    "euw2.pure.cloud": "eu-west-2",
    "mypurecloud.de": "eu-central-1",
    "euc2.pure.cloud": "eu-central-2",
    "mec1.pure.cloud": "me-central-1",
    "aps1.pure.cloud": "ap-south-1",
    "mypurecloud.jp": "ap-northeast-1",
    "apne2.pure.cloud": "ap-northeast-2",
    "apne3.pure.cloud": "ap-northeast-3",
    "mypurecloud.com.au": "ap-southeast-2",
}
_BY_AWS_REGION = {aws: host for host, aws in REGIONS.items()}


@dataclass(frozen=True)
class RegionHosts:
    """One region's hosts."""

    region: str  # the region's host, e.g. `mypurecloud.ie`

    @property
    def api_base_url(self) -> str:
        return f"https://api.{self.region}"

    @property
    def login_base_url(self) -> str:
        return f"https://login.{self.region}"


def region_hosts(region: str) -> RegionHosts:
    """The hosts of `region` (its host or its AWS region); an unknown one is a `ConfigError`."""
    name = region.strip().lower()
    name = _BY_AWS_REGION.get(name, name)
    if name not in REGIONS:
        known = ", ".join(sorted(REGIONS))
        raise ConfigError(f"unknown Genesys Cloud region {region!r}: one of {known}")
    return RegionHosts(name)


def base_urls(settings: GenesysSettings) -> tuple[str, str]:
    """`(api, login)` base URLs, without a trailing slash.

    `api_base_url` and `login_base_url` override the region's hosts. When only the API's is
    set, the login host is the same one: the simulator serves `/oauth/token` and `/api/v2/…`
    on one host. Without overrides, the region must be a known one.
    """
    api = settings.api_base_url
    login = settings.login_base_url or api
    if api is None or login is None:
        hosts = region_hosts(settings.region)
        api = api or hosts.api_base_url
        login = login or hosts.login_base_url
    return api.rstrip("/"), login.rstrip("/")
