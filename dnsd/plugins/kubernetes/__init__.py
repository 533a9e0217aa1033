"""kubernetes: CoreDNS's cluster-zone answers from live watches of the Kubernetes API."""

from dnsd.plugins.kubernetes.plugin import Plugin

__all__ = ["Plugin"]
