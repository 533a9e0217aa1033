"""Bad input: fuzzing of the packet path (sans-IO ``Engine.fast`` + ``Engine.handle`` with a
kubernetes + file + transfer + acl + any configuration), the Corefile parser and the network
annotation parser; TCP frames of 0 and 64 KiB; reply sizes within the client's limits.

About 5,000 packets run here (hypothesis examples plus seeded mutations).  The million-packet
run is ``python tests/bench/fuzz_packets.py`` (it reuses the generators below).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from k8s_support import fixture_objects
from socket_support import closed_by_peer, frame_exchange, tcp_connect, tcp_exchange, udp_ask
from support import ROOT, query
from upstream import serve_corefile

from dnsd.chain import IMPLEMENTED, PLUGIN_ORDER
from dnsd.corefile import CorefileError, parse
from dnsd.plugins.kubernetes import objects
from dnsd.plugins.kubernetes.secondary import AnnotationError, parse_network_status
from dnsd.serve.engine import Engine
from dnsd.serve.runtime import Runtime

ZONE_FILE = str(ROOT / "zones" / "example.org")
MAX_UDP = 65507

FUZZ_COREFILE = f"""
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {{
    transfer {{
        to *
    }}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        endpoint http://127.0.0.1:9
        pods insecure
    }}
}}
example.org:53 {{
    acl {{
        block type MX net 10.0.0.0/8
        filter type TXT net 192.168.0.0/16
    }}
    any
    transfer {{
        to 127.0.0.1
    }}
    file {ZONE_FILE}
}}
.:53 {{
    whoami
}}
"""


# --- the engine under test ------------------------------------------------------------------------


def build_engine() -> Engine:
    """The fuzz configuration, with the kubernetes index filled from the records fixture
    (no API server: the plugin is marked synced by hand)."""
    runtime = Runtime.build(parse(FUZZ_COREFILE), default_port=53)
    k8s = next(p for p in runtime.plugins if p.name == "kubernetes")
    objs = fixture_objects()
    ix = k8s.index
    ix.replace("namespaces", [objects.namespace(o) for o in objs if o["kind"] == "Namespace"])
    ix.replace("services", [objects.service(o) for o in objs if o["kind"] == "Service"])
    ix.replace("endpointslices", [objects.endpoint_slice(o) for o in objs if o["kind"] == "EndpointSlice"])
    ix.replace("pods", [objects.pod(o) for o in objs if o["kind"] == "Pod"])
    k8s.opts.local_ips = ("10.0.0.53",)
    k8s.synced = lambda: True  # type: ignore[method-assign]
    return runtime.engines[("", 53)]


# --- packet generators (also used by tests/bench/fuzz_packets.py) ------------------------------------

NAMES = [
    "cluster.local.", "ns.dns.cluster.local.", "dns-version.cluster.local.", "svc.cluster.local.",
    "testns.svc.cluster.local.", "svc1.testns.svc.cluster.local.", "ep1a.svc1.testns.svc.cluster.local.",
    "_http._tcp.svc1.testns.svc.cluster.local.", "hdls1.testns.svc.cluster.local.",
    "dup-name.hdls1.testns.svc.cluster.local.", "ext.testns.svc.cluster.local.",
    "extout.testns.svc.cluster.local.", "10-240-0-1.podns.pod.cluster.local.",
    "x.y.10-240-0-1.podns.pod.cluster.local.", "1.1.96.10.in-addr.arpa.", "1.0.0.172.in-addr.arpa.",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.8.7.6.5.ip6.arpa.",
    "example.org.", "www.example.org.", "www2.example.org.", "x.wild.example.org.",
    "a.sub.example.org.", "b.deep.example.org.", "big.example.org.", "nothing.example.org.",
    "whoami.test.", ".",
]
TYPES = [1, 2, 5, 6, 12, 13, 15, 16, 28, 33, 35, 39, 41, 43, 46, 48, 64, 65, 99, 251, 252, 255,
         256, 257, 0, 65535]


def encode_name(rng: random.Random, text: str) -> bytes:
    if text == ".":
        return b"\x00"
    out = b""
    for label in text.rstrip(".").split("."):
        raw = label.encode()
        if rng.random() < 0.3:
            raw = bytes(c ^ 0x20 if 65 <= (c & ~0x20) <= 90 else c for c in raw)  # case mix
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def weird_name(rng: random.Random) -> bytes:
    """Names dnslib and the plugins must survive."""
    kind = rng.randrange(9)
    if kind == 0:  # compression pointer loop (to itself / to the header)
        return b"\x03abc\xc0" + bytes([rng.choice((12, 16, 0, 255))])
    if kind == 1:  # forward pointer past the end
        return b"\xc3\xff"
    if kind == 2:  # 127 one-byte labels (a 255-octet name) or more
        return b"\x01a" * rng.choice((126, 127, 128, 200)) + b"\x00"
    if kind == 3:  # label length 64..191 (reserved/extended label types)
        n = rng.randrange(64, 192)
        return bytes([n]) + rng.randbytes(min(n, 70)) + b"\x00"
    if kind == 4:  # bytes outside the hostname alphabet: dots, NUL, non-ASCII, spaces
        return bytes([5]) + bytes(rng.choice(b"\x00. \xff\x80\\@a-_*") for _ in range(5)) + b"\x00"
    if kind == 5:  # a name that never terminates
        return b"\x05hello\x05world"
    if kind == 6:  # empty labels
        return b"\x00\x00\x00"
    if kind == 7:  # a pointer inside a label sequence to a later name
        return b"\x01a\xc0\x0c"
    return b"".join(bytes([len(x)]) + x for x in (rng.randbytes(rng.randrange(0, 20))
                                                    for _ in range(rng.randrange(1, 6)))) + b"\x00"


def opt_record(rng: random.Random) -> bytes:
    """An OPT RR: sane or garbage options, odd versions, sizes and flags."""
    size = rng.choice((0, 1, 511, 512, 1232, 4096, 65535, rng.randrange(65536)))
    ext = rng.choice((0, 0, 0, 1, 255))
    version = rng.choice((0, 0, 0, 1, 255))
    flags = rng.choice((0, 0x8000, rng.randrange(65536)))
    opts = b""
    for _ in range(rng.randrange(0, 4)):
        code = rng.choice((3, 8, 10, 12, 15, rng.randrange(65536)))
        data = rng.randbytes(rng.randrange(0, 40))
        length = len(data) if rng.random() < 0.7 else rng.randrange(65536)  # lying lengths
        opts += struct.pack("!HH", code, length) + data
    owner = b"\x00" if rng.random() < 0.9 else b"\x01x\x00"
    rdlen = len(opts) if rng.random() < 0.85 else rng.randrange(65536)
    return owner + struct.pack("!HHBBHH", 41, size, ext, version, flags, rdlen) + opts


def random_rr(rng: random.Random) -> bytes:
    rdata = rng.randbytes(rng.randrange(0, 30))
    return (encode_name(rng, rng.choice(NAMES)) + struct.pack("!HHIH", rng.choice(TYPES), 1,
                                                             rng.randrange(2**32), len(rdata)) + rdata)


def random_query(rng: random.Random) -> bytes:
    """A query-shaped packet: mostly well formed, with every part sometimes wrong."""
    qid = rng.randrange(65536)
    flags = rng.choice((0x0100, 0x0000, 0x0110, 0x0120, rng.randrange(65536)))
    questions = [
        (weird_name(rng) if rng.random() < 0.15 else encode_name(rng, rng.choice(NAMES)))
        + struct.pack("!HH", rng.choice(TYPES), rng.choice((1, 1, 1, 1, 3, 255, 254, 0)))
        for _ in range(rng.choice((1, 1, 1, 1, 0, 2)))
    ]
    answers = [random_rr(rng) for _ in range(rng.choice((0, 0, 0, 1)))]
    authority = [random_rr(rng) for _ in range(rng.choice((0, 0, 0, 1)))]
    if rng.random() < 0.05:  # an IXFR carries the client's SOA in authority
        soa = (b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00" + struct.pack("!IIIII", rng.randrange(2**32), 1, 1, 1, 1))
        authority = [encode_name(rng, "cluster.local.") + struct.pack("!HHIH", 6, 1, 0, len(soa)) + soa]
    additional = [opt_record(rng) for _ in range(rng.choice((0, 1, 1, 1, 2)))]
    counts = [len(questions), len(answers), len(authority), len(additional)]
    if rng.random() < 0.1:  # counts that lie
        counts = [rng.choice((0, 1, 2, 255, 65535)) if rng.random() < 0.5 else c for c in counts]
    body = b"".join(questions + answers + authority + additional)
    if rng.random() < 0.05:
        body += rng.randbytes(rng.randrange(1, 50))  # trailing junk
    return struct.pack("!6H", qid, flags, *counts) + body


def mutate(rng: random.Random, packet: bytes) -> bytes:
    out = bytearray(packet)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.45 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif op < 0.6 and out:
            pos = rng.randrange(len(out))
            out[pos] ^= 1 << rng.randrange(8)
        elif op < 0.75:
            del out[rng.randrange(len(out) + 1):]
        elif op < 0.85 and len(out) > 12:
            pos = rng.randrange(12, len(out))
            out[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op < 0.95 and len(out) >= 12:
            field = rng.randrange(4, 12, 2)
            out[field:field + 2] = struct.pack("!H", rng.choice((0, 1, 2, 3, 255, 65535)))
        else:
            out += rng.randbytes(rng.randint(1, 40))
    return bytes(out)


def packets(rng: random.Random) -> Iterator[bytes]:
    """An endless mix: generated queries, mutated ones, random bytes."""
    while True:
        r = rng.random()
        if r < 0.45:
            yield random_query(rng)
        elif r < 0.9:
            yield mutate(rng, random_query(rng))
        else:
            yield rng.randbytes(rng.randrange(0, 600))


# --- the checks ---------------------------------------------------------------------------------------


def udp_limit(data: bytes) -> int:
    """What the engine may send back over UDP for ``data``: the EDNS size when the query is a
    proper one with an OPT record, else 512 (anything it cannot read gets a 12-byte header)."""
    try:
        q = dns.message.from_wire(data)
    except Exception:  # noqa: BLE001 - dnslib may read more than dnspython: the hard cap then
        return MAX_UDP
    if q.edns >= 0:
        return min(MAX_UDP, max(512, q.payload))
    return 512


def check_reply(data: bytes, out: bytes | None, proto: str) -> None:
    if out is None:
        assert len(data) < 12 or data[2] & 0x80, data.hex()  # (the configuration drops nothing)
        return
    assert len(out) >= 12 and out[:2] == data[:2] and out[2] & 0x80, (data.hex(), out.hex())
    limit = 65535 if proto == "tcp" else udp_limit(data)
    assert len(out) <= limit, (data.hex(), len(out), limit)
    if (out[2] >> 3) & 0xF == 0:  # (dnspython reads other opcodes, e.g. UPDATE, differently)
        dns.message.from_wire(out)  # every reply is a well-formed message


class Runner:
    """Feeds packets through ``fast`` then ``handle`` like the listeners do; counts."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self.count = 0

    def close(self) -> None:
        self.loop.close()

    async def one(self, data: bytes, proto: str, client: str = "127.0.0.1") -> None:
        self.count += 1
        reply, key = self.engine.fast(data, proto, client)
        if reply is not None:
            check_reply(data, reply, proto)
            return
        out = await self.engine.handle(data, client, 5353, proto, key=key)
        check_reply(data, out, proto)
        for more in getattr(out, "more", ()):  # a zone transfer: every message
            assert len(more) <= 65535 and more[:2] == data[:2]

    def run(self, data: bytes, proto: str, client: str = "127.0.0.1") -> None:
        self.loop.run_until_complete(self.one(data, proto, client))


@pytest.fixture(scope="module")
def runner() -> Iterator[Runner]:
    r = Runner(build_engine())
    yield r
    r.close()


@pytest.fixture(autouse=True)
def no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The engine logs (and SERVFAILs) any exception a plugin lets escape: none may."""
    with caplog.at_level(logging.ERROR, logger="dnsd"):
        yield
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors[:5]


# --- packet fuzzing ---------------------------------------------------------------------------------

protos = st.sampled_from(["udp", "tcp"])
clients = st.sampled_from(["127.0.0.1", "10.1.2.3", "192.168.7.7", "2001:db8::1"])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=700), proto=protos)
def test_random_bytes(runner: Runner, data: bytes, proto: str) -> None:
    runner.run(data, proto)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**64), proto=protos, client=clients, mutations=st.integers(0, 3))
def test_generated_and_mutated_queries(runner: Runner, seed: int, proto: str, client: str,
                                       mutations: int) -> None:
    rnd = random.Random(seed)
    data = random_query(rnd)
    for _ in range(mutations):
        data = mutate(rnd, data)
    runner.run(data, proto, client)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(qid=st.integers(0, 65535), flags=st.integers(0, 65535),
       counts=st.tuples(*[st.integers(0, 3)] * 4),
       labels=st.lists(st.binary(max_size=70), max_size=130),
       qtype=st.sampled_from(TYPES) | st.integers(0, 65535), qclass=st.integers(0, 65535),
       tail=st.binary(max_size=40), proto=protos)
def test_structured_packets(runner: Runner, qid: int, flags: int, counts: tuple[int, ...],
                            labels: list[bytes], qtype: int, qclass: int, tail: bytes, proto: str) -> None:
    name = b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"
    data = struct.pack("!6H", qid, flags, *counts) + name + struct.pack("!HH", qtype, qclass) + tail
    runner.run(data, proto)


def test_seeded_mix_of_2500_packets(runner: Runner) -> None:
    rng = random.Random(8482)
    gen = packets(rng)
    for i in range(2500):
        runner.run(next(gen), "tcp" if i % 3 == 0 else "udp", ("127.0.0.1", "10.9.9.9")[i % 2])
    assert runner.count >= 2500


@pytest.mark.parametrize(("name", "flags", "qdcount", "rcode"), [
    (b"\x00", 0x0100, 1, 0),  # whoami for the root: "_udp." (was an IDNA error)
    (b"\x01a" * 125 + b"\x00", 0x0100, 1, 2),  # "_udp.<name>" over 255 octets: SERVFAIL
    (b"\x01a" * 128 + b"\x00", 0x0100, 2, 1),  # unpackable question, two of them: FORMERR
    (b"\x01a" * 128 + b"\x00", 0x2900, 1, 4),  # unpackable question, opcode UPDATE: NOTIMP
    (b"\x7f" + b"x" * 127 + b"\x00", 0x1000, 1, 4),  # label type 127, opcode STATUS: NOTIMP
])
def test_cases_the_fuzzer_found(runner: Runner, name: bytes, flags: int, qdcount: int,
                                rcode: int) -> None:
    question = name + struct.pack("!HH", 1, 1)
    data = struct.pack("!6H", 0xABCD, flags, qdcount, 0, 0, 0) + question * qdcount
    out = runner.loop.run_until_complete(runner.engine.handle(data, "127.0.0.1", 5353, "udp"))
    check_reply(data, out, "udp")
    assert out is not None and out[3] & 0xF == rcode


def test_hot_path_and_general_path_agree(runner: Runner) -> None:
    """A prepared answer is byte for byte what the general path gives (ID and question
    patched), whatever the spelling of the question."""
    rng = random.Random(7)
    engine = runner.engine
    for name in NAMES:
        for rdtype in ("A", "AAAA", "SRV", "PTR", "TXT", "ANY"):
            q = dns.message.make_query(name, rdtype, use_edns=rng.choice((None, 0)))
            wire = q.to_wire()
            runner.run(wire, "udp")
            hit, _ = engine.fast(wire, "udp", "127.0.0.1")
            if hit is None:
                continue
            fresh = runner.loop.run_until_complete(engine.handle(wire, "127.0.0.1", 1, "udp"))
            assert hit == fresh, (name, rdtype)


# --- the Corefile parser ------------------------------------------------------------------------------

WORDS = [
    *IMPLEMENTED, *PLUGIN_ORDER[:20], "nosuch", ".", ".:53", "example.org", "example.org:1053",
    "cluster.local", "in-addr.arpa", "10.0.0.0/8", "10.0.0.0/33", "fd00::/8", "dns://.:53", "tls://.",
    "1", "0", "-1", "65536", "5s", "1m", "soon", "30", "*", "net", "type", "A", "allow", "block",
    "to", "from", "except", "fallthrough", "endpoint", "http://127.0.0.1:9", "ttl", "pods", "insecure",
    "{$HOME}", "{$NOPE}", "{args[0]}", "\"quoted string\"", "'single'", "\\", "#comment", "{", "}",
    "\n", "\n", "\n", "zones/example.org", "/nonexistent/file", "/etc/hosts", "import",
    "snippet", "(snip)", "policy", "random", "max_fails", "cache", "success", "denial", "a" * 300,
]


def random_corefile(rng: random.Random) -> str:
    out = []
    for _ in range(rng.randrange(1, 60)):
        word = rng.choice(WORDS)
        if word == "import":
            word = "import " + rng.choice(("snip", "/nonexistent/x", "zones/nothing-*"))
        out.append(word)
        out.append(rng.choice((" ", " ", "\n", "\t")))
    return "".join(out)


def corefile_seeds() -> list[str]:
    return [
        (ROOT / "Corefile.example").read_text(),
        FUZZ_COREFILE,
        "(snip) {\n  whoami\n}\n.:53 {\n  import snip\n  acl {\n    block net 10.0.0.0/8\n  }\n}\n",
        ".:53 {\n forward . 127.0.0.1:5300 {\n  max_fails 3\n  expire 10s\n  policy sequential\n }\n"
        " cache 30 {\n  success 100 30 5\n  servfail 1s\n }\n timeouts {\n  read 5s\n  idle 1m\n }\n}\n",
        "example.org:53 {\n hosts {\n  10.0.0.1 a.example.org\n  fallthrough\n }\n rewrite name a b\n"
        " transfer {\n  to *\n }\n any\n log\n errors\n}\n",
    ]


def build_corefile(text: str) -> None:
    with contextlib.suppress(CorefileError):
        Runtime.build(parse(text, env={"HOME": "/root"}), default_port=53)


@settings(max_examples=600, deadline=None)
@given(seed=st.integers(0, 2**64))
def test_corefile_token_soup(seed: int) -> None:
    build_corefile(random_corefile(random.Random(seed)))


@settings(max_examples=600, deadline=None)
@given(n=st.integers(0, 2**64), seed=st.sampled_from(corefile_seeds()))
def test_corefile_mutations(n: int, seed: str) -> None:
    rnd = random.Random(n)
    text = bytearray(seed.encode())
    for _ in range(rnd.randint(1, 5)):
        op = rnd.random()
        pos = rnd.randrange(len(text) + 1)
        if op < 0.4 and text:
            del text[pos:pos + rnd.randint(1, 10)]
        elif op < 0.8:
            text[pos:pos] = rnd.choice(WORDS).encode() + b" "
        else:
            text[pos:pos] = rnd.choice((b"{", b"}", b"\n", b"\"", b"\\", b"#", b"\x00", b"\xff"))
    build_corefile(text.decode("utf-8", "replace"))


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_corefile_any_text(text: str) -> None:
    build_corefile(text)


# --- the network-status annotation parser ---------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=6,
)
ip_texts = st.sampled_from(["10.0.0.1", "10.0.0.1/24", " 10.0.0.1", "fe80::1%eth0", "fd00::1",
                            "::ffff:10.0.0.1", "127.0.0.1", "0.0.0.0", "224.0.0.1", "not-an-ip", "",
                            "1.2.3.4.5", "2001:db8::/64"]) | st.text(max_size=15)
entries = st.fixed_dictionaries({}, optional={
    "name": st.text(max_size=20) | st.sampled_from(["default/eth", "ns/net1", "net1", "/", "a/b/c"]) | json_values,
    "interface": st.text(max_size=10) | json_values,
    "ips": st.lists(ip_texts, max_size=6) | json_values,
    "default": st.booleans() | json_values,
    "mac": st.text(max_size=10),
    "dns": json_values,
})


def parse_only_annotation_errors(value: str, primary: list[Any], link_local: bool) -> None:
    with contextlib.suppress(AnnotationError):
        parse_network_status(value, "ns", link_local, primary)


@settings(max_examples=300, deadline=None)
@given(value=st.lists(entries, max_size=8).map(json.dumps) | json_values.map(json.dumps)
       | st.text(max_size=200), primary=st.lists(ip_texts | json_values, max_size=3),
       link_local=st.booleans())
def test_annotation_parser(value: str, primary: list[Any], link_local: bool) -> None:
    parse_only_annotation_errors(value, primary, link_local)


def test_annotation_parser_extremes() -> None:
    rng = random.Random(5)
    many = [{"name": f"n{i}", "ips": [f"10.0.{i}.{j}" for j in range(rng.randrange(1, 34))],
             "default": i == 0} for i in range(64)]
    for value in (json.dumps(many), json.dumps([*many, {"name": "one-too-many"}]),"[" * 100_000, "[" * 100_000 + "]" * 100_000, "x" * 70_000, "\udcff" * 10,
                  json.dumps([{"name": "n", "ips": ["10.0.0.1"] * 33}]),
                  json.dumps([{"name": "n"}] * 65), "1e999999", '"\\ud800"'):
        parse_only_annotation_errors(value, ["10.0.0.1/24", " 10.0.0.2"], False)


# --- TCP frames and reply sizes through the sockets -----------------------------------------------


def big_zone(tmp: Path) -> Path:
    lines = ["$ORIGIN big.test.", "$TTL 60", "@ IN SOA ns hostmaster 1 3600 600 86400 60", "@ IN NS ns",
             "ns IN A 192.0.2.1"]
    lines += [f"many IN A 10.{i // 250}.{i % 250}.1" for i in range(1500)]  # ~24 KiB answer
    lines += [f"huge IN TXT \"{'y' * 200}-{i}\"" for i in range(600)]  # ~130 KiB: over any limit
    path = tmp / "big.test"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_tcp_frames_of_0_and_64k_bytes(tmp_path: Path) -> None:
    async with serve_corefile(f"big.test:{{PORT}} {{\n file {big_zone(tmp_path)}\n}}\n.:{{PORT}} {{\n whoami\n}}\n") as srv:
        def check() -> None:
            with tcp_connect(srv.port) as s:
                s.sendall(b"\x00\x00")  # a zero-length frame: the server hangs up
                assert closed_by_peer(s, 3.0)
            q = dns.message.make_query("whoami.test.", "A")
            with tcp_connect(srv.port) as s:
                # 65535 bytes: a real query followed by junk up to the largest frame
                data = q.to_wire()
                reply = frame_exchange(s, data + b"\xee" * (65535 - len(data)))
                assert reply[:2] == data[:2] and reply[2] & 0x80
                # 65535 bytes of junk: an error reply or nothing, and the connection still works
                junk = bytes([0x12, 0x34, 0x01, 0x00]) + random.Random(1).randbytes(65531)
                assert frame_exchange(s, junk)[:2] == b"\x12\x34"
                again = frame_exchange(s, data)
                assert dns.message.from_wire(again).id == q.id
            with tcp_connect(srv.port) as s:
                s.sendall(b"\xff\xff" + b"\x00" * 1000)  # promises 64 KiB, sends 1000, leaves
            assert query("whoami.test.", port=srv.port, tcp=True).rcode() == dns.rcode.NOERROR
        await asyncio.to_thread(check)


async def test_reply_sizes_within_the_client_limit(tmp_path: Path) -> None:
    async with serve_corefile(f"big.test:{{PORT}} {{\n file {big_zone(tmp_path)}\n}}\n") as srv:
        def ask(name: str, rdtype: str, tcp: bool, payload: int | None) -> tuple[int, dns.message.Message]:
            q = dns.message.make_query(name, rdtype, use_edns=None if payload is None else 0,
                                       payload=payload or 512)
            data = q.to_wire()
            wire = tcp_exchange(srv.port, data) if tcp else udp_ask(srv.port, data, timeout=5)
            return len(wire), dns.message.from_wire(wire)

        def check() -> None:
            for payload, limit in ((None, 512), (400, 512), (1232, 1232), (4096, 4096)):
                size, msg = ask("many.big.test.", "A", False, payload)
                assert size <= limit and msg.flags & dns.flags.TC, (payload, size)
            # EDNS 65535 over UDP: a 24 KiB answer arrives whole (sendto caps at 65507)
            size, msg = ask("many.big.test.", "A", False, 65535)
            assert not msg.flags & dns.flags.TC and len(msg.answer[0]) == 1500 and size > 16384
            # TCP: whole when it fits 64 KiB (names compressed correctly past 16 KiB) ...
            size, msg = ask("many.big.test.", "A", True, None)
            assert not msg.flags & dns.flags.TC and len(msg.answer[0]) == 1500 and size > 16384
            # ... truncated to at most 65535 bytes when it cannot
            size, msg = ask("huge.big.test.", "TXT", True, None)
            assert size <= 65535 and msg.flags & dns.flags.TC and 0 < len(msg.answer[0]) < 600
            size, msg = ask("huge.big.test.", "TXT", False, 65535)
            assert size <= MAX_UDP and msg.flags & dns.flags.TC

        await asyncio.to_thread(check)

