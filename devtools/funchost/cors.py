"""CORS as Core Tools does it (preflights, and the headers of actual answers), and where the
allowed origins come from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from devtools.funchost.messages import HostResponse
from devtools.funchost.settings import LocalSettings

# The origins `make run` and `make demo` allow when nothing else is configured: the dev servers
# of the usual frontend tool chains (3000: Next.js, Create React App; 5173: Vite), by name and
# by address. Local only: the deployed app allows no origin unless CORS_ALLOWED_ORIGINS says so.
LOCAL_CORS_ORIGINS = ("http://localhost:3000", "http://localhost:5173", "http://127.0.0.1:3000",
                      "http://127.0.0.1:5173")


@dataclass(frozen=True)
class CorsPolicy:
    """Core Tools' CORS: listed origins (or ``*``), any method and header, optional credentials.

    ``expose_headers`` go in Access-Control-Expose-Headers of the answers the host completes (its
    own errors, and an app's answers that carry no CORS headers of their own).
    """

    origins: frozenset[str] = frozenset()
    any_origin: bool = False
    credentials: bool = False
    max_age: int = 86400
    expose_headers: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str | None, *, credentials: bool = False,
              expose_headers: Sequence[str] = ()) -> CorsPolicy | None:
        """``"http://a, http://b"`` or ``"*"``; None (no CORS at all) for an empty spec or ``none``."""
        items = [item.strip().rstrip("/").lower() for item in (spec or "").split(",") if item.strip()]
        if not items or items == ["none"]:
            return None
        return cls(frozenset(i for i in items if i != "*"), "*" in items, credentials,
                   expose_headers=tuple(expose_headers))

    @property
    def wildcard(self) -> bool:
        """``*`` is sent as such (the same answer for every origin) unless credentials are on."""
        return self.any_origin and not self.credentials

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin.rstrip("/").lower() in self.origins

    def _origin_headers(self, origin: str) -> list[tuple[str, str]]:
        if self.wildcard:
            return [("Access-Control-Allow-Origin", "*")]
        # Browsers refuse "*" with credentials, so echo the origin (and say responses vary by it).
        headers = [("Access-Control-Allow-Origin", origin)]
        if self.credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers

    def preflight(self, origin: str, method: str, request_headers: str | None) -> HostResponse:
        """Answer an OPTIONS preflight; like ASP.NET Core, a disallowed origin gets no CORS headers.

        The answer echoes the origin, method and headers asked for, so it varies by all three.
        """
        headers: list[tuple[str, str]] = [
            ("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")]
        if self.allows(origin):
            headers += self._origin_headers(origin)
            headers.append(("Access-Control-Allow-Methods", method.upper()))
            if request_headers:
                headers.append(("Access-Control-Allow-Headers", request_headers))
            headers.append(("Access-Control-Max-Age", str(self.max_age)))
        return HostResponse(204, tuple(headers))

    def apply(self, response: HostResponse, origin: str | None) -> HostResponse:
        """Add CORS headers to an actual response; the app's own Access-Control-Allow-Origin wins.

        Unless the policy is a plain ``*`` (sent to everyone), what the answer says depends on the
        Origin, so it says ``Vary: Origin`` even to a request without one: a shared cache could
        otherwise hand that copy to a browser.
        """
        if response.header("Access-Control-Allow-Origin") is not None:
            return response
        allowed = self.wildcard or (origin is not None and self.allows(origin))
        headers = [(k, v) for k, v in response.headers if k.lower() != "vary"]
        vary = [v.strip() for v in (response.header("Vary") or "").split(",") if v.strip()]
        if "origin" not in (v.lower() for v in vary) and not self.wildcard:
            vary.append("Origin")
        if vary:
            headers.append(("Vary", ", ".join(vary)))
        if allowed:
            headers += self._origin_headers(origin or "*")
            if self.expose_headers and response.header("Access-Control-Expose-Headers") is None:
                headers.append(("Access-Control-Expose-Headers", ", ".join(self.expose_headers)))
        return replace(response, headers=tuple(headers))


def resolve_cors(cli: str | None, environ: Mapping[str, str], settings: LocalSettings) -> tuple[str, str]:
    """The origins the local host allows, and where they came from: ``--cors``, else
    ``CORS_ALLOWED_ORIGINS`` (process environment or local.settings.json ``Values``), else
    ``Host.CORS``, else ``LOCAL_CORS_ORIGINS``. ``none`` turns CORS off."""
    if cli is not None and cli.strip():
        return cli.strip(), "--cors"
    configured = (environ.get("CORS_ALLOWED_ORIGINS") or "").strip()
    if configured:
        return configured, "CORS_ALLOWED_ORIGINS"
    if settings.cors:
        return settings.cors, f"Host.CORS in {settings.path}"
    return ",".join(LOCAL_CORS_ORIGINS), "the local defaults"
