"""Secondary networks, sans-IO: the network-status parser, the pod conversion and its metric,
the Index/answer path without sockets, and the ``secondary_networks`` Corefile block.

Design: ``/work/shared/reference/secondary_ips.md`` §1.4 (examples A-D), §7.6 (fail closed),
§7.7 (configuration), §7.9 cases 1, 2 and 6 (the IPv6-in-an-IPv4-slice part).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from dnslib import QTYPE

from dnsd import metrics
from dnsd.corefile import CorefileError, parse
from dnsd.plugins.kubernetes import objects
from dnsd.plugins.kubernetes.answer import NXDOMAIN, Options, answer
from dnsd.plugins.kubernetes.index import Index
from dnsd.plugins.kubernetes.secondary import (
    MAX_ANNOTATION_BYTES,
    MAX_ENTRIES,
    MAX_IPS_PER_ENTRY,
    AnnotationError,
    Attachment,
    PodNetworks,
    Secondary,
    network_ref,
    parse_network_status,
)
from dnsd.plugins.kubernetes.setup import SecondaryConfig, parse_secondary
from dnsd.serve.runtime import Runtime
from dnsd.wire.light import to_rr

STATUS = "k8s.v1.cni.cncf.io/network-status"
LEGACY = "k8s.v1.cni.cncf.io/networks-status"
SERVICE_NETWORK = "k8s.v1.cni.cncf.io/service-network"

# ----- the four example annotations of secondary_ips.md §1.4, verbatim where the document
# gives them (Example D's elided device-info is filled in with a PCI device) ----------------

EXAMPLE_A = """[{
    "name": "cbr0",
    "ips": [ "10.244.1.73" ],
    "default": true,
    "dns": {}
},{
    "name": "macvlan-conf",
    "interface": "net1",
    "ips": [ "192.168.1.205" ],
    "mac": "86:1d:96:ff:55:0d",
    "dns": {}
}]"""

EXAMPLE_B = """[{
    "name": "kube-system/k8s-pod-network",
    "ips": [ "10.244.181.69", "fd00:10:244:37:a5bd:7eaf:211e:b544" ],
    "default": true,
    "dns": {}
},{
    "name": "kube-system/macvlan-overlay",
    "interface": "net1",
    "ips": [ "172.18.87.211", "fc00:f853:ccd:e793::888d" ],
    "mac": "9a:a5:04:39:8d:54",
    "dns": {}
}]"""

EXAMPLE_C = """[
  { "name": "namespace-a/cluster-wide-default", "interface": "eth5",
    "ips": ["192.0.2.2/24", "2001:db8::2230/32"], "mac": "02:11:22:33:44:54",
    "default-route": ["192.0.2.1"], "default": true },
  { "name": "namespace-b/some-network", "interface": "eth1",
    "ips": ["192.0.2.2/24", "2001:db8::2234/32"], "mac": "02:11:22:33:44:55",
    "dns": { "nameservers": ["192.0.2.1", "2001:db8:4860::8888"],
             "search": ["eng.example.com", "example.com"] } },
  { "name": "namespace-a/an-ip-over-infiniband-network", "interface": "ib0",
    "ips": ["198.51.100.1/24"],
    "infiniband-guid": "80:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22" },
  { "name": "namespace-b/sriov-network_a", "interface": "net1",
    "device-info": { "type": "pci", "version": "1.0.0",
                     "pci": { "pci-address": "0000:18:02.5", "pf-pci-address": "0000:18:00.0" } } }
]"""

EXAMPLE_D = """[{"name": "antrea", "interface": "eth0", "ips": ["192.0.1.18"], "mac": "02:79:48:39:4d:12",
  "default": true, "dns": {}, "gateway": ["192.0.1.1"]},
 {"name": "net", "ips": ["148.14.24.100"], "dns": {},
  "device-info": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:00.1"}}}]"""


def att(network: tuple[str, str] | None, raw: str, iface: str, ips: tuple[str, ...],
        default: bool = False) -> Attachment:
    return Attachment(network=network, raw_name=raw, interface=iface, ips=ips, is_default=default)


# ----- §7.9 case 1: the examples -----------------------------------------------------------


def test_example_a_quickstart_bare_names_default_without_interface() -> None:
    assert parse_network_status(EXAMPLE_A, "ns-a") == (
        att(("ns-a", "cbr0"), "cbr0", "", ("10.244.1.73",), default=True),
        att(("ns-a", "macvlan-conf"), "macvlan-conf", "net1", ("192.168.1.205",)),
    )


def test_example_b_dual_stack_namespaced_names() -> None:
    atts = parse_network_status(EXAMPLE_B, "ns-a")
    assert atts == (
        att(("kube-system", "k8s-pod-network"), "kube-system/k8s-pod-network", "",
            ("10.244.181.69", "fd00:10:244:37:a5bd:7eaf:211e:b544"), default=True),
        att(("kube-system", "macvlan-overlay"), "kube-system/macvlan-overlay", "net1",
            ("172.18.87.211", "fc00:f853:ccd:e793::888d")),
    )
    nets = PodNetworks(atts, STATUS)
    assert nets.secondary_ips(("kube-system", "macvlan-overlay")) == [
        "172.18.87.211", "fc00:f853:ccd:e793::888d"]
    # The pod's namespace does not qualify an already namespaced name.
    assert nets.secondary_ips(("ns-a", "macvlan-overlay")) == []
    # The default entry never counts as a secondary address.
    assert nets.secondary_ips(("kube-system", "k8s-pod-network")) == []


def test_example_c_spec_cidr_vendor_keys_and_device_only_entry() -> None:
    atts = parse_network_status(EXAMPLE_C, "namespace-b")
    assert atts == (
        att(("namespace-a", "cluster-wide-default"), "namespace-a/cluster-wide-default", "eth5",
            ("192.0.2.2", "2001:db8::2230"), default=True),
        att(("namespace-b", "some-network"), "namespace-b/some-network", "eth1",
            ("192.0.2.2", "2001:db8::2234")),
        att(("namespace-a", "an-ip-over-infiniband-network"),
            "namespace-a/an-ip-over-infiniband-network", "ib0", ("198.51.100.1",)),
        att(("namespace-b", "sriov-network_a"), "namespace-b/sriov-network_a", "net1", ()),
    )
    nets = PodNetworks(atts, STATUS)
    # 192.0.2.2 is both the default address and a secondary one (legal overlap).
    assert nets.all_secondary_ips() == ["192.0.2.2", "2001:db8::2234", "198.51.100.1"]


def test_example_d_antrea_gateway_and_entry_without_interface() -> None:
    assert parse_network_status(EXAMPLE_D, "ns-a") == (
        att(("ns-a", "antrea"), "antrea", "eth0", ("192.0.1.18",), default=True),
        att(("ns-a", "net"), "net", "", ("148.14.24.100",)),
    )


def test_empty_name_gives_no_network() -> None:
    value = json.dumps([
        {"name": "", "ips": ["10.244.11.1"], "default": True},
        {"name": "", "interface": "net1", "ips": ["10.10.5.5"]},
        {"name": "ns-a/macvlan", "interface": "net2", "ips": ["10.10.5.6"]},
    ])
    atts = parse_network_status(value, "ns-a")
    assert atts == (
        att(None, "", "", ("10.244.11.1",), default=True),
        att(None, "", "net1", ("10.10.5.5",)),
        att(("ns-a", "macvlan"), "ns-a/macvlan", "net2", ("10.10.5.6",)),
    )
    assert PodNetworks(atts, STATUS).secondary_ips(("ns-a", "macvlan")) == ["10.10.5.6"]


@pytest.mark.parametrize(("name", "expected"), [
    ("nad", ("pod-ns", "nad")),
    ("other/nad", ("other", "nad")),
    (" other/nad ", ("other", "nad")),
    ("other / nad", ("other", "nad")),
    ("", None),
    ("   ", None),
    ("/nad", None),
    ("other/", None),
    ("a/b/c", None),
])
def test_network_ref(name: str, expected: tuple[str, str] | None) -> None:
    assert network_ref(name, "pod-ns") == expected


def test_ip_normalisation_and_filtering() -> None:
    value = json.dumps([{"name": "n", "ips": [
        "10.0.0.1/24", "10.0.0.1", "2001:DB8:0:0::1/64", "0.0.0.0", "::", "127.0.0.1", "::1",
        "224.0.0.1", "ff02::1", "::ffff:10.0.0.9", "169.254.1.1", "fe80::1", "fe80::2%net1",
        "not-an-ip", 17, None, {"ip": "10.0.0.3"}, " 10.0.0.2 ",
    ]}])
    (a,) = parse_network_status(value, "ns")
    assert a.ips == ("10.0.0.1", "2001:db8::1", "10.0.0.2")
    (b,) = parse_network_status(value, "ns", link_local=True)
    assert b.ips == ("10.0.0.1", "2001:db8::1", "169.254.1.1", "fe80::1", "fe80::2", "10.0.0.2")


def test_entry_shapes_are_skipped_or_degraded_not_fatal() -> None:
    value = json.dumps([
        "a string", 7, None, ["list"], {"interface": "net0", "ips": ["10.0.0.7"]},
        {"name": 5, "ips": ["10.0.0.8"]},
        {"name": "n1", "ips": "10.0.0.9"},  # not a list: no IPs
        {"name": "n2", "ips": ["10.0.0.10"], "interface": 3, "default": "true"},
        {"name": "n3", "ips": ["10.0.0.11"], "default": 1},
        {"name": "n4", "ips": ["10.0.0.12"], "org.example.vendor": {"x": [1, 2]}, "mtu": 9000},
    ])
    assert parse_network_status(value, "ns") == (
        att(("ns", "n1"), "n1", "", ()),
        att(("ns", "n2"), "n2", "", ("10.0.0.10",)),  # only JSON true marks the default
        att(("ns", "n3"), "n3", "", ("10.0.0.11",)),
        att(("ns", "n4"), "n4", "", ("10.0.0.12",)),
    )


def test_without_a_default_entry_the_one_with_the_pod_ips_is_primary() -> None:
    value = json.dumps([
        {"name": "cluster", "interface": "eth0", "ips": ["10.244.0.5", "fd00::5"]},
        {"name": "n", "interface": "net1", "ips": ["10.10.0.5"]},
        {"name": "m", "interface": "net2", "ips": ["10.244.0.5", "10.10.0.6"]},
    ])
    atts = parse_network_status(value, "ns", primary_ips=("10.244.0.5", "fd00::5"))
    assert [a.is_default for a in atts] == [True, False, False]
    # With an explicit default entry nothing is guessed.
    value2 = json.dumps([
        {"name": "cluster", "ips": ["10.244.0.5"]},
        {"name": "n", "ips": ["10.10.0.5"], "default": True},
    ])
    atts2 = parse_network_status(value2, "ns", primary_ips=("10.244.0.5",))
    assert [a.is_default for a in atts2] == [False, True]


def test_duplicate_entries_for_one_network_union_their_ips() -> None:
    value = json.dumps([
        {"name": "ns/net-a", "interface": "net1", "ips": ["10.1.0.1"]},
        {"name": "net-a", "interface": "net2", "ips": ["10.1.0.2", "10.1.0.1"]},
    ])
    nets = PodNetworks(parse_network_status(value, "ns"), STATUS)
    assert nets.secondary_ips(("ns", "net-a")) == ["10.1.0.1", "10.1.0.2"]


# ----- §7.9 case 2: unusable annotations --------------------------------------------------


def _entries(n: int) -> str:
    return json.dumps([{"name": "n", "ips": [f"10.9.{i // 250}.{i % 250 + 1}"]} for i in range(n)])


def _ips(n: int) -> str:
    return json.dumps([{"name": "n", "ips": [f"10.8.0.{i + 1}" for i in range(n)]}])


@pytest.mark.parametrize(("value", "reason"), [
    ('[{"name": "n", "ips": ["10.0.0.1"]}', "invalid_json"),
    ("", "invalid_json"),
    ("[" * 100000 + "]" * 100000, "oversize"),
    ("[" * 30000 + "]" * 30000, "invalid_json"),  # nesting too deep for the decoder
    ('{"name": "n", "ips": ["10.0.0.1"]}', "not_a_list"),
    ('"[]"', "not_a_list"),
    ("null", "not_a_list"),
    ("[]" + " " * (MAX_ANNOTATION_BYTES - 1), "oversize"),
    (_entries(MAX_ENTRIES + 1), "too_many_entries"),
    (_ips(MAX_IPS_PER_ENTRY + 1), "too_many_ips"),
])
def test_unusable_annotation_raises_with_reason(value: str, reason: str) -> None:
    with pytest.raises(AnnotationError) as info:
        parse_network_status(value, "ns")
    assert info.value.reason == reason


def test_limits_are_inclusive() -> None:
    exact = "[]" + " " * (MAX_ANNOTATION_BYTES - 2)
    assert len(exact.encode()) == 64 * 1024
    assert parse_network_status(exact, "ns") == ()
    assert len(parse_network_status(_entries(MAX_ENTRIES), "ns")) == 64
    (a,) = parse_network_status(_ips(MAX_IPS_PER_ENTRY), "ns")
    assert len(a.ips) == 32


def test_size_counts_utf8_bytes_not_characters() -> None:
    pad = "é" * ((MAX_ANNOTATION_BYTES - 40) // 2 + 10)  # fewer chars than the cap, more bytes
    value = json.dumps([{"name": "n", "ips": ["10.0.0.1"], "org.example.pad": pad}], ensure_ascii=False)
    assert len(value) < MAX_ANNOTATION_BYTES < len(value.encode())
    with pytest.raises(AnnotationError) as info:
        parse_network_status(value, "ns")
    assert info.value.reason == "oversize"


# ----- the pod conversion (reflector thread) and its metric ---------------------------------


def pod_obj(name: str, ns: str = "ns-a", ip: str = "10.244.0.9", rv: str = "1",
            annotations: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv,
                     "annotations": annotations or {}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def errors(reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "dnsd_secondary_annotation_errors_total", {"reason": reason})
    return value or 0.0


def make_secondary(**cfg: Any) -> tuple[Secondary, Index, Options]:
    ix = Index()
    opt = Options(pods="verified", namespaces=frozenset())
    sec = Secondary(SecondaryConfig(**cfg), ix, opt)
    return sec, ix, opt


GOOD = json.dumps([{"name": "kindnet", "ips": ["10.244.0.9"], "default": True},
                   {"name": "macvlan", "interface": "net1", "ips": ["10.10.0.9"]}])


def test_convert_pod_reads_network_status_then_legacy() -> None:
    sec, _, _ = make_secondary()
    legacy_only = sec.convert_pod(pod_obj("p", annotations={LEGACY: GOOD}))
    assert legacy_only.networks.source == LEGACY
    assert legacy_only.networks.secondary_ips(("ns-a", "macvlan")) == ["10.10.0.9"]
    other = json.dumps([{"name": "macvlan", "ips": ["10.10.0.99"]}])
    both = sec.convert_pod(pod_obj("p", annotations={STATUS: GOOD, LEGACY: other}))
    assert both.networks.source == STATUS
    assert both.networks.secondary_ips(("ns-a", "macvlan")) == ["10.10.0.9"]
    # A broken network-status is not replaced by a good legacy copy.
    broken = sec.convert_pod(pod_obj("p", annotations={STATUS: "[", LEGACY: GOOD}))
    assert broken.networks == PodNetworks((), STATUS, "invalid_json")
    assert sec.convert_pod(pod_obj("p")).networks is None


def test_convert_pod_custom_status_annotation() -> None:
    sec, _, _ = make_secondary(status_annotation="example.com/status")
    pod = sec.convert_pod(pod_obj("p", annotations={"example.com/status": GOOD, STATUS: "["}))
    assert pod.networks.source == "example.com/status"
    assert pod.networks.secondary_ips(("ns-a", "macvlan")) == ["10.10.0.9"]


@pytest.mark.parametrize(("value", "reason"), [
    ("{", "invalid_json"),
    ('{"name": "macvlan"}', "not_a_list"),
    ("[]" + " " * MAX_ANNOTATION_BYTES, "oversize"),
    (_entries(65), "too_many_entries"),
    (_ips(33), "too_many_ips"),
    (["not", "a", "string"], "not_a_string"),
])
def test_convert_pod_counts_errors_and_logs_once_per_version(
        value: Any, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    sec, _, _ = make_secondary()
    before = errors(reason)
    for rv in ("7", "7", "8"):
        pod = sec.convert_pod(pod_obj("bad", rv=rv, annotations={STATUS: value}))
        assert pod.networks == PodNetworks((), STATUS, reason)
    assert errors(reason) == before + 3
    logged = [r.getMessage() for r in caplog.records if "unusable network-status" in r.getMessage()]
    assert len(logged) == 2  # resourceVersions 7 and 8
    assert logged[0].startswith(
        f"[WARNING] plugin/kubernetes: pod ns-a/bad: unusable network-status annotation ({reason}): ")


# ----- Index + answer without sockets ---------------------------------------------------------


def svc_obj(name: str, ns: str = "ns-a", network: str | None = "macvlan",
            cluster_ip: str = "None") -> dict[str, Any]:
    ann = {SERVICE_NETWORK: network} if network is not None else {}
    return {"metadata": {"name": name, "namespace": ns, "annotations": ann},
            "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "type": "ClusterIP",
                     "ports": [{"name": "rdma", "port": 4791, "protocol": "UDP"}]}}


def slice_obj(name: str, svc: str, family: str, endpoints: list[tuple[list[str], str, str]],
              ns: str = "ns-a") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": family,
            "endpoints": [{"addresses": addrs, "hostname": host, "conditions": {"ready": True},
                           "targetRef": {"kind": "Pod", "namespace": ns, "name": pod}}
                          for addrs, host, pod in endpoints],
            "ports": [{"name": "rdma", "port": 4791, "protocol": "UDP"}]}


def ask(ix: Index, opt: Options, name: str, qtype: str) -> tuple[int, list[str]]:
    zone = next(z for z in ("in-addr.arpa.", "ip6.arpa.", "cluster.local.") if name.endswith(z))
    res = answer(ix, opt, name, getattr(QTYPE, qtype), zone)
    return res.rcode, sorted(str(to_rr(rr).rdata) for rr in res.answer)


def load(ix: Index, sec: Secondary, pods: list[dict[str, Any]], services: list[dict[str, Any]],
         slices: list[dict[str, Any]]) -> None:
    ix.set_namespace(objects.Namespace("ns-a"))
    for s in services:
        ix.set_service(objects.service(s))
    for sl in slices:
        ix.set_slice(objects.endpoint_slice(sl))
    for p in pods:
        ix.set_pod(sec.convert_pod(p))


def test_previous_good_parse_is_dropped() -> None:
    sec, ix, opt = make_secondary()
    before = errors("invalid_json")
    load(ix, sec, [pod_obj("p-0", annotations={STATUS: GOOD})], [svc_obj("h")],
         [slice_obj("h-1", "h", "IPv4", [(["10.244.0.9"], "p-0", "p-0")])])
    assert ask(ix, opt, "h.ns-a.svc.cluster.local.", "A") == (0, ["10.10.0.9"])
    assert ask(ix, opt, "10-10-0-9.ns-a.pod.cluster.local.", "A") == (0, ["10.10.0.9"])
    assert ask(ix, opt, "9.0.10.10.in-addr.arpa.", "PTR") == (0, ["p-0.h.ns-a.svc.cluster.local."])
    ix.set_pod(sec.convert_pod(pod_obj("p-0", rv="2", annotations={STATUS: GOOD[:-1]})))
    assert errors("invalid_json") == before + 1
    assert ask(ix, opt, "h.ns-a.svc.cluster.local.", "A") == (NXDOMAIN, [])
    assert ask(ix, opt, "p-0.h.ns-a.svc.cluster.local.", "A") == (NXDOMAIN, [])
    assert ask(ix, opt, "10-10-0-9.ns-a.pod.cluster.local.", "A") == (NXDOMAIN, [])
    assert ask(ix, opt, "9.0.10.10.in-addr.arpa.", "PTR") == (NXDOMAIN, [])
    assert sec.pod_ips == {}
    # The primary PTR stays as CoreDNS gives it.
    assert ask(ix, opt, "9.0.244.10.in-addr.arpa.", "PTR") == (0, ["p-0.h.ns-a.svc.cluster.local."])


def test_multus_slices_with_ipv6_in_an_ipv4_slice_change_nothing() -> None:
    """multus-service slices (secondary IPs as addresses, both families in the IPv4 slice,
    targetRef to the same pods) give the same answers as the cluster without them."""
    status = json.dumps([
        {"name": "kindnet", "ips": ["10.244.0.9"], "default": True},
        {"name": "ns-a/macvlan", "interface": "net1", "ips": ["10.10.0.9", "fd10::9"]}])
    status2 = json.dumps([
        {"name": "kindnet", "ips": ["10.244.0.8"], "default": True},
        {"name": "ns-a/macvlan", "interface": "net1", "ips": ["10.10.0.8", "10.244.0.7"]}])
    plain = ("10.244.0.7", "plain-0", "plain")
    pods = [pod_obj("p-0", annotations={STATUS: status}),
            pod_obj("p-1", ip="10.244.0.8", annotations={STATUS: status2}),
            pod_obj(plain[1], ip=plain[0])]
    services = [svc_obj("h"), svc_obj("c", cluster_ip="10.96.0.50"), svc_obj(plain[2], network=None)]
    kube = [slice_obj("h-abc", "h", "IPv4", [(["10.244.0.9"], "p-0", "p-0"), (["10.244.0.8"], "", "p-1")]),
            slice_obj("c-abc", "c", "IPv4", [(["10.244.0.9"], "", "p-0")]),
            slice_obj("plain-abc", plain[2], "IPv4", [([plain[0]], plain[1], plain[1])])]
    multus = [slice_obj("h-multus-x1", "h", "IPv4",
                        [(["10.10.0.9", "fd10::9"], "p-0", "p-0"),
                         (["10.10.0.8", "10.244.0.7"], "", "p-1")]),
              slice_obj("c-multus-x2", "c", "IPv4", [(["10.10.0.9", "fd10::9"], "", "p-0")])]
    queries = [
        ("h.ns-a.svc.cluster.local.", "A"), ("h.ns-a.svc.cluster.local.", "AAAA"),
        ("p-0.h.ns-a.svc.cluster.local.", "AAAA"), ("10-10-0-8.h.ns-a.svc.cluster.local.", "A"),
        ("_rdma._udp.h.ns-a.svc.cluster.local.", "SRV"), ("c.ns-a.svc.cluster.local.", "A"),
        ("10-10-0-9.c.ns-a.svc.cluster.local.", "A"), ("fd10--9.c.ns-a.svc.cluster.local.", "AAAA"),
        ("10-244-0-9.c.ns-a.svc.cluster.local.", "A"),
        ("9.0.10.10.in-addr.arpa.", "PTR"), ("8.0.10.10.in-addr.arpa.", "PTR"),
        ("9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.d.f.ip6.arpa.", "PTR"),
        ("7.0.244.10.in-addr.arpa.", "PTR"), ("9.0.244.10.in-addr.arpa.", "PTR"),
    ]
    results = []
    for extra in ([], multus):
        sec, ix, opt = make_secondary()
        load(ix, sec, pods, services, kube + extra)
        results.append([(q, t, ask(ix, opt, q, t)) for q, t in queries])
    assert results[0] == results[1]
    got = {(q, t): r for q, t, r in results[1]}
    assert got[("h.ns-a.svc.cluster.local.", "A")] == (0, ["10.10.0.8", "10.10.0.9", "10.244.0.7"])
    assert got[("h.ns-a.svc.cluster.local.", "AAAA")] == (0, ["fd10::9"])
    assert got[("_rdma._udp.h.ns-a.svc.cluster.local.", "SRV")] == (0, [
        "0 25 4791 10-10-0-8.h.ns-a.svc.cluster.local.", "0 25 4791 10-244-0-7.h.ns-a.svc.cluster.local.",
        "0 25 4791 p-0.h.ns-a.svc.cluster.local."])
    assert got[("10-244-0-9.c.ns-a.svc.cluster.local.", "A")] == (NXDOMAIN, [])
    assert got[("9.0.10.10.in-addr.arpa.", "PTR")] == (0, [
        "10-10-0-9.c.ns-a.svc.cluster.local.", "p-0.h.ns-a.svc.cluster.local."])
    # p-1's secondary 10.244.0.7 equals plain-0's primary IP: the primary PTR wins.
    assert got[("7.0.244.10.in-addr.arpa.", "PTR")] == (0, ["plain-0.plain.ns-a.svc.cluster.local."])
    assert got[("9.0.244.10.in-addr.arpa.", "PTR")] == (0, [
        "10-244-0-9.c.ns-a.svc.cluster.local.", "p-0.h.ns-a.svc.cluster.local."])


# ----- the Corefile block -----------------------------------------------------------------


def corefile(block: str) -> str:
    return (".:1053 {\n"
            "    kubernetes cluster.local {\n"
            "        endpoint http://127.0.0.1:1\n"
            f"{block}"
            "    }\n"
            "}\n")


def test_block_defaults_and_every_option() -> None:
    (sb,) = parse(corefile("        secondary_networks\n"), "Corefile")
    (k8s,) = [d for d in sb.directives if d.name == "kubernetes"]
    (block,) = k8s.children[1:]
    assert parse_secondary(block) == SecondaryConfig()
    text = corefile(
        "        secondary_networks {\n"
        "            status_annotation example.com/status\n"
        "            service_annotation example.com/network\n"
        "            headless append\n"
        "            net_names\n"
        "            pod_records off\n"
        "            link_local on\n"
        "        }\n")
    (sb,) = parse(text, "Corefile")
    (k8s,) = [d for d in sb.directives if d.name == "kubernetes"]
    assert parse_secondary(k8s.children[1]) == SecondaryConfig(
        status_annotation="example.com/status", service_annotation="example.com/network",
        headless="append", net_names=True, pod_records=False, link_local=True)
    Runtime.build(parse(text, "Corefile"), default_port=1053)


@pytest.mark.parametrize(("block", "message"), [
    ("        secondary_networks {\n            bogus 1\n        }\n",
     "Corefile:5 - Error during parsing: unknown secondary_networks property 'bogus'"),
    ("        secondary_networks {\n\n            headless merge\n        }\n",
     "Corefile:6 - Error during parsing: headless must be replace or append, got 'merge'"),
    ("        secondary_networks {\n            headless\n        }\n",
     "Corefile:5 - Error during parsing: Wrong argument count or unexpected line ending after 'headless'"),
    ("        secondary_networks {\n            pod_records yes\n        }\n",
     "Corefile:5 - Error during parsing: pod_records must be on or off, got 'yes'"),
    ("        secondary_networks {\n            link_local true\n        }\n",
     "Corefile:5 - Error during parsing: link_local must be on or off, got 'true'"),
    ("        secondary_networks {\n            link_local\n        }\n",
     "Corefile:5 - Error during parsing: Wrong argument count or unexpected line ending after 'link_local'"),
    ("        secondary_networks {\n            net_names on\n        }\n",
     "Corefile:5 - Error during parsing: Wrong argument count or unexpected line ending after 'net_names'"),
    ("        secondary_networks {\n            status_annotation\n        }\n",
     "Corefile:5 - Error during parsing: Wrong argument count or unexpected line ending after 'status_annotation'"),
    ("        secondary_networks {\n            service_annotation a b\n        }\n",
     "Corefile:5 - Error during parsing: Wrong argument count or unexpected line ending after 'service_annotation'"),
    ("        secondary_networks on {\n        }\n",
     "Corefile:4 - Error during parsing: Wrong argument count or unexpected line ending after 'secondary_networks'"),
    ("        secondary_networks {\n            headless replace\n            headless append\n        }\n",
     "Corefile:6 - Error during parsing: duplicate secondary_networks property 'headless'"),
    ("        secondary_networks {\n            net_names {\n                x\n            }\n        }\n",
     "Corefile:5 - Error during parsing: unexpected block after 'net_names'"),
    ("        secondary_networks\n        secondary_networks\n",
     "Corefile:5 - Error during parsing: duplicate property 'secondary_networks'"),
])
def test_block_errors_name_the_line(block: str, message: str) -> None:
    with pytest.raises(CorefileError) as info:
        Runtime.build(parse(corefile(block), "Corefile"), default_port=1053)
    assert str(info.value) == message
