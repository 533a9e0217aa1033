"""forward: proxy queries to upstream DNS servers.

Syntax::

    forward FROM TO... {
        except IGNORED_NAMES...
        force_tcp
        prefer_udp
        expire DURATION
        max_fails INTEGER
        health_check DURATION [no_rec] [domain FQDN]
        policy random|round_robin|sequential
        max_concurrent MAX
        next RCODE...
        failfast_all_unhealthy_upstreams
    }

FROM is the zone whose names are forwarded (others, and names below an ``except`` name, go to
the next plugin).  TO is ``IP``, ``IP:port``, ``[IPv6]:port``, ``dns://...`` or a
resolv.conf-style file whose ``nameserver`` lines are used (15 upstreams at most).  Upstreams
are queried over the client's transport, so a truncated UDP reply goes back to the client,
which retries over TCP (``force_tcp``: always TCP; ``prefer_udp``: UDP first, and TCP again
when that reply is truncated).  Each query gets a new random ID and UDP source port; replies
whose ID or question do not match are ignored.  Tries time out after 2 s, the whole query after
5 s: then SERVFAIL.  A failed query starts health checks (``. IN NS`` every ``health_check``,
default 0.5 s); an upstream is skipped while more than ``max_fails`` (default 2) checks in a
row failed; when all are down one is picked at random (or SERVFAIL with
``failfast_all_unhealthy_upstreams``).  ``max_concurrent`` answers REFUSED above that many
queries in flight; ``next`` hands replies with those rcodes to the next plugin.  Several
``forward`` directives in one block chain in order.  ``tls``/``tls://`` are not supported.
"""

from dnsd.plugins.forward.plugin import Plugin

__all__ = ["Plugin"]
