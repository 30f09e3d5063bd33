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
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import uvicorn
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

import rc_mcp
from testbed.lab import DevServer, listening_socket

CALLBACK = rc_mcp.FIXED_CLIENT_REDIRECT_URIS[0]


class ThreadedServer:
    """An ASGI app under uvicorn in a daemon thread, on `sock` (default: a free loopback port).
    The constructor returns once uvicorn is accepting connections."""

    def __init__(self, app: Any, sock: socket.socket | None = None, **options: Any) -> None:
        sock = sock if sock is not None else listening_socket()
        self.port = sock.getsockname()[1]
        options.setdefault("log_level", "warning")
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server in the thread did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class RunningServer(ThreadedServer):
    """rc_mcp's ASGI app under uvicorn in a thread, on a real loopback port.

    `configure` gets the loaded Config and returns the one to serve (e.g. `dataclasses.replace` of
    a timeout below what the environment variables allow, so a test does not wait for it)."""

    def __init__(
        self, env: dict[str, str], port: int = 0, configure: Callable[[rc_mcp.Config], rc_mcp.Config] | None = None
    ):
        sock = listening_socket(port)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.config = rc_mcp.load_config({**env, "SERVER_URL": self.url})
        if configure is not None:
            self.config = configure(self.config)
        self.app = rc_mcp.create_app(self.config)
        super().__init__(self.app, sock, lifespan="on")


@contextlib.contextmanager
def running(
    env: dict[str, str], port: int = 0, configure: Callable[[rc_mcp.Config], rc_mcp.Config] | None = None
) -> Iterator[RunningServer]:
    server = RunningServer(env, port, configure)
    try:
        yield server
    finally:
        server.stop()


def ssh_env(dev: DevServer, token_store: Path, secret: str, **extra: str) -> dict[str, str]:
    """rc_mcp's environment for the lab's dev server (SSH mode, host key pinned); empty values dropped."""
    env = {
        "MCP_SECRET": secret,
        "SSH_HOST": dev.host,
        "SSH_PORT": str(dev.port),
        "SSH_USER": dev.user,
        "SSH_PRIVATE_KEY": str(dev.keys["ed25519"]),
        "SSH_KNOWN_HOSTS": str(dev.known_hosts),
        "PROJECTS_BASE_DIR": str(dev.projects),
        "TOKEN_STORE_PATH": str(token_store),
        **extra,
    }
    return {k: v for k, v in env.items() if v}


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
        metadata = OAuthClientMetadata(
            redirect_uris=[CALLBACK], token_endpoint_auth_method=method, client_name="Claude"
        )
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


@contextlib.asynccontextmanager
async def serve_and_connect(
    env: dict[str, str],
    claude: ClaudeAi,
    port: int = 0,
    configure: Callable[[rc_mcp.Config], rc_mcp.Config] | None = None,
) -> AsyncIterator[tuple[Client, RunningServer]]:
    """rc_mcp running with `env`, and an MCP client connected to it through `claude`'s OAuth flow."""
    with running(env, port, configure) as server:
        async with connect(server.url, claude) as client:
            yield client, server


async def call(client: Client, tool: str, /, **arguments: Any) -> dict[str, Any]:
    """A tool call that must succeed: its structured result."""
    result = await client.call_tool(tool, arguments)
    if result.is_error or result.structured_content is None:
        raise AssertionError(f"{tool} failed: {result.content}")
    return result.structured_content


async def call_error(client: Client, tool: str, /, **arguments: Any) -> str:
    """A tool call that must fail: the text of its error."""
    result = await client.call_tool(tool, arguments)
    if not result.is_error:
        raise AssertionError(f"{tool} succeeded: {result.structured_content}")
    return " ".join(getattr(block, "text", "") for block in result.content)
