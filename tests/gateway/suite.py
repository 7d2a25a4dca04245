#!/usr/bin/env python3
"""Black-box test suite for etcd's v3 JSON gateway (grpc-gateway semantics).

Written against, and passing on, the real etcd 3.4.23 (see README.md); meant
to judge Cairn's implementation of the same HTTP/JSON surface.

    python suite.py --endpoint http://127.0.0.1:23791 [--only NAME[,NAME]] [--list]

Every check prints PASS or FAIL (with expected vs got); the run ends with a
"N passed, N failed" line and exits 1 when any check failed. Each run works
under its own key prefix (cairn-gw-test/<uuid>/), so reruns against the same
server don't interfere. The only input is --endpoint: nothing is read from
the environment (requests' proxy variables and etcd3gw's ETCD3GW_API_PATH are
explicitly ignored).

Note on the server-wide checks: `compaction` compacts the server's history at
its current revision, and every check that needs history uses revisions it
made itself after that point, so the order of checks does not matter.
"""

from __future__ import annotations

import argparse
import base64
import json
import queue
import re
import socket
import sys
import threading
import time
import traceback
import uuid
from urllib.parse import urlsplit

import requests
from etcd3gw.client import Etcd3Client
from etcd3gw import exceptions as gw_exceptions

LEASE_TTL = 60
STREAM_TIMEOUT = 5.0  # seconds to wait for one streamed message
HTTP_TIMEOUT = 15.0


# --------------------------------------------------------------------------
# assertion helpers


class CheckFailed(Exception):
    pass


def fail(msg: str) -> None:
    raise CheckFailed(msg)


def short(v, limit: int = 300) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + "...(%d chars)" % len(s)


def eq(what: str, got, want) -> None:
    if got != want:
        fail(f"{what}: expected {short(want)}, got {short(got)}")


def true(what: str, cond: bool, got=None) -> None:
    if not cond:
        fail(f"{what}" + ("" if got is None else f"; got {short(got)}"))


def keys_eq(what: str, obj: dict, want) -> None:
    if not isinstance(obj, dict):
        fail(f"{what}: expected a JSON object, got {short(obj)}")
    if set(obj) != set(want):
        fail(f"{what}: expected exactly keys {sorted(want)}, got {sorted(obj)} in {short(obj)}")


def absent(what: str, obj: dict, *keys: str) -> None:
    for k in keys:
        if k in obj:
            fail(f"{what}: expected no {k!r} (zero values are omitted), got {short(obj)}")


DIGITS = re.compile(r"^-?[0-9]+$")


def int64_str(what: str, v, positive: bool = True) -> int:
    """64-bit ints are JSON strings of decimal digits."""
    if not isinstance(v, str) or not DIGITS.match(v):
        fail(f"{what}: expected a 64-bit int encoded as a JSON string of digits, got {short(v)}")
    n = int(v)
    if positive and n <= 0:
        fail(f"{what}: expected a positive number, got {v!r}")
    return n


def b64(data) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def unb64(what: str, s) -> bytes:
    if not isinstance(s, str):
        fail(f"{what}: expected base64 string, got {short(s)}")
    try:
        return base64.b64decode(s, validate=True)
    except Exception:
        fail(f"{what}: not valid base64: {short(s)}")


HEADER_FIELDS = ("cluster_id", "member_id", "revision", "raft_term")


def check_header(what: str, h, revision: int | None = None, need_revision: bool = True) -> dict:
    """A full ResponseHeader: proto field names, uint64/int64 as strings."""
    if not isinstance(h, dict):
        fail(f"{what}: expected a header object, got {short(h)}")
    fields = HEADER_FIELDS if need_revision else ("cluster_id", "member_id", "raft_term")
    for f in fields:
        if f not in h:
            fail(f"{what}: header lacks {f!r}: {short(h)}")
        int64_str(f"{what}.{f}", h[f])
    extra = set(h) - set(HEADER_FIELDS)
    if extra:
        fail(f"{what}: unexpected header fields {sorted(extra)} in {short(h)}")
    if revision is not None:
        eq(f"{what}.revision", h.get("revision"), str(revision))
    return h


def check_kv(what: str, kv, key: bytes, value: bytes | None, *, create=None, mod=None,
             version=None, lease=None) -> None:
    """A mvccpb.KeyValue. Zero fields (empty value, lease 0) must be absent."""
    want = {"key", "create_revision", "mod_revision", "version"}
    if value:
        want.add("value")
    if lease:
        want.add("lease")
    keys_eq(what, kv, want)
    eq(f"{what}.key", unb64(f"{what}.key", kv["key"]), key)
    if value:
        eq(f"{what}.value", unb64(f"{what}.value", kv["value"]), value)
    for f, w in (("create_revision", create), ("mod_revision", mod), ("version", version)):
        n = int64_str(f"{what}.{f}", kv[f])
        if w is not None:
            eq(f"{what}.{f}", n, w)
    if lease:
        eq(f"{what}.lease", kv["lease"], str(lease))


def expect_error(what: str, r: requests.Response, status: int, code: int,
                 message: str | None = None, prefix: str | None = None) -> dict:
    """grpc-gateway error body: exactly {"error": M, "message": M, "code": N}.

    message=None checks only that M is a non-empty string (used where etcd's
    text is a Go library message, e.g. JSON decoding errors)."""
    if r.status_code != status:
        fail(f"{what}: expected HTTP {status}, got HTTP {r.status_code} body {short(r.text)}")
    ctype = r.headers.get("Content-Type", "")
    true(f"{what}: expected Content-Type application/json", ctype.startswith("application/json"), ctype)
    try:
        body = r.json()
    except ValueError:
        fail(f"{what}: error body is not JSON: {short(r.text)}")
    keys_eq(f"{what} error body", body, {"error", "message", "code"})
    eq(f"{what} error.code", body["code"], code)
    true(f"{what}: \"message\" must be a non-empty string",
         isinstance(body["message"], str) and body["message"] != "", body)
    eq(f"{what}: \"error\" equals \"message\"", body["error"], body["message"])
    if message is not None:
        eq(f"{what} error.message", body["message"], message)
    if prefix is not None:
        true(f"{what}: message should start with {prefix!r}", body["message"].startswith(prefix), body["message"])
    return body


# --------------------------------------------------------------------------
# HTTP helpers


class StreamEnded(Exception):
    pass


class Stream:
    """Minimal HTTP/1.1 client for the gateway's streaming endpoints.

    Sends one POST with a fixed body, then reads the chunked response one
    HTTP chunk at a time with a deadline. etcd writes each stream message as
    its own chunk, "<json>\\n"; etcd3gw's watch relies on that (it json-parses
    each chunk as it arrives, skipping whitespace-only chunks), so next()
    fails the check when a chunk isn't exactly one JSON value."""

    def __init__(self, ctx: "Ctx", path: str, body: str | bytes, timeout: float = STREAM_TIMEOUT):
        if isinstance(body, str):
            body = body.encode()
        self.what = f"stream {path}"
        self.sock = socket.create_connection((ctx.host, ctx.port), timeout=timeout)
        head = (f"POST {path} HTTP/1.1\r\nHost: {ctx.host}:{ctx.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.sock.sendall(head.encode() + body)
        self.buf = b""
        self.ended = False
        deadline = time.monotonic() + timeout
        status = self._readline(deadline).decode("latin-1")
        parts = status.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            fail(f"{self.what}: bad status line {status!r}")
        self.status = int(parts[1])
        self.headers: dict[str, str] = {}
        while True:
            line = self._readline(deadline).decode("latin-1")
            if line == "":
                break
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self.body = None
        if not self.chunked:
            n = int(self.headers.get("content-length", "-1"))
            if n >= 0:
                self.body = self._read_exact(n, deadline)
            else:
                self.body = self._read_to_close(deadline)
            self.ended = True

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout()
        self.sock.settimeout(remaining)
        data = self.sock.recv(65536)
        if not data:
            raise StreamEnded("connection closed")
        self.buf += data

    def _readline(self, deadline: float) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _read_to_close(self, deadline: float) -> bytes:
        try:
            while True:
                self._fill(deadline)
        except StreamEnded:
            pass
        out, self.buf = self.buf, b""
        return out

    def next_chunk(self, timeout: float = STREAM_TIMEOUT) -> bytes | None:
        """Next chunk's data; None when the stream ended (last-chunk seen)."""
        if self.ended:
            return None
        deadline = time.monotonic() + timeout
        size_line = self._readline(deadline).split(b";", 1)[0].strip()
        size = int(size_line, 16)
        if size == 0:
            # trailers, then an empty line
            while self._readline(deadline) != b"":
                pass
            self.ended = True
            return None
        data = self._read_exact(size, deadline)
        if self._read_exact(2, deadline) != b"\r\n":
            fail(f"{self.what}: malformed chunked encoding")
        return data

    def next(self, timeout: float = STREAM_TIMEOUT) -> dict:
        """Next message (a JSON object); fails the check on timeout/end."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                data = self.next_chunk(max(remaining, 0.001))
            except socket.timeout:
                fail(f"{self.what}: no message within {timeout}s")
            except StreamEnded:
                fail(f"{self.what}: connection closed while waiting for a message")
            if data is None:
                fail(f"{self.what}: stream ended while waiting for a message")
            if not data.strip():
                continue
            try:
                return json.loads(data)
            except ValueError:
                fail(f"{self.what}: chunk is not exactly one JSON message: {short(data)}")

    def result(self, timeout: float = STREAM_TIMEOUT) -> dict:
        """Next message, which must be {"result": {...}}; returns the inner object."""
        msg = self.next(timeout)
        keys_eq(f"{self.what} message", msg, {"result"})
        return msg["result"]

    def expect_end(self, timeout: float = STREAM_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self.next_chunk(max(deadline - time.monotonic(), 0.001))
            except socket.timeout:
                fail(f"{self.what}: expected the stream to end within {timeout}s, it stayed open")
            except StreamEnded:
                fail(f"{self.what}: connection closed without the chunked terminator")
            if data is None:
                return
            if data.strip():
                fail(f"{self.what}: expected end of stream, got another message {short(data)}")

    def expect_quiet(self, seconds: float) -> None:
        """No message arrives for `seconds` (the stream stays open)."""
        try:
            data = self.next_chunk(seconds)
        except socket.timeout:
            return
        except StreamEnded:
            fail(f"{self.what}: connection closed, expected it to stay open")
        if data is None:
            fail(f"{self.what}: stream ended, expected it to stay open")
        if data.strip():
            fail(f"{self.what}: expected no message, got {short(data)}")

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Ctx:
    def __init__(self, endpoint: str):
        u = urlsplit(endpoint)
        if u.scheme != "http" or not u.hostname:
            raise SystemExit(f"--endpoint must look like http://HOST:PORT, got {endpoint!r}")
        self.host = u.hostname
        self.port = u.port or 80
        self.base = f"http://{self.host}:{self.port}"
        self.prefix = f"cairn-gw-test/{uuid.uuid4().hex}/"
        self.http = self.session()
        self.leases: list[str] = []  # revoked at the end of the run

    @staticmethod
    def session() -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # ignore proxy/netrc variables: use only --endpoint
        return s

    def k(self, name: str) -> bytes:
        return (self.prefix + name).encode()

    def gw(self, api_path: str | None = None) -> Etcd3Client:
        # api_path=None passed explicitly: discover from /version, ignoring
        # ETCD3GW_API_PATH (read by etcd3gw at import time).
        return Etcd3Client(host=self.host, port=self.port, protocol="http",
                           timeout=HTTP_TIMEOUT, api_path=api_path, session=self.session())

    def post(self, path: str, body=None, *, data=None, timeout: float = HTTP_TIMEOUT,
             session: requests.Session | None = None) -> requests.Response:
        if data is None:
            data = json.dumps({} if body is None else body)
        return (session or self.http).post(self.base + path, data=data, timeout=timeout,
                                            headers={"Content-Type": "application/json"})

    def ok(self, path: str, body=None, *, what: str | None = None, **kw) -> dict:
        what = what or f"POST {path}"
        r = self.post(path, body, **kw)
        if r.status_code != 200:
            fail(f"{what}: expected HTTP 200, got HTTP {r.status_code} body {short(r.text)}")
        ctype = r.headers.get("Content-Type", "")
        true(f"{what}: expected Content-Type application/json", ctype.startswith("application/json"), ctype)
        try:
            out = r.json()
        except ValueError:
            fail(f"{what}: response is not JSON: {short(r.text)}")
        if not isinstance(out, dict):
            fail(f"{what}: expected a JSON object, got {short(out)}")
        return out

    def put(self, key: bytes, value: bytes, **extra) -> int:
        body = {"key": b64(key), "value": b64(value)}
        body.update(extra)
        r = self.ok("/v3/kv/put", body)
        return int64_str("put header.revision", check_header("put header", r.get("header"))["revision"])

    def delete(self, key: bytes) -> int:
        r = self.ok("/v3/kv/deleterange", {"key": b64(key)})
        return int(r["header"]["revision"])

    def rev(self) -> int:
        r = self.ok("/v3/kv/range", {"key": b64(self.k("__rev__"))})
        return int64_str("range header.revision", check_header("range header", r.get("header"))["revision"])

    def grant(self, ttl: int = LEASE_TTL) -> str:
        r = self.ok("/v3/lease/grant", {"TTL": ttl})
        lid = r.get("ID")
        int64_str("lease/grant ID", lid)
        self.leases.append(lid)
        return lid

    def cleanup(self) -> None:
        for lid in self.leases:
            try:
                self.post("/v3/lease/revoke", {"ID": lid}, timeout=5)
            except Exception:
                pass
        try:
            p = self.prefix.encode()
            self.post("/v3/kv/deleterange", {"key": b64(p), "range_end": b64(p[:-1] + bytes([p[-1] + 1]))},
                      timeout=5)
        except Exception:
            pass


def prefix_end(p: bytes) -> bytes:
    return p[:-1] + bytes([p[-1] + 1])


def lease_hex(lid: str) -> str:
    return format(int(lid), "x")


CHECKS: list[tuple[str, object]] = []


def check(fn):
    CHECKS.append((fn.__name__[len("check_"):], fn))
    return fn


def run_in_thread(fn, *args):
    """Start fn(*args) in a daemon thread; returns a queue yielding ("ok", v) or ("err", e)."""
    q: queue.Queue = queue.Queue()

    def runner():
        try:
            q.put(("ok", fn(*args)))
        except BaseException as e:  # noqa: BLE001
            q.put(("err", e))

    threading.Thread(target=runner, daemon=True).start()
    return q


# --------------------------------------------------------------------------
# plain endpoints


VERSION_RE = re.compile(r"^([0-9]+)\.([0-9]+)\.([0-9]+)$")


@check
def check_version(ctx: Ctx):
    r = ctx.http.get(ctx.base + "/version", timeout=HTTP_TIMEOUT)
    eq("GET /version status", r.status_code, 200)
    try:
        v = r.json()
    except ValueError:
        fail(f"GET /version: not JSON: {short(r.text)}")
    # etcd 3.4: exactly {"etcdserver":"3.4.23","etcdcluster":"3.4.0"}; later
    # etcds add fields (3.6: "storage"), so extra keys are tolerated.
    for f in ("etcdserver", "etcdcluster"):
        true(f"GET /version: {f!r} must be an X.Y.Z string",
             isinstance(v.get(f), str) and VERSION_RE.match(v[f]) is not None, v)
    server = tuple(int(x) for x in VERSION_RE.match(v["etcdserver"]).groups())
    # etcd3gw picks the /v3/ prefix only for etcdserver >= 3.4
    true("GET /version: etcdserver must be >= 3.4 so clients use /v3/", server[:2] >= (3, 4), v)


@check
def check_health(ctx: Ctx):
    r = ctx.http.get(ctx.base + "/health", timeout=HTTP_TIMEOUT)
    eq("GET /health status", r.status_code, 200)
    # etcd 3.4 sends Content-Type text/plain here; the body is JSON anyway.
    try:
        h = r.json()
    except ValueError:
        fail(f"GET /health: body is not JSON: {short(r.text)}")
    eq("GET /health .health", h.get("health"), "true")
    extra = set(h) - {"health", "reason"}
    true(f"GET /health: unexpected fields {sorted(extra)}", not extra, h)


# --------------------------------------------------------------------------
# etcd3gw, the real client


@check
def check_etcd3gw_api_discovery(ctx: Ctx):
    c = ctx.gw()
    eq("etcd3gw api_path discovered from /version", c.api_path, "/v3/")


@check
def check_etcd3gw_kv(ctx: Ctx):
    c = ctx.gw()
    k1, k2, k3 = ctx.k("gw/kv/a"), ctx.k("gw/kv/b"), ctx.k("gw/kv/c")
    eq("etcd3gw get(missing)", c.get(k1), [])
    eq("etcd3gw put", c.put(k1, b"va"), True)
    eq("etcd3gw get", c.get(k1), [b"va"])
    c.put(k1, b"va2")
    vals = c.get(k1, metadata=True)
    eq("etcd3gw get(metadata) count", len(vals), 1)
    value, meta = vals[0]
    eq("etcd3gw get(metadata) value", value, b"va2")
    eq("etcd3gw get(metadata) key", meta["key"], k1)
    eq("etcd3gw get(metadata) version", meta["version"], "2")
    true("etcd3gw get(metadata) mod_revision > create_revision",
         int(meta["mod_revision"]) > int(meta["create_revision"]), meta)
    c.put(k3, b"vc")
    c.put(k2, b"vb")
    pre = ctx.k("gw/kv/")
    got = [(m["key"], v) for v, m in c.get_prefix(pre)]
    eq("etcd3gw get_prefix (key order)", got, [(k1, b"va2"), (k2, b"vb"), (k3, b"vc")])
    got = [m["key"] for v, m in c.get_prefix(pre, sort_order="descend", sort_target="key")]
    eq("etcd3gw get_prefix(sort_order=descend)", got, [k3, k2, k1])
    eq("etcd3gw get(limit=1, range_end)", c.get(pre, range_end=prefix_end(pre).decode(), limit=1), [b"va2"])
    eq("etcd3gw delete(existing) returns True", c.delete(k1), True)
    # etcd3gw reports "deleted" by presence of the field: a zero "deleted" must be omitted
    eq("etcd3gw delete(missing) returns False", c.delete(k1), False)
    eq("etcd3gw get(after delete)", c.get(k1), [])
    eq("etcd3gw delete_prefix returns True", c.delete_prefix(pre), True)
    eq("etcd3gw get_prefix after delete_prefix", c.get_prefix(pre), [])
    eq("etcd3gw delete_prefix(nothing left) returns False", c.delete_prefix(pre), False)


@check
def check_etcd3gw_replace(ctx: Ctx):
    c = ctx.gw()
    k = ctx.k("gw/replace")
    c.put(k, b"one")
    eq("etcd3gw replace(one->two) succeeds", c.replace(k, b"one", b"two"), True)
    eq("value after successful replace", c.get(k), [b"two"])
    # on failure etcd omits "succeeded" (false is the zero value)
    eq("etcd3gw replace(one->three) fails", c.replace(k, b"one", b"three"), False)
    eq("value after failed replace", c.get(k), [b"two"])
    eq("etcd3gw replace on missing key fails", c.replace(ctx.k("gw/replace-missing"), b"x", b"y"), False)
    txn = c.transaction({
        "compare": [{"key": b64(k), "result": "EQUAL", "target": "VALUE", "value": b64(b"two")}],
        "success": [{"request_range": {"key": b64(k)}}],
        "failure": [],
    })
    eq("etcd3gw transaction succeeded", txn.get("succeeded"), True)
    kv = txn["responses"][0]["response_range"]["kvs"][0]
    eq("etcd3gw transaction range value", base64.b64decode(kv["value"]), b"two")


@check
def check_etcd3gw_create(ctx: Ctx):
    c = ctx.gw()
    k = ctx.k("gw/create")
    eq("etcd3gw create(absent) succeeds", c.create(k, b"first"), True)
    eq("etcd3gw create(present) fails", c.create(k, b"second"), False)
    eq("value after create", c.get(k), [b"first"])
    lease = c.lease(LEASE_TTL)
    ctx.leases.append(str(lease.id))
    k2 = ctx.k("gw/create-leased")
    eq("etcd3gw create(lease=...) succeeds", c.create(k2, b"v", lease=lease), True)
    eq("keys of the create lease", lease.keys(), [k2])
    lease.revoke()
    eq("created key gone with its lease", c.get(k2), [])


@check
def check_etcd3gw_lease(ctx: Ctx):
    c = ctx.gw()
    lease = c.lease(LEASE_TTL)
    ctx.leases.append(str(lease.id))
    true("etcd3gw lease id is positive", lease.id > 0, lease.id)
    ttl = lease.ttl()  # POST {api}/kv/lease/timetolive
    true(f"etcd3gw lease.ttl() in (0, {LEASE_TTL}]", 0 < ttl <= LEASE_TTL, ttl)
    k1, k2 = ctx.k("gw/lease/a"), ctx.k("gw/lease/b")
    c.put(k1, b"1", lease=lease)
    c.put(k2, b"2", lease=lease)
    eq("etcd3gw lease.keys()", sorted(lease.keys()), [k1, k2])
    # refresh: POST {api}/lease/keepalive, read as one JSON {"result":{...}}
    eq("etcd3gw lease.refresh() returns the granted TTL", lease.refresh(), LEASE_TTL)
    eq("etcd3gw lease.revoke()", lease.revoke(), True)  # POST {api}/kv/lease/revoke
    eq("keys of a revoked lease are deleted", c.get_prefix(ctx.k("gw/lease/")), [])
    eq("etcd3gw lease.ttl() after revoke", lease.ttl(), -1)
    eq("etcd3gw lease.keys() after revoke", lease.keys(), [])
    # keepalive of an unknown lease: result without "TTL" -> etcd3gw returns -1
    eq("etcd3gw lease.refresh() after revoke", lease.refresh(), -1)
    try:
        lease.revoke()
    except gw_exceptions.Etcd3Exception as e:
        true("etcd3gw revoke(unknown) error mentions lease not found",
             "requested lease not found" in (e.detail_text or ""), e.detail_text)
    else:
        fail("etcd3gw revoke of an already revoked lease: expected Etcd3Exception (HTTP 404)")


@check
def check_etcd3gw_lock(ctx: Ctx):
    c = ctx.gw()
    name = ctx.prefix + "gw-lock"
    a = c.lock(name, ttl=LEASE_TTL)
    b = c.lock(name, ttl=LEASE_TTL)
    try:
        eq("etcd3gw lock A acquire", a.acquire(), True)
        ctx.leases.append(str(a.lease.id))
        eq("etcd3gw lock A is_acquired", a.is_acquired(), True)
        eq("etcd3gw lock B acquire while A holds it", b.acquire(), False)
        ctx.leases.append(str(b.lease.id))
        eq("etcd3gw lock B is_acquired", b.is_acquired(), False)
        eq("etcd3gw lock A refresh", a.refresh(), LEASE_TTL)
        eq("etcd3gw lock B release (not held)", b.release(), False)
        eq("etcd3gw lock A release", a.release(), True)
        eq("etcd3gw lock A is_acquired after release", a.is_acquired(), False)
        eq("etcd3gw lock B acquire after A released", b.acquire(), True)
        ctx.leases.append(str(b.lease.id))
        eq("etcd3gw lock B release", b.release(), True)
    finally:
        for lk in (a, b):
            if lk.lease is not None:
                try:
                    lk.lease.revoke()
                except gw_exceptions.Etcd3Exception:
                    pass


def gw_call(fn, what: str, timeout: float = STREAM_TIMEOUT):
    """Run an etcd3gw watch call with a deadline: etcd3gw's Watcher POSTs
    without a timeout, so a server that never answers would hang the suite."""
    q = run_in_thread(fn)
    try:
        kind, v = q.get(timeout=timeout)
    except queue.Empty:
        fail(f"{what}: no response (headers) within {timeout}s")
    if kind == "err":
        raise v
    return v


def _drain(iterator, q: queue.Queue):
    try:
        for ev in iterator:
            q.put(("event", ev))
    except BaseException as e:  # noqa: BLE001
        q.put(("error", e))
    q.put(("end", None))


@check
def check_etcd3gw_watch(ctx: Ctx):
    c = ctx.gw()
    other = ctx.gw()  # another client (own session) does the writes
    pre = ctx.k("gw/watch/")
    start = ctx.rev() + 1  # start_revision keeps the check deterministic
    events, cancel = gw_call(lambda: c.watch_prefix(pre, start_revision=start), "etcd3gw watch_prefix()")
    q: queue.Queue = queue.Queue()
    t = threading.Thread(target=_drain, args=(events, q), daemon=True)
    t.start()
    try:
        def writer():
            other.put(pre + b"a", b"1")
            other.put(pre + b"b", b"2")
            other.delete(pre + b"a")
        w = run_in_thread(writer)
        kind, v = w.get(timeout=HTTP_TIMEOUT)
        if kind == "err":
            fail(f"writer thread failed: {v!r}")
        got = []
        for _ in range(3):
            try:
                kind, ev = q.get(timeout=STREAM_TIMEOUT)
            except queue.Empty:
                fail(f"etcd3gw watch_prefix: expected 3 events, got {len(got)}: {short(got)}")
            if kind != "event":
                fail(f"etcd3gw watch_prefix: iterator stopped early ({kind}: {ev!r}) after {short(got)}")
            got.append(ev)
        eq("event 1 key", got[0]["kv"]["key"], pre + b"a")
        eq("event 1 value", got[0]["kv"]["value"], b"1")
        eq("event 1 type (PUT is the zero value, omitted)", got[0].get("type"), None)
        eq("event 1 mod_revision", got[0]["kv"]["mod_revision"], str(start))
        eq("event 2 key", got[1]["kv"]["key"], pre + b"b")
        eq("event 2 value", got[1]["kv"]["value"], b"2")
        eq("event 3 type", got[2].get("type"), "DELETE")
        eq("event 3 key", got[2]["kv"]["key"], pre + b"a")
    finally:
        cancel()
    t.join(STREAM_TIMEOUT)
    true("etcd3gw watch iterator ends after cancel()", not t.is_alive())
    other.put(pre + b"c", b"3")
    leftovers = []
    while True:
        try:
            kind, ev = q.get_nowait()
        except queue.Empty:
            break
        if kind == "event":
            leftovers.append(ev)
    eq("events after cancel()", leftovers, [])


@check
def check_etcd3gw_watch_once(ctx: Ctx):
    c = ctx.gw()
    k = ctx.k("gw/watch-once")
    start = ctx.rev() + 1
    w = run_in_thread(lambda: (time.sleep(0.3), ctx.gw().put(k, b"once")))
    ev = gw_call(lambda: c.watch_once(k, timeout=STREAM_TIMEOUT, start_revision=start), "etcd3gw watch_once()",
                 STREAM_TIMEOUT * 2)
    w.get(timeout=HTTP_TIMEOUT)
    eq("etcd3gw watch_once key", ev["kv"]["key"], k)
    eq("etcd3gw watch_once value", ev["kv"]["value"], b"once")
    try:
        gw_call(lambda: c.watch_once(ctx.k("gw/watch-once-nothing"), timeout=1), "etcd3gw watch_once(idle key)")
    except gw_exceptions.WatchTimedOut:
        pass
    else:
        fail("etcd3gw watch_once on an idle key: expected WatchTimedOut")


@check
def check_etcd3gw_status_members(ctx: Ctx):
    c = ctx.gw()
    st = c.status()
    true("etcd3gw status() has version X.Y.Z",
         isinstance(st.get("version"), str) and VERSION_RE.match(st["version"]) is not None, st)
    members = c.members()
    true("etcd3gw members() is a non-empty list", isinstance(members, list) and len(members) > 0, members)
    ids = {m.get("ID") for m in members}
    true("etcd3gw status().leader is one of the members", st.get("leader") in ids, (st, members))


# --------------------------------------------------------------------------
# raw JSON: encoding rules


@check
def check_json_put_range_shape(ctx: Ctx):
    k = ctx.k("json/shape")
    r = ctx.ok("/v3/kv/put", {"key": b64(k), "value": b64(b"bar")})
    keys_eq("put response (no prev_kv asked)", r, {"header"})
    rev = int(check_header("put header", r["header"])["revision"])
    r = ctx.ok("/v3/kv/range", {"key": b64(k)})
    keys_eq("range response", r, {"header", "kvs", "count"})
    check_header("range header", r["header"], revision=rev)
    eq("range count (int64 as string)", r["count"], "1")
    eq("range kvs length", len(r["kvs"]), 1)
    check_kv("range kvs[0]", r["kvs"][0], k, b"bar", create=rev, mod=rev, version=1)
    # binary keys/values round-trip through base64
    kb = ctx.k("json/binary/") + bytes([0, 1, 0xfe, 0xff, 0x80])
    vb = bytes(range(256))
    rev2 = ctx.put(kb, vb)
    r = ctx.ok("/v3/kv/range", {"key": b64(kb)})
    check_kv("range kvs[0] (binary)", r["kvs"][0], kb, vb, create=rev2, mod=rev2, version=1)


@check
def check_json_zero_values_omitted(ctx: Ctx):
    missing = ctx.k("json/zero/missing")
    r = ctx.ok("/v3/kv/range", {"key": b64(missing)})
    keys_eq("range of a missing key (no kvs, no count, no more)", r, {"header"})
    check_header("range header", r["header"])
    # empty value and lease 0 are omitted from the KeyValue
    k = ctx.k("json/zero/empty")
    r = ctx.ok("/v3/kv/put", {"key": b64(k), "value": ""})
    rev = int(r["header"]["revision"])
    r = ctx.ok("/v3/kv/range", {"key": b64(k)})
    check_kv("kv with empty value (no \"value\", no \"lease\")", r["kvs"][0], k, b"", create=rev, mod=rev, version=1)
    # a value-less put is a put of the empty value
    r = ctx.ok("/v3/kv/put", {"key": b64(k)})
    r = ctx.ok("/v3/kv/range", {"key": b64(k)})
    check_kv("kv after value-less put", r["kvs"][0], k, b"", create=rev, version=2)
    # deleterange of nothing: no "deleted"
    r = ctx.ok("/v3/kv/deleterange", {"key": b64(missing)})
    keys_eq("deleterange of a missing key", r, {"header"})
    r = ctx.ok("/v3/kv/deleterange", {"key": b64(k)})
    keys_eq("deleterange of one key", r, {"header", "deleted"})
    eq("deleterange deleted", r["deleted"], "1")
    # count_only: count present, kvs absent
    pre = ctx.k("json/zero/c/")
    for i in range(3):
        ctx.put(pre + str(i).encode(), b"x")
    r = ctx.ok("/v3/kv/range", {"key": b64(pre), "range_end": b64(prefix_end(pre)), "count_only": True})
    keys_eq("count_only range", r, {"header", "count"})
    eq("count_only count", r["count"], "3")
    # failed txn: no "succeeded"; txn without ops: no "responses"
    r = ctx.ok("/v3/kv/txn", {"compare": [{"key": b64(missing), "target": "CREATE", "result": "GREATER",
                                           "create_revision": "0"}]})
    keys_eq("failed txn with no failure ops", r, {"header"})
    r = ctx.ok("/v3/kv/txn", {})
    keys_eq("empty txn", r, {"header", "succeeded"})
    eq("empty txn succeeded", r["succeeded"], True)


@check
def check_json_field_names(ctx: Ctx):
    """Requests accept proto names and lowerCamelCase names."""
    pre = ctx.k("json/names/")
    for i in range(3):
        ctx.put(pre + str(i).encode(), b"v%d" % i)
    end = b64(prefix_end(pre))
    keys = lambda r: [unb64("key", kv["key"]) for kv in r.get("kvs", [])]  # noqa: E731
    want = [pre + b"0", pre + b"1", pre + b"2"]
    eq("range with range_end", keys(ctx.ok("/v3/kv/range", {"key": b64(pre), "range_end": end})), want)
    eq("range with rangeEnd", keys(ctx.ok("/v3/kv/range", {"key": b64(pre), "rangeEnd": end})), want)
    r = ctx.ok("/v3/kv/range", {"key": b64(pre), "rangeEnd": end, "keysOnly": True,
                                "sortOrder": "DESCEND", "sortTarget": "KEY"})
    eq("range keysOnly+sortOrder keys", keys(r), want[::-1])
    for kv in r["kvs"]:
        absent("keysOnly kv", kv, "value")
    r = ctx.ok("/v3/kv/range", {"key": b64(pre), "range_end": end, "keys_only": True})
    for kv in r["kvs"]:
        absent("keys_only kv", kv, "value")
    r = ctx.ok("/v3/kv/range", {"key": b64(pre), "rangeEnd": end, "countOnly": True})
    keys_eq("countOnly range", r, {"header", "count"})
    # camelCase oneof and compare field names inside a txn
    k = pre + b"0"
    r = ctx.ok("/v3/kv/txn", {
        "compare": [{"key": b64(k), "target": "CREATE", "result": "NOT_EQUAL", "createRevision": "0"}],
        "success": [{"requestPut": {"key": b64(pre + b"t"), "value": b64(b"t"), "prevKv": True}},
                    {"requestRange": {"key": b64(k)}},
                    {"requestDeleteRange": {"key": b64(pre + b"none")}}],
    })
    eq("camelCase txn succeeded", r.get("succeeded"), True)
    eq("camelCase txn response kinds (proto names in the response)",
       [list(x) for x in r.get("responses", [])], [["response_put"], ["response_range"], ["response_delete_range"]])
    r = ctx.ok("/v3/kv/deleterange", {"key": b64(k), "prevKv": True})
    eq("deleterange prevKv returns prev_kvs", len(r.get("prev_kvs", [])), 1)
    # response field names are proto names, never lowerCamel
    r = ctx.ok("/v3/kv/range", {"key": b64(pre + b"1")})
    kv = r["kvs"][0]
    for camel in ("createRevision", "modRevision"):
        absent("range kv uses proto names", kv, camel)
    for camel in ("clusterId", "memberId", "raftTerm"):
        absent("header uses proto names", r["header"], camel)


@check
def check_json_enums_and_ints(ctx: Ctx):
    pre = ctx.k("json/enum/")
    for i in range(4):
        ctx.put(pre + str(i).encode(), b"v")
    end = b64(prefix_end(pre))
    keys = lambda r: [unb64("key", kv["key"]) for kv in r.get("kvs", [])]  # noqa: E731
    # enum by name
    r = ctx.ok("/v3/kv/range", {"key": b64(pre), "range_end": end, "sort_order": "DESCEND",
                                "sort_target": "KEY", "limit": "2"})
    eq("sort_order DESCEND, limit \"2\" keys", keys(r), [pre + b"3", pre + b"2"])
    eq("limited range more", r.get("more"), True)
    eq("limited range count (all matches)", r.get("count"), "4")
    # enum by number (etcd3gw sends numbers), int64 as a JSON number
    r = ctx.ok("/v3/kv/range", {"key": b64(pre), "range_end": end, "sort_order": 2, "sort_target": 0, "limit": 1})
    eq("sort_order 2, limit 1 keys", keys(r), [pre + b"3"])
    r = ctx.ok("/v3/kv/range", {"key": b64(pre), "range_end": end, "sort_order": "ASCEND", "sort_target": "CREATE"})
    eq("sort ASCEND by CREATE", keys(r), [pre + b"0", pre + b"1", pre + b"2", pre + b"3"])
    absent("unlimited range", r, "more")
    # revision as number and as string
    rev = ctx.put(pre + b"0", b"new")
    for rv in (rev - 1, str(rev - 1)):
        r = ctx.ok("/v3/kv/range", {"key": b64(pre + b"0"), "revision": rv})
        eq(f"range at revision {rv!r} returns the old value", unb64("value", r["kvs"][0]["value"]), b"v")
        check_header("historical range header (current revision)", r["header"], revision=rev)
    # unknown enum name
    r = ctx.post("/v3/kv/range", {"key": b64(pre), "sort_order": "NOPE"})
    # etcd 3.4's text is Go's jsonpb ('unknown value "NOPE" for enum ...'), a JSON library's
    # message like the other decoding errors: only shape, status and code are checked.
    expect_error("unknown enum name", r, 400, 3)


@check
def check_json_unknown_fields_ignored(ctx: Ctx):
    k = ctx.k("json/unknown")
    r = ctx.ok("/v3/kv/put", {"key": b64(k), "value": b64(b"v"), "no_such_field": 1,
                              "nested": {"a": [1, "x", None]}, "alsoUnknown": "str"})
    keys_eq("put with unknown fields", r, {"header"})
    r = ctx.ok("/v3/kv/range", {"key": b64(k), "bogus": True})
    eq("range with unknown field count", r.get("count"), "1")


@check
def check_kv_prev_kv(ctx: Ctx):
    k = ctx.k("kv/prev")
    r1 = ctx.put(k, b"one")
    r = ctx.ok("/v3/kv/put", {"key": b64(k), "value": b64(b"two"), "prev_kv": True})
    keys_eq("put prev_kv response", r, {"header", "prev_kv"})
    r2 = int(r["header"]["revision"])
    check_kv("put prev_kv", r["prev_kv"], k, b"one", create=r1, mod=r1, version=1)
    r = ctx.ok("/v3/kv/put", {"key": b64(ctx.k("kv/prev-new")), "value": b64(b"x"), "prev_kv": True})
    keys_eq("put prev_kv of a new key (no prev_kv)", r, {"header"})
    r = ctx.ok("/v3/kv/deleterange", {"key": b64(k), "prev_kv": True})
    keys_eq("deleterange prev_kv response", r, {"header", "deleted", "prev_kvs"})
    eq("deleterange deleted", r["deleted"], "1")
    eq("deleterange prev_kvs length", len(r["prev_kvs"]), 1)
    check_kv("deleterange prev_kvs[0]", r["prev_kvs"][0], k, b"two", create=r1, mod=r2, version=2)


@check
def check_txn(ctx: Ctx):
    pre = ctx.k("txn/")
    ka, kb, kc = pre + b"a", pre + b"b", pre + b"c"
    ra = ctx.put(ka, b"va")
    ctx.put(kb, b"vb")
    r0 = ctx.rev()
    # success branch: range then put, see per-op headers
    r = ctx.ok("/v3/kv/txn", {
        "compare": [{"key": b64(ka), "target": "VALUE", "result": "EQUAL", "value": b64(b"va")},
                    {"key": b64(ka), "target": "VERSION", "result": "EQUAL", "version": "1"},
                    {"key": b64(ka), "target": "MOD", "result": "LESS", "mod_revision": str(r0 + 100)},
                    {"key": b64(kc), "target": "CREATE", "result": "EQUAL", "create_revision": 0}],
        "success": [{"request_range": {"key": b64(ka)}},
                    {"request_put": {"key": b64(kc), "value": b64(b"vc")}}],
        "failure": [{"request_delete_range": {"key": b64(ka)}}],
    })
    keys_eq("successful txn", r, {"header", "succeeded", "responses"})
    check_header("txn header", r["header"], revision=r0 + 1)
    eq("txn succeeded", r["succeeded"], True)
    eq("txn responses length", len(r["responses"]), 2)
    rr = r["responses"][0]
    keys_eq("txn responses[0]", rr, {"response_range"})
    keys_eq("txn response_range", rr["response_range"], {"header", "kvs", "count"})
    # per-op headers carry only the revision (other header fields are zero)
    eq("txn response_range header", rr["response_range"]["header"], {"revision": str(r0)})
    check_kv("txn response_range kvs[0]", rr["response_range"]["kvs"][0], ka, b"va", create=ra, mod=ra, version=1)
    eq("txn responses[1]", r["responses"][1], {"response_put": {"header": {"revision": str(r0 + 1)}}})
    # failure branch
    r = ctx.ok("/v3/kv/txn", {
        "compare": [{"key": b64(kb), "target": "VALUE", "result": "EQUAL", "value": b64(b"nope")}],
        "success": [{"request_put": {"key": b64(kb), "value": b64(b"changed")}}],
        "failure": [{"request_range": {"key": b64(kb)}}, {"request_delete_range": {"key": b64(ka)}}],
    })
    keys_eq("failed txn (no \"succeeded\")", r, {"header", "responses"})
    check_header("failed txn header", r["header"], revision=r0 + 2)
    eq("failed txn responses kinds", [list(x) for x in r["responses"]],
       [["response_range"], ["response_delete_range"]])
    eq("failure response_range value", unb64("v", r["responses"][0]["response_range"]["kvs"][0]["value"]), b"vb")
    eq("failure response_delete_range", r["responses"][1]["response_delete_range"],
       {"header": {"revision": str(r0 + 2)}, "deleted": "1"})
    # a failed compare with a non-existent key in the else-branch range
    r = ctx.ok("/v3/kv/txn", {
        "compare": [{"key": b64(ka), "target": "VERSION", "result": "GREATER", "version": "0"}],
        "failure": [{"request_range": {"key": b64(ka)}}],
    })
    eq("txn on deleted key fails; range of it has only a header",
       r.get("responses"), [{"response_range": {"header": {"revision": str(r0 + 2)}}}])
    absent("failed txn", r, "succeeded")
    # 128 ops are allowed (default --max-txn-ops)
    r = ctx.ok("/v3/kv/txn", {"success": [{"request_put": {"key": b64(pre + b"m%03d" % i), "value": b64(b"x")}}
                                          for i in range(128)]})
    eq("txn with 128 puts succeeded", r.get("succeeded"), True)
    eq("txn with 128 puts responses", len(r.get("responses", [])), 128)


@check
def check_compaction(ctx: Ctx):
    k = ctx.k("compact/k")
    r1 = ctx.put(k, b"1")
    r2 = ctx.put(k, b"2")
    r = ctx.ok("/v3/kv/compaction", {"revision": str(r2)})
    keys_eq("compaction response", r, {"header"})
    check_header("compaction header", r["header"], revision=r2)
    r = ctx.post("/v3/kv/compaction", {"revision": str(r2)})
    expect_error("compaction at the compacted revision again", r, 400, 11,
                 "etcdserver: mvcc: required revision has been compacted")
    r = ctx.post("/v3/kv/compaction", {"revision": str(r1)})
    expect_error("compaction below the compacted revision", r, 400, 11,
                 "etcdserver: mvcc: required revision has been compacted")
    r = ctx.post("/v3/kv/compaction", {"revision": str(r2 + 1000)})
    expect_error("compaction at a future revision", r, 400, 11,
                 "etcdserver: mvcc: required revision is a future revision")
    r = ctx.post("/v3/kv/range", {"key": b64(k), "revision": str(r1)})
    expect_error("range at a compacted revision", r, 400, 11,
                 "etcdserver: mvcc: required revision has been compacted")
    r = ctx.ok("/v3/kv/range", {"key": b64(k), "revision": str(r2)})
    eq("range at the compaction revision itself", unb64("value", r["kvs"][0]["value"]), b"2")
    # a watch from a compacted revision: created, then canceled with compact_revision
    with Stream(ctx, "/v3/watch", json.dumps({"create_request": {"key": b64(k), "start_revision": str(r1)}})) as s:
        eq("watch (compacted start) HTTP status", s.status, 200)
        m = s.result()
        eq("watch (compacted start) first message created", m.get("created"), True)
        m = s.result()
        eq("watch (compacted start) canceled", m.get("canceled"), True)
        eq("watch (compacted start) compact_revision", m.get("compact_revision"), str(r2))
        absent("watch (compacted start) cancel message", m, "events")
    r3 = ctx.put(k, b"3")
    r = ctx.ok("/v3/kv/compaction", {"revision": r3, "physical": True})  # int64 as a JSON number
    keys_eq("physical compaction response", r, {"header"})


# --------------------------------------------------------------------------
# leases


@check
def check_lease_grant_ttl_revoke(ctx: Ctx):
    r = ctx.ok("/v3/lease/grant", {"TTL": LEASE_TTL})
    keys_eq("lease/grant response", r, {"header", "ID", "TTL"})
    check_header("lease/grant header", r["header"])
    lid = r["ID"]
    int64_str("lease/grant ID", lid)
    ctx.leases.append(lid)
    eq("lease/grant TTL", r["TTL"], str(LEASE_TTL))
    # grant with an explicit ID; TTL as a string
    want_id = str(1 + uuid.uuid4().int % (1 << 62))
    r = ctx.ok("/v3/lease/grant", {"TTL": str(LEASE_TTL), "ID": want_id})
    eq("lease/grant with explicit ID", r.get("ID"), want_id)
    ctx.leases.append(want_id)
    k1, k2 = ctx.k("lease/a"), ctx.k("lease/b")
    rk1 = ctx.put(k1, b"1", lease=lid)
    ctx.put(k2, b"2", lease=int(lid))  # lease id as a JSON number
    r = ctx.ok("/v3/kv/range", {"key": b64(k1)})
    check_kv("leased kv", r["kvs"][0], k1, b"1", create=rk1, mod=rk1, version=1, lease=lid)
    r = ctx.ok("/v3/lease/timetolive", {"ID": lid})
    keys_eq("lease/timetolive", r, {"header", "ID", "TTL", "grantedTTL"})
    eq("lease/timetolive ID", r["ID"], lid)
    ttl = int64_str("lease/timetolive TTL", r["TTL"])
    true(f"lease/timetolive TTL in (0, {LEASE_TTL}]", 0 < ttl <= LEASE_TTL, ttl)
    eq("lease/timetolive grantedTTL", r["grantedTTL"], str(LEASE_TTL))
    for path in ("/v3/lease/timetolive", "/v3/kv/lease/timetolive"):
        r = ctx.ok(path, {"ID": lid, "keys": True})
        keys_eq(f"{path} keys=true", r, {"header", "ID", "TTL", "grantedTTL", "keys"})
        eq(f"{path} keys", sorted(unb64("key", x) for x in r["keys"]), [k1, k2])
    for path in ("/v3/lease/leases", "/v3/kv/lease/leases"):
        r = ctx.ok(path, {})
        keys_eq(f"{path} response", r, {"header", "leases"})
        check_header(f"{path} header", r["header"])
        for item in r["leases"]:
            keys_eq(f"{path} item", item, {"ID"})
        ids = {x["ID"] for x in r["leases"]}
        true(f"{path} lists both granted leases", {lid, want_id} <= ids, r["leases"])
    rev = ctx.rev()
    r = ctx.ok("/v3/lease/revoke", {"ID": lid})
    keys_eq("lease/revoke response", r, {"header"})
    check_header("lease/revoke header (one revision for deleting the attached keys)", r["header"], revision=rev + 1)
    r = ctx.ok("/v3/kv/range", {"key": b64(ctx.k("lease/")), "range_end": b64(prefix_end(ctx.k("lease/")))})
    keys_eq("range of keys attached to a revoked lease", r, {"header"})
    r = ctx.ok("/v3/kv/lease/revoke", {"ID": want_id})  # the path etcd3gw uses
    keys_eq("kv/lease/revoke response", r, {"header"})
    r = ctx.ok("/v3/lease/leases", {})
    ids = {x["ID"] for x in r.get("leases", [])}
    true("revoked leases are not listed", not ({lid, want_id} & ids), r)


@check
def check_lease_timetolive_unknown(ctx: Ctx):
    lid = str(1 + uuid.uuid4().int % (1 << 62))
    r = ctx.ok("/v3/lease/timetolive", {"ID": lid, "keys": True})
    # etcd answers 200 with TTL -1 (not an error) for an unknown lease
    keys_eq("lease/timetolive of an unknown lease", r, {"header", "ID", "TTL"})
    eq("lease/timetolive unknown ID", r["ID"], lid)
    eq("lease/timetolive unknown TTL", r["TTL"], "-1")


@check
def check_lease_keepalive_stream(ctx: Ctx):
    lid = ctx.grant(LEASE_TTL)
    with Stream(ctx, "/v3/lease/keepalive", json.dumps({"ID": lid})) as s:
        eq("lease/keepalive HTTP status", s.status, 200)
        true("lease/keepalive is chunked", s.chunked, s.headers)
        true("lease/keepalive Content-Type application/json",
             s.headers.get("content-type", "").startswith("application/json"), s.headers)
        m = s.result()
        keys_eq("lease/keepalive result", m, {"header", "ID", "TTL"})
        check_header("lease/keepalive header", m["header"])
        eq("lease/keepalive ID", m["ID"], lid)
        eq("lease/keepalive TTL", m["TTL"], str(LEASE_TTL))
        # the request body is exhausted: etcd closes the stream (etcd3gw relies on this)
        s.expect_end()
    # several requests in one body: one response each, in order
    unknown = str(1 + uuid.uuid4().int % (1 << 62))
    with Stream(ctx, "/v3/lease/keepalive", json.dumps({"ID": lid}) + json.dumps({"ID": unknown})) as s:
        m1 = s.result()
        eq("keepalive #1 ID", m1.get("ID"), lid)
        eq("keepalive #1 TTL", m1.get("TTL"), str(LEASE_TTL))
        m2 = s.result()
        eq("keepalive #2 ID", m2.get("ID"), unknown)
        absent("keepalive #2 (unknown lease)", m2, "TTL")
        s.expect_end()


@check
def check_lease_keepalive_unknown(ctx: Ctx):
    unknown = str(1 + uuid.uuid4().int % (1 << 62))
    r = ctx.post("/v3/lease/keepalive", {"ID": unknown})
    eq("lease/keepalive (unknown) HTTP status", r.status_code, 200)
    lines = [x for x in r.text.split("\n") if x.strip()]
    eq("lease/keepalive (unknown) message count", len(lines), 1)
    m = json.loads(lines[0])
    keys_eq("lease/keepalive (unknown) message", m, {"result"})
    keys_eq("lease/keepalive (unknown) result has no TTL", m["result"], {"header", "ID"})
    eq("lease/keepalive (unknown) ID", m["result"]["ID"], unknown)
    check_header("lease/keepalive (unknown) header", m["result"]["header"])


# --------------------------------------------------------------------------
# cluster / maintenance


@check
def check_cluster_member_list(ctx: Ctx):
    r = ctx.ok("/v3/cluster/member/list", {})
    keys_eq("member/list response", r, {"header", "members"})
    # etcd 3.4 fills cluster_id, member_id, raft_term but not revision here
    check_header("member/list header", r["header"], need_revision=False)
    members = r["members"]
    true("member/list: non-empty list", isinstance(members, list) and len(members) > 0, members)
    for i, m in enumerate(members):
        what = f"members[{i}]"
        for f in ("ID", "name", "peerURLs", "clientURLs"):
            true(f"{what} has {f!r}", f in m, m)
        extra = set(m) - {"ID", "name", "peerURLs", "clientURLs", "isLearner"}
        true(f"{what}: unexpected fields {sorted(extra)}", not extra, m)
        int64_str(f"{what}.ID", m["ID"])
        true(f"{what}.name is a string", isinstance(m["name"], str), m)
        for f in ("peerURLs", "clientURLs"):
            true(f"{what}.{f} is a list of URL strings",
                 isinstance(m[f], list) and all(isinstance(u, str) and "://" in u for u in m[f]), m)
        if "isLearner" in m:
            eq(f"{what}.isLearner (false is omitted)", m["isLearner"], True)
    ids = [m["ID"] for m in members]
    true("member/list: IDs unique", len(set(ids)) == len(ids), ids)
    true("header member_id is one of the members", r["header"]["member_id"] in ids, (r["header"], ids))


@check
def check_maintenance_status(ctx: Ctx):
    r = ctx.ok("/v3/maintenance/status", {})
    # proto field names of StatusResponse are camelCase already (dbSize, raftIndex, ...)
    for f in ("header", "version", "dbSize", "leader", "raftIndex", "raftTerm", "raftAppliedIndex", "dbSizeInUse"):
        true(f"maintenance/status has {f!r}", f in r, r)
    for f in ("db_size", "raft_index", "raft_term", "raft_applied_index", "db_size_in_use"):
        absent("maintenance/status uses proto names", r, f)
    extra = set(r) - {"header", "version", "dbSize", "leader", "raftIndex", "raftTerm", "raftAppliedIndex",
                      "dbSizeInUse", "errors", "isLearner"}
    true(f"maintenance/status: unexpected fields {sorted(extra)}", not extra, r)
    check_header("maintenance/status header", r["header"])
    true("maintenance/status version X.Y.Z", VERSION_RE.match(str(r["version"])) is not None, r["version"])
    for f in ("dbSize", "leader", "raftIndex", "raftTerm", "raftAppliedIndex", "dbSizeInUse"):
        int64_str(f"maintenance/status {f}", r[f])
    eq("maintenance/status raftTerm == header raft_term", r["raftTerm"], r["header"]["raft_term"])
    true("maintenance/status raftAppliedIndex <= raftIndex",
         int(r["raftAppliedIndex"]) <= int(r["raftIndex"]), r)
    members = ctx.ok("/v3/cluster/member/list", {})["members"]
    true("maintenance/status leader is a member ID", r["leader"] in {m["ID"] for m in members}, (r, members))


@check
def check_maintenance_alarm_list(ctx: Ctx):
    for body in ({}, {"action": "GET"}, {"action": 0, "memberID": "0", "alarm": "NONE"}):
        r = ctx.ok("/v3/maintenance/alarm", body, what=f"maintenance/alarm {body}")
        # etcd 3.4 answers exactly {} (no alarms, and it leaves the header
        # unset); etcd >= 3.5 adds a header. Either is accepted.
        true(f"maintenance/alarm {body}: only an optional header", set(r) <= {"header"}, r)
        if "header" in r:
            check_header("maintenance/alarm header", r["header"])


# --------------------------------------------------------------------------
# lock / election (served by etcd 3.4's gateway too)


@check
def check_lock_unlock(ctx: Ctx):
    lid = ctx.grant(LEASE_TTL)
    name = ctx.k("lock/l1")
    r = ctx.ok("/v3/lock/lock", {"name": b64(name), "lease": lid})
    keys_eq("lock/lock response", r, {"header", "key"})
    check_header("lock/lock header", r["header"])
    key = unb64("lock key", r["key"])
    eq("lock/lock key is name/<lease id in hex>", key, name + b"/" + lease_hex(lid).encode())
    rev = int(r["header"]["revision"])
    kv = ctx.ok("/v3/kv/range", {"key": r["key"]})["kvs"][0]
    check_kv("lock key kv (empty value, the lease)", kv, key, b"", create=rev, mod=rev, version=1, lease=lid)
    r = ctx.ok("/v3/lock/unlock", {"key": b64(key)})
    keys_eq("lock/unlock response", r, {"header"})
    check_header("lock/unlock header", r["header"], revision=rev + 1)
    keys_eq("range of the unlocked key", ctx.ok("/v3/kv/range", {"key": b64(key)}), {"header"})
    r = ctx.ok("/v3/lock/unlock", {"key": b64(key)})
    keys_eq("lock/unlock of a lock not held (200, no error)", r, {"header"})
    check_header("second unlock header (nothing changed)", r["header"], revision=rev + 1)


@check
def check_lock_contention(ctx: Ctx):
    la, lb = ctx.grant(LEASE_TTL), ctx.grant(LEASE_TTL)
    name = ctx.k("lock/contended")
    ka = unb64("lock A key", ctx.ok("/v3/lock/lock", {"name": b64(name), "lease": la})["key"])
    session = ctx.session()
    q = run_in_thread(lambda: ctx.post("/v3/lock/lock", {"name": b64(name), "lease": lb}, session=session))
    try:
        kind, v = q.get(timeout=1.0)
        fail(f"second lock/lock returned while the lock was held: {kind} {short(getattr(v, 'text', v))}")
    except queue.Empty:
        pass
    ctx.ok("/v3/lock/unlock", {"key": b64(ka)})
    try:
        kind, r = q.get(timeout=STREAM_TIMEOUT)
    except queue.Empty:
        fail("second lock/lock still blocked after the holder unlocked")
    if kind == "err":
        fail(f"second lock/lock failed: {r!r}")
    eq("second lock/lock HTTP status", r.status_code, 200)
    kb = unb64("lock B key", r.json()["key"])
    eq("second lock key", kb, name + b"/" + lease_hex(lb).encode())
    ctx.ok("/v3/lock/unlock", {"key": b64(kb)})


@check
def check_lock_errors(ctx: Ctx):
    unknown = str(1 + uuid.uuid4().int % (1 << 62))
    r = ctx.post("/v3/lock/lock", {"name": b64(ctx.k("lock/err")), "lease": unknown})
    # the lock service passes the client error through untranslated: gRPC Unknown -> HTTP 500
    expect_error("lock/lock with an unknown lease", r, 500, 2, "etcdserver: requested lease not found")


@check
def check_election(ctx: Ctx):
    lid = ctx.grant(LEASE_TTL)
    name = ctx.k("election/e1")
    r = ctx.ok("/v3/election/campaign", {"name": b64(name), "lease": lid, "value": b64(b"cand-1")})
    keys_eq("election/campaign response", r, {"header", "leader"})
    check_header("election/campaign header", r["header"])
    rev = int(r["header"]["revision"])
    leader = r["leader"]
    keys_eq("campaign leader key", leader, {"name", "key", "rev", "lease"})
    eq("leader.name", unb64("name", leader["name"]), name)
    eq("leader.key is name/<lease hex>", unb64("key", leader["key"]), name + b"/" + lease_hex(lid).encode())
    eq("leader.rev", leader["rev"], str(rev))
    eq("leader.lease", leader["lease"], lid)
    r = ctx.ok("/v3/election/leader", {"name": b64(name)})
    keys_eq("election/leader response", r, {"header", "kv"})
    check_kv("election/leader kv", r["kv"], name + b"/" + lease_hex(lid).encode(), b"cand-1",
             create=rev, mod=rev, version=1, lease=lid)
    with Stream(ctx, "/v3/election/observe", json.dumps({"name": b64(name)})) as s:
        eq("election/observe HTTP status", s.status, 200)
        m = s.result()
        keys_eq("observe first message", m, {"header", "kv"})
        eq("observe first value", unb64("value", m["kv"]["value"]), b"cand-1")
        r = ctx.ok("/v3/election/proclaim", {"leader": leader, "value": b64(b"cand-1b")})
        keys_eq("election/proclaim response", r, {"header"})
        check_header("election/proclaim header", r["header"], revision=rev + 1)
        m = s.result()
        eq("observe after proclaim value", unb64("value", m["kv"]["value"]), b"cand-1b")
        eq("observe after proclaim version", m["kv"]["version"], "2")
    r = ctx.ok("/v3/election/leader", {"name": b64(name)})
    eq("leader value after proclaim", unb64("value", r["kv"]["value"]), b"cand-1b")
    r = ctx.ok("/v3/election/resign", {"leader": leader})
    keys_eq("election/resign response", r, {"header"})
    check_header("election/resign header", r["header"], revision=rev + 2)
    r = ctx.post("/v3/election/leader", {"name": b64(name)})
    expect_error("election/leader with no leader", r, 500, 2, "election: no leader")
    r = ctx.ok("/v3/election/resign", {"leader": leader})
    keys_eq("second election/resign (200, no error)", r, {"header"})
    r = ctx.post("/v3/election/proclaim", {"leader": leader, "value": b64(b"x")})
    expect_error("election/proclaim when not leader", r, 500, 2, "election: not leader")


# --------------------------------------------------------------------------
# watch stream


@check
def check_watch_stream(ctx: Ctx):
    k = ctx.k("watch/k")
    rev = ctx.rev()
    with Stream(ctx, "/v3/watch", json.dumps({"create_request": {"key": b64(k)}})) as s:
        eq("watch HTTP status", s.status, 200)
        true("watch response is chunked", s.chunked, s.headers)
        true("watch Content-Type application/json",
             s.headers.get("content-type", "").startswith("application/json"), s.headers)
        m = s.result()
        # first watch on a stream has watch_id 0: omitted
        keys_eq("watch created message", m, {"header", "created"})
        eq("watch created", m["created"], True)
        check_header("watch created header", m["header"], revision=rev)
        r1 = ctx.put(k, b"v1")
        m = s.result()
        keys_eq("watch event message", m, {"header", "events"})
        check_header("watch event header", m["header"], revision=r1)
        eq("watch events length", len(m["events"]), 1)
        ev = m["events"][0]
        keys_eq("PUT event (type PUT is the zero value: omitted)", ev, {"kv"})
        check_kv("PUT event kv", ev["kv"], k, b"v1", create=r1, mod=r1, version=1)
        r2 = ctx.put(k, b"v2")
        ev = s.result()["events"][0]
        check_kv("second PUT event kv", ev["kv"], k, b"v2", create=r1, mod=r2, version=2)
        ctx.put(ctx.k("watch/other"), b"x")  # not watched
        r3 = ctx.delete(k)
        m = s.result()
        check_header("DELETE event header", m["header"], revision=r3)
        ev = m["events"][0]
        keys_eq("DELETE event", ev, {"type", "kv"})
        eq("DELETE event type", ev["type"], "DELETE")
        keys_eq("DELETE event kv (only key and mod_revision)", ev["kv"], {"key", "mod_revision"})
        eq("DELETE event kv.key", unb64("key", ev["kv"]["key"]), k)
        eq("DELETE event kv.mod_revision", ev["kv"]["mod_revision"], str(r3))
        # the stream stays open after the request body is exhausted
        s.expect_quiet(0.5)


@check
def check_watch_options(ctx: Ctx):
    pre = ctx.k("watch/opt/")
    ka, kb = pre + b"a", pre + b"b"
    r1 = ctx.put(ka, b"1")
    r2 = ctx.put(ka, b"2")
    r3 = ctx.delete(ka)
    # start_revision replays history; prev_kv attaches the previous kv (camelCase names)
    body = json.dumps({"createRequest": {"key": b64(ka), "startRevision": str(r1), "prevKv": True}})
    with Stream(ctx, "/v3/watch", body) as s:
        m = s.result()
        eq("history watch created", m.get("created"), True)
        m = s.result()
        evs = m.get("events", [])
        # etcd sends the whole replay in one message
        eq("replayed events count", len(evs), 3)
        keys_eq("replayed event 1", evs[0], {"kv"})
        check_kv("replayed event 1 kv", evs[0]["kv"], ka, b"1", create=r1, mod=r1, version=1)
        keys_eq("replayed event 2", evs[1], {"kv", "prev_kv"})
        check_kv("replayed event 2 prev_kv", evs[1]["prev_kv"], ka, b"1", create=r1, mod=r1, version=1)
        eq("replayed event 3 type", evs[2].get("type"), "DELETE")
        check_kv("replayed event 3 prev_kv", evs[2]["prev_kv"], ka, b"2", create=r1, mod=r2, version=2)
        eq("replayed event 3 kv.mod_revision", evs[2]["kv"]["mod_revision"], str(r3))
    # two watchers in one body: a range watch filtering puts, and one with an explicit watch_id
    body = (json.dumps({"create_request": {"key": b64(pre), "range_end": b64(prefix_end(pre)),
                                           "filters": ["NOPUT"]}})
            + json.dumps({"create_request": {"key": b64(kb), "watch_id": "7"}}))
    with Stream(ctx, "/v3/watch", body) as s:
        m1, m2 = s.result(), s.result()
        eq("first created message (watch_id 0 omitted)", (m1.get("created"), m1.get("watch_id")), (True, None))
        eq("second created message", (m2.get("created"), m2.get("watch_id")), (True, "7"))
        rp = ctx.put(kb, b"x")
        rd = ctx.delete(kb)
        got = {}
        for _ in range(3):
            m = s.result()
            wid = m.get("watch_id", "0")
            got.setdefault(wid, []).extend((e.get("type", "PUT"), e["kv"]["mod_revision"]) for e in m["events"])
        eq("events of watch 7", got.get("7"), [("PUT", str(rp)), ("DELETE", str(rd))])
        eq("events of the NOPUT range watch", got.get("0"), [("DELETE", str(rd))])
        s.expect_quiet(0.3)


@check
def check_watch_cancel_and_progress(ctx: Ctx):
    k = ctx.k("watch/cancel")
    body = json.dumps({"create_request": {"key": b64(k)}}) + json.dumps({"cancel_request": {"watch_id": "0"}})
    with Stream(ctx, "/v3/watch", body) as s:
        eq("watch created", s.result().get("created"), True)
        m = s.result()
        keys_eq("cancel response", m, {"header", "canceled"})
        eq("canceled", m["canceled"], True)
        check_header("cancel response header", m["header"])
        ctx.put(k, b"after-cancel")
        s.expect_quiet(0.5)
    rev = ctx.rev()
    body = json.dumps({"create_request": {"key": b64(k)}}) + json.dumps({"progress_request": {}})
    with Stream(ctx, "/v3/watch", body) as s:
        eq("watch created", s.result().get("created"), True)
        m = s.result()
        # a progress notification for the whole stream carries watch_id -1
        keys_eq("progress response", m, {"header", "watch_id"})
        eq("progress response watch_id", m["watch_id"], "-1")
        check_header("progress response header", m["header"], revision=rev)


# --------------------------------------------------------------------------
# API prefixes


@check
def check_alias_v3beta(ctx: Ctx):
    """etcd 3.4 serves /v3beta/ as an alias of /v3/ (deprecated, removed in 3.5)."""
    k = ctx.k("alias/beta")
    r = ctx.ok("/v3beta/kv/put", {"key": b64(k), "value": b64(b"beta")})
    rev = int(check_header("/v3beta put header", r["header"])["revision"])
    r = ctx.ok("/v3/kv/range", {"key": b64(k)})
    check_kv("value put via /v3beta read via /v3", r["kvs"][0], k, b"beta", create=rev, mod=rev, version=1)
    r = ctx.ok("/v3beta/kv/range", {"key": b64(k)})
    check_kv("/v3beta range", r["kvs"][0], k, b"beta", create=rev, mod=rev, version=1)
    r = ctx.ok("/v3beta/maintenance/status", {})
    true("/v3beta/maintenance/status has version", "version" in r, r)
    r = ctx.ok("/v3beta/cluster/member/list", {})
    true("/v3beta/cluster/member/list has members", len(r.get("members", [])) > 0, r)
    lid = ctx.ok("/v3beta/lease/grant", {"TTL": LEASE_TTL})["ID"]
    ctx.leases.append(lid)
    with Stream(ctx, "/v3beta/lease/keepalive", json.dumps({"ID": lid})) as s:
        m = s.result()
        eq("/v3beta keepalive", (m.get("ID"), m.get("TTL")), (lid, str(LEASE_TTL)))
        s.expect_end()
    with Stream(ctx, "/v3beta/watch", json.dumps({"create_request": {"key": b64(k)}})) as s:
        eq("/v3beta watch created", s.result().get("created"), True)
        r2 = ctx.put(k, b"beta2")
        m = s.result()
        eq("/v3beta watch event mod_revision", m["events"][0]["kv"]["mod_revision"], str(r2))
    r = ctx.ok("/v3beta/lock/lock", {"name": b64(ctx.k("alias/lock")), "lease": lid})
    ctx.ok("/v3beta/lock/unlock", {"key": r["key"]})
    ctx.ok("/v3beta/lease/revoke", {"ID": lid})
    # etcd3gw pointed at /v3beta/ explicitly
    c = ctx.gw(api_path="/v3beta/")
    c.put(k, b"via-etcd3gw")
    eq("etcd3gw with api_path=/v3beta/", c.get(k), [b"via-etcd3gw"])


@check
def check_alias_v3alpha(ctx: Ctx):
    # etcd 3.4 does not serve /v3alpha/ at all (plain-text 404 from Go's mux); Cairn keeps
    # it as an alias of /v3/ for clients written against etcd 3.2. Either is fine; when it
    # is served it must behave as /v3/.
    k = ctx.k("alias/alpha")
    ctx.put(k, b"alpha")
    for path in ("/v3alpha/kv/range", "/v3alpha/maintenance/status"):
        r = ctx.post(path, {"key": b64(k)})
        if r.status_code == 404:
            continue
        eq(f"POST {path} status", r.status_code, 200)
        if path.endswith("range"):
            body = r.json()
            eq("/v3alpha/kv/range value", unb64("value", body["kvs"][0]["value"]), b"alpha")


# --------------------------------------------------------------------------
# errors


@check
def check_err_malformed_json(ctx: Ctx):
    r = ctx.post("/v3/kv/range", data='{"key":')
    # etcd 3.4's text is Go's "unexpected EOF": only shape, status and code are checked
    expect_error("malformed JSON body", r, 400, 3)
    r = ctx.post("/v3/kv/put", data='[]')
    expect_error("JSON array body", r, 400, 3)


@check
def check_err_wrong_type(ctx: Ctx):
    # Go library texts (e.g. "json: cannot unmarshal number into Go value of
    # type []uint8") are recorded in README.md but not checked.
    for what, body in (("key as a number", '{"key": 5}'),
                       ("key not base64", '{"key": "!!not base64"}'),
                       ("limit as a non-integer string", '{"key": "Zm9v", "limit": "abc"}'),
                       ("limit as a fraction", '{"key": "Zm9v", "limit": 1.5}'),
                       ("bool as a string", '{"key": "Zm9v", "serializable": "true"}')):
        expect_error(what, ctx.post("/v3/kv/range", data=body), 400, 3)


@check
def check_err_future_revision(ctx: Ctx):
    rev = ctx.rev()
    r = ctx.post("/v3/kv/range", {"key": b64(ctx.k("err/future")), "revision": str(rev + 1000)})
    # OutOfRange (11) maps to HTTP 400 in etcd 3.4's grpc-gateway
    expect_error("range at a future revision", r, 400, 11,
                 "etcdserver: mvcc: required revision is a future revision")


@check
def check_err_too_many_txn_ops(ctx: Ctx):
    pre = ctx.k("err/txn/")
    r = ctx.post("/v3/kv/txn", {"success": [{"request_put": {"key": b64(pre + b"%03d" % i), "value": b64(b"x")}}
                                            for i in range(129)]})
    expect_error("txn with 129 ops", r, 400, 3, "etcdserver: too many operations in txn request")
    r = ctx.ok("/v3/kv/range", {"key": b64(pre), "range_end": b64(prefix_end(pre)), "count_only": True})
    absent("nothing written by the rejected txn", r, "count")


@check
def check_err_duplicate_key_in_txn(ctx: Ctx):
    k = ctx.k("err/dup")
    r = ctx.post("/v3/kv/txn", {"success": [{"request_put": {"key": b64(k), "value": b64(b"1")}},
                                            {"request_put": {"key": b64(k), "value": b64(b"2")}}]})
    expect_error("txn putting the same key twice", r, 400, 3, "etcdserver: duplicate key given in txn request")


@check
def check_err_empty_key(ctx: Ctx):
    for what, body in (("put with empty key", {"key": "", "value": b64(b"v")}),
                       ("put without key", {"value": b64(b"v")}),
                       ("put with empty body", None)):
        data = "" if body is None else json.dumps(body)
        expect_error(what, ctx.post("/v3/kv/put", data=data), 400, 3, "etcdserver: key is not provided")
    r = ctx.post("/v3/kv/range", {})
    expect_error("range without key", r, 400, 3, "etcdserver: key is not provided")


@check
def check_err_lease_not_found(ctx: Ctx):
    unknown = str(1 + uuid.uuid4().int % (1 << 62))
    for path in ("/v3/lease/revoke", "/v3/kv/lease/revoke"):
        expect_error(f"{path} of an unknown lease", ctx.post(path, {"ID": unknown}), 404, 5,
                     "etcdserver: requested lease not found")
    r = ctx.post("/v3/kv/put", {"key": b64(ctx.k("err/lease")), "value": b64(b"v"), "lease": unknown})
    expect_error("put with an unknown lease", r, 404, 5, "etcdserver: requested lease not found")


@check
def check_err_lease_grant(ctx: Ctx):
    lid = str(1 + uuid.uuid4().int % (1 << 62))
    ctx.ok("/v3/lease/grant", {"TTL": LEASE_TTL, "ID": lid})
    ctx.leases.append(lid)
    # FailedPrecondition (9) maps to HTTP 412 in etcd 3.4's grpc-gateway
    expect_error("lease/grant of an existing ID", ctx.post("/v3/lease/grant", {"TTL": LEASE_TTL, "ID": lid}),
                 412, 9, "etcdserver: lease already exists")
    expect_error("lease/grant with TTL > 9000000000",
                 ctx.post("/v3/lease/grant", {"TTL": "10000000000"}), 400, 11, "etcdserver: too large lease TTL")


@check
def check_err_request_too_large(ctx: Ctx):
    k = ctx.k("err/big")
    # between --max-request-bytes (1.5 MiB default) and the gRPC receive limit
    # (max-request-bytes + 512 KiB = 2 MiB): the server's own check
    r = ctx.post("/v3/kv/put", {"key": b64(k), "value": b64(b"x" * int(1.6 * 1024 * 1024))}, timeout=60)
    expect_error("put of a 1.6 MiB value", r, 400, 3, "etcdserver: request is too large")
    # above 2 MiB: gRPC's own limit, ResourceExhausted -> HTTP 429; etcd's text
    # ends with "(<proto size> vs. 2097152)", only its start is checked
    r = ctx.post("/v3/kv/put", {"key": b64(k), "value": b64(b"x" * int(2.2 * 1024 * 1024))}, timeout=60)
    expect_error("put of a 2.2 MiB value", r, 429, 8, prefix="grpc: received message larger than max (")
    keys_eq("nothing written", ctx.ok("/v3/kv/range", {"key": b64(k)}), {"header"})
    # just under the limit is accepted
    ctx.put(k, b"x" * (1024 * 1024))


@check
def check_err_method_not_allowed(ctx: Ctx):
    # etcd 3.4 answers 405 with a plain-text body: only the status is checked
    for method, path in (("GET", "/v3/kv/range"), ("PUT", "/v3/kv/put"), ("DELETE", "/v3/kv/range"),
                         ("GET", "/v3/watch"), ("GET", "/v3/lease/grant")):
        r = ctx.http.request(method, ctx.base + path, timeout=HTTP_TIMEOUT)
        eq(f"{method} {path} status", r.status_code, 405)


@check
def check_err_unknown_path(ctx: Ctx):
    # etcd 3.4 answers 404 with a plain-text body ("Not Found" under /v3/,
    # "404 page not found" elsewhere): only the status is checked
    for path in ("/v3/nope", "/v3/kv/nope", "/v3/kv/range/extra", "/v3/kv/lease/keepalive",
                 "/v3beta/nope", "/v4/kv/range", "/nope"):
        r = ctx.post(path, {})
        eq(f"POST {path} status", r.status_code, 404)


@check
def check_err_stream_malformed_json(ctx: Ctx):
    # On the streaming endpoints etcd 3.4's gateway reports a body decoding
    # error as gRPC Unknown (2) -> HTTP 500, as a plain (non-chunked) JSON error
    for path in ("/v3/watch", "/v3/lease/keepalive"):
        r = ctx.post(path, data='{"create_request":' if path == "/v3/watch" else '{"ID":')
        expect_error(f"{path} with malformed JSON", r, 500, 2)


# --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoint", help="gateway base URL, e.g. http://127.0.0.1:2379")
    ap.add_argument("--only", action="append", default=[],
                    help="run only these checks (repeatable, comma-separated)")
    ap.add_argument("--list", action="store_true", help="list check names and exit")
    args = ap.parse_args()
    names = [n for n, _ in CHECKS]
    if args.list:
        print("\n".join(names))
        return 0
    if not args.endpoint:
        ap.error("--endpoint is required")
    only = [x.strip() for o in args.only for x in o.split(",") if x.strip()]
    unknown = [x for x in only if x not in names]
    if unknown:
        ap.error(f"unknown check(s) {unknown}; see --list")
    selected = [(n, f) for n, f in CHECKS if not only or n in only]

    ctx = Ctx(args.endpoint)
    try:
        ctx.http.get(ctx.base + "/version", timeout=HTTP_TIMEOUT)
    except requests.RequestException as e:
        print(f"gateway suite: cannot reach {ctx.base}: {e}")
        print(f"gateway: 0 passed, {len(selected)} failed")
        return 1
    print(f"gateway suite: endpoint {ctx.base}, key prefix {ctx.prefix!r}, {len(selected)} checks", flush=True)
    failures: list[tuple[str, str]] = []
    try:
        for name, fn in selected:
            t0 = time.monotonic()
            try:
                fn(ctx)
            except CheckFailed as e:
                failures.append((name, str(e)))
                print(f"FAIL {name}: {e}", flush=True)
            except Exception as e:  # noqa: BLE001
                tb = traceback.format_exc(limit=4)
                failures.append((name, f"{type(e).__name__}: {e}"))
                print(f"FAIL {name}: unexpected {type(e).__name__}: {e}\n{tb}", flush=True)
            else:
                print(f"PASS {name} ({time.monotonic() - t0:.2f}s)", flush=True)
    finally:
        ctx.cleanup()
    if failures:
        print("\nFailed checks:")
        for name, msg in failures:
            print(f"  - {name}: {msg}")
    print(f"gateway: {len(selected) - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
