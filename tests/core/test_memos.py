"""The name memos' bound (dnsd/memos.py): it follows the cluster's size, within limits, and
no memo grows past it."""

from __future__ import annotations

import pytest
from dnslib import DNSRecord

from dnsd import memos
from dnsd.corefile import parse
from dnsd.plugins.kubernetes import answer
from dnsd.serve.runtime import Runtime
from dnsd.wire import light


@pytest.fixture(autouse=True)
def _restore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memos, "size", memos.MIN_SIZE)


def test_fit_grows_with_the_cluster_within_limits_and_never_shrinks() -> None:
    memos.fit(100)
    assert memos.size == memos.MIN_SIZE
    memos.fit(20_000)
    assert memos.size == 20_000
    memos.fit(1_000_000)
    assert memos.size == memos.MAX_SIZE
    memos.fit(10)
    assert memos.size == memos.MAX_SIZE


def test_no_memo_grows_past_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Made-up names through the engine's question-name memo, the kubernetes name memo and the
    label memo: each is emptied when full, never larger than ``memos.size``."""
    monkeypatch.setattr(memos, "size", 64)
    runtime = Runtime.build(parse(".:1053 {\n    whoami\n}\n"), 1053)
    engine = runtime.engines[("", 1053)]
    for i in range(500):
        wire_name = bytes(DNSRecord.question(f"n{i}.example.").pack())[12:-4]
        engine._name_of(wire_name)
        answer._name_of(f"n{i}.ns.svc.cluster.local.", "cluster.local.", False)
        light._labels_of(f"n{i}.example.")
        assert len(engine._names) <= 64
        assert len(answer._NAMES) <= 64
        assert len(light._LABELS) <= 64
    assert len(engine._names) > 0 and len(answer._NAMES) > 0 and len(light._LABELS) > 0
