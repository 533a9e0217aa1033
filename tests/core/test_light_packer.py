"""light.Packer writes the bytes encode.pack writes for the same message: the same name
compression against the question and the names written before it, for every record type
the direct path writes."""

from __future__ import annotations

import random

import pytest
from dnslib import QTYPE, DNSQuestion, DNSRecord

from dnsd.wire import encode, light

LABELS = ["a", "B", "svc", "ns", "cluster", "local", "Cluster", "x1", "hostmaster", "dns", "_tcp"]


def _both(qname: str, sections: tuple[list, list, list]) -> tuple[bytes, bytes]:
    """(encode.pack's bytes, Packer's bytes) for a reply to ``qname`` A with these records."""
    msg = DNSRecord(q=DNSQuestion(qname, QTYPE.A))
    msg.header.id, msg.header.qr, msg.header.aa = 0x1234, 1, 1
    for section, records in zip((msg.rr, msg.auth, msg.ar), sections, strict=True):
        section.extend(light.to_rr(r) for r in records)
    want = encode.pack(msg)
    question_end = len(encode.pack(DNSRecord(q=DNSQuestion(qname, QTYPE.A))))
    got, kept = light.Packer(want[12:question_end], qname).pack(want[:4], sections, b"", 65535)
    assert kept == sum(map(len, sections))
    return want, got


def _random_name(rng: random.Random) -> str:
    n = rng.randint(1, 6)
    return ".".join(rng.choice(LABELS) for _ in range(n)) + "."


def _random_record(rng: random.Random, qname: str) -> tuple:
    rtype = rng.choice([1, 28, 12, 2, 5, 6, 33, 16])
    owner = rng.choice([qname, _random_name(rng), f"{rng.choice(LABELS)}.{qname}"])
    near = rng.choice([qname, _random_name(rng), f"{rng.choice(LABELS)}.{qname}",
                       ".".join(qname.split(".")[rng.randint(0, qname.count(".") - 1):])])
    rdata: object
    if rtype == 1:
        rdata = f"10.0.0.{rng.randint(0, 255)}"
    elif rtype == 28:
        rdata = f"fd00::{rng.randint(0, 999):x}"
    elif rtype in (12, 2, 5):
        rdata = near
    elif rtype == 6:
        rdata = (near, _random_name(rng), (1, 7200, 1800, 86400, 30))
    elif rtype == 33:
        rdata = (0, 100, 80, near)
    else:
        rdata = "some text"
    return (owner, rtype, rng.randint(0, 300), rdata)


def test_random_replies_pack_to_the_same_bytes() -> None:
    rng = random.Random(5)
    compared = pointers = 0
    for _ in range(3000):
        qname = _random_name(rng)
        sections = tuple([_random_record(rng, qname) for _ in range(rng.randint(0, 4))]
                         for _ in range(3))
        want, got = _both(qname, sections)  # type: ignore[arg-type]
        assert got == want, (qname, sections)
        compared += 1
        pointers += want.count(b"\xc0")
    assert compared == 3000 and pointers > 3000  # (compression happened, a lot)


@pytest.mark.parametrize(("qname", "records", "auth"), [
    # NXDOMAIN: the SOA's owner is the zone inside the question, its names point there too
    ("nope.ns1.svc.cluster.local.", [], [("cluster.local.", 6, 5, (
        "ns.dns.cluster.local.", "hostmaster.cluster.local.", (12, 7200, 1800, 86400, 5)))]),
    # a differently spelled zone is not the question's suffix: written, then pointed at
    ("nope.ns1.svc.Cluster.Local.", [], [("cluster.local.", 6, 5, (
        "ns.dns.cluster.local.", "hostmaster.cluster.local.", (12, 7200, 1800, 86400, 5)))]),
    # PTR: nothing in common with the reverse name
    ("4.3.0.10.in-addr.arpa.", [("4.3.0.10.in-addr.arpa.", 12, 5, "svc1.ns1.svc.cluster.local.")], []),
    # SRV: the target is written in full, a later owner points into the question
    ("_http._tcp.svc1.ns1.svc.cluster.local.",
     [("_http._tcp.svc1.ns1.svc.cluster.local.", 33, 5, (0, 100, 80, "ep1.svc1.ns1.svc.cluster.local."))],
     [("ep1.svc1.ns1.svc.cluster.local.", 1, 5, "10.0.0.1")]),
    # a CNAME target that is the question itself
    ("a.b.", [("c.b.", 5, 5, "a.b.")], []),
])
def test_cluster_shapes_pack_to_the_same_bytes(qname: str, records: list, auth: list) -> None:
    want, got = _both(qname, (records, auth, []))
    assert got == want


def test_the_root_question_is_left_to_the_general_path() -> None:
    # encode.pack writes the root owner in full where a pointer would also be right
    with pytest.raises(encode.Unsupported):
        light.Packer(b"\x00\x00\x01\x00\x01", ".").pack(b"\x12\x34\x84\x00", ([(".", 1, 5, "10.0.0.1")], [], []),
                                                       b"", 512)
