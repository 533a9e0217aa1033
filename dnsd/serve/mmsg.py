"""Batched UDP I/O on Linux: ``recvmmsg(2)`` and ``sendmmsg(2)`` through ctypes.

One ``MmsgUdp`` per UDP listener.  Each wake-up reads up to ``BATCH`` datagrams with one
``recvmmsg``, answers hot-path hits (``Engine.fast``) and sends all those replies with one
``sendmmsg``.  A reply goes back to the sender's ``sockaddr`` exactly as the kernel wrote it
on receipt, so a hit builds no Python address tuple and no address string.

A send entry has two iovecs: the reply's ID, then the rest.  Send entry ``i`` reads its ID
from receive slot ``i`` and its address from name buffer ``i``, where the ``i``-th datagram
and its sender were received; so the ``i``-th reply of a batch whose ``i`` first datagrams
all got one (the usual case) needs neither copied.  When a datagram gets no reply here (a
miss), the later replies move down one entry: their ID is copied to the entry's receive slot
(whose datagram is already done) and the entry's ``msg_name`` pointed at their sender.  The
rest of a reply is either a hot-path reply copied into the entry's send slot or, for an
express-lane repeat (dnsd/wire/express.py), the lane's own bytes: no copy at all.

Only misses (the general path, run as tasks by the listener) get an ``(ip, port[, flowinfo,
scope_id])`` tuple, parsed from the raw ``sockaddr_in``/``sockaddr_in6`` the way
``socket.recvfrom`` would have made it.

Everything is allocated once per listener, in anonymous ``mmap`` regions so that only the pages
actually written become resident: the ``mmsghdr`` arrays, iovecs and name buffers (one small
region), ``BATCH`` receive slots and ``BATCH`` send slots of 64 KiB each (about 8 MiB of
address space, about 0.5 MiB resident in steady state).  A slot takes the largest datagram
(``iov_len`` 65,535, as ``recvfrom(65535)`` did), so nothing is truncated; pages beyond the
first that a big datagram or reply touched are handed back with ``MADV_DONTNEED``.

Errors: ``EAGAIN`` ends the wake-up, ``EINTR`` retries, anything else on receive (ICMP errors
queued on the socket, ``ECONNREFUSED``...) is logged at debug level and reading goes on.  A
partial ``sendmmsg`` is continued from the first unsent reply; ``EAGAIN``/``ENOBUFS`` drop the
rest of that batch's replies, any other send error drops the one reply it concerns (the
per-packet ``sendto`` loop dropped failed replies the same way, with a debug log).

``available()`` says whether this works here (Linux with a libc that has both calls); the
listener falls back to its ``recvfrom``/``sendto`` loop otherwise, or when the set-up fails.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import mmap
import os
import socket
import sys
from array import array
from time import monotonic, perf_counter
from typing import TYPE_CHECKING, Any

from dnsd.wire import express

if TYPE_CHECKING:
    from dnsd.serve.udp import UdpListener

log = logging.getLogger("dnsd")

BATCH = 64  # datagrams per recvmmsg / replies per sendmmsg
ROUNDS = 4  # recvmmsg calls per wake-up at most (BATCH * ROUNDS datagrams), so TCP and the rest run
SLOT = 65536  # bytes per receive and per send slot
RECV_MAX = 65535  # iov_len of a receive slot: what recvfrom(65535) read
NAME_STRIDE = 32  # bytes per sockaddr buffer (sockaddr_in6 is 28)
SOCKADDR_IN = 16
SOCKADDR_IN6 = 28
MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
_MAPPED = b"\x00" * 10 + b"\xff\xff"  # ::ffff:0:0/96, IPv4 clients of a dual-stack socket
_EINTR_RETRIES = 8


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),  # socklen_t
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_functions: tuple[Any, Any] | None = None
_looked_up = False


def _libc_functions() -> tuple[Any, Any] | None:
    """(recvmmsg, sendmmsg) from libc, or None where they cannot be used."""
    global _functions, _looked_up
    if _looked_up:
        return _functions
    _looked_up = True
    if not sys.platform.startswith("linux"):
        return None
    try:
        # PyDLL keeps the GIL over the call: the calls never block (MSG_DONTWAIT), and
        # dropping and retaking the GIL would cost more than the call itself.
        libc = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    # No argtypes: the callers pass pointers as c_void_p and the rest as small ints, which
    # ctypes hands over as they are (converting through argtypes took ~0.4 µs per call).
    recv.restype = ctypes.c_int
    send.restype = ctypes.c_int
    _functions = (recv, send)
    return _functions


def available() -> bool:
    """Can ``MmsgUdp`` work on this system?"""
    return _libc_functions() is not None


def sockaddr_to_tuple(raw: bytes) -> tuple[Any, ...]:
    """The address tuple ``socket.recvfrom`` makes from a ``sockaddr_in``/``sockaddr_in6``."""
    family = int.from_bytes(raw[0:2], sys.byteorder)
    port = (raw[2] << 8) | raw[3]
    if family == socket.AF_INET6:
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port,
                int.from_bytes(raw[4:8], "big"), int.from_bytes(raw[24:28], sys.byteorder))
    return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)


class MmsgUdp:
    """Pre-allocated recvmmsg/sendmmsg state for one non-blocking UDP socket."""

    _moved = False  # a send entry's msg_name points elsewhere than its own name buffer

    def __init__(self, sock: socket.socket, batch: int = BATCH) -> None:
        funcs = _libc_functions()
        if funcs is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available")
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError(f"unsupported address family {sock.family!r}")
        self._recvmmsg, self._sendmmsg = funcs
        self.sock = sock
        self.fd = sock.fileno()
        self.batch = batch
        self.v6 = sock.family == socket.AF_INET6
        namelen = SOCKADDR_IN6 if self.v6 else SOCKADDR_IN
        ptr = ctypes.sizeof(ctypes.c_void_p)
        hsize, isize = ctypes.sizeof(_MMsgHdr), ctypes.sizeof(_IoVec)
        if hsize % ptr or isize % ptr or ctypes.sizeof(ctypes.c_size_t) != ptr:
            raise ValueError("unexpected struct layout")
        off_shdr = batch * hsize
        off_riov = 2 * batch * hsize
        off_siov = off_riov + batch * isize  # two per send entry: the ID, the rest
        off_names = off_siov + 2 * batch * isize
        self._views: list[memoryview] = []
        self._meta = self._rbuf = self._sbuf = None
        try:
            # Private anonymous memory (not mmap's default shared mapping, which is shmem: pages
            # survive MADV_DONTNEED there, and a forked child would share them).
            private = mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0)
            self._meta = mmap.mmap(-1, off_names + batch * NAME_STRIDE, flags=private)
            self._rbuf = mmap.mmap(-1, batch * SLOT, flags=private)
            self._sbuf = mmap.mmap(-1, batch * SLOT, flags=private)
            base = self._address(self._meta)
            rbase, sbase = self._address(self._rbuf), self._address(self._sbuf)
            rhdrs = (_MMsgHdr * batch).from_buffer(self._meta, 0)
            shdrs = (_MMsgHdr * batch).from_buffer(self._meta, off_shdr)
            riovs = (_IoVec * batch).from_buffer(self._meta, off_riov)
            siovs = (_IoVec * (2 * batch)).from_buffer(self._meta, off_siov)
            for i in range(batch):
                name = base + off_names + i * NAME_STRIDE
                riovs[i].iov_base, riovs[i].iov_len = rbase + i * SLOT, RECV_MAX
                siovs[2 * i].iov_base, siovs[2 * i].iov_len = rbase + i * SLOT, 2  # the ID
                siovs[2 * i + 1].iov_base, siovs[2 * i + 1].iov_len = sbase + i * SLOT + 2, 0
                r, s = rhdrs[i].msg_hdr, shdrs[i].msg_hdr
                r.msg_name = s.msg_name = name
                r.msg_namelen = s.msg_namelen = namelen
                r.msg_iov, r.msg_iovlen = base + off_riov + i * isize, 1
                s.msg_iov, s.msg_iovlen = base + off_siov + 2 * i * isize, 2
            del rhdrs, shdrs, riovs, siovs, r, s  # release the buffer exports
            # (pointers as c_void_p: the libc functions take their arguments unconverted)
            self._rhdr = ctypes.c_void_p(base)
            self._shdrs = [ctypes.c_void_p(base + off_shdr + i * hsize) for i in range(batch)]
            self._name_addrs = [base + off_names + i * NAME_STRIDE for i in range(batch)]
            self._rest_addrs = [sbase + i * SLOT + 2 for i in range(batch)]
            self._held: list[object] = [None] * batch  # the lane items being sent
            self._name_offs = [off_names + i * NAME_STRIDE for i in range(batch)]
            self._slot_offs = [i * SLOT for i in range(batch)]
            whole = self._view(memoryview(self._meta))
            u32 = self._view(whole.cast("I"))
            words = self._view(whole.cast("N"))
            h4, h8 = hsize // 4, hsize // ptr
            len_at = _MMsgHdr.msg_len.offset // 4
            namelen_at = _MsgHdr.msg_namelen.offset // 4
            self._lens = self._view(u32[len_at : len_at + batch * h4 : h4])
            self._rnamelens = self._view(u32[namelen_at : namelen_at + batch * h4 : h4])
            self._namelen_fill = self._view(memoryview(array("I", [namelen] * batch)))
            name_at = (off_shdr + _MsgHdr.msg_name.offset) // ptr
            self._snames = self._view(words[name_at : name_at + batch * h8 : h8])
            self._names_home = self._view(memoryview(bytearray(batch * ptr)).cast("N"))
            self._names_home[:] = self._snames
            i8 = isize // ptr
            rest_at = (off_siov + isize) // ptr  # the second iovec of send entry 0
            base_at = rest_at + _IoVec.iov_base.offset // ptr
            len_at = rest_at + _IoVec.iov_len.offset // ptr
            self._rest_bases = self._view(words[base_at : base_at + 2 * batch * i8 : 2 * i8])
            self._rest_lens = self._view(words[len_at : len_at + 2 * batch * i8 : 2 * i8])
            self._r16 = self._view(memoryview(self._rbuf).cast("H"))  # IDs: slots are even
        except BaseException:
            self.close()
            raise
        self.page = mmap.PAGESIZE
        # What answer() reads on every batch, taken in one unpacking (~20 attribute loads
        # cost ~0.5 µs a batch; small batches of a few queries are the common case).
        self._parts = (self._rbuf, self._sbuf, self._meta, self._r16, self._snames, self._rest_bases,
                       self._rest_lens, self._held, self._slot_offs, self._name_addrs,
                       self._name_offs, self._lens, self.page, self.v6)

    @staticmethod
    def _address(buf: mmap.mmap) -> int:
        anchor = ctypes.c_char.from_buffer(buf)
        try:
            return ctypes.addressof(anchor)
        finally:
            del anchor

    def _view(self, view: memoryview) -> memoryview:
        self._views.append(view)
        return view

    def close(self) -> None:
        """Release the buffers (the socket is the listener's to close)."""
        self._parts = ()
        for view in reversed(self._views):
            view.release()
        self._views.clear()
        for buf in (self._meta, self._rbuf, self._sbuf):
            if buf is not None and not buf.closed:
                try:
                    buf.close()
                except BufferError:  # a view still alive somewhere: leave it to the GC
                    log.debug("udp: batch buffers still in use at close")

    def address(self, slot: int) -> tuple[Any, ...]:
        """The sender of the datagram in ``slot``, as ``socket.recvfrom`` gives it."""
        off = self._name_offs[slot]
        return sockaddr_to_tuple(self._meta[off : off + SOCKADDR_IN6])

    def drain(self, listener: UdpListener) -> None:
        """The readiness callback: read, answer hits in batches, hand misses to the listener."""
        recv, fd, batch, rhdr = self._recvmmsg, self.fd, self.batch, self._rhdr
        rnamelens, namelen_fill = self._rnamelens, self._namelen_fill
        eintr = 0
        for _ in range(ROUNDS):
            rnamelens[:] = namelen_fill
            count = recv(fd, rhdr, batch, MSG_DONTWAIT, None)
            if count <= 0:
                err = ctypes.get_errno() if count < 0 else errno.EAGAIN
                if err == errno.EAGAIN or err == errno.EWOULDBLOCK:
                    return
                if err == errno.EINTR and eintr < _EINTR_RETRIES:
                    eintr += 1
                    continue
                log.debug("udp recv error: %s", os.strerror(err))  # e.g. an ICMP error
                continue
            hits, big_reply = self.answer(listener, count)
            if hits:
                self._flush(hits, big_reply)
            if count < batch:
                return  # the socket is (very likely) empty: no extra syscall to hear EAGAIN

    def answer(self, listener: UdpListener, count: int) -> tuple[int, bool]:
        """Answer the ``count`` datagrams received: replies go to the send entries (their
        number is returned, with whether one is larger than a page), misses to the
        listener's general path.

        A repeat the express lane holds (dnsd/wire/express.py) is sent from the lane's own
        bytes.  Its hit is counted on the prepared entry (``lane4``/``lane6``), where it
        takes the average time an express reply took in the batch before (the lane's replies
        take under a microsecond; the duration histogram's first bucket is 250 µs, so only
        the sum could tell)."""
        started = perf_counter()
        engine = listener.engine
        fast, lane = engine.fast, engine.lane.get
        (rbuf, sbuf, meta, r16, snames, rest_bases, rest_lens, held, slot_offs, name_addrs,
         name_offs, lens, page, v6) = self._parts
        if self._moved:
            snames[:] = self._names_home
            self._moved = False
        family = "::" if v6 else "0.0.0.0"
        sizes = lens[:count].tolist()
        epoch, now = express.EPOCH, monotonic()
        hits = 0
        others = 0  # replies not from the lane
        elsewhere = 0.0  # seconds spent on those and on misses
        big_reply = False
        for slot in range(count):
            off = slot_offs[slot]
            if v6:
                name = name_offs[slot]
                family = "0.0.0.0" if meta[name + 8 : name + 20] == _MAPPED else "::"
            item = lane(rbuf[off + 2 : off + sizes[slot]])
            if item is not None and item.epoch == epoch and now < item.until:
                entry = item.entry
                if not entry.gone:
                    if hits != slot:  # (a datagram before got no reply here)
                        r16[slot_offs[hits] >> 1] = r16[off >> 1]
                        snames[hits] = name_addrs[slot]
                        self._moved = True
                    addr = item.addr
                    if not addr:  # rotated copies, in turn
                        turn = item.turn = item.turn + 1
                        addrs = item.addrs
                        addr = addrs[turn % len(addrs)]
                    rest_bases[hits] = addr
                    rest_lens[hits] = item.tail_size
                    held[hits] = item
                    hits += 1
                    if family == "::":
                        entry.lane6 += 1
                    else:
                        entry.lane4 += 1
                    continue
            other = perf_counter()
            data = rbuf[off : off + sizes[slot]]
            try:
                reply, key = fast(data, "udp", family, True)
            except Exception:  # never let one packet kill the loop
                log.exception("[ERROR] hot path failed")
                reply, key = None, None
            if reply is not None:
                size = len(reply)
                if size > page:
                    if size > SLOT:  # cannot happen for UDP (65,507 at most): send it alone
                        self._send_one(reply, slot)
                        elsewhere += perf_counter() - other
                        continue
                    big_reply = True
                out = slot_offs[hits]
                sbuf[out : out + size] = reply
                rest_bases[hits] = self._rest_addrs[hits]
                rest_lens[hits] = size - 2
                if hits != slot:
                    r16[out >> 1] = r16[off >> 1]
                    snames[hits] = name_addrs[slot]
                    self._moved = True
                hits += 1
                others += 1
            else:
                listener.general(data, self.address(slot), key)
            epoch = express.EPOCH  # (the hot path may have announced a change)
            elsewhere += perf_counter() - other
        laned = hits - others
        if laned:
            engine.prepared.hits += laned
            engine.prepared.express_hits += laned
            express.COST = max(0.0, perf_counter() - started - elsewhere) / laned
        if max(sizes) > page:
            self._release(rbuf, [slot_offs[s] for s in range(count) if sizes[s] > page])
        return hits, big_reply

    def _flush(self, count: int, big: bool) -> None:
        """One sendmmsg for the first ``count`` send entries, continued after partial sends."""
        send, fd, shdrs = self._sendmmsg, self.fd, self._shdrs
        start = 0
        eintr = 0
        while start < count:
            sent = send(fd, shdrs[start], count - start, MSG_DONTWAIT)
            if sent > 0:
                start += sent
                continue
            err = ctypes.get_errno() if sent < 0 else errno.EIO
            if err == errno.EINTR and eintr < _EINTR_RETRIES:
                eintr += 1
                continue
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR, errno.EIO):
                log.debug("udp send error: %s (%d replies dropped)", os.strerror(err), count - start)
                break
            log.debug("udp send error: %s", os.strerror(err))  # this reply only (EPERM, ...)
            start += 1
        if big:  # (a lane reply is never larger than a page: express.MAX_REPLY)
            rests = self._rest_lens[:count].tolist()
            self._release(self._sbuf, [self._slot_offs[i] for i in range(count) if rests[i] + 2 > self.page])

    def _send_one(self, reply: bytes, slot: int) -> None:
        try:
            self.sock.sendto(reply, self.address(slot))
        except OSError as exc:
            log.debug("udp send error: %s", exc)

    def _release(self, buf: mmap.mmap, offsets: list[int]) -> None:
        """Give back the pages beyond the first of slots a big datagram or reply filled."""
        if self.page >= SLOT:
            return
        for off in offsets:
            try:
                buf.madvise(mmap.MADV_DONTNEED, off + self.page, SLOT - self.page)
            except (OSError, ValueError, AttributeError):
                return
