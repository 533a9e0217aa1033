"""The direct path: first answers without the coroutine chain.

A query with no prepared answer normally goes through the general path: a task, a parsed
``Request``, every plugin's coroutine, then packing.  For the common cluster query that is
mostly overhead: in kubeadm's Corefile every plugin before ``kubernetes`` (errors, prometheus,
loadbalance, cache with cluster.local excluded) only passes the query on.  When a block's
chain is like that, the engine asks each of those plugins whether it would only pass *this*
query on (``Plugin.direct_pass``), takes the reply's parts from the answering plugin
(``Plugin.direct_answer``), and builds the same message the general path would: same header
bits, same records in the same (shuffled) order, same EDNS record, same truncation, same
metrics.  A plugin that keeps answers on their way back (the cache, on a miss) returns a
``DirectFill`` and stores the reply itself.  Anything unusual (a fallthrough, an ExternalName
to chase, a cache entry to serve, a query the loop plugin watches for, ``log`` in the chain)
makes it decline, and the general path answers as before.  ``DNSD_DIRECT=0`` switches it off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dnsd.chain import Plugin

ENABLED = os.environ.get("DNSD_DIRECT") != "0"


@dataclass(frozen=True, slots=True)
class Plan:
    """How one block's chain answers directly."""

    passers: tuple[Plugin, ...]  # plugins before the answering one that check each query
    answerer: Plugin
    metrics: bool  # prometheus is in the chain: count the query
    shuffle: bool  # loadbalance is in the chain: shuffle the records


def plan_for(plugins: list[Plugin]) -> Plan | None:
    """The direct plan of a block's plugins (in chain order), or None when it has none."""
    if not ENABLED:
        return None
    passers: list[Plugin] = []
    metrics = shuffle = False
    for plugin in plugins:
        if plugin.passive:
            continue
        role = plugin.direct_role
        if role == "answer":
            return Plan(tuple(passers), plugin, metrics, shuffle)
        if role != "pass":
            return None
        if plugin.name == "prometheus":
            metrics = True
        elif plugin.name == "loadbalance":
            shuffle = True
        if type(plugin).direct_pass is not Plugin.direct_pass:
            passers.append(plugin)
    return None
