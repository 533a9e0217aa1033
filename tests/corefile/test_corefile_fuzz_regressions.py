"""Corefiles the fuzzer once crashed on: each must build or fail with a CorefileError."""

from __future__ import annotations

import pytest

from dnsd.corefile import CorefileError, parse
from dnsd.serve.runtime import Runtime

CASES = [
    ".:1053 {\n    file zones/exa\x00mple.org\n}\n",
    ".:1053 {\n    hosts /etc/ho\x00sts\n}\n",
    "import non\x00e/*.conf\n.:1053 {\n    whoami\n}\n",
    ".:1053 {\n    file zones/example.org a..b\n}\n",
    ".:1053 {\n    file zones/example.org {\n        reload \"\"\n    }\n}\n",
    ".:1053 {\n    reload \"\"\n}\n",
    ".:1053 {\n    kubernetes cluster.local {\n        pods verified\n    }\n    autopath /etc/resolv\x00.conf\n}\n",
]


@pytest.mark.parametrize("text", CASES)
def test_fuzzer_findings_build_or_fail_cleanly(text: str) -> None:
    try:
        Runtime.build(parse(text, "Corefile"), 1053)
    except CorefileError as exc:
        assert str(exc).startswith("Corefile:")
