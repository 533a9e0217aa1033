"""Shared fixtures: a dnsd process started from a Corefile text, stopped after the test."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import Dnsd  # noqa: E402
from upstream import Upstream  # noqa: E402


@pytest.fixture
def dnsd() -> Iterator[Callable[..., Dnsd]]:
    """``dnsd(corefile_text)`` starts a server ({PORT} in the text is replaced by its port)."""
    started: list[Dnsd] = []

    def start(corefile: str, **kw: object) -> Dnsd:
        wait = bool(kw.pop("wait", True))
        server = Dnsd(corefile, **kw)  # type: ignore[arg-type]
        started.append(server)
        return server.start(wait=wait)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def upstreams() -> Iterator[Callable[..., Upstream]]:
    """``upstreams(**kw)`` starts an Upstream that is stopped after the test."""
    started: list[Upstream] = []

    def start(**kw: object) -> Upstream:
        up = Upstream(**kw).start()  # type: ignore[arg-type]
        started.append(up)
        return up

    yield start
    for up in started:
        up.stop()


@pytest.fixture
def api(cluster: Any) -> Iterator[Any]:
    """A kubernetes ApiClient on the module's ``cluster`` fixture (an API emulator)."""
    from kubernetes import client

    with client.ApiClient(client.Configuration(host=cluster.url)) as api_client:
        yield api_client
