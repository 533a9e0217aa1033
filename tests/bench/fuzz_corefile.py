"""Corefile fuzzing at volume: ``parse`` + ``Runtime.build`` (not collected by pytest).

    python tests/bench/fuzz_corefile.py [--inputs 1000000] [--workers 2] [--seed 1]

The normal tests (``tests/reliability/test_bad_input.py``) run about 1,500 hypothesis examples;
this runs a million inputs from a fast seeded generator, split over ``--workers`` processes:

- mutations of real Corefiles: ``Corefile.example``, the deployment ConfigMaps, the fuzz seeds of
  ``test_bad_input.py`` and every Corefile written in the tests (string literals that parse),
  with byte, token and line mutations (deletions, insertions of directive names, option names
  and arguments seen in those Corefiles, braces, quotes, backslashes, comments, env
  placeholders, NULs, edge numbers, durations, addresses; duplicated, dropped and swapped
  lines; truncation);
- structured Corefiles generated from the same vocabulary: server blocks with random keys, and
  every implemented directive with arguments and sub-options it knows or not;
- token soups (``test_bad_input.random_corefile``) and arbitrary text.

Only ``CorefileError`` may escape.  ``Runtime.build`` only parses and sets plugins up: an audit
hook records every socket created, bound, connected or used and every process started, and
thread creation is intercepted; the run fails if any socket is bound/connected/used, any thread
or process is started, or any input takes longer than ``--hang`` seconds.  Prints inputs
fuzzed, exceptions, hangs, side effects, how many inputs built a whole runtime, the slowest
plugin setups and time; exits 1 unless exceptions, hangs and forbidden side effects are 0.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import logging
import os
import random
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import fuzz_support

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "reliability")]

ENV = {"HOME": "/root", "ZONE": "example.org", "PORT": "1053"}
FORBIDDEN = ("socket.bind", "socket.connect", "socket.sendto", "socket.sendmsg", "socket.sendall",
             "socket.send", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
             "subprocess.Popen", "os.system", "os.exec", "os.spawn", "os.fork", "os.posix_spawn",
             "thread.start")


# --- seeds and vocabulary --------------------------------------------------------------------


def _literal(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's with each ``{expr}`` replaced by a placeholder."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant) and isinstance(v.value, str):
                parts.append(v.value)
            else:
                parts.append("placeholder")
        return "".join(parts)
    return None


def harvest_corefiles() -> list[str]:
    """Every Corefile in the repository: the example, the deployment manifests, and the string
    literals of the tests that parse as one (``{PORT}`` becomes 53)."""
    from dnsd.corefile import CorefileError, parse

    texts = [(ROOT / "Corefile.example").read_text()]
    with contextlib.suppress(ImportError):
        import yaml

        for manifest in sorted((ROOT / "deploy").rglob("*.yaml")):
            for doc in yaml.safe_load_all(manifest.read_text()):
                data = (doc or {}).get("data") if isinstance(doc, dict) else None
                if isinstance(data, dict):
                    texts.extend(v for k, v in data.items() if k.startswith("Corefile") and isinstance(v, str))
    for source in sorted((ROOT / "tests").rglob("*.py")):
        with contextlib.suppress(SyntaxError, ValueError):
            tree = ast.parse(source.read_text())
            for node in ast.walk(tree):
                text = _literal(node)
                if text and "{" in text and "\n" in text and len(text) < 4000:
                    texts.append(text.replace("{PORT}", "53"))
    seeds: list[str] = []
    for text in dict.fromkeys(texts):
        with contextlib.suppress(CorefileError, RecursionError):
            if parse(text, env=ENV):
                seeds.append(text)
    from test_bad_input import corefile_seeds

    return list(dict.fromkeys([*seeds, *corefile_seeds()]))


class Vocabulary:
    """What the seeds say: per directive, the arguments and sub-options seen; server keys."""

    def __init__(self, seeds: list[str]) -> None:
        from test_bad_input import WORDS

        from dnsd.chain import IMPLEMENTED
        from dnsd.corefile import parse

        self.words = list(WORDS)
        self.keys: list[str] = []
        self.args: dict[str, list[str]] = collections.defaultdict(list)
        self.options: dict[str, list[tuple[str, list[str]]]] = collections.defaultdict(list)
        self.directives = sorted(IMPLEMENTED)
        for text in seeds:
            for sb in parse(text, env=ENV):
                self.keys.extend(sb.keys)
                for d in sb.directives:
                    self._learn(d)
        self.keys = list(dict.fromkeys(self.keys))
        self.tokens = list(dict.fromkeys(
            [*self.words, *self.keys, *(a for v in self.args.values() for a in v),
             *(o for v in self.options.values() for o, _ in v)]))
        self.edge = ["0", "1", "-1", "2147483648", "9223372036854775808", "1e9", "0x10", "3600",
                     "65535", "65536", "0s", "1ms", "1h", "24h", "25h", "-5s", "1.5s", "10m0s",
                     "nan", "inf", "1/0", "::", "::1", "0.0.0.0/0", "10.0.0.0/7", "10.0.0.1/32",
                     "fd00::/129", "256.1.1.1", "[::1]:53", "127.0.0.1:0", "127.0.0.1:99999",
                     ".", "..", "a..b", "-", "*.example.org", "_tcp", "xn--", "ÿ", "\u00e9t\u00e9",
                     "{$HOME}", "{$UNSET:default}", "{env.PORT}", "{%ZONE%}", "{$", "{}", "\\",
                     "\"", "\"\"", "#", "' '", "/", "//", "./zones", "zones", "/etc", "/proc/self/x",
                     "tls://.:853", "dns://:53", "grpc://.", "https://.", "dns://10.0.0.1:53",
                     "a" * 64, "a" * 256, "x." * 130]

    def _learn(self, d: Any, parent: str = "") -> None:
        if parent:
            self.options[parent].append((d.name, list(d.args)))
        else:
            self.args[d.name].extend(d.args)
        for child in d.children:
            self._learn(child, parent or d.name)


# --- the generator --------------------------------------------------------------------------


class Generator:
    def __init__(self, rng: random.Random, seeds: list[str], vocab: Vocabulary) -> None:
        self.rng = rng
        self.seeds = seeds
        self.v = vocab

    def __iter__(self) -> Generator:
        return self

    def __next__(self) -> str:
        r = self.rng.random()
        if r < 0.45:
            return self.mutate(self.rng.choice(self.seeds))
        if r < 0.75:
            text = self.structured()
            return self.mutate(text) if self.rng.random() < 0.3 else text
        if r < 0.93:
            from test_bad_input import random_corefile

            text = random_corefile(self.rng)
            return self.mutate(text) if self.rng.random() < 0.2 else text
        return self.arbitrary()

    # a token from anywhere, or an edge value
    def token(self, directive: str = "") -> str:
        rng = self.rng
        r = rng.random()
        if directive and r < 0.5 and self.v.args.get(directive):
            return rng.choice(self.v.args[directive])
        if r < 0.75:
            return rng.choice(self.v.edge)
        return rng.choice(self.v.tokens)

    def structured(self) -> str:
        rng = self.rng
        out: list[str] = []
        if rng.random() < 0.1:
            out.append("(snip) {\n " + rng.choice(self.v.directives) + "\n}\n")
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            keys = [rng.choice(self.v.keys) if rng.random() < 0.7 else self.token()
                    for _ in range(rng.choice((1, 1, 2, 3)))]
            out.append(" ".join(keys) + " {\n")
            for _ in range(rng.randrange(0, 9)):
                out.append(self.directive() + "\n")
            if rng.random() < 0.05:
                out.append(" import snip\n")
            out.append("}\n")
        return "".join(out)

    def directive(self) -> str:
        rng = self.rng
        name = rng.choice(self.v.directives) if rng.random() < 0.95 else self.token()
        args = [self.token(name) for _ in range(rng.choice((0, 0, 1, 1, 1, 2, 3, 5)))]
        line = " " + " ".join([name, *args])
        if rng.random() < 0.45:
            opts = self.v.options.get(name) or []
            lines = []
            for _ in range(rng.randrange(0, 6)):
                if opts and rng.random() < 0.75:
                    opt, opt_args = rng.choice(opts)
                    opt_args = list(opt_args)
                    if opt_args and rng.random() < 0.4:
                        opt_args[rng.randrange(len(opt_args))] = self.token(name)
                    if rng.random() < 0.2:
                        opt_args.append(self.token(name))
                    if opt_args and rng.random() < 0.15:
                        opt_args.pop()
                else:
                    opt, opt_args = self.token(name), [self.token(name) for _ in range(rng.randrange(3))]
                lines.append("  " + " ".join([opt, *opt_args]))
                if rng.random() < 0.05:  # a nested block
                    lines.append("  " + rng.choice(self.v.tokens) + " {\n   " + self.token() + "\n  }")
            line += " {\n" + "\n".join(lines) + "\n }"
        return line

    def arbitrary(self) -> str:
        rng = self.rng
        if rng.random() < 0.5:
            alphabet = " \t\n\n{}{}\"\\#$%.:/*()[]-_0123456789abcdefxyz\x00\u00ff\u2028"
            return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 400)))
        return rng.randbytes(rng.randrange(0, 300)).decode("utf-8", "replace")

    def mutate(self, text: str) -> str:
        rng = self.rng
        if rng.random() < 0.25:  # line-level
            lines = text.split("\n")
            for _ in range(rng.randint(1, 4)):
                op = rng.random()
                i = rng.randrange(len(lines))
                if op < 0.3 and len(lines) > 1:
                    del lines[i]
                elif op < 0.55:
                    lines.insert(rng.randrange(len(lines) + 1), lines[i])
                elif op < 0.75:
                    j = rng.randrange(len(lines))
                    lines[i], lines[j] = lines[j], lines[i]
                elif op < 0.9:
                    lines.insert(i, self.directive())
                else:
                    words = lines[i].split()
                    if words:
                        words[rng.randrange(len(words))] = self.token()
                        lines[i] = " " + " ".join(words)
            text = "\n".join(lines)
        data = bytearray(text.encode())
        for _ in range(rng.choice((0, 1, 1, 2, 3, 5, 8)) if rng.random() < 0.7 else rng.randint(1, 6)):
            op = rng.random()
            pos = rng.randrange(len(data) + 1)
            if op < 0.25 and data:
                del data[pos:pos + rng.choice((1, 1, 2, 5, 10, 40))]
            elif op < 0.55:
                data[pos:pos] = rng.choice(self.v.tokens).encode() + rng.choice((b" ", b" ", b"\n", b"\t"))
            elif op < 0.7:
                data[pos:pos] = rng.choice(self.v.edge).encode() + b" "
            elif op < 0.88:
                data[pos:pos] = rng.choice((b"{", b"}", b"{\n", b"\n}\n", b"\n", b"\"", b"\\", b"#",
                                            b"\x00", b"\xff", b"\r", b"{$", b"}}", b"{{", b" { } "))
            elif op < 0.95 and data:
                data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
            else:
                data = data[:pos]
        return data.decode("utf-8", "replace")


# --- side-effect watch ------------------------------------------------------------------------


class Watch:
    """Counts sockets, processes and threads (audit hook + thread interception)."""

    def __init__(self) -> None:
        self.events: collections.Counter[str] = collections.Counter()
        self.where: dict[str, str] = {}
        self.opened_files: collections.Counter[str] = collections.Counter()
        sys.addaudithook(self._hook)
        original = threading._start_new_thread  # type: ignore[attr-defined]

        def start_new_thread(*a: Any, **kw: Any) -> Any:
            self._record("thread.start")
            return original(*a, **kw)

        threading._start_new_thread = start_new_thread  # type: ignore[attr-defined]

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path = args[0]
            if isinstance(path, str) and not path.endswith((".py", ".pyc")) and "__pycache__" not in path:
                self.opened_files[path] += 1
            return
        if event.startswith(("socket.", "subprocess.", "os.system", "os.exec", "os.spawn",
                             "os.fork", "os.posix_spawn")):
            self._record(event)

    def _record(self, event: str) -> None:
        frame = sys._getframe(1)
        while frame is not None and "/dnsd/" not in frame.f_code.co_filename:
            frame = frame.f_back  # type: ignore[assignment]
        site = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}" if frame else "?"
        self.events[f"{event} ({site})"] += 1
        if event not in self.where:
            self.where[event] = "".join(traceback.format_stack(limit=8)[:-2])


class _Hang(BaseException):  # not swallowed by an ``except Exception`` in a plugin
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Hang


# --- the worker -----------------------------------------------------------------------------


def worker(args: tuple[int, int, float]) -> dict[str, Any]:
    n, seed, hang = args
    os.chdir(ROOT)  # relative paths of the seeds (zones/example.org) resolve
    logging.getLogger("dnsd").propagate = False
    logging.getLogger("dnsd").addHandler(logging.NullHandler())
    from dnsd.chain import IMPLEMENTED, plugin_class
    from dnsd.corefile import CorefileError, parse
    from dnsd.serve.runtime import Runtime

    seeds = harvest_corefiles()
    vocab = Vocabulary(seeds)
    setup_time: dict[str, float] = collections.defaultdict(float)
    setup_calls: collections.Counter[str] = collections.Counter()
    setup_max: dict[str, tuple[float, str]] = {}
    current = [""]

    def timed(name: str, fn: Any) -> Any:
        def setup(cls: Any, directives: Any, ctx: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(directives, ctx)
            finally:
                took = time.perf_counter() - t
                setup_time[name] += took
                setup_calls[name] += 1
                if took > setup_max.get(name, (0.0, ""))[0]:
                    setup_max[name] = (took, current[0])
        return classmethod(setup)

    for name in IMPLEMENTED:
        cls = plugin_class(name)
        cls.setup = timed(name, cls.setup)

    watch = Watch()
    fds_before = len(os.listdir("/proc/self/fd"))
    threads_before = threading.active_count()
    signal.signal(signal.SIGALRM, _alarm)
    gen = Generator(random.Random(seed), seeds, vocab)
    stats: dict[str, Any] = {"inputs": 0, "exceptions": 0, "hangs": 0, "built": 0, "corefile_errors": 0,
                             "bytes": 0, "examples": [], "slowest": [], "seeds": len(seeds)}
    signatures: collections.Counter[str] = collections.Counter()
    slowest: list[tuple[float, str]] = []
    start = time.monotonic()
    for _ in range(n):
        text = next(gen)
        current[0] = text
        stats["inputs"] += 1
        stats["bytes"] += len(text)
        t = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, hang)
        try:
            Runtime.build(parse(text, env=ENV), default_port=53)
            stats["built"] += 1
        except CorefileError:
            stats["corefile_errors"] += 1
        except _Hang:
            stats["hangs"] += 1
            if stats["hangs"] <= 3:
                stats["examples"].append(f"HANG (> {hang:g} s) on {text!r}")
        except Exception as exc:  # noqa: BLE001 - what we are counting
            fuzz_support.record_exception(stats, signatures, exc, repr(text))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        took = time.perf_counter() - t
        if len(slowest) < 5 or took > slowest[0][0]:
            slowest.append((took, text))
            slowest.sort(key=lambda x: x[0])
            del slowest[:-5]
    stats["time"] = time.monotonic() - start
    stats["signatures"] = dict(signatures)
    stats["slowest"] = slowest
    stats["events"] = dict(watch.events)
    stats["where"] = watch.where
    stats["files"] = dict(watch.opened_files.most_common(8))
    stats["fds"] = (fds_before, len(os.listdir("/proc/self/fd")))
    stats["threads"] = (threads_before, threading.active_count())
    stats["setup"] = {k: (setup_calls[k], setup_time[k], *setup_max.get(k, (0.0, ""))) for k in setup_calls}
    return stats


def main() -> int:
    p = fuzz_support.arguments(__doc__, "inputs")
    p.add_argument("--hang", type=float, default=10.0, help="seconds one input may take")
    a = p.parse_args()
    results, took = fuzz_support.run(worker, a.inputs, a.workers, a.seed, a.hang)
    total = fuzz_support.totals(results, ("inputs", "exceptions", "hangs", "built",
                                          "corefile_errors", "bytes"))
    events: collections.Counter[str] = collections.Counter()
    for r in results:
        events.update(r["events"])
    forbidden = {e: c for e, c in events.items() if e.startswith(FORBIDDEN)}
    print(f"seed Corefiles:   {results[0]['seeds']} (Corefile.example, deploy/, the tests' Corefiles)")
    print(f"inputs fuzzed:    {total['inputs']:,} ({total['bytes'] / max(1, total['inputs']):,.0f} bytes on average)")
    print(f"exceptions:       {total['exceptions']}")
    print(f"hangs (> {a.hang:g} s):   {total['hangs']}")
    print(f"CorefileError / built: {total['corefile_errors']:,} / {total['built']:,}")
    print(f"side effects:     {dict(events) or 'none'}")
    print(f"forbidden ones:   {forbidden or 'none'} (sockets bound, connected or used; lookups; "
          f"threads; processes)")
    for r in results[:1]:
        for e, where in r["where"].items():
            if e.startswith(FORBIDDEN):
                print(f"  first {e}:\n{where}")
        print(f"fds / threads:    {r['fds'][0]} -> {r['fds'][1]} / {r['threads'][0]} -> {r['threads'][1]} (worker 1)")
        print(f"files opened:     {r['files']} (worker 1, top 8)")
    setup: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for r in results:
        for name, (calls, spent, worst, _text) in r["setup"].items():
            s = setup[name]
            s[0] += calls
            s[1] += spent
            s[2] = max(s[2], worst)
    print("plugin setup (calls, mean, worst), slowest mean first:")
    for name, (calls, spent, worst) in sorted(setup.items(), key=lambda kv: -kv[1][1] / kv[1][0])[:8]:
        print(f"  {name:14} {calls:>9,} {spent / calls * 1e6:9.0f} us {worst * 1e3:9.1f} ms")
    slowest = sorted((s for r in results for s in r["slowest"]), key=lambda s: -s[0])[:3]
    for t, text in slowest:
        print(f"slow input: {t * 1e3:.1f} ms: {text[:300]!r}")
    fuzz_support.print_time(took, total["inputs"], "inputs", a.workers, a.seed)
    fuzz_support.print_failures(results)
    threads_started = any(r["threads"][1] > r["threads"][0] for r in results)
    ok = total["exceptions"] == total["hangs"] == 0 and not forbidden and not threads_started
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
