"""dnsd: a CoreDNS-compatible Kubernetes service-discovery DNS server."""

__version__ = "0.1.0"
# The CoreDNS release whose behaviour dnsd follows; reported by -version and build_info.
COREDNS_COMPAT = "1.14.7"
