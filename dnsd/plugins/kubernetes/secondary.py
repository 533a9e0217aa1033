"""Secondary-network records (dnsd extension): placeholder hooks until the feature lands.

With ``secondary_networks`` absent (the only configuration accepted until then), these
functions contribute nothing, so every answer stays exactly CoreDNS's.
"""

from __future__ import annotations

from typing import Any


def net_entries(ix: Any, view: Any, parsed: Any) -> list[Any]:
    return []


def secondary_ptr(ix: Any, opt: Any, qname: str, ip: str) -> list[Any]:
    return []
