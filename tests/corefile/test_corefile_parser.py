"""Tests for the Corefile lexer and parser."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnsd.corefile import CorefileError, Directive, ServerBlock, parse, parse_file
from dnsd.corefile.lexer import substitute_env, tokenize

KUBEADM = """\
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
"""


def D(
    name: str,
    *args: str,
    line: int,
    children: list[Directive] | None = None,
    file: str = "Corefile",
) -> Directive:
    """Shorthand for an expected Directive."""
    return Directive(name, list(args), children or [], file, line, children is not None)


def shape(d: Directive) -> tuple:
    """A directive as nested tuples (name, args, children), ignoring positions."""
    return (d.name, d.args, [shape(c) for c in d.children])


def only_block(text: str, **kw) -> ServerBlock:
    blocks = parse(text, **kw)
    assert len(blocks) == 1
    return blocks[0]


# --- structure -----------------------------------------------------------------------


def test_kubeadm_default_corefile() -> None:
    blocks = parse(KUBEADM)
    assert blocks == [
        ServerBlock(
            [".:53"],
            [
                D("errors", line=2),
                D("health", line=3, children=[D("lameduck", "5s", line=4)]),
                D("ready", line=6),
                D(
                    "kubernetes",
                    "cluster.local",
                    "in-addr.arpa",
                    "ip6.arpa",
                    line=7,
                    children=[
                        D("pods", "insecure", line=8),
                        D("fallthrough", "in-addr.arpa", "ip6.arpa", line=9),
                        D("ttl", "30", line=10),
                    ],
                ),
                D("prometheus", ":9153", line=12),
                D(
                    "forward",
                    ".",
                    "/etc/resolv.conf",
                    line=13,
                    children=[D("max_concurrent", "1000", line=14)],
                ),
                D(
                    "cache",
                    "30",
                    line=16,
                    children=[
                        D("disable", "success", "cluster.local", line=17),
                        D("disable", "denial", "cluster.local", line=18),
                    ],
                ),
                D("loop", line=20),
                D("reload", line=21),
                D("loadbalance", line=22),
            ],
            "Corefile",
            1,
        )
    ]


def test_multiple_server_blocks_keep_lines() -> None:
    blocks = parse("example.org:1053 {\n  whoami\n}\n\n.:53 {\n  forward . 8.8.8.8\n}\n")
    assert [(b.keys, b.line) for b in blocks] == [(["example.org:1053"], 1), ([".:53"], 5)]
    assert blocks[1].directives == [D("forward", ".", "8.8.8.8", line=6)]


@pytest.mark.parametrize(
    "head",
    [
        "a.org b.org c.org {",
        "a.org,b.org,c.org {",
        "a.org, b.org, c.org {",
        "a.org , b.org ,c.org {",
        "a.org,\n  b.org,\n  c.org {",
        "a.org b.org,\nc.org\n{",
    ],
)
def test_multiple_keys(head: str) -> None:
    block = only_block(head + "\n  whoami\n}\n")
    assert block.keys == ["a.org", "b.org", "c.org"]
    assert block.line == 1
    assert [d.name for d in block.directives] == ["whoami"]


def test_empty_block_and_nested_blocks() -> None:
    block = only_block(
        ".:53 {\n  a {\n  }\n  b {\n    c {\n      d {\n        e 1\n      }\n    }\n  }\n}"
    )
    a, b = block.directives
    assert a.has_block and a.children == []
    assert shape(b) == ("b", [], [("c", [], [("d", [], [("e", ["1"], [])])])])
    assert b.children[0].children[0].children[0].line == 7
    assert not b.children[0].children[0].children[0].has_block


def test_empty_server_block() -> None:
    assert parse(".:53 {\n}\n") == [ServerBlock([".:53"], [], "Corefile", 1)]


def test_block_on_one_line_and_brace_on_next_line() -> None:
    block = only_block(
        ".:53 {\n  health { lameduck 5s }\n  cache 30\n  {\n    success 100\n  }\n  log\n}"
    )
    assert [shape(d) for d in block.directives] == [
        ("health", [], [("lameduck", ["5s"], [])]),
        ("cache", ["30"], [("success", ["100"], [])]),
        ("log", [], []),
    ]
    assert block.directives[2].line == 7


def test_braceless_single_block() -> None:
    block = only_block(".:1053\nwhoami\nlog\n")
    assert block.keys == [".:1053"]
    assert [(d.name, d.line) for d in block.directives] == [("whoami", 2), ("log", 3)]


def test_keys_only_file_and_empty_inputs() -> None:
    assert parse("example.org\n") == [ServerBlock(["example.org"], [], "Corefile", 1)]
    assert parse("") == []
    assert parse("  \n# just a comment\n\n") == []


def test_crlf_line_endings() -> None:
    block = only_block(".:53 {\r\n  errors\r\n  log\r\n}\r\n")
    assert [(d.name, d.line) for d in block.directives] == [("errors", 2), ("log", 3)]


# --- lexing: comments, quotes, escapes ----------------------------------------------


def test_comments() -> None:
    text = "# header\n.:53 { # open\n  # whole line\n  log # trailing\n  rewrite a#b c\n  hosts {\n    # inside\n  }\n}\n"
    block = only_block(text)
    assert [shape(d) for d in block.directives] == [
        ("log", [], []),
        ("rewrite", ["a#b", "c"], []),
        ("hosts", [], []),
    ]
    assert block.directives[0].line == 4
    assert block.line == 2


def test_quoted_strings() -> None:
    block = only_block('.:53 {\n  template "a b" "say \\"hi\\"" "" "#not comment" "{" "}"\n}')
    assert block.directives[0].args == ["a b", 'say "hi"', "", "#not comment", "{", "}"]
    assert not block.directives[0].has_block


def test_quoted_string_spanning_lines_keeps_following_line_numbers() -> None:
    block = only_block('.:53 {\n  txt "line one\nline two" after\n  next\n}')
    txt, nxt = block.directives
    assert txt.args == ["line one\nline two", "after"]
    assert (txt.line, nxt.line) == (2, 4)


def test_backslashes() -> None:
    text = '.:53 {\n  rewrite name regex (.*)\\.svc\\.local {1}.svc "\\d+\\.x" a\\ b \\#x q\\"\n}'
    assert only_block(text).directives[0].args == [
        "name",
        "regex",
        "(.*)\\.svc\\.local",
        "{1}.svc",
        "\\d+\\.x",
        "a b",
        "#x",
        'q"',
    ]


def test_quoted_tokens_are_not_keywords() -> None:
    block = only_block('.:53 {\n  "import" foo\n}')
    assert block.directives[0] == D("import", "foo", line=2)


def test_tokens_carry_lines_and_flags() -> None:
    toks = tokenize('a "b\nc" d\n  e', "F")
    assert [(t.text, t.line, t.quoted, t.nl) for t in toks] == [
        ("a", 1, False, True),
        ("b\nc", 1, True, False),
        ("d", 2, False, False),
        ("e", 3, False, True),
    ]
    assert {t.file for t in toks} == {"F"}


# --- environment ----------------------------------------------------------------------


def test_env_substitution_both_forms() -> None:
    env = {"ZONE": "example.org", "PORT": "1053", "UP": "8.8.8.8"}
    text = "{$ZONE}:{env.PORT} {\n  forward . {$UP} {env.UP}\n  log {$UNSET}x {env.UNSET}\n}"
    block = only_block(text, env=env)
    assert block.keys == ["example.org:1053"]
    assert block.directives[0].args == [".", "8.8.8.8", "8.8.8.8"]
    assert block.directives[1].args == ["x"]


def test_env_defaults_and_percent_form() -> None:
    env = {"SET": "yes"}
    assert substitute_env("{$A:fallback} {$SET:no} {env.B:d} {%SET%}", env) == "fallback yes d yes"


def test_env_defaults_to_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNSD_TEST_ZONE", "corp.example")
    assert only_block("{$DNSD_TEST_ZONE} {\n}").keys == ["corp.example"]


# --- snippets -------------------------------------------------------------------------


def test_snippet_without_args() -> None:
    text = "(common) {\n  errors\n  cache 30\n}\n.:53 {\n  import common\n  log\n}\n"
    blocks = parse(text)
    assert len(blocks) == 1
    assert [(d.name, d.args, d.line) for d in blocks[0].directives] == [
        ("errors", [], 2),
        ("cache", ["30"], 3),
        ("log", [], 7),
    ]


def test_snippet_with_args() -> None:
    text = (
        "(fwd) {\n"
        "  forward {args[0]} {args[1:]}\n"
        "  log prefix-{args[0]}-{args[:]}\n"
        "  {args[5:]}\n"
        "  all {args[:]}\n"
        "}\n"
        ".:53 {\n"
        '  import fwd . 1.1.1.1 "9.9.9.9"\n'
        "}\n"
    )
    block = only_block(text)
    assert [shape(d) for d in block.directives] == [
        ("forward", [".", "1.1.1.1", "9.9.9.9"], []),
        ("log", ["prefix-.-. 1.1.1.1 9.9.9.9"], []),
        ("all", [".", "1.1.1.1", "9.9.9.9"], []),
    ]


def test_snippet_in_nested_block_and_top_level() -> None:
    text = (
        "(k8sopts) {\n  pods insecure\n  ttl {args[0]}\n}\n"
        "(server) {\n  {args[0]} {\n    kubernetes cluster.local {\n      import k8sopts 30\n    }\n  }\n}\n"
        "import server .:53\n"
        "import server example.org\n"
    )
    blocks = parse(text)
    assert [b.keys for b in blocks] == [[".:53"], ["example.org"]]
    for block in blocks:
        assert [shape(d) for d in block.directives] == [
            ("kubernetes", ["cluster.local"], [("pods", ["insecure"], []), ("ttl", ["30"], [])])
        ]


def test_snippet_importing_snippet() -> None:
    text = "(a) {\n  log\n}\n(b) {\n  import a\n  errors\n}\n.:53 {\n  import b\n}\n"
    assert [d.name for d in only_block(text).directives] == ["log", "errors"]


def test_snippet_definitions_are_not_server_blocks() -> None:
    assert parse("(unused) {\n  log\n}\n") == []


def test_snippet_cycle_is_an_error() -> None:
    text = "(a) {\n  import b\n}\n(b) {\n  import a\n}\n.:53 {\n  import a\n}\n"
    with pytest.raises(CorefileError) as exc:
        parse(text)
    assert str(exc.value).startswith(
        "Corefile:5 - Error during parsing: Import cycle detected: (a) -> (b) -> (a)"
    )


def test_self_importing_snippet() -> None:
    with pytest.raises(CorefileError, match="Import cycle detected"):
        parse("(a) {\n  import a\n}\n.:53 {\n  import a\n}\n")


# --- file imports ---------------------------------------------------------------------


def test_import_file_relative_to_importing_file(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "common.conf").write_text("errors\nimport more.conf\n")
    (tmp_path / "conf.d" / "more.conf").write_text("\n\ncache 30\n")
    main = tmp_path / "Corefile"
    main.write_text(".:53 {\n  import conf.d/common.conf\n  log\n}\n")
    block = only_block(main.read_text(), file=str(main))
    assert [(d.name, d.file, d.line) for d in block.directives] == [
        ("errors", str(tmp_path / "conf.d" / "common.conf"), 1),
        ("cache", str(tmp_path / "conf.d" / "more.conf"), 3),
        ("log", str(main), 3),
    ]


def test_import_whole_server_blocks(tmp_path: Path) -> None:
    (tmp_path / "zones.conf").write_text("example.org {\n  whoami\n}\n")
    main = tmp_path / "Corefile"
    main.write_text("import zones.conf\n.:53 {\n  log\n}\n")
    assert [b.keys for b in parse_file(str(main))] == [["example.org"], [".:53"]]


def test_import_glob_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.server").write_text("b.org {\n}\n")
    (tmp_path / "d" / "a.server").write_text("a.org {\n}\n")
    (tmp_path / "d" / "ignored.txt").write_text("c.org {\n}\n")
    (tmp_path / "d" / "sub.server").mkdir()
    blocks = parse("import d/*.server\n", file=str(tmp_path / "Corefile"))
    assert [b.keys for b in blocks] == [["a.org"], ["b.org"]]


def test_import_glob_with_args(tmp_path: Path) -> None:
    (tmp_path / "x.conf").write_text("forward . {args[0]}\n")
    block = only_block(".:53 {\n  import *.conf 1.1.1.1\n}\n", file=str(tmp_path / "Corefile"))
    assert block.directives[0].args == [".", "1.1.1.1"]


def test_import_glob_matching_nothing_is_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        block = only_block(
            ".:53 {\n  import none/*.conf\n  log\n}\n", file=str(tmp_path / "Corefile")
        )
    assert [d.name for d in block.directives] == ["log"]
    assert "No files matching import glob pattern" in caplog.text


def test_import_missing_file_is_an_error(tmp_path: Path) -> None:
    main = str(tmp_path / "Corefile")
    with pytest.raises(CorefileError) as exc:
        parse(".:53 {\n  log\n  import missing.conf\n}\n", file=main)
    assert exc.value.file == main and exc.value.line == 3
    assert "File to import not found: missing.conf" in str(exc.value)


def test_import_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(CorefileError, match="is a directory"):
        parse("import dir\n", file=str(tmp_path / "Corefile"))


def test_error_inside_imported_file_names_that_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("example.org {\n  log\n}\n\n}\n")
    with pytest.raises(CorefileError) as exc:
        parse("import bad.conf\n.:53 {\n}\n", file=str(tmp_path / "Corefile"))
    assert str(exc.value).startswith(f"{bad}:5 - Error during parsing: Unexpected '}}'")
    bad.write_text('log\n  forward . "unterminated\n')
    with pytest.raises(CorefileError) as exc:
        parse(".:53 {\n  import bad.conf\n}\n", file=str(tmp_path / "Corefile"))
    assert str(exc.value) == f"{bad}:2 - Error during parsing: Unterminated quoted string"


def test_import_cycle_between_files(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("log\nimport b.conf\n")
    (tmp_path / "b.conf").write_text("errors\nimport a.conf\n")
    with pytest.raises(CorefileError) as exc:
        parse(".:53 {\n  import a.conf\n}\n", file=str(tmp_path / "Corefile"))
    assert exc.value.file == str(tmp_path / "b.conf") and exc.value.line == 2
    assert "Import cycle detected" in exc.value.message


def test_file_importing_itself(tmp_path: Path) -> None:
    main = tmp_path / "Corefile"
    main.write_text(".:53 {\n  import Corefile\n}\n")
    with pytest.raises(CorefileError, match="Import cycle detected"):
        parse_file(str(main))


def test_same_file_imported_twice_is_not_a_cycle(tmp_path: Path) -> None:
    (tmp_path / "c.conf").write_text("log\n")
    blocks = parse(
        "a {\n  import c.conf\n}\nb {\n  import c.conf\n}\n", file=str(tmp_path / "Corefile")
    )
    assert [[d.name for d in b.directives] for b in blocks] == [["log"], ["log"]]


def test_parse_file_names_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("Corefile").write_text(".:53 {\n  log\n")
    with pytest.raises(CorefileError) as exc:
        parse_file("Corefile")
    assert str(exc.value).startswith("Corefile:2 - Error during parsing: Unexpected EOF")
    Path("Corefile").write_text(".:53 {\n  log\n}\n")
    assert parse_file("Corefile")[0].directives[0].file == "Corefile"


def test_parse_file_missing(tmp_path: Path) -> None:
    with pytest.raises(CorefileError, match="File to parse doesn't exist"):
        parse_file(str(tmp_path / "nope"))


# --- errors ---------------------------------------------------------------------------

ERRORS = [
    ("}\n", 1, "Unexpected '}' because no matching opening brace"),
    (".:53 {\n  log\n}\n}\n", 4, "Unexpected '}' because no matching opening brace"),
    (".:53 {\n  log\n", 2, "Unexpected EOF, expected '}' (for the '{' at Corefile:1)"),
    (".:53 {\n  cache {\n    success 1\n  }\n", 4, "Unexpected EOF"),
    ("{\n  log\n}\n", 1, "Server block without keys"),
    ('"" {\n  log\n}\n', 1, "Server block without keys"),
    (".:53 {\n}\n\nlog\n", 4, "Unexpected 'log' outside a server block"),
    (".:53 {\n}\nexample.org\n", 3, "Unexpected 'example.org' outside a server block"),
    ("a.org,\n{\n}\n", 2, "Expected another server block key but got '{'"),
    ("a.org,\n", 1, "Unexpected EOF, expected another server block key"),
    (
        ".:53 {\n  log {\n    {\n    }\n  }\n}\n",
        3,
        "Unexpected '{': a block must follow a directive",
    ),
    (
        ".:53 {\n  log\n  import\n}\n",
        3,
        "Wrong argument count or unexpected line ending after 'import'",
    ),
    ('.:53 {\n  import ""\n}\n', 2, "Import requires a non-empty filepath"),
    (".:53 {\n\n  import nosuchsnippet\n}\n", 3, "File to import not found: nosuchsnippet"),
    ('.:53 {\n  log "open\n}\n', 2, "Unterminated quoted string"),
    ("(s) {\n  log\n}\n(s) {\n}\n", 4, "Redeclaration of previously declared snippet s"),
    ("(s)\nlog\n", 1, "Expected '{' after snippet name (s)"),
    ("() {\n}\n", 1, "Snippet name cannot be empty"),
    ("(s) {\n  log\n", 2, "Unexpected EOF"),
    ("(s) {\n  log {args[1]}\n}\n.:53 {\n  import s a\n}\n", 5, "{args[1]} is out of range"),
]


@pytest.mark.parametrize(("text", "line", "message"), ERRORS)
def test_errors(text: str, line: int, message: str) -> None:
    with pytest.raises(CorefileError) as exc:
        parse(text)
    assert exc.value.file == "Corefile"
    assert exc.value.line == line
    assert str(exc.value).startswith(f"Corefile:{line} - Error during parsing: {message}")


def test_error_uses_given_file_name() -> None:
    with pytest.raises(CorefileError) as exc:
        parse("}", file="/etc/coredns/Corefile")
    assert (
        str(exc.value)
        == "/etc/coredns/Corefile:1 - Error during parsing: Unexpected '}' because no matching opening brace"
    )


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(CorefileError, match="nested more than"):
        parse(".:53 {\n" + "a {\n" * 500 + "}\n" * 501)


# --- fuzzing --------------------------------------------------------------------------

FRAGMENTS = [
    "{", "}", "\n", " ", "\t", '"', "\\", "#", ",", ".:53", "a", "log", "import", " s",
    "(s)", "{args[0]}", "{args[:]}", "{$X}", "{env.Y}", "*", "?", "()", "x.conf", "\r\n",
]  # fmt: skip


def _check(text: str, tmp_path: Path) -> None:
    try:
        blocks = parse(text, file=str(tmp_path / "Corefile"), env={"X": "{", "Y": "import s"})
    except CorefileError:
        return
    assert all(isinstance(b, ServerBlock) for b in blocks)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join))
def test_fuzz_fragments(tmp_path: Path, text: str) -> None:
    _check(text, tmp_path)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet=st.characters(blacklist_characters="/"), max_size=200))
def test_fuzz_any_text(tmp_path: Path, text: str) -> None:
    _check(text, tmp_path)
