"""Who may talk to the viewer: an access token in the URL path, same-origin websockets only.

The token lives in the URL *path* (``http://host:port/TOKEN/``) rather than the query, because
viser's page derives its websocket address from the page address minus the query: with the
token in the path, the browser's websocket handshake carries it too, with no cookie needed.
A page on another site cannot learn the token, and its websocket is refused by Origin anyway.
"""
from __future__ import annotations

import dataclasses
import hmac
import http
import ipaddress
import logging
import secrets
import threading
from dataclasses import dataclass

from ingest.errors import OdinError

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
# Largest websocket message a client may send: upload parts are 512 KiB, camera messages tiny.
MAX_CLIENT_MESSAGE_BYTES = 2 * 1024 * 1024

_SERVE_PATCH_LOCK = threading.Lock()


def is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token: bool) -> str | None:
    """One line for a server reachable from other machines; refuses an open one."""
    if is_loopback(host):
        return None
    if not token:
        raise OdinError(f"--no-token is only allowed on a loopback --host (got {host!r}): anyone on the network "
                        "could drive the viewer")
    return (f"warning: --host {host} makes the viewer reachable from other machines; anyone with the printed "
            "URL (it holds the access token) can use it")


def _host_name(host_header: str) -> str:
    """'[::1]:8080' -> '::1', 'localhost:8080' -> 'localhost'."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


@dataclass
class AccessGuard:
    """Checks every HTTP and websocket request before viser sees it.

    ``token`` None means no token (loopback only): then the Host header must name this machine,
    so that a DNS-rebinding page (evil.example resolving to 127.0.0.1) is still refused."""

    token: str | None
    refused: int = 0

    @classmethod
    def create(cls, use_token: bool = True) -> "AccessGuard":
        return cls(secrets.token_urlsafe(18) if use_token else None)

    def url_path(self) -> str:
        return f"/{self.token}/" if self.token else "/"

    def check(self, path: str, headers) -> tuple[str | None, str]:
        """(problem or None, the path viser should see)."""
        path, sep, query = path.partition("?")
        segments = [s for s in path.split("/") if s]
        host = headers.get("Host", "")
        origins = headers.get_all("Origin")
        if len(origins) > 1:
            return "more than one Origin header", path
        if origins and origins[0].lower() not in (f"http://{host}".lower(), f"https://{host}".lower()):
            return f"websocket/page from another origin ({origins[0]!r})", path
        if self.token is None:
            if not is_loopback(_host_name(host)):
                return f"Host {host!r} is not this machine", path
            return None, path + sep + query
        if not segments or not hmac.compare_digest(segments[0].encode(), self.token.encode()):
            return "missing or wrong access token (open the URL printed by `odin view`)", path
        return None, "/" + "/".join(segments[1:]) + sep + query

    def wrap(self, inner):
        """A websockets ``process_request`` that checks, then hands the token-less path to viser's."""

        def process_request(connection, request):
            problem, viser_path = self.check(request.path, request.headers)
            if problem is not None:
                self.refused += 1
                log.warning("viewer refused a request: %s", problem)
                return connection.respond(http.HTTPStatus.FORBIDDEN, f"Forbidden: {problem}\n")
            if inner is None:
                return None
            return inner(connection, dataclasses.replace(request, path=viser_path))

        return process_request


def _quiet(handler):
    """viser's connection handler re-raises whatever a client's message did to the decoder
    (after cleaning up); websockets would log that as a server traceback. One line instead."""

    async def handle(connection):
        try:
            await handler(connection)
        except Exception as e:  # the client is gone either way; the server and other tabs carry on
            log.warning("viewer dropped a client after a bad message: %s: %s", type(e).__name__, str(e)[:200])

    return handle


def start_guarded_viser(host: str, port: int, guard: AccessGuard):
    """A ``viser.ViserServer`` whose websocket server runs ``guard`` on every handshake.

    viser 1.x builds its ``websockets.serve(...)`` call inside a private thread with no hook, so
    ``serve`` is swapped for the few milliseconds the server takes to bind (under a lock; no other
    code in this process starts websocket servers). If a viser upgrade stops calling it, the
    server is stopped and refused rather than run unguarded."""
    import viser
    import websockets.asyncio.server as ws_server

    original = ws_server.serve
    calls = []

    def guarded_serve(handler, *args, **kwargs):
        kwargs["process_request"] = guard.wrap(kwargs.get("process_request"))
        kwargs["max_size"] = MAX_CLIENT_MESSAGE_BYTES
        calls.append(1)
        return original(_quiet(handler), *args, **kwargs)

    with _SERVE_PATCH_LOCK:
        ws_server.serve = guarded_serve
        try:
            server = viser.ViserServer(host=host, port=port, verbose=False)
        finally:
            ws_server.serve = original
    if not calls:
        server.stop()
        raise RuntimeError("this viser version starts its websocket server in a way the viewer cannot guard")
    return server
