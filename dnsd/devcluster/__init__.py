"""A Kubernetes API-server emulator for development and tests.

`DevCluster` serves core/v1 Namespaces, Services, Pods and Endpoints and
discovery.k8s.io/v1 EndpointSlices over the real REST API (list, watch with
bookmarks and 410 expiry, create, replace, patch, delete), so the official
`kubernetes` client can talk to it unmodified. `DevCluster.faults` injects
outages, errors and broken watch streams.
"""

from .cluster import DevCluster, RequestLog
from .errors import ApiError
from .faults import Faults

__all__ = ["ApiError", "DevCluster", "Faults", "RequestLog"]
