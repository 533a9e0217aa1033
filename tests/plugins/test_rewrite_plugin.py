"""rewrite: name rules (exact, prefix, suffix, substring, regex) with answer rewriting, types."""

from __future__ import annotations

from collections.abc import Iterator

import dns.rcode
import dns.rdatatype
import pytest
from upstream import Upstream, addresses, aquery, serve_corefile

from dnsd.chain import SetupContext
from dnsd.corefile.ast import CorefileError, Directive
from dnsd.plugins.rewrite import NameRule, Plugin, expand


@pytest.fixture
def up() -> Iterator[Upstream]:
    with Upstream() as upstream:
        yield upstream


def conf(up: Upstream, *rules: str) -> str:
    lines = "".join(f" rewrite {r}\n" for r in rules)
    return f".:{{PORT}} {{\n{lines} forward . {up.addr}\n}}\n"


def owners(msg: object) -> list[str]:
    return [r.name.to_text() for r in msg.answer]  # type: ignore[attr-defined]


@pytest.mark.parametrize("rule,asked,sent", [
    ("name exact www.client.test www.example.org answer auto", "www.client.test.", "www.example.org."),
    ("name www.client.test. www.example.org. answer auto", "www.client.test.", "www.example.org."),
    ("name prefix api. www. answer auto", "api.example.org.", "www.example.org."),
    ("name suffix .client.test .example.org answer auto", "www.client.test.", "www.example.org."),
    ("name substring client.test example.org answer auto", "www.client.test.", "www.example.org."),
    (r"name regex (.*)\.svc\.client\.test\.$ {1}.example.org answer auto",
     "www.svc.client.test.", "www.example.org."),
])
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_name_rules_with_answer_auto(up: Upstream, rule: str, asked: str, sent: str,
                                           tcp: bool) -> None:
    async with serve_corefile(conf(up, rule)) as srv:
        reply = await aquery(srv.port, asked, tcp=tcp)  # dnspython checks the question too
    assert up.queries[-1][1] == sent
    assert reply.question[0].name.to_text() == asked
    assert owners(reply) == [asked] and addresses(reply) == ["192.0.2.1"]


async def test_without_answer_rewrite_only_the_question_is_restored(up: Upstream) -> None:
    async with serve_corefile(conf(up, "name exact www.client.test www.example.org")) as srv:
        reply = await aquery(srv.port, "www.client.test")
    assert reply.question[0].name.to_text() == "www.client.test."
    assert owners(reply) == ["www.example.org."]


async def test_answer_auto_rewrites_cname_chain_and_keeps_case(up: Upstream) -> None:
    rule = "name suffix .client.test. .example.org. answer auto"
    async with serve_corefile(conf(up, rule)) as srv:
        reply = await aquery(srv.port, "Alias.Client.TEST")
    assert reply.question[0].name.to_text() == "Alias.Client.TEST."
    assert owners(reply) == ["Alias.Client.TEST.", "alias2.client.test.", "multi.client.test."]
    assert [r[0].target.to_text() for r in reply.answer[:2]] == ["alias2.client.test.",
                                                                  "multi.client.test."]
    assert up.queries[-1][1] == "alias.example.org."


async def test_regex_with_answer_name_and_value_block(up: Upstream) -> None:
    body = ("stop {\n  name regex (.*)\\.my\\.domain\\.$ {1}.example.org\n"
            "  answer name (.*)\\.example\\.org\\.$ {1}.my.domain\n"
            "  answer value (.*)\\.example\\.org\\.$ {1}.my.domain\n }")
    async with serve_corefile(conf(up, body)) as srv:
        reply = await aquery(srv.port, "alias.my.domain")
        mx = await aquery(srv.port, "mx.my.domain", "MX")
    assert owners(reply) == ["alias.my.domain.", "alias2.my.domain.", "multi.my.domain."]
    assert reply.answer[1][0].target.to_text() == "multi.my.domain."
    assert {rd.exchange.to_text() for rd in mx.answer[0]} == {f"mx{i}.my.domain." for i in range(1, 5)}


async def test_continue_chains_rules_and_stop_ends_them(up: Upstream) -> None:
    rules = ("continue name exact a.test b.test answer auto",
             "stop name suffix b.test. www.example.org. answer auto",
             "name exact www.example.org nope.example.org")
    async with serve_corefile(conf(up, *rules)) as srv:
        reply = await aquery(srv.port, "a.test")
    assert up.queries[-1][1] == "www.example.org."
    assert owners(reply) == ["a.test."] and addresses(reply) == ["192.0.2.1"]


async def test_nxdomain_passes_through(up: Upstream) -> None:
    async with serve_corefile(conf(up, "name suffix .client.test .example.org answer auto")) as srv:
        reply = await aquery(srv.port, "missing.client.test")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.question[0].name.to_text() == "missing.client.test."


async def test_type_rule(up: Upstream) -> None:
    async with serve_corefile(conf(up, "type AAAA A")) as srv:
        reply = await aquery(srv.port, "www.example.org", "AAAA")
    assert up.queries[-1][2] == dns.rdatatype.A
    assert reply.question[0].rdtype == dns.rdatatype.AAAA
    assert addresses(reply) == ["192.0.2.1"]


def test_regex_groups_and_reverse() -> None:
    import re

    m = re.search(r"(\w+)-(\w+)\.example\.", "foo-bar.example.")
    assert m is not None and expand("{2}.{1}.{0}{9}", m) == "bar.foo.foo-bar.example."
    rule = NameRule("suffix", ".a.test.", ".b.test.")
    assert rule.rewrite("x.a.test.") == "x.b.test."
    assert rule.reverse("y.b.test.", "x.b.test.", "x.a.test.") == "y.a.test."


@pytest.mark.parametrize("args,message", [
    ("name regex ([ x", "invalid regex"),
    ("edns0 local set 0xffee abc", "not supported"),
    ("name exact a.test", "expected FROM TO"),
    ("name exact a.test b.test answer bogus", "invalid answer"),
    ("type BOGUS A", "invalid type"),
    ("color red blue", "invalid field"),
])
def test_setup_errors(args: str, message: str) -> None:
    d = Directive("rewrite", args.split(), line=4)
    with pytest.raises(CorefileError, match=message):
        Plugin.setup([d], SetupContext(zones=["."], port=53))
