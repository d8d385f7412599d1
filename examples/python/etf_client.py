#!/usr/bin/env python3
"""A single-file client for the ETF engine, for teams that trade in Python (standard library only).

    from etf_client import EtfClient
    etf = EtfClient("http://localhost:8080", "team1", "team1pass")
    print(etf.holdings()["holdings"])
    print(etf.create(2, dry_run=True)["fee"])    # what 2 would do: nothing changes
    etf.create(2)                                # retried safely: one idempotency key for every attempt
    for m in etf.stream(prices=["UNDY"]):        # live holdings and prices; reconnects and resumes
        if m["type"] == "delta": print(m["seq"], m["deltas"])
        if m["type"] == "price": print(m["price"]["create_edge"], m["price"]["redeem_edge"])

Every call honours a 429's Retry-After; a server that cannot be reached raises
EtfUnavailable (one readable line, no traceback from the shell).

From the shell:  python3 etf_client.py holdings | create N [--dry-run] | redeem N [--dry-run]
                 | prices | leaderboard | register USER PASSWORD | stream [--resume-from SEQ]
(ETF_URL, ETF_USER, ETF_PASSWORD as for the ndfex-etf CLI.)
"""
import base64, hashlib, json, os, re, secrets, socket, ssl, struct, sys, time, urllib.error, urllib.parse, urllib.request


class EtfError(Exception):
    """The service's JSON error: status, code, message (and retry_after for a 429)."""

    def __init__(self, status, body, retry_after=None):
        err = (body or {}).get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"{err.get('code', 'http_error')}: {err.get('message', status)}")
        self.status, self.code, self.body, self.retry_after = status, err.get("code"), body, retry_after


class EtfUnavailable(Exception):
    """No answer at all: the server is down, unreachable or too slow."""


class EtfClient:
    def __init__(self, url, username=None, password=None, retries=4, timeout=10, on_retry=None):
        self.url, self.retries, self.timeout = url.rstrip("/"), retries, timeout
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.auth = {"Authorization": f"Basic {token}"} if username else {}
        # Told of each attempt that will be tried again: on_retry(error, seconds_to_wait). Quiet by default.
        self.on_retry = on_retry or (lambda err, wait: None)

    # ------------------------------------------------------------------ HTTP

    def _once(self, method, path, body, key, auth):
        headers = dict(self.auth) if auth else {}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        if key:
            headers["Idempotency-Key"] = key
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed = json.loads(raw or b"null")
            except ValueError:
                parsed = {"error": {"code": "bad_response", "message": f"HTTP {e.code}: {raw[:120]!r}"}}
            after = e.headers.get("Retry-After")
            raise EtfError(e.code, parsed, float(after) if after and after.replace(".", "", 1).isdigit() else None) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise EtfUnavailable(f"cannot reach {self.url}: {reason}") from None

    def _call(self, method, path, body=None, key=None, auth=True, retry="read"):
        """retry: 'read' and 'keyed' (a conversion with its key) are tried again after a 429, a 503 or no answer;
        'unkeyed' (a registration) only after a 429, which refused it outright."""
        for attempt in range(1, self.retries + 1):
            try:
                return self._once(method, path, body, key, auth)
            except EtfError as e:
                if attempt == self.retries or e.status not in (429, 503) or (e.status == 503 and retry == "unkeyed"):
                    raise
                err, wait = e, (e.retry_after if e.status == 429 and e.retry_after is not None else 0.2 * 2**attempt)
            except EtfUnavailable as e:
                if attempt == self.retries or retry == "unkeyed":
                    raise
                err, wait = e, 0.2 * 2**attempt
            self.on_retry(err, wait)
            time.sleep(wait)

    def register(self, username, password):
        return self._call("POST", "/register", {"username": username, "password": password}, auth=False, retry="unkeyed")

    def holdings(self):
        return self._call("GET", "/holdings")

    def etfs(self):
        return self._call("GET", "/etfs", auth=False)

    def leaderboard(self):
        return self._call("GET", "/leaderboard", auth=False)

    def history(self, limit=20):
        """Newest first; each conversion with deltas_by_ticker / holdings_by_ticker (maps) and its scorecard."""
        return self._call("GET", f"/history?limit={limit}")

    def request(self, request_id):
        return self._call("GET", f"/requests/{urllib.parse.quote(request_id, safe='')}")

    def create(self, amount, etf="UNDY", request_id=None, dry_run=False):
        return self._convert("/create", amount, etf, request_id, dry_run)

    def redeem(self, amount, etf="UNDY", request_id=None, dry_run=False):
        return self._convert("/redeem", amount, etf, request_id, dry_run)

    def _convert(self, path, amount, etf, request_id, dry_run):
        if dry_run:  # changes nothing: no key needed
            return self._call("POST", path, {"amount": amount, "etf_name": etf, "dry_run": True})
        # The same key on every attempt: a retry after a 503 or a lost answer happens at most once.
        key = request_id or "py-" + secrets.token_urlsafe(12)
        return self._call("POST", path, {"amount": amount, "etf_name": etf, "request_id": key}, key, retry="keyed")

    # ------------------------------------------------------------------ stream

    def stream(self, prices=("*",), requests=False, resume_from=None, reconnect=True):
        """Yields the stream's messages (docs/ws.md): welcome, snapshot, delta, price, request, resumed.
        After a lost connection it reconnects and resumes after the last seq it yielded (the server
        replays the deltas missed, or sends a fresh snapshot). The first connection failing raises
        EtfUnavailable; wrong credentials raise EtfError (401); a sign-in the login throttle refuses
        (close 4029) is tried again after the seconds it gives (told to on_retry as a 429); one the
        gateway cannot check for want of an engine (close 1013) is told to on_retry as a 503, and
        tried again after waits that double from 0.5 s to 5 s until a sign-in succeeds."""
        seq, delay, first = resume_from, 0.5, True
        base = self.url.replace("http", "ws", 1) + "/ws"
        while True:
            try:
                ws = _WebSocket(base + (f"?resume_from={seq}" if seq is not None else ""), self.auth, self.timeout)
            except EtfUnavailable:
                if first or not reconnect:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5)
                continue
            first = False
            try:
                ws.send(json.dumps({"type": "subscribe", "prices": list(prices), "requests": bool(requests)}))
                while True:
                    m = json.loads(ws.recv())
                    if m.get("type") == "welcome":
                        # Signed in: the backoff starts over here, not when the socket opens. A gateway without an
                        # engine opens every socket and closes it (1013): a reset at each open retried every 0.5 s.
                        delay = 0.5
                    if m.get("type") == "delta" and seq is not None and m["seq"] != seq + 1:
                        ws.send(json.dumps({"type": "snapshot"}))  # missed one: start over from a snapshot
                        continue
                    if m.get("type") in ("snapshot", "delta"):
                        seq = m["seq"]
                    yield m
            except _Closed as c:
                if c.code == 4001:
                    raise EtfError(401, {"error": {"code": "unauthorized", "message": c.reason}}) from None
                if c.code == 4029:
                    # The login throttle, not a wrong password: sooner than it says is refused again and costs this host an attempt.
                    said = re.search(r"retry after (\d+) s$", c.reason)
                    wait = min(int(said.group(1)) if said else 5, 120)
                    self.on_retry(EtfError(429, {"error": {"code": "too_many_requests", "message": c.reason}}, wait), wait)
                    delay = max(delay, wait)
                if c.code == 1013:
                    # No engine to check the sign-in: said, as an HTTP 503 would be, before the wait.
                    self.on_retry(EtfError(503, {"error": {"code": "engine_unavailable", "message": c.reason}}), delay)
            except (OSError, EtfUnavailable):
                pass  # lost: reconnect and resume
            finally:
                ws.close()
            if not reconnect:
                return
            time.sleep(delay)
            delay = min(delay * 2, 5)


class _Closed(Exception):
    def __init__(self, code, reason):
        super().__init__(f"closed {code} {reason}")
        self.code, self.reason = code, reason


class _WebSocket:
    """The least of RFC 6455 a client needs (the standard library has none): handshake, masked
    text frames out, text/binary frames in (fragments joined), ping answered, close reported."""

    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url, headers, timeout):
        u = urllib.parse.urlsplit(url)
        port = u.port or (443 if u.scheme == "wss" else 80)
        try:
            sock = socket.create_connection((u.hostname, port), timeout=timeout)
            if u.scheme == "wss":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=u.hostname)
            key = base64.b64encode(os.urandom(16)).decode()
            lines = [f"GET {u.path}{'?' + u.query if u.query else ''} HTTP/1.1", f"Host: {u.netloc}", "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
            sock.sendall(("\r\n".join(lines + [f"{k}: {v}" for k, v in headers.items()]) + "\r\n\r\n").encode())
            self.sock, self.f = sock, sock.makefile("rb")
            status = self.f.readline().decode("latin-1")
            answer = {}
            while True:
                line = self.f.readline().decode("latin-1").strip()
                if not line:
                    break
                k, _, v = line.partition(":")
                answer[k.strip().lower()] = v.strip()
        except OSError as e:
            raise EtfUnavailable(f"cannot reach {url}: {e}") from None
        if " 101 " not in status:
            sock.close()
            code = int(status.split()[1]) if len(status.split()) > 1 and status.split()[1].isdigit() else 0
            raise EtfError(code, {"error": {"code": "unauthorized" if code == 401 else "http_error", "message": status.strip()}})
        expected = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
        if answer.get("sec-websocket-accept") != expected:
            sock.close()
            raise EtfUnavailable(f"{url}: not a WebSocket server")
        # The server pings every idle minute or so: silence for longer means the connection is gone.
        sock.settimeout(max(timeout, 90))

    def _frame(self, opcode, payload):
        head = bytes([0x80 | opcode])
        n = len(payload)
        head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n) if n < 65536 else bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send(self, text):
        self._frame(0x1, text.encode())

    def _read(self, n):
        data = self.f.read(n)
        if len(data) < n:
            raise EtfUnavailable("connection lost")
        return data

    def recv(self):
        parts = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self._frame(0xA, payload)  # pong
            elif opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise _Closed(code, payload[2:].decode("utf-8", "replace"))
            elif opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if b0 & 0x80:
                    return b"".join(parts).decode()

    def close(self):
        try:
            self._frame(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()


def main(argv):
    etf = EtfClient(os.environ.get("ETF_URL", "http://localhost:8080"), os.environ.get("ETF_USER", "team1"), os.environ.get("ETF_PASSWORD", "team1pass"))
    cmd, args = (argv[0] if argv else "holdings"), argv[1:]
    dry = "--dry-run" in args
    args = [a for a in args if a != "--dry-run"]
    if cmd == "holdings":
        print(json.dumps(etf.holdings()["holdings"]))
    elif cmd in ("create", "redeem"):
        r = getattr(etf, cmd)(int(args[0]), dry_run=dry)
        if r.get("dry_run"):
            print(f"would {cmd} {r['amount']} {r['etf_name']} (dry run, fee {r['fee']}): {json.dumps(r['deltas'])}")
        else:
            print(f"{cmd} {r['amount']} {r['etf_name']} ({r['request_id']}): {json.dumps(r['deltas'])}")
    elif cmd == "prices":
        for e in etf.etfs()["etfs"]:
            print(e["name"], json.dumps(e["price"]))
    elif cmd == "leaderboard":
        for t in etf.leaderboard()["teams"]:
            print(f"{t['rank']:>3} {t['username']:<16} {t['total']:>14,.2f}")
    elif cmd == "register" and len(args) == 2:
        r = etf.register(args[0], args[1])
        print(f"registered {r['username']} as client {r['client_id']}")
    elif cmd == "stream":
        resume = int(args[args.index("--resume-from") + 1]) if "--resume-from" in args else None
        for m in etf.stream(resume_from=resume):
            print(json.dumps(m), flush=True)
    else:
        sys.exit(f"usage: {sys.argv[0]} holdings | create N [--dry-run] | redeem N [--dry-run] | prices | leaderboard | register USER PASSWORD | stream [--resume-from SEQ]")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (EtfError, EtfUnavailable) as e:
        sys.exit(f"etf_client: {e}")
    except KeyboardInterrupt:
        sys.exit(130)
