"""One HTTP scrape of a Prometheus endpoint, bounded: a body past `max_body_bytes` is cut at its
last complete line (and said so); the caller bounds the time (`asyncio.timeout`).

The text format is asked for first (`Accept`), since prometheus_client parses it in half the time
of OpenMetrics (see `exposition`); a target that answers OpenMetrics anyway is parsed as such.
Credentials: a bearer token file (read at every scrape, so a rotated token is picked up) or basic
auth; never in the URL (`settings.url_problem`), so a target's URL can name it in logs and labels.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent import __version__
from agent.metricsources.settings import PrometheusScrapeSettings

if TYPE_CHECKING:
    import aiohttp

ACCEPT = "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"
READ_CHUNK = 1 << 16


class ScrapeError(Exception):
    """A scrape that gave no usable body: refused, HTTP error status, unreadable."""


@dataclass(slots=True)
class Fetched:
    text: str
    openmetrics: bool
    nbytes: int          # bytes kept
    cut: bool            # the body was longer than max_body_bytes


class HttpScraper:
    def __init__(self, s: PrometheusScrapeSettings) -> None:
        self.s = s
        self._session: aiohttp.ClientSession | None = None
        self._password = s.password

    async def start(self) -> None:
        import aiohttp

        ctx: ssl.SSLContext | bool = False if not self.s.tls_verify else True
        if self.s.tls_ca_file and self.s.tls_verify:
            ctx = ssl.create_default_context(cafile=self.s.tls_ca_file)
        if self.s.password_file:
            self._password = _read_secret(self.s.password_file)
        # no pool limit: each target has one scrape at a time (its own task), bounded by its timeout
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=ctx),
                                              headers={"User-Agent": f"tailship/{__version__}"})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self) -> dict[str, str]:
        h = {"Accept": ACCEPT, "X-Prometheus-Scrape-Timeout-Seconds": f"{self.s.timeout_secs:g}"}
        if self.s.bearer_token_file:
            try:
                h["Authorization"] = f"Bearer {_read_secret(self.s.bearer_token_file)}"
            except OSError as exc:
                raise ScrapeError(f"cannot read bearer_token_file {self.s.bearer_token_file}: "
                                  f"{exc.strerror or exc}") from exc
        return h

    async def fetch(self, url: str) -> Fetched:
        import aiohttp

        assert self._session is not None, "start() first"
        auth = aiohttp.BasicAuth(self.s.username, self._password) if self.s.username else None
        try:
            async with self._session.get(url, headers=self._headers(), auth=auth,
                                         allow_redirects=True) as resp:
                if resp.status != 200:
                    raise ScrapeError(f"HTTP {resp.status} {resp.reason or ''}".rstrip())
                body, cut = await self._read(resp)
                ctype = resp.headers.get("Content-Type", "")
        except aiohttp.ClientError as exc:
            raise ScrapeError(f"{type(exc).__name__}: {exc}") from exc
        openmetrics = ctype.startswith("application/openmetrics-text")
        text = body.decode("utf-8", "replace")
        if cut and openmetrics:
            text += "# EOF\n"  # the cut removed it; the parser wants it
        return Fetched(text, openmetrics, len(body), cut)

    async def _read(self, resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        """The body up to `max_body_bytes` (decompressed), cut after its last whole line."""
        limit = self.s.max_body_bytes
        buf = bytearray()
        async for chunk in resp.content.iter_chunked(READ_CHUNK):
            if len(buf) + len(chunk) > limit:
                buf += chunk[:limit - len(buf)]
                del buf[buf.rfind(b"\n") + 1:]
                return bytes(buf), True
            buf += chunk
        return bytes(buf), False


def _read_secret(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read().strip()
