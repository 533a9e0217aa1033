"""Parsing of the ``kubernetes`` directive (coredns_kubernetes.md §1-§2), sans-IO:
``dnsd.corefile.parse`` + ``Runtime.build`` with no socket and no API server.

Every bad value and unknown option must fail with ``Corefile:N - Error during parsing: ...``
pointing at the offending line.
"""

from __future__ import annotations

import logging

import pytest

from dnsd.corefile import CorefileError, parse
from dnsd.plugins.kubernetes.setup import Config
from dnsd.serve.runtime import Runtime

ARGS = "Wrong argument count or unexpected line ending after"


def build(text: str) -> Runtime:
    return Runtime.build(parse(text))


def k8s_config(text: str) -> Config:
    runtime = build(text)
    plugin = next(p for _, plugins in runtime.blocks for p in plugins if p.name == "kubernetes")
    return plugin.cfg  # type: ignore[attr-defined, no-any-return]


def option_block(*lines: str) -> str:
    """A Corefile whose kubernetes block holds ``lines``; the first is on line 4."""
    body = "".join(f"        {line}\n" for line in lines)
    return (
        "# a comment on line 1\n"
        ".:1053 {\n"
        "    kubernetes cluster.local in-addr.arpa {\n"
        f"{body}"
        "    }\n"
        "}\n"
    )


def error_of(text: str) -> str:
    with pytest.raises(CorefileError) as info:
        build(text)
    return str(info.value)


@pytest.mark.parametrize(("line", "message"), [
    ("foo bar", "unknown property 'foo'"),
    ("endpoints http://127.0.0.1:8080", "unknown property 'endpoints'"),
    ("endpoint", f"{ARGS} 'endpoint'"),
    ("endpoint 127.0.0.1:6443", "endpoint must be an http:// or https:// URL, got '127.0.0.1:6443'"),
    ("tls", f"{ARGS} 'tls'"),
    ("tls cert key", f"{ARGS} 'tls'"),
    ("tls cert key ca extra", f"{ARGS} 'tls'"),
    ("kubeconfig", f"{ARGS} 'kubeconfig'"),
    ("kubeconfig file context extra", f"{ARGS} 'kubeconfig'"),
    ("apiserver_qps", f"{ARGS} 'apiserver_qps'"),
    ("apiserver_qps 1 2", f"{ARGS} 'apiserver_qps'"),
    ("apiserver_qps fast", "invalid apiserver_qps 'fast'"),
    ("apiserver_qps 1e400", "invalid apiserver_qps '1e400'"),
    ("apiserver_qps -0.5", "apiserver_qps must be >= 0"),
    ("apiserver_burst", f"{ARGS} 'apiserver_burst'"),
    ("apiserver_burst 1.5", "invalid number '1.5'"),
    ("apiserver_burst 1_000", "invalid number '1_000'"),
    ("apiserver_burst -1", "'-1' is out of range [0, inf]"),
    ("apiserver_max_inflight", f"{ARGS} 'apiserver_max_inflight'"),
    ("apiserver_max_inflight many", "invalid number 'many'"),
    ("apiserver_max_inflight -3", "'-3' is out of range [0, inf]"),
    ("namespaces", f"{ARGS} 'namespaces'"),
    ("namespace_labels", f"{ARGS} 'namespace_labels'"),
    ("namespace_labels team in (a", "unable to parse label selector value: 'team in (a'"),
    ("labels", f"{ARGS} 'labels'"),
    ("labels !!", "unable to parse label selector value: '!!'"),
    ("pods", f"{ARGS} 'pods'"),
    ("pods secure", "invalid pods mode 'secure': must be disabled, insecure or verified"),
    ("pods insecure verified", f"{ARGS} 'pods'"),
    ("endpoint_pod_names yes", f"{ARGS} 'endpoint_pod_names'"),
    ("ttl", f"{ARGS} 'ttl'"),
    ("ttl 5 6", f"{ARGS} 'ttl'"),
    ("ttl -1", "'-1' is out of range [0, 3600]"),
    ("ttl 3601", "'3601' is out of range [0, 3600]"),
    ("ttl 5s", "invalid number '5s'"),
    ('ttl " 5"', "invalid number ' 5'"),
    ("noendpoints please", f"{ARGS} 'noendpoints'"),
    ("ignore empty_services", "unable to parse ignore value: 'empty_services'"),
    ("ignore nothing empty_service", "unable to parse ignore value: 'nothing'"),
    ("startup_timeout", f"{ARGS} 'startup_timeout'"),
    ("startup_timeout 5", "invalid duration '5'"),
    ("startup_timeout soon", "invalid duration 'soon'"),
    ("startup_timeout -1s", "duration '-1s' must be at least 0s"),
    ("startup_timeout 1s 2s", f"{ARGS} 'startup_timeout'"),
    ("multicluster clusterset.local", "kubernetes option 'multicluster' is not available yet in dnsd"),
    ("zonal", "kubernetes option 'zonal' is not available yet in dnsd"),
])
def test_bad_option(line: str, message: str) -> None:
    assert error_of(option_block(line)) == f"Corefile:4 - Error during parsing: {message}"


def test_error_points_at_the_bad_line_not_the_first() -> None:
    text = option_block("endpoint http://127.0.0.1:6443", "pods insecure", "ttl 30", "ttl_seconds 30")
    assert error_of(text) == "Corefile:7 - Error during parsing: unknown property 'ttl_seconds'"


def test_duplicate_property() -> None:
    # dnsd rejects a repeated option (CoreDNS would silently let the last one win).
    text = option_block("pods insecure", "ttl 30", "pods verified")
    assert error_of(text) == "Corefile:6 - Error during parsing: duplicate property 'pods'"


def test_namespaces_and_namespace_labels_exclusive() -> None:
    text = option_block("namespaces a b", "namespace_labels team=x")
    assert error_of(text) == ("Corefile:3 - Error during parsing: "
                              "namespaces and namespace_labels cannot both be set")


def test_once_per_server_block() -> None:
    text = ".:1053 {\n    kubernetes cluster.local\n    whoami\n    kubernetes example.local\n}\n"
    assert error_of(text) == ("Corefile:4 - Error during parsing: "
                              "plugin 'kubernetes' can only be used once per server block")


def test_needs_a_forward_zone() -> None:
    text = "in-addr.arpa:1053 {\n    kubernetes\n}\n"
    assert error_of(text) == "Corefile:2 - Error during parsing: non-reverse zone name must be used"
    text = ".:1053 {\n    kubernetes in-addr.arpa 10.0.0.0/8\n}\n"
    assert error_of(text) == "Corefile:2 - Error during parsing: non-reverse zone name must be used"


def test_bad_cidr_zone() -> None:
    text = ".:1053 {\n\n    kubernetes cluster.local 10.0.0.0/33\n}\n"
    assert error_of(text) == "Corefile:3 - Error during parsing: invalid CIDR '10.0.0.0/33'"


def test_defaults() -> None:
    cfg = k8s_config(".:1053 {\n    kubernetes cluster.local in-addr.arpa ip6.arpa\n}\n")
    assert cfg.zones == ["cluster.local.", "in-addr.arpa.", "ip6.arpa."]
    assert cfg.primary_zone == "cluster.local."
    assert (cfg.ttl, cfg.pods, cfg.startup_timeout, cfg.fallthrough) == (5, "disabled", 5.0, None)
    assert (cfg.noendpoints, cfg.ignore_empty_service, cfg.endpoint_pod_names) == (False, False, False)
    assert (cfg.namespaces, cfg.labels, cfg.namespace_labels, cfg.endpoint) == ([], "", "", "")


def test_zones_from_server_block_and_cidrs() -> None:
    cfg = k8s_config("Cluster.Local:1053 10.96.0.0/16:1053 {\n    kubernetes\n}\n")
    assert cfg.zones == ["cluster.local.", "96.10.in-addr.arpa."]
    cfg = k8s_config(".:1053 {\n    kubernetes 10.0.0.0/23 example.local {\n    }\n}\n")
    assert cfg.zones == ["0.0.10.in-addr.arpa.", "1.0.10.in-addr.arpa.", "example.local."]
    assert cfg.primary_zone == "example.local."  # the first non-reverse zone


def test_every_option_accepted() -> None:
    cfg = k8s_config(option_block(
        "endpoint https://10.0.0.1:6443",
        "tls /c.crt /c.key /ca.crt",
        "apiserver_qps 2.5",
        "apiserver_burst 10",
        "apiserver_max_inflight 0",
        "namespaces Default kube-system",
        "labels app in (a,b),tier!=db",
        "pods verified",
        "endpoint_pod_names",
        "ttl 0",
        "noendpoints",
        "fallthrough in-addr.arpa",
        "ignore empty_service",
        "startup_timeout 1m30s",
    ))
    assert cfg.endpoint == "https://10.0.0.1:6443"
    assert cfg.tls == ("/c.crt", "/c.key", "/ca.crt")
    assert (cfg.qps, cfg.burst, cfg.max_inflight) == (2.5, 10, 0)
    assert cfg.namespaces == ["default", "kube-system"]
    assert cfg.labels == "app in (a,b),tier!=db"
    assert (cfg.pods, cfg.endpoint_pod_names, cfg.ttl, cfg.noendpoints) == ("verified", True, 0, True)
    assert cfg.fallthrough == ["in-addr.arpa."]
    assert cfg.ignore_empty_service is True
    assert cfg.startup_timeout == 90.0


@pytest.mark.parametrize(("lines", "field", "value"), [
    (("ttl 3600",), "ttl", 3600),
    (("ttl +7",), "ttl", 7),  # Go's Atoi takes a sign
    (("ignore",), "ignore_empty_service", False),  # no argument: accepted, does nothing
    (("fallthrough",), "fallthrough", []),  # every zone
    (("fallthrough", "fallthrough ip6.arpa"), "fallthrough", ["ip6.arpa."]),  # may repeat
    (("kubeconfig /k.conf",), "kubeconfig", "/k.conf"),
    (("kubeconfig /k.conf ctx",), "context", "ctx"),
    (("namespace_labels team=a, env in (x)",), "namespace_labels", "team=a, env in (x)"),
    (("startup_timeout 0",), "startup_timeout", 0.0),
    (("startup_timeout 250ms",), "startup_timeout", 0.25),
    (("apiserver_qps 0",), "qps", 0.0),
])
def test_option_values(lines: tuple[str, ...], field: str, value: object) -> None:
    assert getattr(k8s_config(option_block(*lines)), field) == value


def test_extra_endpoints_use_the_first_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dnsd"):
        cfg = k8s_config(option_block("endpoint http://127.0.0.1:1 http://127.0.0.1:2"))
    assert cfg.endpoint == "http://127.0.0.1:1"
    assert "using the first one: http://127.0.0.1:1" in caplog.text
