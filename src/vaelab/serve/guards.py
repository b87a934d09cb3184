"""Who may call the explorer, and how much: ASGI middleware that answers before any route runs.

- `_HostCheck`: a Host the server was not started for gets a 421, a cross-site POST a 403;
- `_BodyLimit`: a body over the limit gets a 422 before it is read;
- `security_headers`: the Content-Security-Policy (nothing from the network) and friends.
"""

from collections.abc import Sequence
from typing import Any

from fastapi.responses import JSONResponse

# Every script, style and request of the page stays on this server (no CDN, no third party).
# Every script, style and request of the page stays on this server (no CDN, no third party).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)


class _BodyLimit:
    """ASGI middleware: a 422 for any body whose Content-Length exceeds the limit, before it is read.
    (413 would be the HTTP word for it; the API keeps one status for every bad request.)"""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            length = dict(scope.get("headers") or []).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > self.limit:
                msg = f"request body of {length.decode(errors='replace')} bytes; the limit is {self.limit}"
                await JSONResponse(
                    {"detail": [{"loc": ["body"], "msg": msg, "type": "too_large"}], "message": msg}, status_code=422
                )(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _host_name(host: str) -> str:
    """The name part of a Host header or an --allow-host value, lower case: 'LocalHost:8000' ->
    'localhost', '[::1]:8000' -> '::1'. Empty for a malformed value."""
    host = host.strip().lower()
    if host.startswith("["):  # an IPv6 literal, maybe with a port
        end = host.find("]")
        return host[1:end] if end > 0 else ""
    if host.count(":") > 1:  # a bare IPv6 address (allowed_hosts only; a Host header brackets it)
        return host
    return host.partition(":")[0]


class _HostCheck:
    """ASGI middleware: only requests addressed to an allowed host, and POSTs from this page.

    - Host: a name the server was not started for gets a 421 (Misdirected Request). This stops DNS
      rebinding: a page on evil.example whose name is made to resolve to 127.0.0.1 sends
      `Host: evil.example`, which is not allowed.
    - Origin: a POST that sends one (browsers do on cross-site requests) must come from an allowed
      host over http(s); others get a 403. Clients that send no Origin (curl, scripts) pass.
    """

    def __init__(self, app: Any, allowed: Sequence[str]):
        self.app = app
        self.allowed = frozenset(_host_name(h) for h in allowed)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            host = headers.get(b"host", b"").decode("latin-1")
            if _host_name(host) not in self.allowed:
                msg = (
                    f"Host {host!r} is not one this server answers to ({', '.join(sorted(self.allowed))}); "
                    f"start it with --allow-host NAME to allow another name"
                )
                await JSONResponse(
                    {"detail": [{"loc": ["header", "host"], "msg": msg, "type": "host_not_allowed"}], "message": msg},
                    status_code=421,
                )(scope, receive, send)
                return
            origin = headers.get(b"origin")
            if origin is not None and scope.get("method") == "POST" and not self._same_site(origin.decode("latin-1")):
                msg = f"Origin {origin.decode('latin-1')!r} may not call this API: only the explorer's own page may"
                await JSONResponse(
                    {
                        "detail": [{"loc": ["header", "origin"], "msg": msg, "type": "origin_not_allowed"}],
                        "message": msg,
                    },
                    status_code=403,
                )(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _same_site(self, origin: str) -> bool:
        scheme, sep, rest = origin.partition("://")
        return bool(sep) and scheme.lower() in ("http", "https") and _host_name(rest) in self.allowed


def security_headers(response: Any) -> Any:
    """The headers every response carries: no third-party content, no sniffing, no referrer, no cache."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response
