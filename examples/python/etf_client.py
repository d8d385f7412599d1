#!/usr/bin/env python3
"""A single-file client for the ETF engine, for teams that trade in Python (standard library only).

    from etf_client import EtfClient
    etf = EtfClient("http://localhost:8080", "team1", "team1pass")
    print(etf.holdings()["holdings"])
    etf.create(2)            # retried safely: one idempotency key for every attempt

Or from the shell:  python3 etf_client.py holdings | create N | redeem N | prices
(ETF_URL, ETF_USER, ETF_PASSWORD as for the ndfex-etf CLI.)
"""
import base64, json, os, secrets, sys, time, urllib.error, urllib.request


class EtfError(Exception):
    def __init__(self, status, body):
        err = (body or {}).get("error", {})
        super().__init__(f"{err.get('code', 'http_error')}: {err.get('message', status)}")
        self.status, self.code, self.body = status, err.get("code"), body


class EtfClient:
    def __init__(self, url, username=None, password=None, retries=4):
        self.url, self.retries = url.rstrip("/"), retries
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.auth = {"Authorization": f"Basic {token}"} if username else {}

    def _call(self, method, path, body=None, key=None):
        headers = dict(self.auth)
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        if key:
            headers["Idempotency-Key"] = key
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            raise EtfError(e.code, json.loads(e.read() or b"null")) from None

    def holdings(self):
        return self._call("GET", "/holdings")

    def etfs(self):
        return self._call("GET", "/etfs")

    def history(self, limit=20):
        return self._call("GET", f"/history?limit={limit}")

    def request(self, request_id):
        return self._call("GET", f"/requests/{request_id}")

    def create(self, amount, etf="UNDY", request_id=None):
        return self._convert("/create", amount, etf, request_id)

    def redeem(self, amount, etf="UNDY", request_id=None):
        return self._convert("/redeem", amount, etf, request_id)

    def _convert(self, path, amount, etf, request_id):
        # The same key on every attempt: a retry after a 503 or a lost answer happens at most once.
        key = request_id or "py-" + secrets.token_urlsafe(12)
        for attempt in range(1, self.retries + 1):
            try:
                return self._call("POST", path, {"amount": amount, "etf_name": etf, "request_id": key}, key)
            except EtfError as e:
                if e.status not in (429, 503) or attempt == self.retries:
                    raise
            except OSError:
                if attempt == self.retries:
                    raise
            time.sleep(0.2 * 2 ** attempt)


if __name__ == "__main__":
    etf = EtfClient(os.environ.get("ETF_URL", "http://localhost:8080"), os.environ.get("ETF_USER", "team1"), os.environ.get("ETF_PASSWORD", "team1pass"))
    cmd, args = (sys.argv[1] if len(sys.argv) > 1 else "holdings"), sys.argv[2:]
    try:
        if cmd == "holdings":
            print(json.dumps(etf.holdings()["holdings"]))
        elif cmd in ("create", "redeem"):
            r = getattr(etf, cmd)(int(args[0]))
            print(f"{cmd} {r['amount']} {r['etf_name']} ({r['request_id']}): {json.dumps(r['deltas'])}")
        elif cmd == "prices":
            for e in etf.etfs()["etfs"]:
                print(e["name"], json.dumps(e["price"]))
        else:
            sys.exit(f"usage: {sys.argv[0]} holdings | create N | redeem N | prices")
    except EtfError as e:
        sys.exit(f"etf_client: {e}")
