"""Network-status annotation fuzzing at volume: ``parse_network_status`` (not collected by pytest).

    python tests/bench/fuzz_annotations.py [--inputs 1000000] [--workers 2] [--seed 1]

The normal tests run a few hundred hypothesis examples; this runs a million inputs from a fast
seeded generator, split over ``--workers`` processes:

- generated annotations: lists of entries whose fields (``name``, ``interface``, ``ips``,
  ``default``, ``mac``, ``dns``, unknown keys) are sometimes right and sometimes of any JSON
  type; IP texts valid and not (prefixes, ``%zone`` suffixes, spaces, IPv4-mapped, link-local,
  loopback, multicast, unspecified, 5 octets); names ``ns/nad``, ``nad``, ``/``, ``a/b/c``,
  unicode; 0 to 70 entries and 0 to 40 IPs (around the 64 and 32 limits); huge numbers;
- random JSON values of every type, nested up to 200 deep, and sometimes ``[`` x 100,000;
- mutations of those and of the annotations written in the tests (the examples of
  ``secondary_ips.md``): character flips, deletions, insertions of JSON punctuation,
  truncation, escapes, lone surrogates; sizes near the 64 KiB limit;
- arbitrary text.

Each goes with a namespace, ``link_local`` on or off, and primary IPs (strings or any JSON value).
Only ``AnnotationError`` may escape.  Prints inputs fuzzed, exceptions, parsed / rejected,
time; exits 1 unless exceptions are 0.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import fuzz_support

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

IPS = ["10.0.0.1", "10.0.0.1/24", " 10.0.0.1", "10.0.0.1 ", "10.0.0.1/", "/24", "fe80::1",
       "fe80::1%eth0", "fe80::1%", "%eth0", "fd00::1", "fd00::1/64", "::ffff:10.0.0.1", "127.0.0.1",
       "::1", "0.0.0.0", "::", "224.0.0.1", "ff02::1", "169.254.1.1", "not-an-ip", "", " ",
       "1.2.3.4.5", "2001:db8::/64", "2001:db8::1", "192.168.1.205", "10.244.1.73", "01.2.3.4",
       "1.2.3", "1.2.3.256", "2001:db8:::1", "::ffff:1.2.3.4%x", "1.2.3.4/33", "1.2.3.4/x",
       "10.0.0.1/24/8", "10.0.0.1%eth0", "\u0661.2.3.4", "1\u00a0.2.3.4", "10.0.0.1\x00",
       "fd00::1 /64", "[fd00::1]", "0x0a.0.0.1", "4294967295", "10.0.0.1:80"]
NAMES = ["cbr0", "macvlan-conf", "kube-system/k8s-pod-network", "ns/net1", "net1", "/", "//",
         "a/b/c", "", " ", " ns / net ", "ns/", "/net", "default/eth", "ÿ/ÿ", "\udcff",
         "Net_1", "n" * 70, "x/" * 50, "ns/net1\n", "\u2028"]
KEYS = ["name", "interface", "ips", "default", "mac", "dns", "default-route", "device-info",
        "gateway", "ip", "Name", "IPS", ""]


def harvest_annotations() -> list[str]:
    """The network-status annotations written in the tests: string literals that are JSON
    lists, and Python list literals of entries (dicts with a ``name`` or ``ips``)."""
    out: list[str] = []
    for source in sorted((ROOT / "tests").rglob("*.py")):
        with contextlib.suppress(SyntaxError, ValueError):
            for node in ast.walk(ast.parse(source.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and "[" in node.value:
                    with contextlib.suppress(ValueError, RecursionError):
                        if isinstance(json.loads(node.value), list) and len(node.value) < 20_000:
                            out.append(node.value)
                elif isinstance(node, ast.List) and node.elts and isinstance(node.elts[0], ast.Dict):
                    with contextlib.suppress(ValueError, TypeError, SyntaxError, RecursionError):
                        value = ast.literal_eval(node)
                        if any(isinstance(e, dict) and ("name" in e or "ips" in e) for e in value):
                            out.append(json.dumps(value))
    return list(dict.fromkeys(out))


class Generator:
    def __init__(self, rng: random.Random, seeds: list[str]) -> None:
        self.rng = rng
        self.seeds = seeds

    def value(self, depth: int = 0) -> Any:
        """Any JSON value."""
        rng = self.rng
        r = rng.random()
        if depth > 3 or r < 0.55:
            return rng.choice((None, True, False, 0, 1, -1, 2**64, -(2**70), 1.5, 1e308, -0.0,
                               rng.randrange(-1000, 1000), rng.choice(IPS), rng.choice(NAMES),
                               rng.choice(KEYS), "x" * rng.randrange(0, 40)))
        if r < 0.8:
            return [self.value(depth + 1) for _ in range(rng.randrange(0, 5))]
        return {rng.choice(KEYS) if rng.random() < 0.6 else rng.choice(NAMES): self.value(depth + 1)
                for _ in range(rng.randrange(0, 5))}

    def ip_list(self) -> Any:
        rng = self.rng
        if rng.random() < 0.1:
            return self.value()
        n = rng.choice((0, 1, 1, 2, 2, 3, 5)) if rng.random() < 0.95 else rng.choice((31, 32, 33, 40))
        return [rng.choice(IPS) if rng.random() < 0.9 else self.value(2) for _ in range(n)]

    def entry(self) -> Any:
        rng = self.rng
        if rng.random() < 0.05:
            return self.value(1)
        e: dict[str, Any] = {}
        if rng.random() < 0.92:
            e["name"] = rng.choice(NAMES) if rng.random() < 0.9 else self.value(2)
        if rng.random() < 0.7:
            e["interface"] = rng.choice(("eth0", "net1", "", "ib0")) if rng.random() < 0.9 else self.value(2)
        if rng.random() < 0.9:
            e["ips"] = self.ip_list()
        if rng.random() < 0.5:
            e["default"] = rng.random() < 0.5 if rng.random() < 0.85 else self.value(2)
        if rng.random() < 0.3:
            e["mac"] = "02:11:22:33:44:55"
        if rng.random() < 0.3:
            e["dns"] = self.value(1)
        if rng.random() < 0.1:
            e[rng.choice(KEYS)] = self.value(1)
        items = list(e.items())
        rng.shuffle(items)
        return dict(items)

    def annotation(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            n = rng.choice((0, 1, 1, 2, 2, 2, 3, 4, 6)) if rng.random() < 0.98 else rng.choice((63, 64, 65, 70))
            text = json.dumps([self.entry() for _ in range(n)], ensure_ascii=rng.random() < 0.5,
                              indent=rng.choice((None, None, 1, 4)))
        elif r < 0.55:
            text = json.dumps(self.value(), ensure_ascii=rng.random() < 0.5)
        elif r < 0.6:
            d = rng.choice((10, 100, 200, 1000))
            text = "[" * d + rng.choice(("", "1", "{}")) + "]" * (d if rng.random() < 0.8 else d // 2)
        elif r < 0.9:
            text = rng.choice(self.seeds)
        elif r < 0.95:
            text = "".join(rng.choice('[]{}",:0123456789.eE+-truefalsenul \n\\/u"namipsdefault')
                           for _ in range(rng.randrange(0, 120)))
        else:
            text = rng.randbytes(rng.randrange(0, 200)).decode("utf-8", rng.choice(("replace", "surrogateescape")))
        if rng.random() < 0.002:  # around the 64 KiB limit
            pad = 65536 - len(text.encode("utf-8", "surrogatepass")) + rng.randrange(-3, 4)
            text = text + " " * max(0, pad) if rng.random() < 0.5 else json.dumps(
                [{"name": "n", "ips": ["10.0.0.1"], "mac": "x" * max(0, pad - 40)}])
        if 0.6 <= r < 0.9 or rng.random() < 0.35:
            text = self.mutate(text)
        return text

    def mutate(self, text: str) -> str:
        rng = self.rng
        chars = list(text)
        for _ in range(rng.choice((1, 1, 2, 3, 5))):
            op = rng.random()
            pos = rng.randrange(len(chars) + 1)
            if op < 0.25 and chars:
                del chars[pos:pos + rng.choice((1, 1, 2, 4, 16))]
            elif op < 0.55:
                chars[pos:pos] = list(rng.choice(('"', "[", "]", "{", "}", ",", ":", "\\", "\\u", "\\ud800",
                                                  "\\udc00", "\udcff", "\x00", "null", "true", "1e999",
                                                  "-", ".", "e", "/", "%", " ", "\n", "NaN", "Infinity",
                                                  '"ips":', '"name":', '"default":true', '{"name":"x"}',
                                                  rng.choice(IPS), rng.choice(NAMES))))
            elif op < 0.75 and chars:
                i = min(pos, len(chars) - 1)
                chars[i] = chr(ord(chars[i]) ^ (1 << rng.randrange(7))) if ord(chars[i]) < 0xD800 else "x"
            elif op < 0.85:
                chars = chars[:pos]
            elif chars:  # duplicate a slice
                j = rng.randrange(len(chars))
                chars[pos:pos] = chars[j:j + rng.randrange(1, 60)]
        return "".join(chars)

    def primary(self) -> list[Any]:
        rng = self.rng
        return [rng.choice(IPS) if rng.random() < 0.85 else self.value(2) for _ in range(rng.choice((0, 1, 1, 2, 3)))]


def worker(args: tuple[int, int]) -> dict[str, Any]:
    n, seed = args
    from dnsd.plugins.kubernetes.secondary import AnnotationError, parse_network_status

    seeds = harvest_annotations()
    rng = random.Random(seed)
    gen = Generator(rng, seeds)
    stats: dict[str, Any] = {"inputs": 0, "exceptions": 0, "parsed": 0, "rejected": 0, "attachments": 0,
                             "bytes": 0, "examples": [], "seeds": len(seeds)}
    reasons: collections.Counter[str] = collections.Counter()
    signatures: collections.Counter[str] = collections.Counter()
    start = time.monotonic()
    for _ in range(n):
        value = gen.annotation()
        namespace = rng.choice(("ns", "default", "", "ÿ", "a/b"))
        link_local = rng.random() < 0.5
        primary = gen.primary()
        stats["inputs"] += 1
        stats["bytes"] += len(value)
        try:
            atts = parse_network_status(value, namespace, link_local, primary)
        except AnnotationError as exc:
            stats["rejected"] += 1
            reasons[exc.reason] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - what we are counting
            fuzz_support.record_exception(stats, signatures, exc,
                                          f"{value[:2000]!r} {namespace!r} {link_local} {primary!r}")
            continue
        stats["parsed"] += 1
        stats["attachments"] += len(atts)
    stats["time"] = time.monotonic() - start
    stats["reasons"] = dict(reasons)
    stats["signatures"] = dict(signatures)
    return stats


def main() -> int:
    a = fuzz_support.arguments(__doc__, "inputs").parse_args()
    results, took = fuzz_support.run(worker, a.inputs, a.workers, a.seed)
    total = fuzz_support.totals(results, ("inputs", "exceptions", "parsed", "rejected",
                                          "attachments", "bytes"))
    reasons: collections.Counter[str] = collections.Counter()
    for r in results:
        reasons.update(r["reasons"])
    print(f"seed annotations: {results[0]['seeds']} (the network-status annotations written in the tests)")
    print(f"inputs fuzzed:    {total['inputs']:,} ({total['bytes'] / max(1, total['inputs']):,.0f} characters on average)")
    print(f"exceptions:       {total['exceptions']}")
    print(f"parsed / AnnotationError: {total['parsed']:,} ({total['attachments']:,} attachments) / "
          f"{total['rejected']:,} {dict(reasons.most_common())}")
    fuzz_support.print_time(took, total["inputs"], "inputs", a.workers, a.seed)
    fuzz_support.print_failures(results)
    return 0 if total["exceptions"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
