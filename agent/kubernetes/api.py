"""A minimal Kubernetes API client: list and watch, nothing else, over aiohttp.

Why plain aiohttp (compared 2026-12-04):

- kubernetes_asyncio 36.1: a 3.0 MB wheel, 23 MB in 1,734 files unpacked, plus dateutil, six,
  urllib3, certifi; watches as streamed HTTP lines only; generated from the OpenAPI spec,
  releases follow Kubernetes.
- lightkube 1.0 + lightkube-models: 0.4 MB of wheels, 1.7 MB unpacked, plus an httpx stack and
  msgspec; watches as streamed HTTP lines only; essentially one maintainer.
- aiohttp, already a dependency (the metrics server, the Elasticsearch transport): nothing more
  to install; WebSocket (and streamed HTTP alike); aio-libs.

The API server serves a watch both as a streamed HTTP response and over WebSocket (one JSON watch
event per message); the test server (fabric8's mock, `scripts/services up kube-api`) speaks only
WebSocket. Watching over WebSocket with aiohttp runs the same code in tests and in clusters; the
two libraries could not watch the test server at all. The agent needs two resources, list and
watch, and a handful of fields of each object: typed models would cost more than they give.

Configuration (`ApiConfig.load`): `kubernetes.api_url`, else a kubeconfig (`kubernetes.kubeconfig`
or `--kubeconfig`: its current context's server, CA, token / token file / client certificate),
else in-cluster (`KUBERNETES_SERVICE_HOST`/`_PORT`, the service account's token and CA). The
token is read from its file again whenever the file changes (the kubelet rotates projected
tokens, hourly by default) and once more after a 401.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

from pipelines.secrets import add_secret

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class ApiError(Exception):
    """A request failed: `status` is the HTTP (or watch ERROR event) code, 0 for no answer."""

    def __init__(self, status: int, what: str) -> None:
        super().__init__(what)
        self.status = status


class Gone(ApiError):
    """410: the resourceVersion asked for is too old; the client must list again."""


class ConfigProblem(Exception):
    """The API server's address or credentials cannot be worked out; the message says which."""


class TokenFile:
    """A bearer token read from a file, again whenever the file changes (rotation) or on demand
    (`reload`, after a 401). The token never appears in messages."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    def get(self) -> str:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise ConfigProblem(f"cannot read the token file {self.path}: {exc.strerror or exc}") from None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._read(stamp)
        return self._token

    def reload(self) -> None:
        self._stamp = None

    def _read(self, stamp: tuple[int, int, int]) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                self._token = f.read().strip()
        except OSError as exc:
            raise ConfigProblem(f"cannot read the token file {self.path}: {exc.strerror or exc}") from None
        self._stamp = stamp


@dataclass
class ApiConfig:
    url: str
    token: str = ""                      # a fixed token (kubeconfig `token`)
    token_file: TokenFile | None = None  # or one read from a file (in-cluster, `tokenFile`)
    ca_file: str = ""
    ca_data: bytes = b""
    client_cert: tuple[bytes, bytes] | None = None   # PEM certificate, PEM key
    insecure: bool = False
    source: str = "api_url"              # where it came from, for messages
    extra_headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, api_url: str = "", kubeconfig: str = "", env: Mapping[str, str] | None = None) -> ApiConfig:
        """api_url, else the kubeconfig, else in-cluster (see the module docstring)."""
        env = os.environ if env is None else env
        if api_url:
            return cls(url=api_url.rstrip("/"))
        if kubeconfig:
            return from_kubeconfig(kubeconfig)
        host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ConfigProblem("no API server: set kubernetes.api_url or kubernetes.kubeconfig "
                                "(--kubeconfig), or run in a pod (KUBERNETES_SERVICE_HOST is not set)")
        if ":" in host:
            host = f"[{host}]"
        sa = env.get("TAILSHIP_SERVICEACCOUNT_DIR", SA_DIR)
        return cls(url=f"https://{host}:{port}", token_file=TokenFile(os.path.join(sa, "token")),
                   ca_file=os.path.join(sa, "ca.crt"), source="in-cluster service account")

    def bearer(self) -> str:
        if self.token_file is not None:
            return self.token_file.get()
        return self.token

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.url.startswith("https:"):
            return True
        if self.insecure:
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file or None,
                                         cadata=self.ca_data.decode() if self.ca_data else None)
        if self.client_cert is not None:
            # ssl loads a chain only from files: written briefly, readable by us alone
            with tempfile.TemporaryDirectory(prefix="tailship-kube-") as d:
                cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
                for path, data in ((cert, self.client_cert[0]), (key, self.client_cert[1])):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                ctx.load_cert_chain(cert, key)
        return ctx


def from_kubeconfig(path: str) -> ApiConfig:
    """The current context of a kubeconfig file (exec and auth-provider plugins are not
    supported: a token, a token file or a client certificate is)."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - a dependency
        raise ConfigProblem("reading a kubeconfig needs PyYAML") from None
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigProblem(f"cannot read kubeconfig {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigProblem(f"kubeconfig {path} is not valid YAML: {exc}") from None
    base = os.path.dirname(os.path.abspath(os.path.expanduser(path)))

    def named(kind: str, name: str) -> dict[str, Any]:
        for item in (doc or {}).get(kind + "s") or []:
            if isinstance(item, dict) and item.get("name") == name:
                return item.get(kind) or {}
        raise ConfigProblem(f"kubeconfig {path}: no {kind} named {name!r}")

    current = (doc or {}).get("current-context")
    if not current:
        raise ConfigProblem(f"kubeconfig {path}: no current-context")
    ctx = named("context", current)
    cluster, user = named("cluster", ctx.get("cluster", "")), named("user", ctx.get("user", ""))
    server = cluster.get("server")
    if not server:
        raise ConfigProblem(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} has no server")

    def rel(p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(base, p)

    def data_or_file(data_key: str, file_key: str, where: dict[str, Any]) -> bytes:
        if where.get(data_key):
            return base64.b64decode(where[data_key])
        if where.get(file_key):
            with open(rel(where[file_key]), "rb") as f:
                return f.read()
        return b""

    if "exec" in user or "auth-provider" in user:
        raise ConfigProblem(f"kubeconfig {path}: user {ctx.get('user')!r} authenticates through an "
                            "exec or auth-provider plugin, which tailship does not run; use a token, "
                            "a tokenFile or a client certificate")
    try:
        cert = data_or_file("client-certificate-data", "client-certificate", user)
        key = data_or_file("client-key-data", "client-key", user)
        ca = data_or_file("certificate-authority-data", "certificate-authority", cluster)
    except OSError as exc:
        raise ConfigProblem(f"kubeconfig {path}: {exc.filename}: {exc.strerror or exc}") from None
    if user.get("token"):
        add_secret(str(user["token"]))   # never in a log line (a rotating token file is never logged)
    return ApiConfig(url=server.rstrip("/"), token=user.get("token", ""),
                     token_file=TokenFile(rel(user["tokenFile"])) if user.get("tokenFile") else None,
                     ca_data=ca, client_cert=(cert, key) if cert and key else None,
                     insecure=bool(cluster.get("insecure-skip-tls-verify")),
                     source=f"kubeconfig {path} (context {current})")


class ApiClient:
    """List and watch over one aiohttp session. Each call counts as one request (`requests`,
    by verb), for the tests and the metrics."""

    def __init__(self, config: ApiConfig, timeout_secs: float = 30.0) -> None:
        self.config = config
        self.timeout_secs = timeout_secs
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = True
        self.requests: dict[str, int] = {"list": 0, "watch": 0}

    async def __aenter__(self) -> ApiClient:
        self._ssl = self.config.ssl_context()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout_secs,
                                          sock_connect=self.timeout_secs))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self) -> dict[str, str]:
        h = {"Accept": "application/json", **self.config.extra_headers}
        token = self.config.bearer()
        if token:
            h["Authorization"] = f"Bearer {token}"
        return h

    def _url(self, path: str, params: Mapping[str, str]) -> str:
        return f"{self.config.url}{path}" + (f"?{urlencode(params)}" if params else "")

    def _unauthorized(self) -> bool:
        """After a 401: whether a token file was re-read (worth one more try)."""
        if self.config.token_file is None:
            return False
        self.config.token_file.reload()
        return True

    async def list(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        """GET `path` (a collection), following `continue` pages; the merged list."""
        assert self._session is not None
        items: list[Any] = []
        query = dict(params)
        while True:
            body = await self._get(path, query)
            items.extend(body.get("items") or [])
            cont = (body.get("metadata") or {}).get("continue")
            if not cont:
                body["items"] = items
                return body
            query["continue"] = cont

    async def _get(self, path: str, query: Mapping[str, str]) -> dict[str, Any]:
        assert self._session is not None
        for attempt in (0, 1):
            self.requests["list"] += 1
            try:
                async with self._session.get(self._url(path, query), headers=self._headers(),
                                             ssl=self._ssl,
                                             timeout=aiohttp.ClientTimeout(total=self.timeout_secs)) as r:
                    raw = await r.read()
                    if r.status == 401 and attempt == 0 and self._unauthorized():
                        continue
                    if r.status != 200:
                        raise status_error(r.status, raw, f"GET {path}")
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise ApiError(0, f"GET {path}: {type(exc).__name__}: {exc}") from None
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ApiError(200, f"GET {path}: the answer is not JSON ({exc})") from None
            if not isinstance(body, dict):
                raise ApiError(200, f"GET {path}: the answer is not a JSON object")
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    async def watch(self, path: str, params: Mapping[str, str],
                    on_open: Callable[[], None] = lambda: None) -> AsyncIterator[dict[str, Any]]:
        """Watch events ({"type", "object"}) of `path` over WebSocket until the server closes
        the stream (a watch's timeoutSeconds); an ERROR event is raised (410: `Gone`).
        `on_open` is called once the server accepted the watch."""
        assert self._session is not None
        url = self._url(path, {**params, "watch": "true"})
        ws = None
        for attempt in (0, 1):
            self.requests["watch"] += 1
            try:
                ws = await self._session.ws_connect(url, headers=self._headers(), ssl=self._ssl,
                                                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                                                    autoping=True, max_msg_size=64 << 20)
                break
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 401 and attempt == 0 and self._unauthorized():
                    continue
                raise status_error(exc.status, exc.message.encode(), f"watch {path}") from None
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise ApiError(0, f"watch {path}: {type(exc).__name__}: {exc}") from None
        assert ws is not None
        on_open()
        try:
            async for msg in ws:
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    if msg.type == aiohttp.WSMsgType.ERROR:
                        raise ApiError(0, f"watch {path}: {ws.exception()}")
                    break
                event = decode_event(msg.data, path)
                if event is not None:
                    yield event
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5.0)


def decode_event(data: str | bytes, path: str) -> dict[str, Any] | None:
    """One watch message; an ERROR event raised as its status; None for what is not an event."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ApiError(200, f"watch {path}: an event is not JSON ({exc})") from None
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        return None
    if event.get("type") == "ERROR":
        obj = event["object"]
        code = int(obj.get("code") or 500)
        raise status_error(code, orjson.dumps(obj), f"watch {path}")
    return event


def status_error(status: int, raw: bytes, what: str) -> ApiError:
    """An error from an answer's status and its Status body (message, reason)."""
    detail = ""
    with contextlib.suppress(Exception):
        body = orjson.loads(raw)
        if isinstance(body, dict):
            detail = str(body.get("message") or body.get("reason") or "")
    if not detail:
        detail = raw[:200].decode("utf-8", "replace").strip()
    msg = f"{what}: HTTP {status}" + (f": {detail}" if detail else "")
    return Gone(status, msg) if status == 410 else ApiError(status, msg)
