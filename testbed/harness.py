"""rc_mcp under test: its ASGI app served by uvicorn in a thread, and a Claude.ai-shaped client.

Shared by the test suite and the benchmarks. `ClaudeAi` is Claude.ai's side of a connector added
with its own client id and secret: the fixed client, `client_secret_post`, Claude's real callback
URL, and a "browser" that follows /authorize and reads the code from the 302 — driven by the
official MCP SDK's `OAuthClientProvider`, so the whole OAuth flow runs for real.
"""

from __future__ import annotations

import contextlib
import html
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx2
import uvicorn
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

import rc_mcp

CALLBACK = rc_mcp.FIXED_CLIENT_REDIRECT_URIS[0]


def listening_socket(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class RunningServer:
    """rc_mcp's ASGI app under uvicorn in a thread, on a real loopback port."""

    def __init__(self, env: dict[str, str], port: int = 0):
        sock = listening_socket(port)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = rc_mcp.load_config({**env, "SERVER_URL": self.url})
        self.app = rc_mcp.create_app(self.config)
        self.server = uvicorn.Server(uvicorn.Config(self.app, lifespan="on", log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("rc_mcp did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextlib.contextmanager
def running(env: dict[str, str], port: int = 0) -> Iterator[RunningServer]:
    server = RunningServer(env, port)
    try:
        yield server
    finally:
        server.stop()


class MemoryTokenStorage:
    def __init__(self, client_info: OAuthClientInformationFull | None) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info = client_info

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


CLAUDE_METADATA_URL = "https://claude.ai/oauth/mcp-oauth-client-metadata"


class ClaudeAi:
    """Claude.ai's side of a connector, in each of its three registration modes:

    - "credentials": the connector's own client id and secret (the fixed client, `client_secret_post`);
    - "dcr": Dynamic Client Registration (asks for `client_secret_post`, gets a public client);
    - "cimd": Claude's Client ID Metadata Document URL as the client id.

    Always Claude's real callback URL and `resource`. The "browser" follows /authorize; when the
    owner's consent page comes back it fills in `owner_password` and submits the form.
    """

    def __init__(self, mcp_secret: str, mode: str = "credentials", owner_password: str | None = None) -> None:
        self.mode = mode
        self.owner_password = owner_password
        client_info = None
        if mode == "credentials":
            client_id, client_secret = rc_mcp.derive_client_credentials(mcp_secret)
            client_info = OAuthClientInformationFull(
                client_id=client_id,
                client_secret=client_secret,
                redirect_uris=[CALLBACK],
                token_endpoint_auth_method="client_secret_post",
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
            )
        self.storage = MemoryTokenStorage(client_info)
        self.authorizations = 0
        self.consent_pages = 0
        self._result: AuthorizationCodeResult | None = None

    async def _open_browser(self, url: str) -> None:
        self.authorizations += 1
        query = parse_qs(urlsplit(url).query)
        if query.get("code_challenge_method") != ["S256"] or not query.get("resource", [""])[0].endswith("/mcp"):
            raise AssertionError(f"not an authorization request Claude.ai would make: {url}")
        async with httpx2.AsyncClient() as browser:
            response = await browser.get(url, follow_redirects=False)
            if response.status_code == 200 and response.headers.get("content-type", "").startswith("text/html"):
                self.consent_pages += 1
                if self.owner_password is None:
                    raise AssertionError("the consent page asked for the owner's password")
                form = {html.unescape(k): html.unescape(v) for k, v in HIDDEN_INPUT.findall(response.text)}
                form.update(action="approve", password=self.owner_password)
                target = urlsplit(url)._replace(query="").geturl()
                response = await browser.post(target, data=form, follow_redirects=False)
        location = response.headers.get("location", "")
        if response.status_code != 302 or not location.startswith(CALLBACK + "?"):
            raise AssertionError(f"/authorize answered {response.status_code} {location or response.text[:300]}")
        back = parse_qs(urlsplit(location).query)
        if "error" in back:
            raise AssertionError(f"/authorize refused: {back}")
        self._result = AuthorizationCodeResult(code=back["code"][0], state=back["state"][0], iss=back["iss"][0])

    async def _callback(self) -> AuthorizationCodeResult:
        if self._result is None:
            raise AssertionError("no authorization code was received")
        return self._result

    def provider(self, server_url: str) -> OAuthClientProvider:
        method = "none" if self.mode == "cimd" else "client_secret_post"
        metadata = OAuthClientMetadata(redirect_uris=[CALLBACK], token_endpoint_auth_method=method, client_name="Claude")
        self.last_provider = OAuthClientProvider(
            server_url=server_url + "/mcp",
            client_metadata=metadata,
            storage=self.storage,
            redirect_handler=self._open_browser,
            callback_handler=self._callback,
            client_metadata_url=CLAUDE_METADATA_URL if self.mode == "cimd" else None,
        )
        return self.last_provider


HIDDEN_INPUT = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')


@contextlib.asynccontextmanager
async def connect(server_url: str, claude: ClaudeAi) -> AsyncIterator[Client]:
    """An MCP SDK client session (Claude.ai-era handshake) authorized through `claude`."""
    http = httpx2.AsyncClient(auth=claude.provider(server_url), timeout=httpx2.Timeout(30, read=300))
    async with http:
        async with Client(streamable_http_client(server_url + "/mcp", http_client=http), mode="legacy") as client:
            yield client
