"""Tests for rc_mcp, in the module's section order (Settings … main); in each section the pure rules
come first, then their end-to-end tests.

Pure helpers are tested from tables. Everything with I/O is tested for real: OAuth endpoints
in-process over ASGI, and end to end against a real sshd on 127.0.0.1, real tmux, and the
official MCP SDK client running the whole OAuth flow as Claude.ai does. Only the `claude` CLI is
a test double (testbed/fake_claude.py).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import httpx2
import paramiko
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from mcp.client import Client

import rc_mcp
from testbed import fake_claude, harness
from testbed.harness import ClaudeAi, RunningServer, ThreadedServer, call, call_error, connect, running
from testbed.lab import (
    PASSPHRASE,
    DevServer,
    LocalDevHome,
    listening_socket,
    make_keys,
    make_local_devhome,
    wait_pids_gone,
)

ROOT = Path(__file__).resolve().parent
# Hypothesis keeps caches (not examples: the property tests use no database) outside the checkout.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "rc-mcp-hypothesis"))

SECRET = "test-secret-0123456789"  # weak on purpose (what check and the start-up warning call out)
STRONG_SECRET = "9c2f4e1ab8d7035f6e2c9a41b7d8e05f3a6c2e9d1b4f7a08c5e3d2b1a9f6e4c7"  # openssl rand -hex 32
CLIENT_ID = "9f7bd22e3e82dc889c30a316fe17dee118b4"
CLIENT_SECRET = "d0b7eb40dfe5bafc26f0132ed035cd1c660906cb16980156235dc61bf2d9eb69"
CALLBACK = "https://claude.ai/api/mcp/auth_callback"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 appendix B
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
ENV_URL = re.compile(r"^https://claude\.ai/code\?environment=env_[A-Za-z0-9_-]+$")
ESC = "\x1b"
BEL = "\x07"

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# The log audit: every log record of the whole run, at DEBUG, formatted as a handler would write it,
# must be free of secrets. Checked once, when the session ends (a failure shows as an error at the
# teardown of the last test).
OTHER_SECRETS = ("a-brand-new-secret-0123456789", "from-dotenv-file-1234")  # MCP_SECRETs of single tests
TOKEN_RE = re.compile(r"rc(?:at|rt|ac|sc)_[A-Za-z0-9_.-]{8,}")
# Left out: HTTP clients' own DEBUG lines, which print raw headers (the tests' clients receive codes
# in Location and send tokens by design; rc_mcp's metadata fetcher receives public documents).
CLIENT_LOGGERS = ("httpcore", "httpx", "mcp.client")


def leaked_secrets(lines: Iterable[str]) -> list[str]:
    """Each line holding a secret, with what it holds: an MCP_SECRET, the fixed client's secret, a
    token or code, the consent TOTP key, the SSH passphrase, a private key."""
    mcp_secrets = (SECRET, STRONG_SECRET, *OTHER_SECRETS)
    words = {secret: "an MCP_SECRET" for secret in mcp_secrets}
    words |= {rc_mcp.derive_client_credentials(secret)[1]: "a client secret" for secret in mcp_secrets}
    words |= {
        base64.b32encode(rc_mcp.consent_totp_key(secret)).decode().rstrip("="): "a TOTP key" for secret in mcp_secrets
    }
    words |= {PASSPHRASE: "the SSH passphrase", "PRIVATE KEY": "a private key"}
    found = []
    for line in lines:
        what = [name for word, name in words.items() if word in line]
        what += ["a token or code"] if TOKEN_RE.search(line) else []
        if what:
            found.append(f"{', '.join(sorted(set(what)))}: {line[:300]}")
    return found


class LogAudit(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(CLIENT_LOGGERS):
            return
        with contextlib.suppress(Exception):
            self.lines.append(self.format(record))


def attach_log_audit(audit: LogAudit) -> None:
    """(Again:) `configure_logging`, run by tests of main(), replaces the root logger's handlers."""
    root = logging.getLogger()
    if audit not in root.handlers:
        root.addHandler(audit)
    if root.level != logging.DEBUG and root.level != logging.NOTSET:
        root.setLevel(logging.DEBUG)


@pytest.fixture(scope="session", autouse=True)
def log_audit() -> Iterator[LogAudit]:
    audit = LogAudit()
    root = logging.getLogger()
    level = root.level
    attach_log_audit(audit)
    root.setLevel(logging.DEBUG)
    try:
        yield audit
    finally:
        root.removeHandler(audit)
        root.setLevel(level)
    leaks = leaked_secrets(audit.lines)
    assert not leaks, f"{len(leaks)} of {len(audit.lines)} log lines hold secrets:\n" + "\n".join(leaks[:20])


@pytest.fixture(autouse=True)
def log_audit_attached(log_audit: LogAudit) -> Iterator[None]:
    attach_log_audit(log_audit)
    yield
    attach_log_audit(log_audit)


# Fixtures and helpers shared by several sections: the configuration, the OAuth endpoints
# in-process, the SSH dev server (testbed/lab.py) and rc_mcp serving it (testbed/harness.py).


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "MCP_SECRET": SECRET,
        "PROJECTS_BASE_DIR": "/srv/projects",
        "TOKEN_STORE_PATH": str(tmp_path / "store" / "tokens.json"),
        **extra,
    }


def _basic(value: str) -> str:
    return "Basic " + base64.b64encode(value.encode()).decode()


TEST_URL = "https://rc.example.com"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_app(tmp_path: Path, clock: Clock, **env: str) -> rc_mcp.App:
    config = rc_mcp.load_config(base_env(tmp_path, SERVER_URL=TEST_URL, **env))
    return rc_mcp.App(config, store=rc_mcp.TokenStore(config.token_store_path, clock=clock))


@pytest.fixture
def app(tmp_path: Path, clock: Clock) -> rc_mcp.App:
    return make_app(tmp_path, clock)


@contextlib.asynccontextmanager
async def asgi_client(app: rc_mcp.App) -> AsyncIterator[httpx2.AsyncClient]:
    """An HTTP client talking to `app` in-process, with the MCP session manager running."""
    async with app.session_manager.run():  # ASGITransport sends no lifespan events
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url=TEST_URL) as client:
            yield client


@pytest.fixture
async def http(app: rc_mcp.App) -> AsyncIterator[httpx2.AsyncClient]:
    async with asgi_client(app) as client:
        yield client


AUTHORIZE = {
    "response_type": "code",
    "client_id": CLIENT_ID,
    "redirect_uri": CALLBACK,
    "code_challenge": CHALLENGE,
    "code_challenge_method": "S256",
    "state": "opaque-state",
    "scope": "mcp:tools",
    "resource": f"{TEST_URL}/mcp",
}


async def get_code(http: httpx2.AsyncClient, **overrides: str) -> str:
    response = await http.get("/authorize", params={**AUTHORIZE, **overrides})
    assert response.status_code == 302, response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["state"] == ["opaque-state"] and query["iss"] == [TEST_URL]
    return query["code"][0]


def token_form(the_code: str, **overrides: str | None) -> dict[str, str]:
    form: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": the_code,
        "redirect_uri": CALLBACK,
        "code_verifier": VERIFIER,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "resource": f"{TEST_URL}/mcp",
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


async def get_tokens(http: httpx2.AsyncClient) -> dict[str, Any]:
    response = await http.post("/token", data=token_form(await get_code(http)))
    assert response.status_code == 200, response.text
    return response.json()


def refresh_form(refresh_token: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        **extra,
    }


async def mcp_status(http: httpx2.AsyncClient, token: str | None, **kwargs: Any) -> httpx2.Response:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    return await http.post(kwargs.pop("path", "/mcp"), json=body, headers=headers, **kwargs)


INSPECTOR_CALLBACK = "http://localhost:6274/oauth/callback"


async def register(
    http: httpx2.AsyncClient, redirect_uri: str = INSPECTOR_CALLBACK, name: str = "MCP Inspector"
) -> str:
    response = await http.post(
        "/register",
        json={"redirect_uris": [redirect_uri], "client_name": name, "token_endpoint_auth_method": "client_secret_post"},
    )
    assert response.status_code == 201, response.text
    return response.json()["client_id"]


def public_authorize(client_id: str, redirect_uri: str) -> dict[str, str]:
    return {**AUTHORIZE, "client_id": client_id, "redirect_uri": redirect_uri}


async def consent(http: httpx2.AsyncClient, params: dict[str, str], **form: str) -> httpx2.Response:
    return await http.post("/authorize", data={**params, **form})


# As root the lab creates this user, and deletes it afterwards; a run that finds it left over by a
# crashed run of the same checkout cleans up after that one. Named after the checkout, so that
# suites run from two checkouts at once (or the benchmark, user rcbench) never share a user.
LAB_USER = "rct" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:6]

# In CI the end-to-end tests must run: a missing sshd is a failure there, not a skip.
REQUIRE_E2E = os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("RC_MCP_REQUIRE_E2E") == "1"


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    ok, reason = DevServer.available()
    if not ok:
        if REQUIRE_E2E:
            pytest.fail(f"the SSH dev server cannot run here: {reason}")
        pytest.skip(reason)
    server = DevServer.start(tmp_path_factory.mktemp("lab"), user=LAB_USER)
    try:
        yield server
    finally:
        server.stop()


# The fake claude's timing for these tests: Ready (and its URL) 0.05 s after it starts instead of
# the fake's default 0.3 s, so no test waits for time that proves nothing. A test that needs the
# Connecting phase to last sets its own `connect_delay` (see testbed/README.md).
FAST_CLAUDE = {"connect_delay": 0.05, "spinner_interval": 0.05}


def fake_claude_config(home: DevServer | LocalDevHome, **knobs: Any) -> None:
    """The fake claude's config.json: FAST_CLAUDE, then these knobs (e.g. names={...})."""
    home.fake_claude_config({**FAST_CLAUDE, **knobs})


@pytest.fixture
def devserver(lab: DevServer) -> Iterator[DevServer]:
    """The lab as it was started, with FAST_CLAUDE; reset after each test."""
    fake_claude_config(lab)
    try:
        yield lab
    finally:
        lab.reset()


@pytest.fixture(scope="session")
def local_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDevHome]:
    home = make_local_devhome(tmp_path_factory.mktemp("local"))
    try:
        yield home
    finally:
        home.close()


@pytest.fixture
def devhome(local_lab: LocalDevHome) -> Iterator[LocalDevHome]:
    """A local-mode dev home (the same tree as the lab's), with FAST_CLAUDE; reset after each test."""
    fake_claude_config(local_lab)
    try:
        yield local_lab
    finally:
        local_lab.reset()


def ssh_env(lab: DevServer, tmp_path: Path, **extra: str) -> dict[str, str]:
    return harness.ssh_env(lab, tmp_path / "state" / "tokens.json", SECRET, **{"START_TIMEOUT": "20", **extra})


def files_named(name: str, *roots: Path) -> list[Path]:
    """Files called `name` anywhere below `roots`: what an injected `touch name` would leave."""
    return [path for root in roots for path in root.rglob(name)]


def rc_sessions(lab: DevServer) -> set[str]:
    """The lab user's tmux sessions that rc_mcp started."""
    result = lab.run("tmux list-sessions -F '#{session_name}' 2>/dev/null || true")
    return {name for name in result.stdout.split() if name.startswith("rc-")}


async def wait_for_health(url: str, proc: Any, log: Callable[[], str], timeout: float = 30, poll: float = 0.02) -> None:
    """Until `url`/health answers 200; the process must stay alive meanwhile (`log`: its output)."""
    deadline = time.monotonic() + timeout
    async with httpx2.AsyncClient() as probe:
        while True:
            assert proc.returncode is None, log()
            assert time.monotonic() < deadline, log()
            with contextlib.suppress(httpx2.TransportError):
                if (await probe.get(f"{url}/health")).status_code == 200:
                    return
            await anyio.sleep(poll)


async def sse_messages(response: httpx2.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON-RPC messages of a streamed SSE response, as they arrive."""
    async for line in response.aiter_lines():
        if line.startswith("data:") and line[5:].strip():
            yield json.loads(line[5:])


Tools = Callable[..., contextlib.AbstractAsyncContextManager[tuple[Client, RunningServer]]]


@pytest.fixture(scope="session")
def shared_server(lab: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, ClaudeAi]]:
    """rc_mcp serving the lab with the default settings, and Claude.ai authorized once: what most
    end-to-end tests need. Nothing in it outlives a test but its token and its SSH connection."""
    with running(ssh_env(lab, tmp_path_factory.mktemp("shared"))) as server:
        # its start-up connection is made before any test counts the lab's logins
        deadline = time.monotonic() + 30
        while server.app.runner.connects == 0:
            assert time.monotonic() < deadline, "rc_mcp never connected to the lab"
            time.sleep(0.01)
        yield server, ClaudeAi(SECRET)


@pytest.fixture
def tools(devserver: DevServer, tmp_path: Path, shared_server: tuple[RunningServer, ClaudeAi]) -> Tools:
    """`async with tools(claude=None, port=0, configure=None, **env) as (client, server)`: an MCP
    client of rc_mcp serving the lab. With no arguments, the shared server and its authorized
    client; otherwise a server of the test's own (ssh_env(**env), `configure`d, on `port`) that
    `claude` (default: a new fixed-client Claude.ai) authorizes."""

    @contextlib.asynccontextmanager
    async def open_tools(
        claude: ClaudeAi | None = None, port: int = 0, configure: Any = None, **extra: str
    ) -> AsyncIterator[tuple[Client, RunningServer]]:
        if claude is None and port == 0 and configure is None and not extra:
            server, shared_claude = shared_server
            async with connect(server.url, shared_claude) as client:
                yield client, server
            return
        env = ssh_env(devserver, tmp_path, **extra)
        async with harness.serve_and_connect(env, claude or ClaudeAi(SECRET), port, configure) as (client, server):
            yield client, server

    return open_tools


@contextlib.asynccontextmanager
async def ssh_runner(lab: DevServer, tmp_path: Path, **extra: str) -> AsyncIterator[rc_mcp.SSHRunner]:
    """An SSHRunner for the lab with ssh_env(**extra), closed afterwards."""
    runner = rc_mcp.SSHRunner(rc_mcp.load_config(ssh_env(lab, tmp_path, **extra)))
    try:
        yield runner
    finally:
        await runner.close()


EXPECTED_PROJECTS = ["alpha", "beta", "org/repo", "web app", "with-claude"]
TOOL_NAMES = {
    "start_session", "list_sessions", "stop_session", "list_projects", "send_prompt", "get_reply", "interrupt_session",
    "resume_session", "answer_permission", "list_hosts",
}  # fmt: skip


# ── Settings ──────────────────────────────────────────────────────────────────────────────────


def test_config_defaults_to_local_mode(tmp_path: Path) -> None:
    config = rc_mcp.load_config(base_env(tmp_path))
    assert config.local and config.port == 3000 and config.host == "127.0.0.1"  # local mode: this machine only
    assert config.server_url == "http://localhost:3000"
    assert config.resource == "http://localhost:3000/mcp"
    assert config.claude_bin == "claude" and config.spawn_worktree is False


def test_config_reports_every_problem_at_once() -> None:
    env = {
        "PORT": "eighty",
        "SERVER_URL": "https://rc.example.com/prefix",
        "SSH_HOST": "dev.example.com",
        "SPAWN_WORKTREE": "maybe",
        "PROJECTS_BASE_DIR": "relative/dir",
        "START_TIMEOUT": "900",
    }
    with pytest.raises(rc_mcp.ConfigError) as caught:
        rc_mcp.load_config(env)
    text = str(caught.value)
    for name in (
        "MCP_SECRET",
        "PORT",
        "SERVER_URL",
        "SSH_USER",
        "SSH_PRIVATE_KEY",
        "SPAWN_WORKTREE",
        "PROJECTS_BASE_DIR",
        "START_TIMEOUT",
    ):
        assert name in text
    assert len(caught.value.problems) == 8


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ({"MCP_SECRET": "short"}, "at least 16"),
        ({"SERVER_URL": "rc.example.com"}, "SERVER_URL"),
        ({"SERVER_URL": "https://rc.example.com/?q=1"}, "SERVER_URL"),
        ({"SERVER_URL": "https://rc.example.com:99999"}, "SERVER_URL"),
        ({"PERMISSION_MODE": "yolo"}, "PERMISSION_MODE"),
        ({"SSH_HOST": "-oProxyCommand=x", "SSH_USER": "u", "SSH_PRIVATE_KEY": "/nonexistent/key"}, "SSH_HOST"),
        ({"SSH_HOST": "h", "SSH_USER": "u", "SSH_PRIVATE_KEY": "/nonexistent/key"}, "no such file"),
        (
            {
                "SSH_HOST": "h",
                "SSH_USER": "u",
                "SSH_PRIVATE_KEY": "-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n-----END OPENSSH PRIVATE KEY-----",
            },
            "SSH_PRIVATE_KEY",
        ),
        ({"CLAUDE_BIN": "claude\n--evil"}, "CLAUDE_BIN"),
        ({"PROJECTS_BASE_DIR": "/srv/\x1b[31m"}, "PROJECTS_BASE_DIR"),
    ],
)
def test_config_rejects(tmp_path: Path, extra: dict[str, str], fragment: str) -> None:
    with pytest.raises(rc_mcp.ConfigError, match=re.escape(fragment)):
        rc_mcp.load_config(base_env(tmp_path, **extra))


def test_config_strips_trailing_slash_of_server_url(tmp_path: Path) -> None:
    config = rc_mcp.load_config(base_env(tmp_path, SERVER_URL="https://rc.example.com/"))
    assert config.server_url == "https://rc.example.com"


@pytest.mark.parametrize(
    "value, result",
    [
        ("true", True),
        ("1", True),
        ("Yes", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("", False),
    ],
)
def test_parse_bool(value: str, result: bool) -> None:
    assert rc_mcp.parse_bool(value) is result


def test_read_value_or_file(tmp_path: Path) -> None:
    one_line = "-----BEGIN X-----\\nabc\\n-----END X-----"  # a key pasted into a one-line variable
    assert rc_mcp.read_value_or_file(one_line) == "-----BEGIN X-----\nabc\n-----END X-----"
    key = tmp_path / "key"
    key.write_text("KEY")
    assert rc_mcp.read_value_or_file(str(key)) == "KEY"
    with pytest.raises(FileNotFoundError):
        rc_mcp.read_value_or_file(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    "data_is_dir, data_writable, environ, expected",
    [
        (False, False, {"HOME": "/home/dev"}, "/home/dev/.local/state/rc_mcp/oauth-tokens.json"),
        (False, False, {"HOME": "/home/dev", "XDG_STATE_HOME": "/xdg"}, "/xdg/rc_mcp/oauth-tokens.json"),
        (True, False, {"HOME": "/home/dev"}, "/home/dev/.local/state/rc_mcp/oauth-tokens.json"),  # read-only /data
        (True, True, {"HOME": "/home/dev", "XDG_STATE_HOME": "/xdg"}, "/data/oauth-tokens.json"),  # the Docker volume
    ],
)
def test_default_token_store_path(
    monkeypatch: pytest.MonkeyPatch, data_is_dir: bool, data_writable: bool, environ: dict[str, str], expected: str
) -> None:
    # /data as this test says it is, whatever this machine has there
    real_is_dir, real_access = Path.is_dir, os.access
    monkeypatch.setattr(Path, "is_dir", lambda self: data_is_dir if str(self) == "/data" else real_is_dir(self))
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kw: data_writable if str(path) == "/data" else real_access(path, mode, **kw)
    )
    assert rc_mcp.default_token_store_path(environ) == Path(expected)


def test_read_environment_prefers_real_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text('MCP_SECRET=from-dotenv-file-1234\nPROJECTS_BASE_DIR="/from/dotenv"\nPORT=4000\n')
    monkeypatch.setenv("PORT", "5000")
    environ = rc_mcp.read_environment(tmp_path)
    assert environ["MCP_SECRET"] == "from-dotenv-file-1234"
    assert environ["PROJECTS_BASE_DIR"] == "/from/dotenv"
    assert environ["PORT"] == "5000"


@pytest.fixture(scope="session")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every kind of client key the lab makes (testbed.lab.KEY_SPECS), generated once, in parallel.
    `*_enc` ones are encrypted with PASSPHRASE; `rsa`/`rsa_enc` are PEM, the rest OpenSSH format."""
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.mark.parametrize("key", ["ed25519", "ed25519_enc", "rsa", "rsa_enc", "ecdsa", "ecdsa_enc", "rsa_openssh_enc"])
def test_config_loads_keys_once(tmp_path: Path, key_files: dict[str, Path], key: str) -> None:
    key_path = key_files[key]
    passphrase = PASSPHRASE if key.endswith("_enc") else ""
    for value in (str(key_path), key_path.read_text(), key_path.read_text().replace("\n", "\\n")):
        env = base_env(
            tmp_path, SSH_HOST="dev.example.com", SSH_USER="u", SSH_PRIVATE_KEY=value, SSH_PASSPHRASE=passphrase
        )
        config = rc_mcp.load_config(env)
        assert isinstance(config.ssh_key, paramiko.PKey)
        assert config.ssh_key.get_base64() == key_path.with_suffix(".pub").read_text().split()[1]


@pytest.mark.parametrize("passphrase, fragment", [("", "set SSH_PASSPHRASE"), ("wrong", "does not decrypt")])
def test_config_names_the_passphrase_problem(
    tmp_path: Path, key_files: dict[str, Path], passphrase: str, fragment: str
) -> None:
    env = base_env(
        tmp_path, SSH_HOST="h", SSH_USER="u", SSH_PRIVATE_KEY=str(key_files["ed25519_enc"]), SSH_PASSPHRASE=passphrase
    )
    with pytest.raises(rc_mcp.ConfigError, match=fragment):
        rc_mcp.load_config(env)


def test_config_requires_known_hosts_entry_for_the_host(tmp_path: Path, key_files: dict[str, Path]) -> None:
    key_path = key_files["ed25519"]
    pub = key_path.with_suffix(".pub").read_text().split()
    env = base_env(
        tmp_path,
        SSH_HOST="dev.example.com",
        SSH_PORT="2222",
        SSH_USER="u",
        SSH_PRIVATE_KEY=str(key_path),
        SSH_KNOWN_HOSTS=f"dev.example.com {pub[0]} {pub[1]}\n",
    )
    with pytest.raises(rc_mcp.ConfigError, match=re.escape("no key for [dev.example.com]:2222")):
        rc_mcp.load_config(env)
    env["SSH_KNOWN_HOSTS"] = f"[dev.example.com]:2222 {pub[0]} {pub[1]}\n"
    known_hosts = rc_mcp.load_config(env).known_hosts
    assert known_hosts is not None
    assert known_hosts.lookup("[dev.example.com]:2222")[pub[0]].get_base64() == pub[1]


def test_cli_exits_2_before_binding_with_every_problem(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MCP_SECRET", "PROJECTS_BASE_DIR")}
    env["PORT"] = "0x"
    result = subprocess.run(
        [sys.executable, str(ROOT / "rc_mcp.py")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 2
    for name in ("MCP_SECRET", "PROJECTS_BASE_DIR", "PORT"):
        assert name in result.stderr


def test_readme_configuration_table_is_the_settings_table() -> None:
    readme = (ROOT / "README.md").read_text()
    assert rc_mcp.settings_table() in readme
    section = readme[readme.index("## Configuration") : readme.index("## Security model")]
    assert re.findall(r"^\| `([A-Z_]+)` \|", section, re.M) == [s.name for s in rc_mcp.SETTINGS]


@pytest.mark.parametrize(
    "extra, problem",
    [
        ({"PORT": "70000"}, "PORT has value '70000': must be between 1 and 65535."),
        ({"PORT": "http"}, "PORT has value 'http': not a whole number."),
        ({"START_TIMEOUT": "1e9"}, "START_TIMEOUT has value '1e9': must be between 5 and 240."),
        ({"LOG_LEVEL": "CHATTY"}, "LOG_LEVEL has value 'CHATTY': use one of DEBUG, INFO, WARNING, ERROR."),
        ({"HOST": "999.1.1.1"}, "HOST has value '999.1.1.1': must be an IP address or a host name of this machine"),
        ({"SPAWN_WORKTREE": "maybe"}, "SPAWN_WORKTREE has value 'maybe': use true or false."),
        ({"PERMISSION_MODE": "yolo"}, "PERMISSION_MODE has value 'yolo': use one of acceptEdits, auto,"),
        ({"CLAUDE_BIN": "-x"}, "CLAUDE_BIN has value '-x': must be a command name or a path."),
        ({"PROJECTS_BASE_DIR": "srv"}, "PROJECTS_BASE_DIR has value 'srv': must be an absolute path"),
        ({"SERVER_URL": "ftp://x"}, "SERVER_URL has value 'ftp://x': must be the public http(s) URL of this server."),
        ({"SSH_HOST": "a b"}, "SSH_HOST has value 'a b': must be a host name or IP address (or `local`)."),
    ],
)
def test_each_setting_is_one_problem_naming_itself(tmp_path: Path, extra: dict[str, str], problem: str) -> None:
    with pytest.raises(rc_mcp.ConfigError) as caught:
        rc_mcp.load_config(base_env(tmp_path, **extra))
    assert len(caught.value.problems) == 1, caught.value.problems  # no follow-on problem (PORT → SERVER_URL)
    assert caught.value.problems[0].startswith(problem)


@pytest.mark.parametrize(
    "extra, leaked",
    [
        ({"MCP_SECRET": "short-secret"}, "short-secret"),
        ({"SSH_HOST": "h", "SSH_USER": "u", "SSH_PRIVATE_KEY": "not-a-key-but-a-secret"}, "not-a-key-but-a-secret"),
    ],
)
def test_config_problems_never_echo_secrets(tmp_path: Path, extra: dict[str, str], leaked: str) -> None:
    with pytest.raises(rc_mcp.ConfigError) as caught:
        rc_mcp.load_config(base_env(tmp_path, **extra))
    assert leaked not in str(caught.value)


def test_config_valid_values_of_each_kind(tmp_path: Path) -> None:
    config = rc_mcp.load_config(
        base_env(
            tmp_path,
            PORT=" 8080 ",
            LOG_LEVEL="debug",
            SPAWN_WORKTREE="YES",
            HOST="::1",
            START_TIMEOUT="5.5",
            PERMISSION_MODE="plan",
            PROJECTS_BASE_DIR="~/src/",
        )
    )
    assert (config.port, config.log_level, config.spawn_worktree, config.host) == (8080, "DEBUG", True, "::1")
    assert (config.start_timeout, config.permission_mode, config.projects_base_dir) == (5.5, "plan", "~/src")
    assert config.server_url == "http://localhost:8080"


def test_credentials_refuses_what_serve_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert rc_mcp.print_credentials({"MCP_SECRET": "short"}) == 2
    assert "use at least 16" in capsys.readouterr().err
    assert rc_mcp.print_credentials({"MCP_SECRET": SECRET}) == 0
    assert CLIENT_SECRET in capsys.readouterr().out


def test_default_token_store_path_prefers_a_writable_data_volume(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    home = {"HOME": str(tmp_path / "home")}
    assert rc_mcp.default_token_store_path(home, data) == data / "oauth-tokens.json"
    data.chmod(0o500)
    try:
        expected = tmp_path / "home" / ".local" / "state" / "rc_mcp" / "oauth-tokens.json"
        assert rc_mcp.default_token_store_path(home, data) == (
            expected if os.getuid() != 0 else data / "oauth-tokens.json"
        )
    finally:
        data.chmod(0o700)
    assert (
        rc_mcp.default_token_store_path({"XDG_STATE_HOME": str(tmp_path)}, tmp_path / "none")
        == tmp_path / "rc_mcp" / "oauth-tokens.json"
    )


@pytest.mark.parametrize(
    "secret, weak",
    [
        ("correct horse battery staple", True),
        ("test-secret-0123456789", True),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", True),
        ("Password1234567890", True),
        ("my dog is named rex and he is cute", True),
        ("qwertyuiopasdfghjkl;zxcvbnm", True),
        (STRONG_SECRET, False),  # openssl rand -hex 32
        ("a3f1c9e0b7d24f6a8c5e1b0d9f7a3c2e", False),  # openssl rand -hex 16
        ("Xq7pLm2Rt9Vz4Kw8Hn3Bc6Jd", False),
    ],
)
def test_weak_secrets_are_named(secret: str, weak: bool) -> None:
    warning = rc_mcp.weak_secret_warning(secret)
    if weak:
        assert warning is not None and "MCP_SECRET is weak" in warning and "openssl rand -hex 32" in warning
        assert secret not in warning
    else:
        assert warning is None


def test_the_server_rates_its_secret_in_a_child_and_never_loads_the_word_lists(tmp_path: Path) -> None:
    # As serve() does it: after the app is made, before any thread starts. A process of its own,
    # since this one may have imported zxcvbn already.
    script = (
        "import json, sys, threading; sys.path.insert(0, sys.argv[1]); import rc_mcp\n"
        "app = rc_mcp.create_app(rc_mcp.load_config(json.loads(sys.argv[2])))\n"
        "threads = threading.active_count()\n"
        "answers = [rc_mcp.rate_secret_apart(s)() for s in sys.argv[3:]]\n"
        "print(json.dumps([threads, answers, 'zxcvbn' in sys.modules]))\n"
    )
    env = json.dumps(base_env(tmp_path))
    argv = [sys.executable, "-c", script, str(Path(__file__).parent), env, "password123password123", STRONG_SECRET]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    threads, (weak, strong), loaded = json.loads(done.stdout)
    assert threads == 1  # so the fork copies everything there is
    assert weak.startswith("MCP_SECRET is weak") and strong is None
    assert not loaded


def test_a_failed_rating_child_is_rated_here(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(rc_mcp.threading, "active_count", lambda: 1)
    monkeypatch.setattr(rc_mcp.os, "fork", lambda: calls.append(1) or (_ for _ in ()).throw(OSError("no fork")))
    assert rc_mcp.rate_secret_apart("password123password123")().startswith("MCP_SECRET is weak")
    assert calls == [1]


def test_mcp_secret_from_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "mcp_secret"
    secret_file.write_text(STRONG_SECRET + "\n")
    env = {k: v for k, v in base_env(tmp_path).items() if k != "MCP_SECRET"}
    assert rc_mcp.load_config({**env, "MCP_SECRET_FILE": str(secret_file)}).mcp_secret == STRONG_SECRET
    with pytest.raises(rc_mcp.ConfigError, match="both set: remove one"):
        rc_mcp.load_config({**env, "MCP_SECRET_FILE": str(secret_file), "MCP_SECRET": STRONG_SECRET})
    with pytest.raises(rc_mcp.ConfigError, match="MCP_SECRET_FILE cannot be read"):
        rc_mcp.load_config({**env, "MCP_SECRET_FILE": str(tmp_path / "missing")})
    secret_file.write_text("short")
    with pytest.raises(rc_mcp.ConfigError, match="use at least 16"):
        rc_mcp.load_config({**env, "MCP_SECRET_FILE": str(secret_file)})


def test_on_fly_the_defaults_are_the_apps(tmp_path: Path) -> None:
    config = rc_mcp.load_config(base_env(tmp_path, FLY_APP_NAME="my-rc", SSH_HOST="local"))
    assert config.server_url == "https://my-rc.fly.dev" and config.client_ip_header == "Fly-Client-IP"
    config = rc_mcp.load_config(base_env(tmp_path, FLY_APP_NAME="my-rc", SERVER_URL="https://rc.example.com"))
    assert config.server_url == "https://rc.example.com"
    assert rc_mcp.load_config(base_env(tmp_path)).client_ip_header is None


# ── Errors ────────────────────────────────────────────────────────────────────────────────────


def test_config_error_lists_every_problem() -> None:
    error = rc_mcp.ConfigError(["MCP_SECRET is missing", "PORT is not a number"])
    assert error.problems == ["MCP_SECRET is missing", "PORT is not a number"]
    assert str(error) == "  - MCP_SECRET is missing\n  - PORT is not a number"


def test_oauth_error_carries_its_response() -> None:
    headers = {"WWW-Authenticate": "Basic"}
    error = rc_mcp.OAuthError(401, "invalid_client", "unknown client", headers)
    headers["X-Later"] = "changed"  # the error keeps its own copy
    assert (error.status, error.error, error.description, error.headers) == (
        401,
        "invalid_client",
        "unknown client",
        {"WWW-Authenticate": "Basic"},
    )
    assert str(error) == "invalid_client: unknown client"
    assert rc_mcp.OAuthError(400, "invalid_request", "x").headers == {}


def test_a_host_key_error_is_a_remote_error() -> None:
    # callers that report "the dev server could not be reached" report a host key problem too
    assert issubclass(rc_mcp.HostKeyError, rc_mcp.RemoteError)
    assert not issubclass(rc_mcp.ConnectionLost, rc_mcp.RemoteError)  # internal: never shown to a user


# ── Claude's output ───────────────────────────────────────────────────────────────────────────


ENV_ID = "env_01AbCdEfGh-_xyz"


SESSION = "session_01QwErTy"


RC_2_1_330 = (
    f"{ESC}[?25l{ESC}[2K{ESC}[1G·|· Connecting · alpha · main\r\n"
    f"{ESC}[1A{ESC}[J{ESC}[32m·✔︎· Ready{ESC}[39m · alpha · main\r\n"
    "    Capacity: 0/32 · New sessions will be created in the current directory\r\n"
    "\r\n"
    f"Code anywhere with the Claude mobile app or {ESC}[36mhttps://claude.ai/code?environment={ENV_ID}{ESC}[0m\r\n"
    "space to show QR code · w to toggle spawn mode\r\n"
)


@pytest.mark.parametrize(
    "raw, environment_url, session_url",
    [
        (RC_2_1_330, f"https://claude.ai/code?environment={ENV_ID}", None),
        # 2.1.84 printed ?bridge=: returned exactly as printed
        (
            f"Code everywhere with the Claude app or https://claude.ai/code?bridge={ENV_ID}\r\n",
            f"https://claude.ai/code?bridge={ENV_ID}",
            None,
        ),
        # OSC-8 hyperlinked session title: only the link target holds the URL
        (
            RC_2_1_330 + f"  {ESC}]8;;https://claude.ai/code/{SESSION}?from=cli{BEL}fix the tests{ESC}]8;;{BEL}\r\n",
            f"https://claude.ai/code?environment={ENV_ID}",
            f"https://claude.ai/code/{SESSION}",
        ),
        # OSC-8 with ST terminators
        (
            f"{ESC}]8;;https://claude.ai/code/{SESSION}{ESC}\\title{ESC}]8;;{ESC}\\",
            None,
            f"https://claude.ai/code/{SESSION}",
        ),
        # plain "title (url)" form
        ("  fix the tests (https://claude.ai/code/cse_0123abc)\r\n", None, "https://claude.ai/code/cse_0123abc"),
        # repaints: the newest URL wins
        (
            f"https://claude.ai/code?environment=env_old\r{ESC}[1A{ESC}[Jhttps://claude.ai/code?environment=env_new\r\n",
            "https://claude.ai/code?environment=env_new",
            None,
        ),
        # decoys are never returned
        (
            "Trust? see https://code.claude.com/docs/en/security and https://claude.com/claude-code or https://claude.ai/code\r\n",
            None,
            None,
        ),
        ("https://claude.ai/code?environment=\r\n", None, None),
        (
            "https://evil.example/?x=https://claude.ai/code?environment=env_ok",
            "https://claude.ai/code?environment=env_ok",
            None,
        ),
        ("https://claude.ai.evil.example/code?environment=env_bad\r\n", None, None),
        ("", None, None),
    ],
)
def test_extract_remote_control_urls(raw: str, environment_url: str | None, session_url: str | None) -> None:
    urls = rc_mcp.extract_remote_control_urls(raw)
    assert (urls.environment_url, urls.session_url) == (environment_url, session_url)


TRANSCRIPTS = (
    ROOT / "testbed" / "transcripts"
)  # raw pane output per claude version and state (testbed/record_transcripts.py)


@pytest.mark.parametrize(
    "transcript, environment_url, session_url, status, explanation",
    [
        (
            "2.1.330-ready",
            "https://claude.ai/code?environment=env_01Ready330",
            "https://claude.ai/code/session_",
            "ready",
            None,
        ),
        (
            "2.1.330-connected",
            "https://claude.ai/code?environment=env_01Conn330",
            "https://claude.ai/code/session_01Attached",
            "connected",
            None,
        ),
        (
            "2.1.330-connected-plain-links",
            "https://claude.ai/code?environment=env_01Plain",
            "https://claude.ai/code/session_01Plain",
            "connected",
            None,
        ),
        (
            "2.1.197-ready",
            "https://claude.ai/code?environment=env_01Ready197",
            "https://claude.ai/code/session_",
            "ready",
            None,
        ),
        (
            "2.1.84-ready",
            "https://claude.ai/code?bridge=env_01Ready84",
            "https://claude.ai/code/session_",
            "ready",
            None,
        ),
        ("2.1.330-connecting", None, None, "starting", None),
        ("2.1.330-consent-prompt", None, None, "needs attention", None),
        ("2.1.330-trust-prompt", None, None, "needs attention", "does not trust"),
        ("2.1.330-signed-out", None, None, "starting", "claude auth login"),
        ("2.1.84-signed-out", None, None, "starting", "claude auth login"),
        ("2.1.330-feature-flag", None, None, "starting", "DISABLE_TELEMETRY is set"),
    ],
)
def test_recorded_transcripts(
    transcript: str, environment_url: str | None, session_url: str | None, status: str, explanation: str | None
) -> None:
    raw = (TRANSCRIPTS / f"{transcript}.log").read_bytes().decode()
    urls = rc_mcp.extract_remote_control_urls(raw)
    assert urls.environment_url == environment_url
    if session_url is None:
        assert urls.session_url is None
    else:
        assert urls.session_url is not None and urls.session_url.startswith(session_url) and "?" not in urls.session_url
    assert rc_mcp.classify_session(raw)[0] == status
    explained = rc_mcp.explain_failure(raw)
    if explanation is None:
        assert explained is None
    else:
        assert explained is not None and explanation in explained, explained
    # the server-side detector (POSIX ERE) agrees with the Python parser on when a URL is there
    found = (
        subprocess.run(
            ["grep", "-a", "-q", "-E", rc_mcp.ENV_URL_ERE, str(TRANSCRIPTS / f"{transcript}.log")]
        ).returncode
        == 0
    )
    assert found == (environment_url is not None)


@pytest.mark.parametrize(
    "raw, status, reason",
    [
        (
            "·✔︎· Ready · a · main\r\nReconnecting · retrying in 5s\r\n",
            "needs attention",
            "claude lost its connection to claude.ai and is reconnecting",
        ),
        ("Reconnecting · retrying in 5s\r\n·✔︎· Ready · a · main\r\n", "ready", None),
        ("·✔︎· Connected · a\r\n[12:00:00] Session completed\r\n", "connected", None),
        (
            "Spawn mode for this project: [1] same-dir [2] worktree\r\nChoose [1/2] (default: 1): ",
            "needs attention",
            "claude is asking for a spawn mode on the dev server: run `claude remote-control` there once and choose.",
        ),
        (
            "·✔︎· Ready · a · main\r\nEnable Remote Control? (y/n) ",
            "needs attention",
            "claude is waiting for an answer to 'Enable Remote Control? (y/n)' on the dev server",
        ),
        ("", "starting", None),
    ],
)
def test_classify_session(raw: str, status: str, reason: str | None) -> None:
    assert rc_mcp.classify_session(raw) == (status, reason)


# What claude prints for each failure (testbed/transcripts/2.1.330-fail-<key>.log: the fake's `fail`
# knob under tmux) → the fix rc_mcp names. Sessions end to end checks how one of them reaches the user.
FAILURE_FIXES = {
    "signed_out": "run `claude auth login` there",
    "setup_token": "long-lived token",
    "feature_flag": "DISABLE_TELEMETRY is set for claude on the dev server",
    "feature_flag_unavailable": "feature-flag service",
    "not_enabled": "Pro, Max, Team or Enterprise plan",
    "registration": "Pro, Max, Team or Enterprise plan",
    "multi_session_gate": "`claude update`",
    "api_key": "not an API key",
    "another_instance": "that rc_mcp did not start",
    "untrusted": "claude does not trust alpha yet",
    "home": "refuses to run in the home directory",
    "session_elsewhere": "already serves that session from",
}


def test_every_failure_of_the_fake_is_recorded() -> None:
    assert set(FAILURE_FIXES) == set(fake_claude.FAIL_KEYS)
    assert {p.name for p in TRANSCRIPTS.glob("2.1.330-fail-*.log")} == {
        f"2.1.330-fail-{key}.log" for key in FAILURE_FIXES
    }


@pytest.mark.parametrize("fail, fix", FAILURE_FIXES.items(), ids=list(FAILURE_FIXES))
def test_explain_failure_names_the_fix(fail: str, fix: str | None) -> None:
    raw = (TRANSCRIPTS / f"2.1.330-fail-{fail}.log").read_bytes().decode()
    explained = rc_mcp.explain_failure(raw, "alpha")
    if fix is None:
        assert explained is None
    else:
        assert explained is not None and fix in explained, explained
    # claude died at once: no URL, and the pane reads as not started (the start script sees it exit)
    assert rc_mcp.extract_remote_control_urls(raw) == rc_mcp.RemoteControlUrls(None, None)
    assert rc_mcp.classify_session(raw) == ("starting", None)


def test_explain_failure_fills_in_the_details() -> None:
    raw = (TRANSCRIPTS / "2.1.330-fail-another_instance.log").read_bytes().decode()
    pid = re.search(r"\(pid (\d+)\)", raw)
    assert pid is not None
    assert rc_mcp.explain_failure(raw, "web app") == (
        f"a `claude remote-control` that rc_mcp did not start (pid {pid[1]}) already serves web app: use that one, "
        f"or stop it on the dev server (`kill {pid[1]}`) and start again."
    )
    assert rc_mcp.explain_failure("all is well") is None


def test_tail_lines_collapses_repaints_and_strips_escapes() -> None:
    raw = f"{ESC}[31mError:{ESC}[0m one\r\n{ESC}[1A{ESC}[JError: one\r\nsecond line\r\n\r\n"
    assert rc_mcp.tail_lines(raw) == "Error: one\nsecond line"


# One sample per row of CLAUDE_TEXTS, and the part of its explanation that names the fix.
CLAUDE_TEXT_SAMPLES = [
    (rc_mcp.DIRECTORY_CHANGED, "was replaced (by a symlink?) between rc_mcp's check and the launch"),
    ("Error: You must be logged in to use Remote Control.", "run `claude auth login` there"),
    ("Remote Control requires a full-scope login token.", "long-lived token"),
    (
        "needs feature-flag evaluation, which is disabled because DISABLE_TELEMETRY is set",
        "DISABLE_TELEMETRY is set for claude",
    ),
    ("needs feature-flag evaluation, which is unavailable right now", "feature-flag service"),
    (
        "/home/dev is your home directory, and for security home-directory trust is never saved",
        "pick a project directory",
    ),
    ("Error: Workspace not trusted. Run claude in alpha first.", "does not trust alpha yet"),
    ("Quick safety check: Is this a project you created or one you trust?", "does not trust alpha yet"),
    ("Another `claude remote-control` instance (pid 4242) is already running here", "(`kill 4242`)"),
    (
        "Error: Environment env_01Ab is already being served by another `claude remote-control` instance "
        "(pid 77) in /srv/p/alpha. Use that terminal, or stop it first.",
        "(pid 77) already serves that session from /srv/p/alpha: use that one, or stop it on the dev server",
    ),
    ("Remote Control is not yet enabled for your account", "Pro, Max, Team or Enterprise plan"),
    ("Error: Multi-session Remote Control is not enabled", "too old for server mode"),
    ("error: Unknown argument: --spawn", "does not accept rc_mcp's arguments"),
    ("Remote Control cannot use ANTHROPIC_API_KEY", "not an API key or a cloud provider"),
    ("Spawn mode for this project: [1] same-dir [2] worktree", "asking for a spawn mode"),
    ("sh: 1: claude: command not found", "set CLAUDE_BIN to its"),
]


def test_every_claude_text_has_a_sample() -> None:
    rows = [t for t in rc_mcp.CLAUDE_TEXTS if t.kind != "notice"]
    for text in rows:
        assert any(re.search(text.pattern, sample) for sample, _ in CLAUDE_TEXT_SAMPLES), text.pattern


@pytest.mark.parametrize(
    "raw, fix",
    CLAUDE_TEXT_SAMPLES
    + [(f"{ESC}[31mError:{ESC}[0m You must be logged in to use Remote Control\r\n", "claude auth login")],
)
def test_explain_failure(raw: str, fix: str) -> None:
    assert fix in (rc_mcp.explain_failure(raw, "alpha") or "")


@pytest.mark.parametrize("raw", ["·✔︎· Ready · alpha", "Reconnecting · retrying in 5s", rc_mcp.CONSENT_PROMPT, ""])
def test_explain_failure_ignores_what_is_no_failure(raw: str) -> None:
    assert rc_mcp.explain_failure(raw) is None


def test_questions_ere_is_what_grep_finds(tmp_path: Path) -> None:
    """The start script stops on a question with `grep -E QUESTIONS_ERE`: it must find exactly the
    question samples (POSIX ERE and Python agree)."""
    for sample, _ in CLAUDE_TEXT_SAMPLES:
        is_question = any(t.kind == "question" and re.search(t.pattern, sample) for t in rc_mcp.CLAUDE_TEXTS)
        (tmp_path / "log").write_text(sample + "\n")
        found = subprocess.run(["grep", "-a", "-q", "-E", rc_mcp.QUESTIONS_ERE, str(tmp_path / "log")]).returncode == 0
        assert found == is_question, sample


# The real TUI (2.1.332) moves the cursor between the words of its trust dialog instead of
# writing spaces; the plain form is what the fake and the server mode print.
TUI_TRUST_DIALOG = "\x1b[1mQuick\x1b[8Gsafety\x1b[15Gcheck:\x1b[22m\x1b[22GIs\x1b[25Gthis\x1b[30Ga\x1b[32Gproject"


@pytest.mark.parametrize("raw", [TUI_TRUST_DIALOG, "Quick safety check: Is this a project you created"])
def test_the_tui_trust_dialog_is_found_with_or_without_spaces(tmp_path: Path, raw: str) -> None:
    (tmp_path / "log").write_bytes(raw.encode() + b"\n")
    assert subprocess.run(["grep", "-a", "-q", "-E", rc_mcp.QUESTIONS_ERE, str(tmp_path / "log")]).returncode == 0
    status, reason = rc_mcp.classify_session(raw)
    assert status == "needs attention" and reason is not None and "does not trust" in reason
    assert "Quick safety check: Is this a project" in rc_mcp.strip_terminal(raw)  # readable in error tails


@pytest.mark.parametrize(
    "text, kept",
    [
        ("open https://claude.ai/code?environment=env_1 now", "open https://claude.ai/code?environment=env_1 now"),
        ("docs: https://code.claude.com/docs/en/security.", "docs: https://code.claude.com/docs/en/security."),
        ("see https://evil.example/x?u=https://claude.ai", "see [link removed]"),
        ("https://claude.ai.evil.example/code", "[link removed]"),
        ("ftp://files.example/a and http://claude.ai/code", "[link removed] and [link removed]"),
        ("no links here", "no links here"),
    ],
)
def test_relayed_output_keeps_only_claude_links(text: str, kept: str) -> None:
    assert rc_mcp.keep_claude_links(text) == kept
    assert rc_mcp.tail_lines(text + "\r\n") == kept


# ── Remote scripts ────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "path, word",
    [
        ("/srv/projects", "/srv/projects"),
        ("/srv/my projects", "'/srv/my projects'"),
        ("~", '"$HOME"'),
        ("~/projects", '"$HOME"/projects'),
        ("~/it's", "\"$HOME\"/'it'\"'\"'s'"),
        ("/a/$(id)", "'/a/$(id)'"),
    ],
)
def test_shell_path(path: str, word: str) -> None:
    assert rc_mcp.shell_path(path) == word


def start_script(**overrides: Any) -> str:
    values: dict[str, Any] = dict(
        base_dir="/b",
        path="p",
        session_id="al-a1b2c3",
        name="al",
        claude_bin="claude",
        spawn="same-dir",
        timeout=5,
        nonce="n0nce",
    )
    values.update(overrides)
    return rc_mcp.build_start_script(**values)


def test_scripts_use_exact_tmux_targets() -> None:
    start = start_script()
    stop = rc_mcp.build_stop_script("al-a1b2c3")

    def targets(script: str) -> list[tuple[str, str]]:  # (tmux command, its -t) in script order
        return re.findall(r"([a-z-]+)(?: -[po])? -t (\S+)", script)

    # Always "=…" (an exact name, never a prefix); pane commands need the trailing colon, session
    # commands must not have it.
    assert targets(start) == [
        ("display-message", '"=$s:"'),
        ("has-session", '"=$session"'),
        ("pipe-pane", '"=$session:"'),
        ("set-option", '"=$session:"'),
        ("kill-session", '"=$session"'),
        ("display-message", '"=$session:"'),
        ("send-keys", '"=$session:"'),
        ("kill-session", '"=$session"'),
    ]
    assert targets(stop) == [("display-message", '"=$session:"'), ("kill-session", '"=$session"')]
    assert "session=rc-al-a1b2c3\n" in stop  # shlex.quote leaves safe words bare


def test_start_script_scrubs_variables_that_break_remote_control(tmp_path: Path) -> None:
    script = start_script(name="a", spawn="worktree", permission_mode="plan")
    assert f"/bin/sh -c {shlex.quote(rc_mcp.PANE_PRELUDE)}" in script
    # the pane's prelude itself: every variable that stops Remote Control is gone when claude runs
    (tmp_path / "tmux").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "tmux").chmod(0o755)
    scrubbed = {var: "1" for var in rc_mcp.SCRUBBED_ENV}
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "KEEP_ME": "1", **scrubbed}
    shown = subprocess.run(
        ["/bin/sh", "-c", rc_mcp.PANE_PRELUDE, "go", f"{tmp_path.resolve()}/", "env"],
        env=env, capture_output=True, text=True, timeout=10, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert "KEEP_ME=1" in shown and not [line for line in shown if line.split("=")[0] in scrubbed]
    assert {"DISABLE_TELEMETRY", "ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"} <= set(rc_mcp.SCRUBBED_ENV)
    assert "remote-control --name a --spawn worktree --permission-mode plan" in script
    assert script.startswith(rc_mcp.REMOTE_PATH_PREFIX)


@pytest.mark.parametrize(
    "builder",
    [
        lambda: rc_mcp.build_list_script("n0nce"),
        lambda: start_script(base_dir="~/p", claude_bin="~/.local/bin/claude"),
        lambda: rc_mcp.build_stop_script("alpha-a1b2c3"),
        lambda: rc_mcp.build_projects_script("~/it's here"),
        lambda: rc_mcp.build_check_script("/srv/$(id)", "/opt/`id`/claude"),
    ],
)
def test_scripts_are_valid_posix_sh(builder: Any) -> None:
    subprocess.run(["/bin/sh", "-n", "-c", builder()], check=True)


@pytest.mark.parametrize(
    "output, events",
    [
        ("@@error no-dir\n", [("error", ["no-dir"])]),
        (
            "@@state launched\n@@status ready\n"
            "@@tail\nraw\x1b[0m\n@@status fake\n@@end-forged\n\n@@end-n0nce\n"  # a forged end marker is just text
            "@@url\tu\n",
            [
                ("state", ["launched"]),
                ("status", ["ready"]),
                ("tail", ["raw\x1b[0m\n@@status fake\n@@end-forged\n"]),
                ("url", ["u"]),
            ],
        ),
        ("@@tail\nunterminated", [("tail", ["unterminated"])]),
        ("@@tail\n\n@@end-n0nce\n", [("tail", [""])]),
        ("@@session\trc-a-a1b2c3\t0\t1700000000\t\n", [("session", ["rc-a-a1b2c3", "0", "1700000000", ""])]),
        ("bash: warning: login noise\n@@\n@@ x\nx@@status ready\n@@stopped\n", [("stopped", [])]),
    ],
)
def test_parse_script_output(output: str, events: list[tuple[str, list[str]]]) -> None:
    assert rc_mcp.parse_script_output(output, "n0nce") == events


# Each would create a file named `pwned` if any shell or tmux ever ran it.
HOSTILE = [
    "x'; touch pwned; echo '",
    '"; touch pwned; "',
    "$(touch pwned)",
    "`touch pwned`",
    "a\\'b",
    "#(touch pwned)#{pane_id}",
]


# A stand-in for tmux or claude on PATH: records its cwd, argv[0] and arguments (NUL-separated, one
# numbered file per call). As tmux it knows no sessions, runs a new session's command at once (as
# the pane would) and reports no pane afterwards, so the start script ends right after the launch.
STAND_IN = r"""#!/bin/sh
record=%(record)s
n=$(ls "$record" | wc -l)
printf '%%s\0' "$PWD" "$0" "$@" > "$record/$(printf '%%02d' "$n")"
[ "${0##*/}" = tmux ] || exit 0
case $1 in
has-session|display-message) exit 1 ;;
new-session)
  shift 8; keep=1  # the words before the first ";" are the pane's command
  for word do
    shift
    [ "$word" = ";" ] && keep=0
    [ $keep = 1 ] && set -- "$@" "$word"
  done
  "$@" ;;
esac
"""


@pytest.mark.parametrize("hostile", HOSTILE)
def test_start_script_quotes_every_value(tmp_path: Path, hostile: str) -> None:
    """/bin/sh runs the real start script with hostile values everywhere: tmux and claude (recording
    stand-ins) receive exactly these words, and nothing in them is ever run."""
    record, bin_dir, work = tmp_path / "record", tmp_path / "bin", tmp_path / "work"
    home = tmp_path / ("home " + hostile)
    base = tmp_path / ("srv " + hostile)
    claude = tmp_path / ("opt " + hostile) / "claude"
    project = base / "p" / hostile
    for directory in (record, bin_dir, work, home, project, claude.parent):
        directory.mkdir(parents=True, exist_ok=True)
    for tool in (bin_dir / "tmux", claude):
        tool.write_text(STAND_IN % {"record": shlex.quote(str(record))})
        tool.chmod(0o755)
    script = start_script(base_dir=str(base), path="p/" + hostile, claude_bin=str(claude))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home)}
    result = subprocess.run(["/bin/sh", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert rc_mcp.parse_script_output(result.stdout, "n0nce")[:2] == [("state", ["launched"]), ("status", ["gone"])]

    calls = [(record / name).read_bytes().split(b"\0")[:-1] for name in sorted(p.name for p in record.iterdir())]
    calls_text = [[os.fsdecode(a) for a in call] for call in calls]
    state = home / ".local" / "state" / "rc-mcp"
    session, log = "rc-al-a1b2c3", state / "rc-al-a1b2c3.log"

    def tmux_quoted(path: Path) -> str:  # for tmux's format expansion, then /bin/sh
        return "'" + str(path).replace("'", "'\\''").replace("#", "##") + "'"

    pipe_command = f"/bin/sh -c {shlex.quote(rc_mcp.CAP_LOG_SCRIPT)} rc-log {tmux_quoted(log)}"
    tmux = str(bin_dir / "tmux")
    assert calls_text == [
        [str(work), tmux, "has-session", "-t", f"={session}"],  # before the script goes into the project
        [str(project), tmux, "new-session", "-d", "-s", session, "-x", "200", "-y", "50",
         "/bin/sh", "-c", rc_mcp.PANE_PRELUDE, f"{session}-go", f"{project}/",
         str(claude), "remote-control", "--name", "al", "--spawn", "same-dir",
         ";", "pipe-pane", "-o", "-t", f"={session}:", pipe_command,
         ";", "set-option", "-t", f"={session}:", "remain-on-exit", "on"],
        [str(project), tmux, "wait-for", f"{session}-go"],  # the pane waits for the go-ahead …
        [str(project), str(claude), "remote-control", "--name", "al", "--spawn", "same-dir"],  # … then runs claude
        [str(project), tmux, "wait-for", "-S", f"{session}-go"],
        [str(project), tmux, "display-message", "-p", "-t", f"={session}:",
         "#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}"],
        [str(project), tmux, "kill-session", "-t", f"={session}"],
    ]  # fmt: skip
    # pipe-pane's command goes through tmux's format expansion, then /bin/sh: it must name the log
    unexpanded = pipe_command.replace("##", "#")
    assert shlex.split(unexpanded) == ["/bin/sh", "-c", rc_mcp.CAP_LOG_SCRIPT, "rc-log", str(log)]
    assert files_named("pwned", tmp_path) == []


def test_start_script_runs_hostile_values_without_executing_them(tmp_path: Path) -> None:
    """Run the real script with hostile values: it must refuse (no such directory) and create nothing."""
    marker = tmp_path / "pwned"
    hostile = f"x'; touch {marker}; echo '$(touch {marker})`touch {marker}`"
    script = start_script(base_dir=str(tmp_path), path=hostile, claude_bin=hostile)
    env = {**os.environ, "HOME": str(tmp_path), "TMUX_TMPDIR": str(tmp_path)}
    result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert "@@error no-dir" in result.stdout
    assert not marker.exists()


# Property-based: arbitrary names, paths and ids are either refused by validation (with the rule's
# words) or reach tmux and claude — recording stand-ins run by /bin/sh — as exactly the intended
# words, with nothing in them executed. Surrogates are left out: no JSON-RPC message carries them.
PROPERTY_SETTINGS = settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
SHELL_BITS = ["'", '"', "$(touch pwned)", "`touch pwned`", "#{pane_id}", "#(touch pwned)", ";", "\\", "-", "--"]
SHELL_BITS += ["\n", "\t", "\r", "\x1b", "\x00", "\x7f", "$HOME", "${x:-y}", "*", "?", "[a]", "~", " ", "!", "&", "|"]
SHELL_BITS += ["<", ">", "%", "{}", "é", "☃", "\u202e", "\u0085", "\u2028", "\ufeff", "🙂"]
ANY_CHAR = st.characters(exclude_categories=("Cs",))
hostile_text = st.lists(st.one_of(st.sampled_from(SHELL_BITS), st.text(ANY_CHAR, max_size=6)), max_size=10).map("".join)
long_text = st.sampled_from(["a" * 1025, "é" * 600, "-" * 2000, "x" * 41, "x" * 42, "a/" * 300 + "b"])


def with_hostile_tail(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(valid, st.builds(lambda v, tail: v + tail, valid, hostile_text), hostile_text, long_text)


names = with_hostile_tail(st.from_regex(rc_mcp.SESSION_NAME.pattern, fullmatch=True))
session_ids = with_hostile_tail(st.from_regex(rc_mcp.SESSION_ID.pattern, fullmatch=True))


def file_name(text: str) -> str:
    """`text` as a name the file system allows: no '/' or NUL, at most 160 bytes, not '.' or '..'."""
    name = text.replace("/", "").replace("\x00", "")[:40]
    return name if name not in ("", ".", "..") else "x" + name


file_names = hostile_text.map(file_name)
config_words = file_names.map(lambda t: file_name(rc_mcp.CONTROL_RE.sub("", t)))  # settings, not tool inputs
paths = st.one_of(
    hostile_text,
    long_text,
    st.lists(file_names, min_size=1, max_size=3).map("/".join),
    st.lists(config_words, min_size=1, max_size=3).map("/".join),  # no control characters: accepted
)


@contextlib.contextmanager
def stand_ins() -> Iterator[tuple[Path, Callable[[], list[list[str]]]]]:
    """A scratch directory with a recording `tmux` in root/bin, and the calls recorded so far."""
    with tempfile.TemporaryDirectory(prefix="rc-prop-") as scratch:
        root = Path(os.path.realpath(scratch))
        record, bin_dir = root / "record", root / "bin"
        for directory in (record, bin_dir, root / "work", root / "home"):
            directory.mkdir()
        make_stand_in(root, bin_dir / "tmux")

        def calls() -> list[list[str]]:
            files = sorted(p.name for p in record.iterdir())
            return [[os.fsdecode(a) for a in (record / f).read_bytes().split(b"\0")[:-1]] for f in files]

        yield root, calls
        assert files_named("pwned", root) == []


def make_stand_in(root: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STAND_IN % {"record": shlex.quote(str(root / "record"))})
    path.chmod(0o755)


def run_sh(root: Path, script: str) -> str:
    env = {"PATH": f"{root / 'bin'}:/usr/bin:/bin", "HOME": str(root / "home")}
    result = subprocess.run(
        ["/bin/sh", "-c", script], cwd=root / "work", env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(check: Callable[[str], str], value: str, *words: str) -> bool:
    """True when validation refuses `value` with a message holding `words`; False when it accepts."""
    try:
        check(value)
    except ValueError as exc:
        assert all(word in str(exc) for word in words), str(exc)
        assert len(str(exc)) < 400  # the value is shown shortened
        return True
    return False


@PROPERTY_SETTINGS
@given(name=names, path=paths, base_word=config_words, claude_word=config_words.map(lambda t: t.replace("=", "")))
def test_start_script_property(name: str, path: str, base_word: str, claude_word: str) -> None:
    name_refused = refused(rc_mcp.validate_name, name, "invalid name", "e.g. 'my-app'")
    path_refused = refused(rc_mcp.validate_project_path, path, "invalid path", "list_projects")
    event(f"name {'refused' if name_refused else 'accepted'}, path {'refused' if path_refused else 'accepted'}")
    if name_refused and path_refused:
        return
    name = "al" if name_refused else name
    rel = "p" if path_refused else rc_mcp.validate_project_path(path)
    check_start_script(name, rel, base_word, claude_word)


def check_start_script(name: str, rel: str, base_word: str, claude_word: str) -> None:
    """The start script for these (valid) values, run with stand-ins: the exact calls, nothing run."""
    session_id = rc_mcp.validate_session_id(f"{name}-a1b2c3")
    with stand_ins() as (root, calls):
        base, claude = root / ("srv " + base_word), root / ("opt " + claude_word) / "claude"
        make_stand_in(root, claude)
        project = base / rel
        try:
            project.mkdir(parents=True)
        except OSError:  # too long for the file system: the script must refuse it, running nothing
            project = None
        script = rc_mcp.build_start_script(
            base_dir=str(base),
            path=rel,
            session_id=session_id,
            name=name,
            claude_bin=str(claude),
            spawn="same-dir",
            timeout=5,
            nonce="n0nce",
        )
        events = rc_mcp.parse_script_output(run_sh(root, script), "n0nce")
        if project is None:
            assert events[:1] == [("error", ["no-dir"])] and calls() == []
            return
        session, tmux = f"rc-{session_id}", str(root / "bin" / "tmux")
        log = root / "home" / ".local" / "state" / "rc-mcp" / f"{session}.log"
        pipe_command = f"/bin/sh -c {shlex.quote(rc_mcp.CAP_LOG_SCRIPT)} rc-log '{log}'"
        claude_args = ["remote-control", "--name", name, "--spawn", "same-dir"]
        work, here = str(root / "work"), str(project)
        assert events[:2] == [("state", ["launched"]), ("status", ["gone"])]
        assert calls() == [
            [work, tmux, "has-session", "-t", f"={session}"],
            [here, tmux, "new-session", "-d", "-s", session, "-x", "200", "-y", "50",
             "/bin/sh", "-c", rc_mcp.PANE_PRELUDE, f"{session}-go", f"{project}/",
             str(claude), *claude_args,
             ";", "pipe-pane", "-o", "-t", f"={session}:", pipe_command,
             ";", "set-option", "-t", f"={session}:", "remain-on-exit", "on"],
            [here, tmux, "wait-for", f"{session}-go"],
            [here, str(claude), *claude_args],
            [here, tmux, "wait-for", "-S", f"{session}-go"],
            [here, tmux, "display-message", "-p", "-t", f"={session}:",
             "#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}"],
            [here, tmux, "kill-session", "-t", f"={session}"],
        ]  # fmt: skip


def test_start_script_runs_a_claude_bin_with_an_equals_sign() -> None:
    """CLAUDE_BIN=/opt/tools=2/claude passes the configuration and `check`; start_session must run it too."""
    check_start_script("al", "p", "x", "tools=2")


@PROPERTY_SETTINGS
@given(session_id=session_ids)
def test_stop_script_property(session_id: str) -> None:
    is_refused = refused(rc_mcp.validate_session_id, session_id, "no session", "list_sessions")
    event("refused" if is_refused else "accepted")
    if is_refused:
        return
    with stand_ins() as (root, calls):
        events = rc_mcp.parse_script_output(run_sh(root, rc_mcp.build_stop_script(session_id)))
        tmux, work, target = str(root / "bin" / "tmux"), str(root / "work"), f"=rc-{session_id}"
        assert events == [("stopped", [])]
        assert calls() == [
            [work, tmux, "display-message", "-p", "-t", f"{target}:", "#{pane_pid}"],
            [work, tmux, "kill-session", "-t", target],
        ]


@PROPERTY_SETTINGS
@given(session_ids=st.lists(session_ids, max_size=3), nonce=hostile_text.map(lambda t: t.replace("\x00", "")))
def test_list_script_property(session_ids: list[str], nonce: str) -> None:
    """Files of sessions tmux no longer has are removed, each after an exact has-session."""
    valid = sorted({i for i in session_ids if not refused(rc_mcp.validate_session_id, i, "no session")})
    with stand_ins() as (root, calls):
        state = root / "home" / ".local" / "state" / "rc-mcp"
        state.mkdir(parents=True)
        for session_id in valid:
            for suffix in rc_mcp.SESSION_FILES.values():
                (state / f"rc-{session_id}{suffix}").write_text("name\tx\n")
        events = rc_mcp.parse_script_output(run_sh(root, rc_mcp.build_list_script(nonce)), nonce)
        tmux = str(root / "bin" / "tmux")
        assert events == [("end", [])]
        listing = [
            root / "work",
            tmux,
            "list-panes",
            "-a",
            "-F",
            "#{session_name}:#{pane_dead}:#{session_created}:#{pane_pid}:#{pane_dead_status}",
        ]
        checks = [
            [str(root / "work"), tmux, "has-session", "-t", f"=rc-{i}"]
            for i in sorted(valid, key=lambda i: f"rc-{i}.meta")
        ]
        assert calls() == [[str(w) for w in listing], *checks]
        assert list(state.iterdir()) == []


@PROPERTY_SETTINGS
@given(base_word=config_words, entries=st.lists(file_names, max_size=4, unique=True))
@example(base_word="x", entries=["-"])  # `cd -- -` goes to $OLDPWD
def test_projects_script_property(base_word: str, entries: list[str]) -> None:
    """Every directory name the file system allows: listed exactly when start_session accepts it
    as it is; hidden ones never; nothing run."""
    with stand_ins() as (root, calls):
        base = root / ("srv " + base_word)
        base.mkdir()
        for entry in entries:
            (base / entry / ".git").mkdir(parents=True)
        output = run_sh(root, rc_mcp.build_projects_script(str(base)))
        expected = {e for e in entries if not e.startswith(".") and not refused(rc_mcp.validate_project_path, e)}
        assert set(rc_mcp.interpret_projects(output, str(base))) == expected
        assert calls() == []


@settings(max_examples=10, deadline=None, database=None)
@given(base_word=config_words, claude_word=config_words)
def test_check_script_property(base_word: str, claude_word: str) -> None:
    with stand_ins() as (root, calls):
        base, claude = root / ("srv " + base_word), root / ("opt " + claude_word) / "claude"
        base.mkdir()
        make_stand_in(root, claude)
        output = run_sh(root, rc_mcp.build_check_script(str(base), str(claude)))
        values = {key: fields for key, fields in rc_mcp.parse_script_output(output)}
        assert values["claude_path"] == [str(claude)] and values["base"] == ["ok"]
        work, tmux = str(root / "work"), str(root / "bin" / "tmux")
        assert calls() == [
            [work, tmux, "-V"],
            [work, str(claude), "--version"],
            [work, str(claude), "auth", "status"],  # JSON by default since 2.1.332 …
            [work, str(claude), "auth", "status", "--json"],  # … and asked for when it was not
        ]


def test_projects_script_lists_what_start_accepts(tmp_path: Path) -> None:
    base = tmp_path / "projects"
    outside = tmp_path / "outside"
    for repo in (
        "alpha/.git",
        "org/repo/.git",
        "web app/.git",
        "with-claude/.claude",
        "nested/deeper/gamma/.git",
        ".hidden/.git",
        "notes",
        "org/.hidden/.git",
    ):
        (base / repo).mkdir(parents=True)
    (outside / ".git").mkdir(parents=True)
    (base / "escape").symlink_to(outside)
    (base / "inner-link").symlink_to(base / "alpha")
    (base / "bad\nname").mkdir()
    (base / "bad\nname" / ".git").mkdir()
    result = subprocess.run(
        ["/bin/sh", "-c", rc_mcp.build_projects_script(str(base))], capture_output=True, text=True, check=True
    )
    _, _, listing = result.stdout.partition("@@projects\n")
    found = sorted(p for p in listing.split("\0") if p)
    assert found == [
        "alpha",
        "bad\nname",
        "inner-link",
        "org/repo",
        "web app",
        "with-claude",
    ]  # the script lists, Python filters


def test_claude_log_keeps_only_its_newest_output(tmp_path: Path) -> None:
    """What pipe-pane runs: a claude that prints forever fills at most a few MB, and the newest
    output is what the log ends with."""
    log = tmp_path / "s.log"
    data = b"".join(f"line {i:08d} {'x' * 50}\n".encode() for i in range(400_000))  # 24 MB
    subprocess.run(["/bin/sh", "-c", rc_mcp.CAP_LOG_SCRIPT, "rc-log", str(log)], input=data, check=True, timeout=60)
    old = tmp_path / "s.log.1"
    assert log.stat().st_size + old.stat().st_size <= 4 * rc_mcp.LOG_CHUNK_BYTES
    assert data.endswith(log.read_bytes()) and data.endswith(old.read_bytes() + log.read_bytes())


def test_claude_log_writer_does_not_bring_back_a_removed_log(tmp_path: Path) -> None:
    log = tmp_path / "s.log"
    writer = subprocess.Popen(["/bin/sh", "-c", rc_mcp.CAP_LOG_SCRIPT, "rc-log", str(log)], stdin=subprocess.PIPE)
    assert writer.stdin is not None
    writer.stdin.write(b"first\n")
    writer.stdin.flush()
    deadline = time.monotonic() + 10
    while not (log.exists() and log.read_bytes() == b"first\n"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    log.unlink()  # the session's files are removed while claude still prints
    writer.stdin.write(b"more\n")
    writer.stdin.close()
    assert writer.wait(timeout=10) == 0
    assert not log.exists()


@pytest.mark.parametrize("swapped", [False, True])
def test_pane_checks_the_directory_once_more_before_claude(tmp_path: Path, swapped: bool) -> None:
    """The pane's first command: a project directory swapped for a symlink after the start script
    checked it never gets claude (which would then run outside the base)."""
    base, outside, bin_dir = tmp_path / "base", tmp_path / "outside", tmp_path / "bin"
    for directory in (base / "p", outside, bin_dir):
        directory.mkdir(parents=True)
    (bin_dir / "tmux").write_text("#!/bin/sh\nexit 0\n")  # `tmux wait-for`: the go-ahead at once
    (bin_dir / "tmux").chmod(0o755)
    checked = str((base / "p").resolve())
    if swapped:
        (base / "p").rmdir()
        (base / "p").symlink_to(outside)
    result = subprocess.run(
        ["/bin/sh", "-c", rc_mcp.PANE_PRELUDE, "rc-x-go", checked + "/", "sh", "-c", "pwd -P; echo claude ran"],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=10,
    )
    if swapped:
        assert (result.returncode, result.stdout.strip()) == (1, rc_mcp.DIRECTORY_CHANGED)
        assert "was replaced (by a symlink?)" in (rc_mcp.explain_failure(result.stdout, "p") or "")
    else:
        assert (result.returncode, result.stdout.splitlines()) == (0, [checked, "claude ran"])


# ── Host keys ─────────────────────────────────────────────────────────────────────────────────


def test_host_key_fingerprint_matches_ssh_keygen(key_files: dict[str, Path]) -> None:
    key_path = key_files["ed25519"]
    expected = subprocess.run(
        ["ssh-keygen", "-lf", str(key_path)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert rc_mcp.host_key_fingerprint(paramiko.Ed25519Key.from_private_key_file(str(key_path))) == expected


async def test_e2e_host_key_trusted_on_first_use_then_pinned(devserver: DevServer, tmp_path: Path) -> None:
    async with ssh_runner(devserver, tmp_path, SSH_KNOWN_HOSTS="") as runner:
        assert (await runner.run("echo hi", timeout=10)).stdout == "hi\n"
    config = runner.config
    recorded = config.host_keys_path.read_text().split()
    expected = devserver.known_hosts.read_text().split()
    assert recorded[1:] == expected[1:] and recorded[0] == f"[127.0.0.1]:{devserver.port}"
    assert stat.S_IMODE(config.host_keys_path.stat().st_mode) == 0o600
    # A later connection to a server with another key is refused.
    config.host_keys_path.write_text(devserver.known_hosts_wrong.read_text())
    logins = devserver.accepted_logins()
    async with ssh_runner(devserver, tmp_path, SSH_KNOWN_HOSTS="") as runner:
        assert runner.config.host_keys_path == config.host_keys_path
        with pytest.raises(rc_mcp.HostKeyError, match="HOST KEY MISMATCH"):
            await runner.run("touch ~/pwned", timeout=10)
    assert devserver.accepted_logins() == logins
    assert not (devserver.home / "pwned").exists()


async def test_e2e_wrong_host_key_runs_nothing(devserver: DevServer, tools: Tools) -> None:
    logins = devserver.accepted_logins()
    async with tools(SSH_KNOWN_HOSTS=str(devserver.known_hosts_wrong)) as (client, _):
        message = await call_error(client, "start_session", name="alpha", path="alpha")
        assert "HOST KEY MISMATCH" in message and "Nothing was run" in message
        assert "list_sessions" not in message
        assert "HOST KEY MISMATCH" in await call_error(client, "list_sessions")
    assert devserver.accepted_logins() == logins  # refused before authentication
    assert devserver.fake_claude_trace() == []
    assert rc_sessions(devserver) == set()


# ── Runners ───────────────────────────────────────────────────────────────────────────────────


async def test_local_runner_streams_long_lines_and_keeps_secrets_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_SECRET", SECRET)
    monkeypatch.setenv("SSH_PASSPHRASE", "pass phrase")
    lines: list[str] = []

    async def on_line(line: str) -> None:
        lines.append(line)

    script = "head -c 300000 /dev/zero | tr '\\0' x; echo; echo \"secret=${MCP_SECRET:-none} ${SSH_PASSPHRASE:-none}\""
    result = await rc_mcp.LocalRunner().run(script, timeout=30, on_line=on_line)
    assert result.exit_status == 0 and len(lines[0]) == 300000
    assert lines[1] == "secret=none none"


async def test_local_runner_timeout_ends_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    with pytest.raises(rc_mcp.RemoteError, match="did not finish within 0.5 s"):
        await rc_mcp.LocalRunner().run(f"sleep 60 & echo $! > {pid_file}; sleep 60", timeout=0.5)
    # gone, or a zombie waiting for an init that does not reap: either way no longer running
    assert wait_pids_gone([int(pid_file.read_text())], timeout=5) == []


@pytest.mark.parametrize("key", ["ed25519_enc", "rsa_enc", "ecdsa_enc", "rsa", "ecdsa"])
async def test_e2e_key_types(devserver: DevServer, tmp_path: Path, key: str) -> None:
    passphrase = devserver.passphrase if key.endswith("_enc") else ""
    async with ssh_runner(
        devserver, tmp_path, SSH_PRIVATE_KEY=str(devserver.keys[key]), SSH_PASSPHRASE=passphrase
    ) as runner:
        assert (await runner.run("id -un", timeout=10)).stdout == devserver.user + "\n"


async def test_e2e_unauthorized_key_is_explained(devserver: DevServer, tmp_path: Path) -> None:
    async with ssh_runner(devserver, tmp_path, SSH_PRIVATE_KEY=str(devserver.keys["unauthorized"])) as runner:
        with pytest.raises(rc_mcp.RemoteError, match="authorized_keys"):
            await runner.run("true", timeout=10)


async def test_e2e_one_connection_shared_within_max_sessions(devserver: DevServer, tmp_path: Path) -> None:
    """sshd's default MaxSessions is 10: twenty overlapping commands must all succeed on one connection."""
    async with ssh_runner(devserver, tmp_path) as runner:
        results = await asyncio.gather(*(runner.run("sleep 0.3; echo ok", timeout=30) for _ in range(20)))
        assert [r.stdout for r in results] == ["ok\n"] * 20
        assert runner.connects == 1


async def wait_until_dropped(runner: rc_mcp.SSHRunner, devserver: DevServer) -> paramiko.Transport:
    """Kill the runner's connection on the server side (its sshd process); return the transport
    once paramiko has noticed."""
    transport = runner.pool._transport
    assert transport is not None and transport.is_active()
    devserver.run("pkill -KILL -u \"$(id -u)\" -f '^sshd: ' || true")
    with anyio.fail_after(10):
        while True:
            if not transport.is_active():
                return transport
            await anyio.sleep(0.01)


async def test_e2e_reconnects_when_the_connection_drops(devserver: DevServer, tmp_path: Path) -> None:
    async with ssh_runner(devserver, tmp_path) as runner:
        assert (await runner.run("echo one", timeout=10)).stdout == "one\n"
        # the drop was noticed before the next command: a new connection is opened for it
        await wait_until_dropped(runner, devserver)
        assert (await runner.run("echo two", timeout=10)).stdout == "two\n"
        assert runner.connects == 2


async def test_e2e_reconnects_when_a_channel_cannot_be_opened(
    devserver: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ssh_runner(devserver, tmp_path) as runner:
        assert (await runner.run("echo one", timeout=10)).stdout == "one\n"
        # the drop is not noticed yet (the transport still looks alive): opening the channel fails,
        # nothing ran, so the command is sent once more on a new connection
        dead = await wait_until_dropped(runner, devserver)
        monkeypatch.setattr(dead, "is_active", lambda: True)
        assert (await runner.run("echo two", timeout=10)).stdout == "two\n"
        assert runner.connects == 2


async def test_e2e_channels_refused_by_max_sessions_are_retried(
    devserver: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past sshd's MaxSessions (10), sshd refuses new channels until earlier ones are reaped: the
    runner waits and retries on the same connection instead of failing the command."""
    monkeypatch.setattr(rc_mcp, "SSH_MAX_CHANNELS", 22)  # let the runner ask for more than sshd allows
    async with ssh_runner(devserver, tmp_path) as runner:
        # with stdin, each is a long command on a channel of its own (not one of the kept shells)
        script = "cat >/dev/null; sleep 0.3; echo ok"
        results = await asyncio.gather(*(runner.run(script, timeout=30, stdin=b"x") for _ in range(20)))
        assert [r.stdout for r in results] == ["ok\n"] * 20
        assert runner.execs >= 20
        # Not asserted: the number of connections. paramiko reports some refusals as SSHException
        # "Unable to open channel." rather than ChannelException, and the runner then takes the
        # connection for lost and opens a second one (the commands still all succeed).


async def test_e2e_a_long_command_runs_on_the_spare_channel_opened_ahead(
    devserver: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a long command, a channel is opened ahead for the next: that one opens none (it
    costs one round trip, not two). A spare that closed meanwhile, or whose connection dropped,
    is replaced without failing the command or retiring a good connection."""
    long = {"timeout": 30, "stdin": b"x"}  # with stdin: a long command, on a channel of its own
    script = "cat >/dev/null; echo ok"
    async with ssh_runner(devserver, tmp_path) as runner:
        assert (await runner.run(script, **long)).stdout == "ok\n"
        await until(lambda: runner._spare is not None)
        spare = runner._spare
        assert spare is not None

        def no_new_channel() -> Any:
            raise AssertionError("a new channel was opened although the spare was there")

        with monkeypatch.context() as patch:
            patch.setattr(runner, "_channel", no_new_channel)
            assert (await runner.run(script, **long)).stdout == "ok\n"
        assert spare[1].closed  # it ran the command and closed with it
        await until(lambda: runner._spare is not None and runner._spare is not spare)

        # Closed by the server while it waited (sshd's ChannelTimeout): the command opens a new one.
        spare = runner._spare
        assert spare is not None
        monkeypatch.setattr(
            spare[1], "exec_command", lambda command: (_ for _ in ()).throw(paramiko.SSHException("Channel closed."))
        )
        assert (await runner.run(script, **long)).stdout == "ok\n"
        assert runner.connects == 1
        monkeypatch.undo()

        # The connection dropped: the spare goes with it, the command reconnects.
        await until(lambda: runner._spare is not None)
        spare = runner._spare
        assert spare is not None
        await wait_until_dropped(runner, devserver)
        assert (await runner.run(script, **long)).stdout == "ok\n"
        assert runner.connects == 2 and spare[1].closed

    assert runner._spare is None  # closed with the runner


async def test_e2e_command_timeout(devserver: DevServer, tmp_path: Path) -> None:
    async with ssh_runner(devserver, tmp_path) as runner:
        with pytest.raises(
            rc_mcp.RemoteError, match=re.escape("the command on the dev server did not finish within 0.5 s")
        ):
            await runner.run("sleep 5", timeout=0.5)
        assert (await runner.run("echo still usable", timeout=10)).stdout == "still usable\n"


@contextlib.contextmanager
def frozen_sshd(lab: DevServer) -> Iterator[None]:
    """The lab's sshd and its per-connection processes stopped (SIGSTOP): connections are
    accepted by the kernel and then nothing answers. Thawed (SIGCONT) on the way out."""
    lab.signal_sshd(signal.SIGSTOP)
    try:
        yield
    finally:
        lab.signal_sshd(signal.SIGCONT)


@pytest.mark.parametrize("connection", ["fresh", "already open", "a spare channel open"])
async def test_e2e_frozen_sshd_fails_within_the_connect_timeout(
    devserver: DevServer, tmp_path: Path, connection: str
) -> None:
    """A frozen sshd (accepts, then silence) costs one SSH_CONNECT_TIMEOUT, not a hang, and the
    error says SSH and the timeout; once sshd runs again the next command works. With a spare
    channel open, a long command's exec request is what goes unanswered."""
    timeout = 2.0
    long = {"stdin": b"x"} if connection == "a spare channel open" else {}
    async with ssh_runner(devserver, tmp_path, SSH_CONNECT_TIMEOUT=f"{timeout:g}") as runner:
        if connection != "fresh":
            assert (await runner.run("cat >/dev/null; echo one", timeout=10, **long)).stdout == "one\n"
        if long:
            await until(lambda: runner._spare is not None)
        with frozen_sshd(devserver):
            started = time.monotonic()
            with pytest.raises(rc_mcp.RemoteError) as failure:
                await runner.run("cat >/dev/null; echo never", timeout=10, **long)
            elapsed = time.monotonic() - started
        message = str(failure.value)
        assert message.strip() and "SSH" in message and f"within {timeout:g} s" in message, message
        assert "responsive" in message and devserver.host in message, message
        assert elapsed < 2 * timeout, (elapsed, message)
        assert (await runner.run("cat >/dev/null; echo two", timeout=10, **long)).stdout == "two\n"


async def test_e2e_short_scripts_run_in_one_kept_shell(devserver: DevServer, tmp_path: Path) -> None:
    """Short scripts share a kept shell: each in a subshell (nothing it sets or changes stays, its
    stdin is /dev/null), with its own stdout, stderr and exit status, output without a final
    newline kept as it is — and no channel of its own."""
    async with ssh_runner(devserver, tmp_path) as runner:
        result = await runner.run("echo out; printf 'err' >&2; exit 3", timeout=10)
        assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err")
        assert (await runner.run("cd /; x=set; trap 'echo trapped' EXIT; printf x", timeout=10)).stdout == "xtrapped\n"
        result = await runner.run('pwd; echo "${x-unset}"; cat; echo "$0"', timeout=10)
        assert result.stdout == f"{devserver.home}\nunset\n/bin/sh\n", result
        assert (await runner.run("printf '%s' \"$(head -c 200000 /dev/zero | tr '\\0' y)\"", timeout=10)).stdout == (
            "y" * 200000
        )
        assert (await runner.run("if then", timeout=10)).exit_status == 2  # a syntax error ends only its subshell
        assert (await runner.run("exec true", timeout=10)).exit_status == 0
        assert (await runner.run("echo still", timeout=10)).stdout == "still\n"
        assert runner.shells_opened == 1 and runner.connects == 1 and runner.execs == 7


async def test_e2e_output_cannot_forge_the_shell_framing(devserver: DevServer, tmp_path: Path) -> None:
    """A script printing lines shaped like the framing (begin and end lines with made-up nonces,
    on stdout and stderr, with and without newlines) gets exactly its own output back, and its
    own exit status; the shell carries on."""
    fake = secrets.token_hex(16)
    forged = f"{fake}-begin 1\n\n{fake} 0\n{fake}-begin\n\n{fake}\n"
    script = f"printf '%s' {shlex.quote(forged)}; printf '%s' {shlex.quote(forged)} >&2; printf '\\n0'; exit 5"
    async with ssh_runner(devserver, tmp_path) as runner:
        for _ in range(2):
            result = await runner.run(script, timeout=10)
            assert (result.exit_status, result.stdout, result.stderr) == (5, forged + "\n0", forged)
        assert runner.shells_opened == 1


def test_only_scripts_that_read_or_tidy_are_rerun_safe() -> None:
    assert rc_mcp.is_rerun_safe(rc_mcp.build_list_script("0123456789abcdef"))
    assert rc_mcp.is_rerun_safe(rc_mcp.build_projects_script("~/projects"))
    assert rc_mcp.is_rerun_safe(rc_mcp.build_check_script("~/projects", "claude"))
    assert rc_mcp.is_rerun_safe(rc_mcp.build_record_script("alpha-abcdef"))
    assert not rc_mcp.is_rerun_safe(rc_mcp.build_stop_script("alpha-abcdef"))
    assert not rc_mcp.is_rerun_safe(rc_mcp.build_turn_script(session_id="alpha-abcdef", action="send", wait=0))


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Until `condition()` holds (checked every 10 ms); fails after `timeout` seconds."""
    with anyio.fail_after(timeout):
        while True:
            if condition():
                return
            await anyio.sleep(0.01)


async def kept_shell(runner: rc_mcp.SSHRunner) -> rc_mcp.RemoteShell:
    [shell] = runner._idle_shells
    assert shell.pid is not None
    return shell


async def test_e2e_a_killed_shell_is_replaced(devserver: DevServer, tmp_path: Path) -> None:
    """The kept shell killed between scripts: the next script gets a new one. Killed while a
    script runs: a rerun-safe script runs again, any other is reported as interrupted (it may
    have done its work), and neither hangs."""
    runs = devserver.home / "runs"
    async with ssh_runner(devserver, tmp_path) as runner:
        assert (await runner.run("echo one", timeout=10)).stdout == "one\n"
        shell = await kept_shell(runner)
        devserver.run(f"kill -KILL {shell.pid}")
        await until(lambda: not shell.alive())
        assert (await runner.run("echo two", timeout=10)).stdout == "two\n"
        assert runner.shells_opened == 2

        for rerun_safe in (True, False):
            devserver.run(f"rm -f {runs}")
            script = (rc_mcp.RERUN_SAFE + "\n" if rerun_safe else "") + f"echo ran >> {runs}; sleep 1; echo done"
            shell = await kept_shell(runner)  # the one the script will run in
            outcome: list[Any] = []
            async with anyio.create_task_group() as group:

                async def run_it(script: str = script, outcome: list[Any] = outcome) -> None:
                    try:
                        outcome.append(await runner.run(script, timeout=10))
                    except rc_mcp.RemoteError as exc:
                        outcome.append(exc)

                group.start_soon(run_it)
                await until(runs.exists)
                devserver.run(f"kill -KILL {shell.pid}")
            if rerun_safe:
                assert isinstance(outcome[0], rc_mcp.CommandResult) and outcome[0].stdout == "done\n", outcome
                assert runs.read_text() == "ran\nran\n"
            else:
                assert isinstance(outcome[0], rc_mcp.CommandInterrupted), outcome
                assert runs.read_text() == "ran\n"
        assert (await runner.run("echo three", timeout=10)).stdout == "three\n"
        assert runner.connects == 1


async def test_e2e_a_dropped_connection_reruns_only_what_is_rerun_safe(devserver: DevServer, tmp_path: Path) -> None:
    """The connection drops while a script runs in a kept shell: a rerun-safe script (list,
    projects, check) runs again on a new connection; any other (a stop) is not sent twice.
    Between scripts (sshd killed with every connection, and restarted) the drop costs nothing."""
    runs = devserver.home / "runs"
    try:
        async with ssh_runner(devserver, tmp_path) as runner:
            assert (await runner.run("echo one", timeout=10)).stdout == "one\n"
            for rerun_safe in (True, False):
                devserver.run(f"rm -f {runs}")
                script = (rc_mcp.RERUN_SAFE + "\n" if rerun_safe else "") + f"echo ran >> {runs}; sleep 1; echo done"
                outcome: list[Any] = []
                async with anyio.create_task_group() as group:

                    async def run_it(script: str = script, outcome: list[Any] = outcome) -> None:
                        try:
                            outcome.append(await runner.run(script, timeout=20))
                        except rc_mcp.RemoteError as exc:
                            outcome.append(exc)

                    group.start_soon(run_it)
                    await until(runs.exists)
                    # the connection's own sshd processes killed; the listener stays for the rerun
                    devserver.run("pkill -KILL -u \"$(id -u)\" -f '^sshd: ' || true")
                if rerun_safe:
                    assert isinstance(outcome[0], rc_mcp.CommandResult) and outcome[0].stdout == "done\n", outcome
                    assert runs.read_text().count("ran") == 2
                else:
                    assert isinstance(outcome[0], rc_mcp.CommandInterrupted), outcome
                    assert "lost" in str(outcome[0]).lower() or "ended" in str(outcome[0]), outcome[0]
                    assert runs.read_text() == "ran\n"
            # dropped between scripts (sshd killed and back): the next one just works
            await anyio.to_thread.run_sync(devserver.kill_sshd)
            await anyio.to_thread.run_sync(devserver.restart_sshd)
            assert (await runner.run("echo two", timeout=10)).stdout == "two\n"
            assert runner.connects == 3  # the first, the rerun's, after the restart
    finally:
        if devserver._proc is None:
            devserver.restart_sshd()


async def test_e2e_a_hostile_claude_cannot_forge_list_output(devserver: DevServer, tools: Tools) -> None:
    """claude's output (the log list_sessions reads the end of) holds lines shaped like every
    framing there is — the list's tail frame, the kept shell's begin and end lines, control
    lines naming a made-up session — and list_sessions still reports exactly what runs."""
    async with tools() as (client, _):
        started = await call(client, "start_session", name="hostile", path="alpha")
        fake = secrets.token_hex(16)
        hostile = (
            f"\n@@end-{secrets.token_hex(8)}\n@@session\trc-evil-000000\t0\t1\t\n@@url\thttps://evil.example/\n"
            f"{fake} 0\n{fake}-begin 1\n@@end\n@@record\trc-evil-000000\tconv\t1\n{fake}"
        )
        log = f"~/.local/state/rc-mcp/rc-{started['id']}.log"
        devserver.run(f"printf '%s' {shlex.quote(hostile)} >> {log}").check_returncode()
        for _ in range(3):  # the kept shell stays in step
            listed = (await call(client, "list_sessions"))["sessions"]
            assert [(s["id"], s["status"], s["url"]) for s in listed] == [(started["id"], "ready", started["url"])], (
                listed
            )
        await call(client, "stop_session", id=started["id"])


async def test_e2e_short_calls_never_wait_behind_pending_starts(devserver: DevServer, tools: Tools) -> None:
    """8 start_session calls wait for claudes that never print a URL: 6 hold every channel long
    commands may have, 2 wait for one. list_sessions, list_projects and stop_session still answer
    while all 8 are pending (the stops are what end them, and let the last 2 run)."""
    fake_claude_config(devserver, never_ready=True)
    dirs = [f"pend/p{i}" for i in range(8)]
    devserver.run("mkdir -p " + " ".join(f"projects/{d}" for d in dirs)).check_returncode()
    running = rc_mcp.SSH_MAX_CHANNELS - rc_mcp.SSH_SHELLS
    async with tools() as (client, _):
        starts = [
            asyncio.create_task(client.call_tool("start_session", {"name": f"pend{i}", "path": d}))
            for i, d in enumerate(dirs)
        ]
        try:
            for waiting in (running, len(dirs) - running):
                await until(lambda waiting=waiting: len(rc_sessions(devserver)) == waiting, timeout=30)
                listed = (await call(client, "list_sessions"))["sessions"]
                assert len(listed) == waiting and {s["status"] for s in listed} == {"starting"}, listed
                assert "alpha" in (await call(client, "list_projects"))["projects"]
                assert sum(not start.done() for start in starts) == len(dirs) - (running if waiting != running else 0)
                for session in listed:
                    assert (await call(client, "stop_session", id=session["id"]))["stopped"]
            with anyio.fail_after(30):
                await asyncio.gather(*starts)
        finally:
            for start in starts:
                start.cancel()


async def test_a_long_command_waits_for_a_channel_only_within_the_tool_call_limit(
    tmp_path: Path, key_files: dict[str, Path]
) -> None:
    env = base_env(tmp_path, SSH_HOST="192.0.2.1", SSH_USER="u", SSH_PRIVATE_KEY=str(key_files["ed25519"]))
    runner = rc_mcp.SSHRunner(rc_mcp.load_config(env))
    runner._channels = asyncio.Semaphore(0)  # every long-command channel taken

    async def line(_: str) -> None:
        return None

    with pytest.raises(rc_mcp.RemoteError, match="long commands .* already running"):
        await runner.run("true", timeout=rc_mcp.TOOL_CALL_SECONDS - 0.5, on_line=line)


# ── Sessions ──────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "name, ok",
    [
        ("alpha", True),
        ("a", True),
        ("A1_b-2", True),
        ("x" * 41, True),
        ("x" * 42, False),
        ("", False),
        ("-flag", False),
        ("_x", False),
        ("a b", False),
        ("a;rm -rf ~", False),
        ("$(id)", False),
        ("`id`", False),
        ("a\nb", False),
        ("alpha\n", False),  # `$` in Python regexes matches before a trailing newline; fullmatch does not
        ("ünïcode", False),
    ],
)
def test_validate_name(name: str, ok: bool) -> None:
    if ok:
        assert rc_mcp.validate_name(name) == name
    else:
        with pytest.raises(ValueError, match="invalid name"):
            rc_mcp.validate_name(name)


@pytest.mark.parametrize(
    "session_id, ok",
    [
        ("alpha-a1b2c3", True),
        ("my-project-000000", True),
        ("al", False),  # the prefix that killed rc-alpha-… in the original server
        ("alpha-a1b2c", False),
        ("alpha-A1B2C3", False),
        ("alpha-a1b2c3 ", False),
        ("alpha-a1b2c3\n", False),
        ("alpha-a1b2c3;x", False),
        ("-t-a1b2c3", False),
        ("alpha-a1b2c3-", False),
    ],
)
def test_validate_session_id(session_id: str, ok: bool) -> None:
    if ok:
        assert rc_mcp.validate_session_id(session_id) == session_id
    else:
        with pytest.raises(ValueError, match="list_sessions"):
            rc_mcp.validate_session_id(session_id)


@pytest.mark.parametrize(
    "path, normalized",
    [
        ("alpha", "alpha"),
        ("org/repo", "org/repo"),
        ("org//repo/", "org/repo"),
        ("web app", "web app"),
        ("nested/deeper/gamma", "nested/deeper/gamma"),
        ("-rf", "-rf"),  # harmless: always used as "$base/$rel"
        ('it\'s "quoted" $(id) `id` ;|&', 'it\'s "quoted" $(id) `id` ;|&'),
        ("/etc", None),
        ("..", None),
        ("../etc", None),
        ("alpha/../../etc", None),
        ("./alpha", None),
        (".", None),
        ("", None),
        ("a\nb", None),
        ("a\x00b", None),
        ("a\tb", None),
        ("a\x1b[31m", None),
        ("x" * 1025, None),
    ],
)
def test_validate_project_path(path: str, normalized: str | None) -> None:
    if normalized is not None:
        assert rc_mcp.validate_project_path(path) == normalized
    else:
        with pytest.raises(ValueError, match="invalid path"):
            rc_mcp.validate_project_path(path)


async def test_missing_tmux_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with sh's helpers but no tmux
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "projects" / "alpha").mkdir(parents=True)
    config = rc_mcp.load_config(base_env(tmp_path, PROJECTS_BASE_DIR=str(tmp_path / "projects")))
    with pytest.raises(rc_mcp.ToolFailure, match="tmux is not installed on the dev server"):
        await rc_mcp.Sessions(config, rc_mcp.LocalRunner()).start("alpha", "alpha")


async def test_e2e_every_listed_project_is_accepted(tools: Tools) -> None:
    async with tools() as (client, _):
        projects = (await call(client, "list_projects"))["projects"]
        assert projects == EXPECTED_PROJECTS
        started = await asyncio.gather(*(call(client, "start_session", name="p", path=project) for project in projects))
        assert [(s["status"], s["path"]) for s in started] == [("ready", project) for project in projects]
        listed = (await call(client, "list_sessions"))["sessions"]
        assert sorted((s["path"], s["id"]) for s in listed) == sorted((s["path"], s["id"]) for s in started)


async def test_e2e_start_reports_progress_in_order(devserver: DevServer, tools: Tools) -> None:
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    # Connecting lasts long enough for the start script (polling every 0.1 s) to report it
    fake_claude_config(devserver, names={"prog": {"connect_delay": 0.6}})
    async with tools() as (client, _):
        result = await client.call_tool(
            "start_session", {"name": "prog", "path": "beta"}, progress_callback=on_progress
        )
        assert not result.is_error, result.content
    assert [p for p, _ in seen] == [0, 1, 2, 3]
    messages = [m or "" for _, m in seen]
    assert (
        "dev server" in messages[0]
        and "launched" in messages[1]
        and "connecting" in messages[2]
        and "ready" in messages[3]
    )


async def test_e2e_stop_by_prefix_kills_nothing(devserver: DevServer, tools: Tools) -> None:
    async with tools() as (client, _):
        # name "alpha-000000" gives id "alpha-000000-xxxxxx": the bare name is a valid id and a
        # prefix of the real tmux session name.
        started = await call(client, "start_session", name="alpha-000000", path="alpha")
        session = "rc-" + started["id"]
        refused = await call(client, "stop_session", id="alpha-000000")
        assert refused["stopped"] is False and "list_sessions" in refused["message"]
        assert "ids look like 'my-project-a1b2c3'" in await call_error(client, "stop_session", id="al")
        assert "call list_sessions" in await call_error(client, "stop_session", id=started["id"][:-1])
        assert rc_sessions(devserver) == {session}
        assert (await call(client, "stop_session", id=started["id"]))["stopped"] is True
        assert rc_sessions(devserver) == set()


# Every input violation reaches the model as the rule's own text, never pydantic's report.
BAD_INPUTS = [
    (
        "stop_session",
        {"id": "al"},
        "no session 'al': ids look like 'my-project-a1b2c3' (the name, '-', 6 hex digits; with several dev servers "
        "the host and '.' first) — call list_sessions",
    ),
    ("stop_session", {"id": 42}, "no session 42 (not a string): ids look like"),
    ("stop_session", {}, "id is required: Session id exactly as returned by start_session or list_sessions"),
    ("start_session", {"name": "bad name", "path": "alpha"}, "invalid name 'bad name': use 1-41 letters, digits"),
    ("start_session", {"name": "x" * 42, "path": "alpha"}, "invalid name 'xxxxxxxx"),
    ("start_session", {"path": "alpha"}, "name is required: Short label shown in claude.ai/code"),
    ("start_session", {"name": "x", "path": "/etc"}, "invalid path '/etc': give a directory relative to the projects"),
    ("start_session", {"name": "x", "path": "a\x1b[31m"}, "— call list_projects for the accepted values"),
    (
        "start_session",
        {"name": "x", "path": "alpha", "permission_mode": "yolo"},
        "invalid permission_mode 'yolo': use one of acceptEdits, auto, bypassPermissions, default, dontAsk, "
        "manual, plan",
    ),
]


async def test_e2e_bad_inputs_get_the_written_message(devserver: DevServer, tools: Tools) -> None:
    async with tools() as (client, _):
        for tool, arguments, expected in BAD_INPUTS:
            message = await call_error(client, tool, **arguments)
            assert expected in message, (tool, arguments, message)
            assert "validation error" not in message and "[type=" not in message
        assert devserver.fake_claude_trace() == []
        # The constraints still reach clients in the schema.
        schema = {t.name: t.input_schema for t in (await client.list_tools()).tools}
        assert schema["stop_session"]["properties"]["id"]["pattern"] == rc_mcp.SESSION_ID.pattern
        assert schema["start_session"]["properties"]["name"]["maxLength"] == 41
        assert "yolo" not in json.dumps(schema["start_session"]["properties"]["permission_mode"])
        assert "plan" in json.dumps(schema["start_session"]["properties"]["permission_mode"])


async def test_e2e_start_refusals_name_the_fix(devserver: DevServer, tools: Tools) -> None:
    async with tools() as (client, _):
        assert "list_projects" in await call_error(client, "start_session", name="x", path="missing")
        assert "'..'" in await call_error(client, "start_session", name="x", path="alpha/../../..")
        assert "invalid path '/etc'" in await call_error(client, "start_session", name="x", path="/etc")
        assert "outside" in await call_error(client, "start_session", name="x", path="escape")
        assert "invalid name '$(id)'" in await call_error(client, "start_session", name="$(id)", path="alpha")
        assert devserver.fake_claude_trace() == []
        assert rc_sessions(devserver) == set()


async def test_e2e_claude_failure_is_reported_and_cleaned_up(
    devserver: DevServer, tools: Tools, tmp_path: Path
) -> None:
    """claude exits before printing a URL: its own words and the fix reach the user, nothing stays.
    Every failure text takes this one path; test_explain_failure_names_the_fix has the fix for each."""
    fake_claude_config(devserver, names={"signedout": {"logged_in": False}})
    async with tools() as (client, _):
        message = await call_error(client, "start_session", name="signedout", path="beta")
    assert "You must be logged in to use Remote Control" in message  # claude's last output is quoted
    assert FAILURE_FIXES["signed_out"] in message
    assert "claude remote-control exited" in message and "nothing is left running" in message
    assert rc_sessions(devserver) == set()
    assert devserver.run("ls ~/.local/state/rc-mcp").stdout == ""


async def test_e2e_no_url_in_time_reports_starting(devserver: DevServer, tools: Tools) -> None:
    fake_claude_config(devserver, names={"silent": {"never_ready": True}})
    # START_TIMEOUT cannot be set below 5 s; the configuration is injected instead, so the test
    # does not sit through the wait it checks.
    async with tools(configure=lambda c: dataclasses.replace(c, start_timeout=1)) as (client, _):
        started = await call(client, "start_session", name="silent", path="beta")
        assert started["status"] == "starting" and started["url"] is None
        assert "no URL within 1 s" in started["message"] and "list_sessions" in started["message"]
        assert rc_sessions(devserver) == {"rc-" + started["id"]}  # left running
        listed = (await call(client, "list_sessions"))["sessions"]
        assert [(s["id"], s["status"], s["url"]) for s in listed] == [(started["id"], "starting", None)]


async def test_e2e_sshd_killed_during_start_session(devserver: DevServer, tools: Tools) -> None:
    """sshd dies (with every connection) while start_session waits for claude's URL: the model
    is told the connection was lost, that the session may still be starting and to call
    list_sessions — not the script's control lines or paramiko's exit status -1."""
    fake_claude_config(devserver, connect_delay=30)
    launched = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if progress == 1:
            launched.set()

    try:
        async with tools() as (client, _):
            async with anyio.create_task_group() as group:

                async def kill_once_launched() -> None:
                    with anyio.fail_after(20):
                        await launched.wait()
                    await anyio.to_thread.run_sync(devserver.kill_sshd)

                group.start_soon(kill_once_launched)
                with anyio.fail_after(20):
                    result = await client.call_tool(
                        "start_session", {"name": "crash", "path": "alpha"}, progress_callback=on_progress
                    )
            text = " ".join(getattr(block, "text", "") for block in result.content)
            assert result.is_error, result.structured_content
            assert "Lost the connection to the dev server" in text, text
            assert "may still be starting" in text and "call list_sessions" in text, text
            assert "@@" not in text and "exit -1" not in text, text
            await anyio.to_thread.run_sync(devserver.restart_sshd)
            # the same server reconnects, and the session it launched is there, still starting
            listed = (await call(client, "list_sessions"))["sessions"]
            assert [(s["name"], s["status"]) for s in listed] == [("crash", "starting")], listed
    finally:
        if devserver._proc is None:
            devserver.restart_sshd()


async def test_e2e_list_sessions_is_one_round_trip(tools: Tools) -> None:
    async with tools() as (client, server):
        for i, path in enumerate(["alpha", "beta", "org/repo"]):
            await call(client, "start_session", name=f"s{i}", path=path)
        runner = server.app.runner
        before = runner.execs
        listed = (await call(client, "list_sessions"))["sessions"]
        assert sorted((s["name"], s["path"], s["status"]) for s in listed) == [
            ("s0", "alpha", "ready"),
            ("s1", "beta", "ready"),
            ("s2", "org/repo", "ready"),
        ]
        assert runner.execs - before == 1


async def test_e2e_list_removes_only_its_own_stale_metadata(devserver: DevServer, tmp_path: Path) -> None:
    devserver.run(
        "mkdir -p ~/.local/state/rc-mcp && cd ~/.local/state/rc-mcp && "
        "printf 'name\\tgone\\npath\\talpha\\n' > rc-gone-abcdef.meta && : > rc-gone-abcdef.log && "
        "echo keep > other-file && mkdir -p ~/elsewhere && : > ~/elsewhere/rc-x-000000.meta"
    )
    async with ssh_runner(devserver, tmp_path) as runner:
        assert await rc_mcp.Sessions(runner.config, runner).list_all() == []
    left = devserver.run("ls ~/.local/state/rc-mcp; ls ~/elsewhere").stdout.split()
    assert left == ["other-file", "rc-x-000000.meta"]


async def test_e2e_first_run_consent_is_answered(devserver: DevServer, tools: Tools) -> None:
    settings = devserver.claude_json()
    settings.pop("remoteDialogSeen", None)
    devserver.write_claude_json(settings)
    async with tools() as (client, _):
        started = await call(client, "start_session", name="first", path="alpha")
    assert started["status"] == "ready" and ENV_URL.match(started["url"])
    assert devserver.claude_json().get("remoteDialogSeen") is True  # answered y, as a person would


async def test_e2e_untrusted_directory_is_explained_and_cleaned_up(
    devserver: DevServer, tools: Tools, tmp_path: Path
) -> None:
    settings = devserver.claude_json()
    settings["projects"] = {}
    devserver.write_claude_json(settings)
    async with tools() as (client, _):
        message = await call_error(client, "start_session", name="untrusted", path="alpha")
    assert "does not trust alpha yet" in message and "run `claude` once in that directory" in message
    assert "Nothing is left running" in message and "Trust" in message  # claude's own prompt is quoted
    assert rc_sessions(devserver) == set()
    assert devserver.run("ls ~/.local/state/rc-mcp").stdout == ""


async def test_e2e_missing_claude_names_claude_bin(devserver: DevServer, tools: Tools) -> None:
    devserver.uninstall_user_claude()
    async with tools() as (client, _):
        message = await call_error(client, "start_session", name="x", path="alpha")
    assert "was not found on the dev server" in message and "CLAUDE_BIN" in message
    assert rc_sessions(devserver) == set()
    async with tools(CLAUDE_BIN=str(devserver.claude_abs)) as (client, _):
        assert (await call(client, "start_session", name="x", path="alpha"))["status"] == "ready"


async def test_e2e_one_session_per_directory(devserver: DevServer, tools: Tools) -> None:
    async with tools() as (client, _):
        first_start = await call(client, "start_session", name="one", path="alpha")
        again = await call(client, "start_session", name="two", path="alpha/")  # same directory
        assert again["already_running"] is True and (again["id"], again["url"]) == (
            first_start["id"],
            first_start["url"],
        )
        assert "already running" in again["message"]
        assert rc_sessions(devserver) == {"rc-" + first_start["id"]}
        # after a stop, the directory is free again at once
        assert (await call(client, "stop_session", id=first_start["id"]))["stopped"] is True
        fresh = await call(client, "start_session", name="three", path="alpha")
        assert fresh["status"] == "ready" and not fresh["already_running"]


async def test_e2e_simultaneous_starts_in_one_directory_share_a_session(
    devserver: DevServer, tools: Tools, tmp_path: Path
) -> None:
    async with tools() as (client, _):
        results = await asyncio.gather(*(call(client, "start_session", name=f"race{i}", path="beta") for i in range(3)))
    assert len({r["id"] for r in results}) == 1
    assert sorted(r["already_running"] for r in results) == [False, True, True]
    assert len(rc_sessions(devserver)) == 1


async def test_e2e_variables_that_break_remote_control_never_reach_claude(
    devserver: DevServer, tools: Tools, tmp_path: Path
) -> None:
    # A tmux server started from a shell with these set passes them to every pane it creates.
    devserver.run(
        "DISABLE_TELEMETRY=0 DO_NOT_TRACK=1 ANTHROPIC_API_KEY=sk-test tmux new-session -d -s users-own sleep 600"
    )
    async with tools() as (client, _):
        assert (await call(client, "start_session", name="clean", path="alpha"))["status"] == "ready"
    [trace] = devserver.fake_claude_trace()
    assert {"DISABLE_TELEMETRY", "DO_NOT_TRACK", "ANTHROPIC_API_KEY"} & set(trace["env_present"]) == set()


async def test_e2e_permission_mode(devserver: DevServer, tools: Tools) -> None:
    async with tools(PERMISSION_MODE="acceptEdits") as (client, _):
        await call(client, "start_session", name="plan", path="alpha", permission_mode="plan")
        await call(client, "start_session", name="default", path="beta")
        assert "permission_mode" in await call_error(
            client, "start_session", name="x", path="org/repo", permission_mode="yolo"
        )
    argvs = [t["argv"] for t in devserver.fake_claude_trace()]
    assert argvs == [
        ["remote-control", "--name", "plan", "--spawn", "same-dir", "--permission-mode", "plan"],
        ["remote-control", "--name", "default", "--spawn", "same-dir", "--permission-mode", "acceptEdits"],
    ]  # the invalid one never reached claude


async def wait_for_status(client: Client, session_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        sessions = {s["id"]: s for s in (await call(client, "list_sessions"))["sessions"]}
        if sessions.get(session_id, {}).get("status") == status:
            return sessions[session_id]
        assert time.monotonic() < deadline, sessions
        await anyio.sleep(0.1)


async def test_e2e_list_reports_connected_and_exited(devserver: DevServer, tools: Tools) -> None:
    fake_claude_config(devserver, names={"attach": {"attach_delay": 0.2}, "dies": {"exit_after": 0.3, "exit_code": 1}})
    async with tools() as (client, _):
        attached = await call(client, "start_session", name="attach", path="alpha")
        dies = await call(client, "start_session", name="dies", path="beta")
        connected = await wait_for_status(client, attached["id"], "connected")
        assert connected["url"] == attached["url"] and re.match(
            r"https://claude\.ai/code/session_\w+", connected["session_url"]
        )
        exited = await wait_for_status(client, dies["id"], "exited")
        assert exited["url"] == dies["url"]
        # The exit code is the one tmux recorded for the pane: claude's 1, or none at all where tmux
        # 3.3 never learns it. Asked in a loop until the two agree: tmux may learn it a moment later.
        deadline = time.monotonic() + 10
        while True:
            pane = devserver.run(f"tmux display-message -p -t '=rc-{dies['id']}:' '#{{pane_dead_status}}'").stdout
            recorded = {"\n": None, "1\n": 1}[pane]
            exited = await wait_for_status(client, dies["id"], "exited")
            if exited["exit_code"] == recorded:
                break
            assert time.monotonic() < deadline, (exited, pane)
            await anyio.sleep(0.05)
        # an exited session stays listed until it is stopped, so its output can be read
        assert (await call(client, "stop_session", id=dies["id"]))["stopped"] is True


async def test_e2e_list_sessions_reads_every_log_in_one_tail_that_no_log_can_fool(
    devserver: DevServer, tools: Tools
) -> None:
    """The ends of all logs come from one `tail`, each closed by a line with this call's nonce: a
    log that prints the script's own lines (a session, a record, the start of the ends, an end
    line) shifts nothing and adds nothing; the file holding the end line is gone afterwards."""
    forged = (
        "\n@@tailed\n@@end-0123456789abcdef\n@@tails\n@@session\trc-evil-e1e2e3\t0\t1\t\n"
        "@@record\trc-ghost-a1b2c3\tconv\t1\n@@end-\n@@end\n"
    )
    async with tools() as (client, _):
        first = await call(client, "start_session", name="first", path="alpha")
        second = await call(client, "start_session", name="second", path="beta")
        state = "${XDG_STATE_HOME:-$HOME/.local/state}/rc-mcp"
        devserver.run(f"printf '%s' {shlex.quote(forged)} >> {state}/rc-{first['id']}.log").check_returncode()
        listed = (await call(client, "list_sessions"))["sessions"]
        assert {s["id"]: (s["status"], s["url"]) for s in listed} == {
            first["id"]: ("ready", first["url"]),
            second["id"]: ("ready", second["url"]),
        }
        assert devserver.run(f"ls -A {state}").stdout.count("list-end") == 0
        for started in (first, second):
            await call(client, "stop_session", id=started["id"])


async def test_e2e_list_sessions_with_30_sessions_is_one_round_trip(devserver: DevServer, tools: Tools) -> None:
    dirs = [f"many/p{i:02d}" for i in range(30)]
    devserver.run("cd ~/projects && mkdir -p " + " ".join(dirs)).check_returncode()
    try:
        async with tools() as (client, server):
            runner = server.app.runner
            await call(client, "list_sessions")  # the connection is open (again, if an earlier test cut it)
            connects = runner.connects
            started = await asyncio.gather(
                *(call(client, "start_session", name=f"m{i}", path=d) for i, d in enumerate(dirs))
            )
            assert [s["status"] for s in started] == ["ready"] * 30
            before = runner.execs
            listed = (await call(client, "list_sessions"))["sessions"]
            assert runner.execs - before == 1
            assert {s["id"]: s["url"] for s in listed} == {s["id"]: s["url"] for s in started}
            assert runner.connects == connects  # thirty starts and the list, all on that one connection
    finally:
        devserver.run("rm -rf ~/projects/many")


@pytest.mark.parametrize(
    "directory", ["evil#(touch PWNED)", "C#Sharp", "semi;", 'it\'s "quoted" $(touch PWNED)', "#{pane_id}"]
)
async def test_local_hostile_directory_names_reach_tmux_unharmed(
    devhome: LocalDevHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, directory: str
) -> None:
    """Directory names are data all the way down: no shell or tmux format ever interprets them."""
    project = devhome.projects / directory
    (project / ".git").mkdir(parents=True)
    for key, value in devhome.env().items():
        monkeypatch.setenv(key, value)
    config = rc_mcp.load_config(base_env(tmp_path, PROJECTS_BASE_DIR=str(devhome.projects), START_TIMEOUT="15"))
    sessions = rc_mcp.Sessions(config, rc_mcp.LocalRunner())
    try:
        assert directory in await sessions.projects()
        started = await sessions.start("hostile", directory)
        assert started.status == "ready"
        trace = json.loads((devhome.home / ".fake-claude" / "trace.jsonl").read_text().splitlines()[-1])
        assert trace["cwd"] == str(project)  # claude runs exactly there, not in a fallback directory
        assert [s.id for s in await sessions.list_all()] == [started.id]
        assert (await sessions.stop(started.id)).stopped is True
        assert files_named("PWNED", tmp_path, devhome.home, Path.cwd()) == []
    finally:
        shutil.rmtree(project)


async def test_local_hostile_state_directory_reaches_pipe_pane_unharmed(
    devhome: LocalDevHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log path goes through sh and tmux format expansion in pipe-pane: quoted for both."""
    state_home = tmp_path / "st#{pane_id}'$(touch PWNED)#(touch PWNED)"
    for key, value in devhome.env({"XDG_STATE_HOME": str(state_home)}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XDG_STATE_HOME", str(state_home))
    monkeypatch.chdir(tmp_path)
    config = rc_mcp.load_config(base_env(tmp_path, PROJECTS_BASE_DIR=str(devhome.projects), START_TIMEOUT="15"))
    sessions = rc_mcp.Sessions(config, rc_mcp.LocalRunner())
    started = await sessions.start("state", "alpha")
    assert started.status == "ready"
    log_file = state_home / "rc-mcp" / f"rc-{started.id}.log"
    assert started.url is not None and started.url.split("=", 1)[1] in log_file.read_text()
    assert files_named("PWNED", tmp_path, devhome.home) == []


def url_events(raw: str) -> list[tuple[str, list[str]]]:
    urls = rc_mcp.extract_remote_control_urls(raw)
    return [("url", [urls.environment_url])] if urls.environment_url else []


def start_events(status: str, transcript: str, exit_code: str = "") -> list[tuple[str, list[str]]]:
    raw = (TRANSCRIPTS / f"{transcript}.log").read_bytes().decode() if transcript else ""
    events = [("state", ["launched"]), ("state", ["connecting"])]
    if status == "ready":
        events += url_events(raw)
    events += [("status", [status])] + ([("exit", [exit_code])] if status == "exited" else []) + [("tail", [raw])]
    return events


START_CONFIG = rc_mcp.Config(
    mcp_secret=SECRET,
    server_url="https://rc.example.com",
    projects_base_dir="/srv/p",
    ssh_host=None,
    ssh_user="",
    ssh_port=22,
    ssh_key=None,
    known_hosts=None,
    claude_bin="claude",
    spawn_worktree=False,
    permission_mode=None,
    token_store_path=Path("/nonexistent/tokens.json"),
    host="127.0.0.1",
    port=3000,
    start_timeout=45,
    command_timeout=30,
    connect_timeout=10,
    access_token_ttl=3600,
    refresh_token_ttl=86400,
)


@pytest.mark.parametrize(
    "events, status, url, message",
    [
        (
            start_events("ready", "2.1.330-ready"),
            "ready",
            "https://claude.ai/code?environment=env_01Ready330",
            "is ready in alpha",
        ),
        (
            start_events("ready", "2.1.197-ready"),
            "ready",
            "https://claude.ai/code?environment=env_01Ready197",
            "Open https://claude.ai/code?environment=env_01Ready197",
        ),
        (
            start_events("ready", "2.1.84-ready"),
            "ready",
            "https://claude.ai/code?bridge=env_01Ready84",
            "stop it with stop_session",
        ),
        (start_events("ready", "2.1.330-connecting"), "starting", None, "printed no URL within 45 s"),
        (start_events("timeout", "2.1.330-connecting"), "starting", None, "call list_sessions in a minute"),
        (start_events("timeout", "2.1.330-consent-prompt"), "starting", None, "Last output:"),
        (
            [
                ("existing", ["rc-alpha-0a1b2c"]),
                *url_events((TRANSCRIPTS / "2.1.330-connected.log").read_text()),
                ("tail", [(TRANSCRIPTS / "2.1.330-connected.log").read_text()]),
            ],
            "connected",
            "https://claude.ai/code?environment=env_01Conn330",
            "already running in alpha",
        ),
        (
            [("existing", ["rc-alpha-0a1b2c"]), ("tail", [""])],
            "starting",
            None,
            "it has no URL yet; call list_sessions",
        ),
    ],
)
def test_interpret_start_outcomes(
    events: list[tuple[str, list[str]]], status: str, url: str | None, message: str
) -> None:
    started = rc_mcp.interpret_start(events, session_id="alpha-123abc", name="alpha", path="alpha", config=START_CONFIG)
    assert (started.status, started.url) == (status, url)
    assert message in started.message
    if status == "connected":
        assert (
            started.already_running
            and started.id == "alpha-0a1b2c"
            and started.session_url == "https://claude.ai/code/session_01Attached"
        )


@pytest.mark.parametrize(
    "events, failure",
    [
        (start_events("attention", "2.1.330-trust-prompt"), "Not started: claude does not trust alpha yet"),
        (
            start_events("exited", "2.1.330-signed-out", "1"),
            "exited (code 1) before printing a URL; nothing is left running. Cause: claude is not logged in",
        ),
        (start_events("exited", "2.1.84-signed-out", "1"), "Cause: claude is not logged in on the dev server"),
        (start_events("exited", "2.1.330-feature-flag", "1"), "Cause: DISABLE_TELEMETRY is set for claude"),
        (start_events("exited", "", ""), "claude remote-control exited before printing a URL"),
        (start_events("gone", ""), "run `python rc_mcp.py check` on the server"),
        (
            [("status", ["attention"]), ("tail", ["Choose wisely [a/b]"])],
            "Not started: claude is waiting for an answer on the dev server.",
        ),
        *[([("error", [code])], "Not started: " + text.split("{")[0]) for code, text in rc_mcp.START_ERRORS.items()],
        ([("error", ["new-code"])], "Not started: the dev server refused to start the session (new-code)."),
    ],
)
def test_interpret_start_failures(events: list[tuple[str, list[str]]], failure: str) -> None:
    with pytest.raises(rc_mcp.ToolFailure) as caught:
        rc_mcp.interpret_start(events, session_id="alpha-123abc", name="alpha", path="alpha", config=START_CONFIG)
    assert failure in str(caught.value)
    assert "@@" not in str(caught.value)


TRUST_REASON = rc_mcp.TRUST_CAUSE.format(path="the project")


def as_listed(events: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    """Events in the list script's order: each log end where its session is marked `tailed`,
    the ends themselves after `tails`, before the closing `end`."""
    tails = [event for event in events if event[0] == "tail"]
    listed = [("tailed", []) if key == "tail" else (key, fields) for key, fields in events]
    closing = [listed.pop()] if listed and listed[-1][0] == "end" else []
    return listed + ([("tails", []), *tails] if tails else []) + closing


def list_entry(
    session: str, dead: str, created: str, code: str, transcript: str = "", **meta: str
) -> list[tuple[str, list[str]]]:
    raw = (TRANSCRIPTS / f"{transcript}.log").read_text() if transcript else ""
    events = [("session", [session, dead, created, code])]
    events += [("meta", [k, v]) for k, v in meta.items()]
    return events + ([("tail", [raw])] if transcript else [])


@pytest.mark.parametrize(
    "events, expected",
    [
        (
            list_entry("rc-alpha-0a1b2c", "0", "1700000000", "", "2.1.330-ready", name="alpha", path="alpha"),
            [
                {
                    "id": "alpha-0a1b2c",
                    "status": "ready",
                    "url": "https://claude.ai/code?environment=env_01Ready330",
                    "name": "alpha",
                    "path": "alpha",
                    "started": "2023-11-14T22:13:20+00:00",
                }
            ],
        ),
        (
            list_entry("rc-beta-0a1b2c", "0", "1", "", "2.1.330-connected"),
            [{"id": "beta-0a1b2c", "status": "connected", "session_url": "https://claude.ai/code/session_01Attached"}],
        ),
        (
            list_entry("rc-c-0a1b2c", "0", "1", "", "2.1.330-trust-prompt"),
            [{"id": "c-0a1b2c", "status": "needs attention", "reason": TRUST_REASON}],
        ),
        (
            list_entry("rc-c-0a1b2c", "0", "1", "", "2.1.330-consent-prompt"),
            [
                {
                    "id": "c-0a1b2c",
                    "status": "needs attention",
                    "reason": f"claude is waiting for an answer to '{rc_mcp.CONSENT_PROMPT}' on the dev server",
                }
            ],
        ),
        (
            list_entry("rc-c-0a1b2c", "0", "1", "", "2.1.330-connecting"),
            [{"id": "c-0a1b2c", "status": "starting", "url": None}],
        ),
        (
            list_entry("rc-d-0a1b2c", "1", "1", "1", "2.1.330-signed-out", path="d"),
            [
                {
                    "id": "d-0a1b2c",
                    "status": "exited",
                    "exit_code": 1,
                    "reason": "claude is not logged in on the dev server: run `claude auth login` there with a "
                    "claude.ai account (Pro, Max, Team or Enterprise), then start again.",
                }
            ],
        ),
        (list_entry("rc-d-0a1b2c", "1", "1", ""), [{"id": "d-0a1b2c", "status": "exited", "exit_code": None}]),
        # not ours, a second pane of the same session, hostile metadata: ignored
        (list_entry("rc-notours", "0", "1", "") + list_entry("other", "0", "1", ""), []),
        (
            list_entry("rc-e-0a1b2c", "0", "2", "") + list_entry("rc-e-0a1b2c", "1", "2", "9"),
            [{"id": "e-0a1b2c", "status": "starting", "exit_code": None}],
        ),
        (
            list_entry("rc-f-0a1b2c", "0", "1", "", name="$(id)", path="../etc"),
            [{"id": "f-0a1b2c", "name": None, "path": None}],
        ),
        # oldest first
        (
            list_entry("rc-new-0a1b2c", "0", "20", "") + list_entry("rc-old-0a1b2c", "0", "10", ""),
            [{"id": "old-0a1b2c"}, {"id": "new-0a1b2c"}],
        ),
    ],
)
def test_interpret_list(events: list[tuple[str, list[str]]], expected: list[dict[str, Any]]) -> None:
    found = [s.model_dump() for s in rc_mcp.interpret_list(as_listed(events))]
    assert len(found) == len(expected)
    for session, wanted in zip(found, expected, strict=True):
        assert {k: session[k] for k in wanted} == wanted


@pytest.mark.parametrize(
    "output, projects",
    [
        ("@@projects\nalpha\0org/beta\0Zeta\0", ["alpha", "org/beta", "Zeta"]),
        ("login banner\n@@projects\nb\0a\0a\0", ["a", "b"]),
        ("@@projects\n/abs\0..\0x/../y\0ok\0bad\x01name\0", ["ok"]),
    ],
)
def test_interpret_projects(output: str, projects: list[str]) -> None:
    assert rc_mcp.interpret_projects(output, "/srv") == projects


def test_interpret_projects_without_the_base() -> None:
    with pytest.raises(rc_mcp.ToolFailure, match="does not exist on the dev server. Fix PROJECTS_BASE_DIR"):
        rc_mcp.interpret_projects("@@error no-base\n", "/srv")


class GatedRunner:
    """A runner whose commands finish when the test says so; each answers with its run number (a
    session's or a project's name)."""

    def __init__(self, projects: bool = False) -> None:
        self.projects = projects
        self.gates: list[asyncio.Event] = []
        self.started = asyncio.Event()  # set whenever a command starts

    async def connect(self) -> str | None:
        return None

    async def run(self, script: str, *, timeout: float, on_line: Any = None) -> rc_mcp.CommandResult:
        gate = asyncio.Event()
        self.gates.append(gate)
        self.started.set()
        number = len(self.gates)
        await gate.wait()
        if self.projects:
            return rc_mcp.CommandResult(0, f"@@projects\nrun{number}-0a1b2c\0", "")
        return rc_mcp.CommandResult(0, f"@@session\trc-run{number}-0a1b2c\t0\t1\t\n@@end\n", "")

    async def close(self) -> None:
        return None

    async def runs(self, count: int) -> None:
        """Until `count` commands have started."""
        while len(self.gates) < count:
            self.started.clear()
            await self.started.wait()


@pytest.mark.parametrize("method", ["list_all", "projects"])
async def test_concurrent_lists_share_the_next_run_and_never_an_older_one(tmp_path: Path, method: str) -> None:
    runner = GatedRunner(projects=method == "projects")
    sessions = rc_mcp.Sessions(rc_mcp.load_config(base_env(tmp_path)), runner)
    ask = getattr(sessions, method)
    runs = runner.runs

    def ids(task: asyncio.Task[Any]) -> list[str]:
        return [item if isinstance(item, str) else item.id for item in task.result()]

    first = asyncio.create_task(ask())
    await runs(1)
    during_first = [asyncio.create_task(ask()) for _ in range(5)]  # asked while run 1 is under way
    await asyncio.sleep(0)
    runner.gates[0].set()
    await runs(2)
    await first
    assert ids(first) == ["run1-0a1b2c"]
    late = asyncio.create_task(ask())  # asked while run 2 is under way: waits for run 3
    await asyncio.sleep(0)
    runner.gates[1].set()
    await asyncio.gather(*during_first)
    assert [ids(t) for t in during_first] == [["run2-0a1b2c"]] * 5  # one run for all five, and not run 1
    await runs(3)
    assert not late.done()
    runner.gates[2].set()
    await late
    assert ids(late) == ["run3-0a1b2c"]
    assert len(runner.gates) == 3  # seven callers, three runs


async def test_a_shared_run_goes_on_for_the_others_when_the_caller_that_began_it_leaves(tmp_path: Path) -> None:
    runner = GatedRunner()
    sessions = rc_mcp.Sessions(rc_mcp.load_config(base_env(tmp_path)), runner)
    first = asyncio.create_task(sessions.list_all())
    await runner.runs(1)
    leader = asyncio.create_task(sessions.list_all())  # begins the next run, waiting for its turn
    joined = asyncio.create_task(sessions.list_all())  # joins that run
    await asyncio.sleep(0)
    leader.cancel()
    runner.gates[0].set()
    await first
    await runner.runs(2)
    runner.gates[1].set()
    assert [s.id for s in await joined] == ["run2-0a1b2c"]
    assert leader.cancelled() and len(runner.gates) == 2


# ── Conversations ─────────────────────────────────────────────────────────────────────────────
# start_session(prompt=…/interactive), send_prompt, get_reply, interrupt_session, resume_session,
# answer_permission and list_sessions' conversation fields, over real sshd and tmux with the fake's
# conversational TUI.

# The fake's conversation timing for these tests (see testbed/README.md): short, but every turn
# still has a busy phase the scripts must wait through.
FAST_CONVERSATION = {"startup_delay": 0.05, "turn_delay": 0.1, "tool_delay": 0.05}


def conversation_config(home: DevServer, **knobs: Any) -> None:
    fake_claude_config(home, **{**FAST_CONVERSATION, **knobs})


def transcript_prompts(lab: DevServer, session_uuid: str) -> list[str]:
    """The prompts (user entries with text) of a conversation's transcript on the lab."""
    found = list((lab.home / ".claude" / "projects").glob(f"*/{session_uuid}.jsonl"))
    assert len(found) == 1, found
    prompts = []
    for line in found[0].read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("type") == "user" and isinstance(entry["message"]["content"], str):
            prompts.append(entry["message"]["content"])
    return prompts


def conversation_uuid(lab: DevServer, session_id: str) -> str:
    record = (lab.home / ".local" / "state" / "rc-mcp" / f"rc-{session_id}.conv").read_text()
    return dict(line.split("\t", 1) for line in record.splitlines())["uuid"]


async def test_e2e_conversation_answers_the_first_prompt_and_follow_ups(devserver: DevServer, tools: Tools) -> None:
    conversation_config(devserver)
    async with tools() as (client, _):
        started = await call(client, "start_session", name="conv", path="alpha", prompt="run the tests")
        assert started["mode"] == "conversation" and started["status"] == "ready"
        assert started["url"].startswith("https://claude.ai/code/session_")
        sid = started["id"]
        first = await call(client, "get_reply", id=sid, wait_seconds=30)
        assert (first["status"], first["reply"], first["actions"]) == ("done", "turn 1: run the tests", [])
        second = await call(client, "send_prompt", id=sid, prompt="bash: make test\nand tell me", wait_seconds=30)
        assert second["status"] == "done" and second["reply"] == "turn 2: ran `make test`; and tell me"
        assert second["actions"] == [{"tool": "Bash", "detail": "make test"}]
        again = await call(client, "get_reply", id=sid, wait_seconds=0)  # the last answer, at once
        assert again["reply"] == second["reply"]
        third = await call(client, "send_prompt", id=sid, prompt="edit: src/app.py", wait_seconds=30)
        assert third["reply"] == "turn 3: edited src/app.py"
        assert third["actions"] == [{"tool": "Edit", "detail": str(devserver.projects / "alpha" / "src/app.py")}]
    uuid = conversation_uuid(devserver, sid)
    assert transcript_prompts(devserver, uuid) == ["run the tests", "bash: make test\nand tell me", "edit: src/app.py"]


HOSTILE_PROMPTS = [
    "two\nlines with 'single' and \"double\" quotes",
    "$(touch /tmp/rc-pwned) `touch rc-pwned` ${HOME} $HOME; rm -rf ~ #",
    "tabs\tstay\there",
    "ends the paste \x1b[201~ early, then Enter\r\nmore",
    "NUL \x00 and bell \x07 and C1 \x9b go",
    "-h --help: starts with a dash? no: " + "-" * 3,
    "unicode: ünïcödé 🙂 ‮rtl‬",
]


@pytest.mark.parametrize("prompt", HOSTILE_PROMPTS)
async def test_e2e_hostile_prompts_arrive_exactly_without_controls(
    devserver: DevServer, tools: Tools, prompt: str
) -> None:
    conversation_config(devserver)
    expected, removed = rc_mcp.clean_prompt(prompt)
    async with tools() as (client, _):
        started = await call(client, "start_session", name="hostile", path="beta", prompt=prompt)
        first = await call(client, "get_reply", id=started["id"], wait_seconds=30)
        follow = await call(client, "send_prompt", id=started["id"], prompt=prompt, wait_seconds=30)
    assert first["reply"] == f"turn 1: {expected.strip()}"
    assert follow["reply"] == f"turn 2: {expected.strip()}", follow
    assert ("control character" in started["message"]) == bool(removed)
    assert transcript_prompts(devserver, conversation_uuid(devserver, started["id"])) == [expected.rstrip("\n")] * 2
    assert not files_named("rc-pwned", devserver.home, devserver.projects, Path("/tmp"))


async def test_e2e_prompt_size_is_capped_with_a_clear_error(devserver: DevServer, tools: Tools) -> None:
    conversation_config(devserver)
    big = "x" * 100_000 + "\nend"
    async with tools() as (client, _):
        started = await call(client, "start_session", name="big", path="alpha", prompt=big)
        first = await call(client, "get_reply", id=started["id"], wait_seconds=30)
        assert first["reply"] == f"turn 1: {big}"
        follow = await call(client, "send_prompt", id=started["id"], prompt=big, wait_seconds=30)
        assert follow["reply"] == f"turn 2: {big}"
        too_big = "y" * (rc_mcp.MAX_PROMPT_BYTES + 1)
        for tool, arguments in (
            ("start_session", {"name": "big2", "path": "alpha", "prompt": too_big}),
            ("send_prompt", {"id": started["id"], "prompt": too_big}),
        ):
            text = await call_error(client, tool, **arguments)
            assert f"at most {rc_mcp.MAX_PROMPT_BYTES:,}" in text and "file" in text
        for empty in ("", " \n\t", "\x00\x1b"):
            assert "empty" in await call_error(client, "send_prompt", id=started["id"], prompt=empty)
        assert "bash mode" in await call_error(client, "send_prompt", id=started["id"], prompt=" !rm -rf ~")
    assert rc_sessions(devserver) == {f"rc-{started['id']}"}


async def test_e2e_a_send_lock_left_by_a_killed_send_expires(devserver: DevServer, tools: Tools) -> None:
    conversation_config(devserver)
    async with tools() as (client, _):
        started = await call(client, "start_session", name="lock", path="alpha", interactive=True)
        lock = devserver.home / ".local" / "state" / "rc-mcp" / f"rc-{started['id']}.sending"
        lock.mkdir()  # what a send killed between its check and Enter leaves
        assert "being sent" in await call_error(client, "send_prompt", id=started["id"], prompt="hi")
        old = time.time() - 120
        os.utime(lock, (old, old))
        reply = await call(client, "send_prompt", id=started["id"], prompt="hi", wait_seconds=30)
        assert reply["reply"] == "turn 1: hi" and not lock.exists()


async def test_e2e_slash_command_prompt(devserver: DevServer, tools: Tools) -> None:
    conversation_config(devserver)
    async with tools() as (client, _):
        started = await call(client, "start_session", name="slash", path="alpha", prompt="/security-review")
        reply = await call(client, "get_reply", id=started["id"], wait_seconds=30)
    # alpha has no origin remote: the command's own error is its outcome, reported as claude wrote it
    assert reply["status"] == "done" and "origin/HEAD" in reply["reply"], reply


async def test_e2e_busy_and_waiting_sessions_refuse_a_paste(devserver: DevServer, tools: Tools) -> None:
    conversation_config(devserver)
    async with tools() as (client, _):
        busy = await call(client, "start_session", name="busy", path="alpha", prompt="hang")
        assert (await call(client, "get_reply", id=busy["id"], wait_seconds=1))["status"] == "running"
        text = await call_error(client, "send_prompt", id=busy["id"], prompt="are you there?")
        assert "busy" in text and "interrupt_session" in text and "get_reply" in text
        asking = await call(client, "start_session", name="ask", path="beta", prompt="ask: rm -rf build")
        waiting = await call(client, "get_reply", id=asking["id"], wait_seconds=30)
        assert waiting["status"] == "waiting" and waiting["waiting_for"] == "permission prompt"
        assert waiting["permission"]["tool"] == "Bash" and waiting["permission"]["detail"] == "rm -rf build"
        assert waiting["url"] and waiting["url"] in waiting["url"]
        text = await call_error(client, "send_prompt", id=asking["id"], prompt="1")
        assert "permission to use Bash (rm -rf build)" in text and "answer_permission" not in text
        listed = {s["id"]: s for s in (await call(client, "list_sessions"))["sessions"]}
    assert listed[busy["id"]]["state"] == "busy" and listed[asking["id"]]["state"] == "waiting"
    assert listed[asking["id"]]["waiting_for"] == "permission prompt"
    prompts = transcript_prompts(devserver, conversation_uuid(devserver, busy["id"]))
    assert prompts == ["hang"]  # nothing was typed into the busy session
    assert transcript_prompts(devserver, conversation_uuid(devserver, asking["id"])) == ["ask: rm -rf build"]


async def test_e2e_long_turn_runs_past_wait_then_get_reply_has_it(devserver: DevServer, tools: Tools) -> None:
    conversation_config(devserver)
    seen: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message or "")

    async with tools() as (client, _):
        started = await call(client, "start_session", name="slow", path="alpha", interactive=True)
        assert (await call(client, "get_reply", id=started["id"], wait_seconds=0))["status"] == "idle"
        result = await client.call_tool(
            "send_prompt",
            {"id": started["id"], "prompt": "think 2.5: bash: ls\nlong 25", "wait_seconds": 1},
            progress_callback=on_progress,
        )
        assert not result.is_error and result.structured_content is not None, result.content
        assert result.structured_content["status"] == "running"
        done = await client.call_tool(
            "get_reply", {"id": started["id"], "wait_seconds": 30}, progress_callback=on_progress
        )
        assert done.structured_content is not None and done.structured_content["status"] == "done"
    reply = done.structured_content["reply"]
    assert reply.startswith("turn 1: line 1 of 25\nline 2 of 25") and reply.endswith("line 25 of 25")
    assert seen[0] == "prompt typed into the session" and "claude has the prompt" in seen
    assert (
        seen.index("claude is thinking")
        < seen.index("claude uses Bash: ls")
        < seen.index("claude is writing its answer")
    )


async def test_e2e_interrupt_then_continue(devserver: DevServer, tools: Tools) -> None:
    conversation_config(devserver)
    async with tools() as (client, _):
        started = await call(client, "start_session", name="stuck", path="alpha", prompt="hang")
        interrupted = await call(client, "interrupt_session", id=started["id"])
        assert interrupted["status"] == "interrupted" and "idle again" in interrupted["message"]
        assert interrupted["interrupted"] is True
        after = await call(client, "send_prompt", id=started["id"], prompt="still there?", wait_seconds=30)
        assert after["reply"] == "turn 2: still there?"
        assert "interrupt_session" not in (await call(client, "interrupt_session", id=started["id"]))["message"]


async def test_e2e_exit_then_resume_keeps_the_transcript(devserver: DevServer, tools: Tools) -> None:
    conversation_config(devserver)
    async with tools() as (client, _):
        started = await call(client, "start_session", name="again", path="org/repo", prompt="remember 42")
        assert (await call(client, "get_reply", id=started["id"], wait_seconds=30))["reply"] == "turn 1: remember 42"
        gone = await call(client, "send_prompt", id=started["id"], prompt="/exit", wait_seconds=30)
        assert gone["status"] in ("exited", "done"), gone
        listed = {s["id"]: s for s in (await call(client, "list_sessions"))["sessions"]}
        assert listed[started["id"]]["status"] == "exited" and listed[started["id"]]["resumable"]
        text = await call_error(client, "send_prompt", id=started["id"], prompt="hello?")
        assert "exited" in text and "resume_session" in text
        resumed = await call(client, "resume_session", id=started["id"])
        assert resumed["id"] == started["id"] and resumed["mode"] == "conversation"
        assert "running" in await call_error(client, "resume_session", id=started["id"])
        after = await call(client, "send_prompt", id=started["id"], prompt="what was it?", wait_seconds=30)
        assert after["reply"] == "turn 2: what was it?"  # the same conversation: its second prompt
    uuid = conversation_uuid(devserver, started["id"])
    assert transcript_prompts(devserver, uuid)[-1] == "what was it?"
    trace = devserver.fake_claude_trace()
    assert [t["argv"][2:4] for t in trace if "--rc" in t["argv"]] == [["--session-id", uuid], ["--resume", uuid]]


async def test_e2e_stop_with_and_without_forget(devserver: DevServer, tools: Tools) -> None:
    conversation_config(devserver)
    async with tools() as (client, _):
        kept = await call(client, "start_session", name="kept", path="alpha", prompt="one")
        gone = await call(client, "start_session", name="gone", path="alpha", prompt="two")
        stopped = await call(client, "stop_session", id=kept["id"])
        assert stopped["stopped"] and not stopped["forgotten"] and "resume_session" in stopped["message"]
        forgotten = await call(client, "stop_session", id=gone["id"], forget=True)
        assert forgotten["stopped"] and forgotten["forgotten"]
        listed = {s["id"]: s for s in (await call(client, "list_sessions"))["sessions"]}
        assert listed[kept["id"]]["status"] == "stopped" and listed[kept["id"]]["resumable"]
        assert gone["id"] not in listed
        assert "no record" in await call_error(client, "resume_session", id=gone["id"])
        resumed = await call(client, "resume_session", id=kept["id"])
        reply = await call(client, "send_prompt", id=resumed["id"], prompt="back", wait_seconds=30)
        assert reply["reply"] == "turn 2: back"
        again = await call(client, "stop_session", id=kept["id"], forget=True)
        assert again["forgotten"]
        assert kept["id"] not in {s["id"] for s in (await call(client, "list_sessions"))["sessions"]}
    # claude's own transcript is never touched
    assert transcript_prompts(devserver, conversation_uuid_from_trace(devserver, "gone")) == ["two"]


def conversation_uuid_from_trace(lab: DevServer, name: str) -> str:
    for entry in lab.fake_claude_trace():
        argv = entry["argv"]
        if argv[:2] == ["--rc", name] and "--session-id" in argv:
            return argv[argv.index("--session-id") + 1]
    raise AssertionError(f"no conversation {name} in the trace")


async def test_e2e_server_sessions_take_no_prompts_and_resume_within_claudes_window(
    devserver: DevServer, tools: Tools
) -> None:
    async with tools() as (client, _):
        server = await call(client, "start_session", name="srv", path="beta")
        assert server["mode"] == "server"
        text = await call_error(client, "send_prompt", id=server["id"], prompt="hello")
        assert "Remote Control server" in text and "prompt=" in text
        await call(client, "stop_session", id=server["id"])
        resumed = await call(client, "resume_session", id=server["id"])
        assert resumed["status"] == "ready" and resumed["url"]
        await call(client, "stop_session", id=server["id"])
    trace = [t["argv"] for t in devserver.fake_claude_trace() if t["argv"][:1] == ["remote-control"]]
    assert "--continue" in trace[-1] and "--spawn" not in trace[-1]
    record = devserver.home / ".local" / "state" / "rc-mcp" / f"rc-{server['id']}.srv"
    old = time.time() - rc_mcp.SERVER_RESUME_WINDOW - 60
    os.utime(record, (old, old))
    async with tools() as (client, _):
        assert server["id"] not in {s["id"] for s in (await call(client, "list_sessions"))["sessions"]}
        text = await call_error(client, "resume_session", id=server["id"])
        assert "about 4 h" in text and "start_session" in text


async def test_e2e_answer_permission_is_off_unless_enabled(devserver: DevServer, tools: Tools) -> None:
    conversation_config(devserver)
    async with tools() as (client, _):
        started = await call(client, "start_session", name="ask", path="alpha", prompt="ask: make deploy")
        waiting = await call(client, "get_reply", id=started["id"], wait_seconds=30)
        prompt_id = waiting["permission"]["prompt_id"]
        text = await call_error(
            client, "answer_permission", id=started["id"], decision="allow_once", prompt_id=prompt_id
        )
        assert "ALLOW_CHAT_APPROVALS" in text
        assert (await call(client, "get_reply", id=started["id"], wait_seconds=0))["status"] == "waiting"
        tool = next(t for t in (await client.list_tools()).tools if t.name == "answer_permission")
        assert tool.annotations is not None and tool.annotations.destructive_hint is True


async def test_e2e_answer_permission_answers_exactly_the_reported_prompt(devserver: DevServer, tools: Tools) -> None:
    conversation_config(devserver)
    async with tools(ALLOW_CHAT_APPROVALS="true") as (client, _):
        started = await call(client, "start_session", name="ask", path="alpha", prompt="ask: make deploy")
        first = await call(client, "get_reply", id=started["id"], wait_seconds=30)
        assert "answer_permission" in first["message"]
        wrong = await call_error(
            client, "answer_permission", id=started["id"], decision="allow_once", prompt_id="toolu_stale"
        )
        assert "no longer the one" in wrong
        allowed = await call(
            client, "answer_permission", id=started["id"], decision="allow_once",
            prompt_id=first["permission"]["prompt_id"],
        )  # fmt: skip
        assert allowed["status"] == "done" and allowed["reply"] == "turn 1: ran `make deploy`", allowed
        assert allowed["answered"] is True
        stale = await call_error(
            client, "answer_permission", id=started["id"], decision="allow_once",
            prompt_id=first["permission"]["prompt_id"],
        )  # fmt: skip
        assert "no longer the one" in stale
        second = await call(client, "send_prompt", id=started["id"], prompt="ask: rm -rf dist", wait_seconds=30)
        denied = await call(
            client, "answer_permission", id=started["id"], decision="deny", prompt_id=second["permission"]["prompt_id"]
        )
        assert denied["reply"] == "turn 2: I did not run `rm -rf dist` (permission denied)"


async def test_e2e_api_errors_and_sidechains_are_never_answers(devserver: DevServer, tools: Tools) -> None:
    conversation_config(devserver)
    async with tools() as (client, _):
        failing = await call(client, "start_session", name="fail", path="alpha", prompt="fail 529: hello")
        text = await call_error(client, "get_reply", id=failing["id"], wait_seconds=30)
        assert "error from its API" in text and "overloaded_error" in text
        agent = await call(client, "start_session", name="agent", path="beta", prompt="agent: count the files")
        reply = await call(client, "get_reply", id=agent["id"], wait_seconds=30)
    assert reply["reply"] == "turn 1: the agent reported: agent report: count the files"
    assert [a["tool"] for a in reply["actions"]] == ["Task"]


async def test_e2e_signed_out_conversation_start_is_refused(devserver: DevServer, tools: Tools) -> None:
    conversation_config(devserver, logged_in=False)
    async with tools() as (client, _):
        text = await call_error(client, "start_session", name="out", path="alpha", prompt="run the tests")
    assert "not logged in" in text and "claude auth login" in text
    assert rc_sessions(devserver) == set()


async def test_e2e_trust_dialog_is_reported_not_answered(devserver: DevServer, tools: Tools) -> None:
    conversation_config(devserver)
    claude_json = devserver.claude_json()
    claude_json["projects"] = {}
    devserver.write_claude_json(claude_json)
    async with tools() as (client, _):
        text = await call_error(client, "start_session", name="trust", path="alpha", prompt="run the tests")
    assert "does not trust" in text and "Nothing is left running" in text
    assert rc_sessions(devserver) == set()


async def test_e2e_list_sessions_with_30_sessions_of_both_modes_is_one_exec(devserver: DevServer, tools: Tools) -> None:
    conversation_config(devserver)
    async with tools() as (client, server):
        servers = [("srv", path) for path in EXPECTED_PROJECTS]
        conversations = [("conv", EXPECTED_PROJECTS[n % 5]) for n in range(25)]

        async def start(kind: str, path: str) -> dict[str, Any]:
            extra = {"prompt": "hello"} if kind == "conv" else {}
            return await call(client, "start_session", name=kind, path=path, **extra)

        started = await asyncio.gather(*(start(kind, path) for kind, path in servers + conversations))
        before = server.app.runner.execs
        listed = (await call(client, "list_sessions"))["sessions"]
        assert server.app.runner.execs == before + 1
    modes = collections.Counter(s["mode"] for s in listed)
    assert modes == {"server": 5, "conversation": 25}
    assert {s["id"] for s in listed} == {s["id"] for s in started}
    assert all(s["state"] in ("idle", "busy") and s["last_activity"] for s in listed if s["mode"] == "conversation")
    assert all(s["url"] for s in listed)


# ── Dev servers ───────────────────────────────────────────────────────────────────────────────
# DEV_SERVERS: several dev servers behind one connector — two real sshd labs (different users,
# client keys and host keys) and local mode.


@pytest.fixture(scope="session")
def lab2(lab: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer.start(tmp_path_factory.mktemp("lab2"), user=LAB_USER + "b")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def devserver2(lab2: DevServer) -> Iterator[DevServer]:
    fake_claude_config(lab2)
    try:
        yield lab2
    finally:
        lab2.reset()


def host_table(name: str, lab: DevServer, **extra: Any) -> str:
    values: dict[str, Any] = {
        "ssh_host": lab.host,
        "port": lab.port,
        "user": lab.user,
        "key": str(lab.keys["ed25519"]),
        "known_hosts": str(lab.known_hosts),
        "projects_base_dir": str(lab.projects),
        **extra,
    }
    return f"[{name}]\n" + "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in values.items() if value is not None
    )


def hosts_env(tmp_path: Path, *tables: str, **extra: str) -> dict[str, str]:
    path = tmp_path / "hosts.toml"
    path.write_text("\n".join(tables))
    return {
        "MCP_SECRET": SECRET,
        "DEV_SERVERS": str(path),
        "TOKEN_STORE_PATH": str(tmp_path / "state" / "tokens.json"),
        "START_TIMEOUT": "20",
        **extra,
    }


def test_hosts_file_names_every_dev_server_in_order(lab: DevServer, lab2: DevServer, tmp_path: Path) -> None:
    env = hosts_env(
        tmp_path,
        host_table("home", lab, permission_mode="plan", start_timeout=30),
        host_table("gpu-1", lab2, claude_bin="/opt/claude/bin/claude", spawn_worktree=True),
        '[here]\nssh_host = "local"\nprojects_base_dir = "~/projects"\n',
        COMMAND_TIMEOUT="12",
    )
    config = rc_mcp.load_config(env)
    assert [h.host_name for h in config.all_hosts] == ["home", "gpu-1", "here"]
    home, gpu, here = config.all_hosts
    assert config.host_name == "home" and config.ssh_port == lab.port  # the first host is the default
    assert (home.ssh_user, home.permission_mode, home.start_timeout, home.command_timeout) == (
        lab.user, "plan", 30.0, 12.0
    )  # fmt: skip
    assert (gpu.ssh_user, gpu.claude_bin, gpu.spawn_worktree, gpu.start_timeout) == (
        lab2.user, "/opt/claude/bin/claude", True, 20.0
    )  # fmt: skip
    assert gpu.ssh_key is not None and gpu.known_hosts is not None
    assert here.local and here.projects_base_dir == "~/projects"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('[Home]\nssh_host = "local"\nprojects_base_dir = "/p"\n', "'Home': the name must be"),
        ('[a]\nssh_host = "local"\n', "'a': projects_base_dir is missing"),
        ('[a]\nprojects_base_dir = "/p"\n', "'a': ssh_host is missing"),
        ('[a]\nssh_host = "local"\nprojects_base_dir = "relative"\n', "'a': projects_base_dir = 'relative'"),
        ('[a]\nssh_host = "local"\nprojects_base_dir = "/p"\nport = 70000\n', "'a': port = 70000: must be between"),
        ('[a]\nssh_host = "local"\nprojects_base_dir = "/p"\nport = "22"\n', "'a': port must be a whole number"),
        ('[a]\nssh_host = "local"\nprojects_base_dir = "/p"\ncolour = "red"\n', "'a': unknown key 'colour'"),
        ('[a]\nssh_host = "local"\nprojects_base_dir = "/p"\npermission_mode = "yolo"\n', "'a': permission_mode"),
        ('[a]\nssh_host = "local"\nprojects_base_dir = "/p"\nspawn_worktree = "yes"\n', "must be a boolean"),
        ('[a]\nssh_host = "-oProxyCommand=x"\nprojects_base_dir = "/p"\n', "'a': ssh_host"),
        ('[a]\nssh_host = "dev.example.com"\nprojects_base_dir = "/p"\n', "'a': user is missing"),
        ('[a]\nssh_host = "dev.example.com"\nuser = "u"\nprojects_base_dir = "/p"\n', "'a': key is missing"),
        ('[a]\nssh_host = "local"\nprojects_base_dir = "/p"\nstart_timeout = 900\n', "'a': start_timeout = 900"),
        ("a = 1\n", "'a': must be a table"),
        ("", "names no dev server"),
        ("[a\n", "is not valid TOML"),
    ],
)
def test_hosts_file_problems_name_the_host_and_the_key(tmp_path: Path, table: str, expected: str) -> None:
    with pytest.raises(rc_mcp.ConfigError) as caught:
        rc_mcp.load_config(hosts_env(tmp_path, table))
    assert expected in str(caught.value)


def test_hosts_file_reports_every_problem_at_once(lab: DevServer, tmp_path: Path) -> None:
    env = hosts_env(
        tmp_path,
        host_table("a", lab, port=0),
        host_table("b", lab, key=str(tmp_path / "missing-key"), known_hosts=None),
        host_table("c", lab, passphrase_env="RC_TEST_UNSET_PASSPHRASE"),
    )
    with pytest.raises(rc_mcp.ConfigError) as caught:
        rc_mcp.load_config(env)
    text = str(caught.value)
    assert "'a': port = 0" in text and "'b': key cannot be used" in text and "RC_TEST_UNSET_PASSPHRASE" in text


def test_hosts_file_and_single_host_variables_exclude_each_other(lab: DevServer, tmp_path: Path) -> None:
    env = hosts_env(tmp_path, host_table("a", lab), SSH_HOST="dev.example.com", PROJECTS_BASE_DIR="/srv")
    with pytest.raises(rc_mcp.ConfigError) as caught:
        rc_mcp.load_config(env)
    assert "Remove SSH_HOST, PROJECTS_BASE_DIR (or DEV_SERVERS)" in str(caught.value)


def test_readme_hosts_file_is_one_the_server_reads(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    document = tomllib.loads(block)
    assert list(document) == ["home", "gpu", "here"]
    for table in document.values():
        assert set(table) <= set(rc_mcp.HOST_KEYS)
    # the local host alone goes through the whole loader (the others' keys are placeholders)
    env = hosts_env(tmp_path, "[here]\n" + block.split("[here]\n", 1)[1])
    assert rc_mcp.load_config(env).all_hosts[0].local


def test_messages_name_the_hosts_file_key_not_a_variable(lab: DevServer, tmp_path: Path) -> None:
    config = rc_mcp.load_config(hosts_env(tmp_path, host_table("home", lab)))
    assert config.setting("PROJECTS_BASE_DIR") == "projects_base_dir of [home] in DEV_SERVERS"
    assert config.setting("SSH_PRIVATE_KEY") == "key of [home] in DEV_SERVERS"
    assert rc_mcp.load_config(base_env(tmp_path)).setting("PROJECTS_BASE_DIR") == "PROJECTS_BASE_DIR"
    with pytest.raises(rc_mcp.ToolFailure, match=r"Fix projects_base_dir of \[home\] in DEV_SERVERS"):
        rc_mcp.interpret_projects("", "/srv", config.setting("PROJECTS_BASE_DIR"))
    key = tmp_path / "id_plain"
    key.write_text(lab.keys["ed25519"].read_text())
    with pytest.raises(rc_mcp.ConfigError, match="HOME_PASS is set but the key is not encrypted"):
        rc_mcp.load_config(
            hosts_env(tmp_path, host_table("h", lab, key=str(key), passphrase_env="HOME_PASS"), HOME_PASS="x")
        )


def test_hosts_file_refuses_two_names_for_one_dev_server(lab: DevServer, tmp_path: Path) -> None:
    with pytest.raises(rc_mcp.ConfigError, match="'b': the same dev server as 'a'"):
        rc_mcp.load_config(hosts_env(tmp_path, host_table("a", lab), host_table("b", lab)))


def test_hosts_file_key_paths_are_relative_to_the_file(lab: DevServer, tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id").write_text(lab.keys["ed25519"].read_text())
    config = rc_mcp.load_config(hosts_env(tmp_path, host_table("a", lab, key="keys/id")))
    assert config.ssh_key is not None


def test_single_host_ids_and_results_are_unchanged(tmp_path: Path) -> None:
    config = rc_mcp.load_config(base_env(tmp_path))
    assert config.hosts == () and [h.host_name for h in config.all_hosts] == ["default"]
    app = rc_mcp.App(config, store=rc_mcp.TokenStore(tmp_path / "t.json"))
    assert not app.hosts.multiple and app.hosts.first.prefix == "" and app.sessions is app.hosts.first


async def test_e2e_two_dev_servers_behind_one_connector(
    devserver: DevServer, devserver2: DevServer, tmp_path: Path
) -> None:
    env = hosts_env(tmp_path, host_table("home", devserver), host_table("work", devserver2))
    async with harness.serve_and_connect(env, ClaudeAi(SECRET)) as (client, server):
        projects = await call(client, "list_projects")
        assert [(h["host"], h["projects"]) for h in projects["hosts"]] == [
            ("home", EXPECTED_PROJECTS),
            ("work", EXPECTED_PROJECTS),
        ]
        home = await call(client, "start_session", name="alpha", path="alpha")
        work = await call(client, "start_session", name="alpha", path="alpha", host="work")
        assert home["id"].startswith("home.alpha-") and home["host"] == "home"
        assert work["id"].startswith("work.alpha-") and work["host"] == "work"
        assert rc_sessions(devserver) == {"rc-" + home["id"].split(".", 1)[1]}
        assert rc_sessions(devserver2) == {"rc-" + work["id"].split(".", 1)[1]}
        listed = await call(client, "list_sessions")
        assert sorted((s["host"], s["id"]) for s in listed["sessions"]) == [
            ("home", home["id"]),
            ("work", work["id"]),
        ]
        assert listed["errors"] == []
        # an id names its host: it cannot reach the other one
        bare = work["id"].split(".", 1)[1]
        assert "is on host 'work', not 'home'" in await call_error(client, "stop_session", id=work["id"], host="home")
        assert "names its host" in await call_error(client, "stop_session", id=bare)  # never a guess
        assert not (await call(client, "stop_session", id=bare, host="home"))["stopped"]
        assert rc_sessions(devserver2) == {"rc-" + bare}
        assert (await call(client, "stop_session", id=work["id"]))["stopped"]
        assert (await call(client, "stop_session", id=home["id"]))["stopped"]
        assert rc_sessions(devserver) == set() and rc_sessions(devserver2) == set()
        assert "no dev server 'nowhere'" in await call_error(client, "list_sessions", host="nowhere")
        hosts = await call(client, "list_hosts")
        assert [(h["name"], h["reachable"], h["logged_in"]) for h in hosts["hosts"]] == [
            ("home", True, True),
            ("work", True, True),
        ]
        assert all(h["claude_version"] for h in hosts["hosts"])
        assert server.app.hosts.by_name["work"].runner is not server.app.runner  # a connection of its own


async def test_e2e_a_wrong_host_key_on_one_host_stops_only_that_host(
    devserver: DevServer, devserver2: DevServer, tmp_path: Path
) -> None:
    env = hosts_env(
        tmp_path,
        host_table("good", devserver),
        host_table("bad", devserver2, known_hosts=str(devserver2.known_hosts_wrong)),
    )
    async with harness.serve_and_connect(env, ClaudeAi(SECRET)) as (client, _):
        text = await call_error(client, "start_session", name="x", path="alpha", host="bad")
        assert "HOST KEY MISMATCH" in text and "Nothing was run" in text
        started = await call(client, "start_session", name="x", path="alpha")
        listed = await call(client, "list_sessions")
        assert [s["id"] for s in listed["sessions"]] == [started["id"]]
        assert [e["host"] for e in listed["errors"]] == ["bad"] and "HOST KEY MISMATCH" in listed["errors"][0]["error"]
        hosts = {h["name"]: h for h in (await call(client, "list_hosts"))["hosts"]}
        assert hosts["good"]["reachable"] and not hosts["bad"]["reachable"]
        assert hosts["good"]["error"] is None and "HOST KEY MISMATCH" in hosts["bad"]["error"]
        await call(client, "stop_session", id=started["id"])
    assert devserver2.fake_claude_trace() == []  # nothing ran on the bad host


async def test_e2e_one_host_down_during_list_sessions(
    devserver: DevServer, devserver2: DevServer, tmp_path: Path
) -> None:
    env = hosts_env(tmp_path, host_table("up", devserver), host_table("down", devserver2), SSH_CONNECT_TIMEOUT="2")
    async with harness.serve_and_connect(env, ClaudeAi(SECRET)) as (client, _):
        started = await call(client, "start_session", name="up", path="beta", host="up")
        devserver2.kill_sshd()
        try:
            server_of = {s["host"]: s for s in (await call(client, "list_sessions"))["sessions"]}
            listed = await call(client, "list_sessions")
            assert [s["id"] for s in listed["sessions"]] == [started["id"]] and set(server_of) == {"up"}
            assert [e["host"] for e in listed["errors"]] == ["down"]
            assert "port of [down] in DEV_SERVERS" in listed["errors"][0]["error"]  # its own key, not SSH_PORT
            projects = await call(client, "list_projects")
            assert [(h["host"], h["error"] is None) for h in projects["hosts"]] == [("up", True), ("down", False)]
            assert projects["projects"] == EXPECTED_PROJECTS
        finally:
            devserver2.restart_sshd()
        # back: the down host answers again on a fresh connection
        assert (await call(client, "list_sessions"))["errors"] == []
        await call(client, "stop_session", id=started["id"])


async def test_check_checks_every_host_at_once(devserver: DevServer, devserver2: DevServer, tmp_path: Path) -> None:
    env = hosts_env(
        tmp_path,
        host_table("one", devserver),
        host_table("two", devserver2),
        host_table("off", devserver2, port=1, known_hosts=None),
        SSH_CONNECT_TIMEOUT="2",
    )
    lines = await rc_mcp.run_checks(rc_mcp.load_config(env))
    assert str(lines[0]) == "✓ configuration: 3 dev servers"
    blocks: dict[str, list[rc_mcp.CheckLine]] = {}
    for line in lines[3:]:
        if line.what.startswith("["):
            current = blocks.setdefault(line.what.strip("[]"), [line])
        else:
            current.append(line)
    assert list(blocks) == ["one", "two", "off"]
    assert [line.ok for line in blocks["one"]] == [True] * len(blocks["one"])
    assert any(line.what == "claude login" and line.ok for line in blocks["two"])
    assert [(line.ok, line.what) for line in blocks["off"]] == [(False, "[off]"), (False, "dev server")]


# ── Token store ───────────────────────────────────────────────────────────────────────────────


def add_access(data: dict[str, Any], key: str, now: float, ttl: float = 60, grant: str = "g1") -> None:
    """Inside a transaction: an access record (and its grant) of the shape the server writes."""
    data["grants"].setdefault(grant, rc_mcp.new_grant("c", "test client", now, 86400))
    record = {"client_id": "c", "grant_id": grant, "scope": "mcp", "resource": TEST_URL, "expires_at": now + ttl}
    data["access"][key] = record


def test_token_store_keeps_only_hashes_with_private_permissions(tmp_path: Path) -> None:
    path = tmp_path / "state" / "tokens.json"
    store = rc_mcp.TokenStore(path)
    token = "rcat_" + secrets.token_urlsafe(32)
    store.transact(lambda data, now: add_access(data, rc_mcp.hash_secret(token), now))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert token not in path.read_text()
    assert rc_mcp.TokenStore(path).lookup("access", token) is not None  # survives a restart
    # no temp files left (the lock file is how the server and `grants` take turns)
    assert sorted(p.name for p in path.parent.iterdir()) == ["tokens.json", "tokens.json.lock"]


def test_token_store_prunes_expired_records(tmp_path: Path) -> None:
    now = [1000.0]
    store = rc_mcp.TokenStore(tmp_path / "t.json", clock=lambda: now[0])
    store.transact(lambda data, t: (add_access(data, "old", t, 10), add_access(data, "new", t, 100)))
    now[0] += 50
    store.transact(lambda data, t: None)
    assert set(json.loads((tmp_path / "t.json").read_text())["access"]) == {"new"}


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 99}', b"[]", b"\xff\xfe"])
def test_token_store_moves_a_corrupt_file_aside(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(content)
    store = rc_mcp.TokenStore(path)
    assert store.count("access") == 0
    aside = list(tmp_path.glob("tokens.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert "TOKEN STORE UNREADABLE" in caplog.text


def test_token_store_serializes_concurrent_writes(tmp_path: Path) -> None:
    store = rc_mcp.TokenStore(tmp_path / "t.json")

    def add(i: int) -> None:
        store.transact(lambda data, now: add_access(data, f"k{i}", now))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(json.loads((tmp_path / "t.json").read_text())["access"]) == 40


def test_node_token_file_is_imported_with_a_private_backup(tmp_path: Path) -> None:
    path = tmp_path / "oauth-tokens.json"
    now_ms = time.time() * 1000
    legacy = {
        "tokens": {
            "11111111-aaaa-4aaa-8aaa-111111111111": {
                "clientId": CLIENT_ID,
                "scopes": ["mcp:tools"],
                "expiresAt": now_ms + 3_600_000,
                "resource": "http://x/mcp",
            },
            "22222222-bbbb-4bbb-8bbb-222222222222": {"clientId": CLIENT_ID, "scopes": [], "type": "refresh"},
            "33333333-cccc-4ccc-8ccc-333333333333": {"clientId": CLIENT_ID, "scopes": [], "expiresAt": now_ms - 1000},
            "44444444-dddd-4ddd-8ddd-444444444444": {"clientId": "someone-else", "scopes": [], "type": "refresh"},
        },
        "codes": {"55555555-eeee-4eee-8eee-555555555555": {"client": {"client_secret": CLIENT_SECRET}, "params": {}}},
    }
    original = json.dumps(legacy)
    path.write_text(original)
    path.chmod(0o644)
    config = rc_mcp.load_config(base_env(tmp_path, SERVER_URL=TEST_URL, TOKEN_STORE_PATH=str(path)))
    store = rc_mcp.open_token_store(config)
    assert store.lookup("access", "11111111-aaaa-4aaa-8aaa-111111111111")["resource"] == f"{TEST_URL}/mcp"
    assert store.lookup("refresh", "22222222-bbbb-4bbb-8bbb-222222222222") is not None
    assert store.lookup("access", "33333333-cccc-4ccc-8ccc-333333333333") is None  # expired stays expired
    assert store.lookup("refresh", "44444444-dddd-4ddd-8ddd-444444444444") is None
    text = path.read_text()
    assert "11111111" not in text and CLIENT_SECRET not in text and stat.S_IMODE(path.stat().st_mode) == 0o600
    [backup] = tmp_path.glob("oauth-tokens.json.nodejs-backup-*")
    assert backup.read_text() == original and stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert rc_mcp.open_token_store(config).lookup("access", "11111111-aaaa-4aaa-8aaa-111111111111") is not None  # once


async def test_node_tokens_keep_working_after_the_switch(tmp_path: Path) -> None:
    path = tmp_path / "oauth-tokens.json"
    access, refresh = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"
    path.write_text(
        json.dumps(
            {
                "tokens": {
                    access: {"clientId": CLIENT_ID, "scopes": [], "expiresAt": time.time() * 1000 + 86_400_000},
                    refresh: {"clientId": CLIENT_ID, "scopes": [], "type": "refresh"},
                },
                "codes": {},
            }
        )
    )
    app = rc_mcp.create_app(rc_mcp.load_config(base_env(tmp_path, SERVER_URL=TEST_URL, TOKEN_STORE_PATH=str(path))))
    async with asgi_client(app) as http:
        assert (await mcp_status(http, access)).status_code == 200
        assert (await http.post("/token", data=refresh_form(refresh))).status_code == 200


async def test_e2e_token_survives_a_restart(tools: Tools) -> None:
    claude = ClaudeAi(SECRET)
    async with tools(claude) as (client, first):
        await call(client, "list_sessions")
    store_text = first.config.token_store_path.read_text()
    assert claude.storage.tokens is not None and claude.storage.tokens.access_token not in store_text
    async with tools(claude, port=first.port) as (client, _):  # same URL: same audience
        assert (await call(client, "list_sessions"))["sessions"] == []
    assert claude.authorizations == 1  # no new authorization was needed


def test_transact_leaves_memory_as_before_when_the_save_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = rc_mcp.TokenStore(tmp_path / "tokens.json")
    store.transact(lambda data, now: add_access(data, "kept", now))

    def fail(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rc_mcp, "write_private_file", fail)
    with pytest.raises(OSError, match="No space left"):
        store.transact(lambda data, now: (data["access"].pop("kept"), add_access(data, "new", now)))
    assert store._unexpired("access", "kept") is not None and store._unexpired("access", "new") is None
    monkeypatch.undo()
    store.transact(lambda data, now: add_access(data, "new", now))
    assert rc_mcp.TokenStore(tmp_path / "tokens.json").count("access") == 2


def test_transact_saves_what_happened_before_a_kept_error_and_rolls_back_others(tmp_path: Path) -> None:
    store = rc_mcp.TokenStore(tmp_path / "tokens.json")

    def revoke_then_refuse(data: dict[str, Any], now: float) -> None:
        add_access(data, "revoked-marker", now)
        raise rc_mcp.OAuthError(400, "invalid_grant", "replayed")

    with pytest.raises(rc_mcp.OAuthError, match="replayed"):
        store.transact(revoke_then_refuse, (rc_mcp.OAuthError,))
    assert rc_mcp.TokenStore(tmp_path / "tokens.json").count("access") == 1  # saved, then raised

    def crash(data: dict[str, Any], now: float) -> None:
        data["access"].clear()
        raise KeyError("bug")

    with pytest.raises(KeyError):
        store.transact(crash, (rc_mcp.OAuthError,))
    assert store.count("access") == 1 and rc_mcp.TokenStore(tmp_path / "tokens.json").count("access") == 1


def test_a_store_changed_by_another_process_is_taken_before_answering_or_writing(tmp_path: Path) -> None:
    """The server and `grants` share the file: a revocation by one is seen by the other within a
    second, and the other's next write does not bring the revoked token back."""
    path = tmp_path / "tokens.json"
    server, command = rc_mcp.TokenStore(path), None
    server.transact(
        lambda data, now: (add_access(data, "a1", now, grant="g1"), add_access(data, "a2", now, grant="g2"))
    )
    command = rc_mcp.TokenStore(path)
    command.transact(lambda data, now: rc_mcp.revoke_grant(data, "g1"))
    deadline = time.monotonic() + 2 * rc_mcp.STORE_RECHECK + 1
    while server.grant("g1") is not None or server._unexpired("access", "a1") is not None:
        assert time.monotonic() < deadline, "the server never noticed the revocation"
        time.sleep(0.01)
    server.transact(lambda data, now: add_access(data, "a3", now, grant="g3"))  # the server's next write
    written = json.loads(path.read_text())
    assert set(written["access"]) == {"a2", "a3"} and set(written["grants"]) == {"g2", "g3"}


@contextlib.contextmanager
def unwritable_store(directory: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Writes into the token store's directory fail — really, even as root: `immutable` sets the
    directory's immutable flag (chattr +i: no file can be created or renamed there, reads work);
    `read-only` makes every durable write fail as a read-only file system does (EROFS)."""
    if how == "immutable":
        result = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {result.stderr.strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
    else:

        def read_only(path: Path, data: bytes, how: str) -> None:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

        monkeypatch.setattr(rc_mcp, "write_private_file", read_only)
        yield
        monkeypatch.undo()


@pytest.mark.parametrize("how", ["immutable", "read-only"])
async def test_refresh_while_the_token_store_cannot_be_written(
    app: rc_mcp.App, http: httpx2.AsyncClient, clock: Clock, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A store that cannot be written refuses refreshes with a JSON 500 and changes nothing: the
    access token in hand keeps working, refused refreshes neither rotate nor revoke, and once the
    store is writable again the very same refresh token works."""
    tokens = await get_tokens(http)
    store = app.store
    before = store.path.read_bytes()
    [grant_id] = store.grants()
    with unwritable_store(store.path.parent, how, monkeypatch):
        for _ in range(3):
            response = await http.post("/token", data=refresh_form(tokens["refresh_token"]))
            assert response.status_code == 503, response.text  # an operational condition, not a bug
            assert response.headers["content-type"] == "application/json" and response.headers["retry-after"] == "60"
            assert response.json() == {
                "error": "temporarily_unavailable",
                "error_description": "this server cannot save its state right now; try again in a minute",
            }
            clock.now += rc_mcp.TOUCH_INTERVAL + 1  # the use of the grant is due to be written: that fails too
            assert (await mcp_status(http, tokens["access_token"])).status_code == 200
            flush = app.oauth._flush
            assert flush is not None
            await flush
        assert store.path.read_bytes() == before
        assert list(store.grants()) == [grant_id]
    response = await http.post("/token", data=refresh_form(tokens["refresh_token"]))
    assert response.status_code == 200, response.text
    assert (await mcp_status(http, response.json()["access_token"])).status_code == 200
    assert (await mcp_status(http, tokens["access_token"])).status_code == 200
    on_disk = json.loads(store.path.read_bytes())
    assert list(on_disk["grants"]) == [grant_id] and on_disk["grants"][grant_id]["last_used"] == clock.now
    assert [p.name for p in store.path.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    "name",
    [
        "tokens.json",
        "tok[en]s.json",  # a glob pattern, taken literally
    ],
)
def test_orphaned_temp_files_are_removed_at_start_up(tmp_path: Path, name: str) -> None:
    """Temp files of writes killed before their rename (`.<store name>.<random>.tmp`, as
    write_private_file names them) are removed when the store opens; nothing else is."""
    path = tmp_path / name
    rc_mcp.TokenStore(path).transact(lambda data, now: add_access(data, "kept", now))
    orphans = [f".{name}.{suffix}.tmp" for suffix in ("a1b2c3d4", "x", "with.dots")]
    # unrelated: another store's, not ending in .tmp, not hidden, a glob's false friend
    unrelated = [f".other-{name}.abc.tmp", f".{name}.abc.tmp.keep", f"{name}.abc.tmp", f".{name}.lock", "notes.txt"]
    if "[en]" in name:
        unrelated.append(f".{name.replace('[en]', 'e')}.abc.tmp")  # what the name read as a glob matches
    for file in orphans + unrelated:
        (tmp_path / file).write_bytes(b"{partial")
    store = rc_mcp.TokenStore(path)
    assert store.count("access") == 1
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {name, f"{name}.lock", *unrelated}


WRONG_SHAPES = {
    "record not an object": ({"access": {"k": "x"}}, "access record k… is not an object"),
    "expiry not a number": ({"access": {"k": {"expires_at": "soon"}}}, "access record k… has no valid 'client_id'"),
    "expiry a word": (
        {"access": {"k": {"client_id": "c", "grant_id": "g", "scope": "mcp", "resource": "r", "expires_at": "soon"}}},
        "access record k… has no valid 'expires_at'",
    ),
    "expiry a boolean": (
        {"refresh": {"k": {"client_id": "c", "grant_id": "g", "scope": "mcp", "resource": "r", "expires_at": True}}},
        "refresh record k… has no valid 'expires_at'",
    ),
    "no grant_id": (
        {"access": {"k": {"client_id": "c", "scope": "mcp", "resource": "r", "expires_at": 9e9}}},
        "access record k… has no valid 'grant_id'",
    ),
    "grants a list": ({"grants": []}, "'grants' is not an object"),
    "secret a number": ({"secret": 5}, "'secret' is not a string"),
    "not version 1": ({"version": 2}, "not an rc_mcp token store"),
}


@pytest.mark.parametrize("shape", list(WRONG_SHAPES))
def test_token_store_with_wrong_shaped_records_starts_empty(
    tmp_path: Path, shape: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A valid JSON file of the wrong shape is moved aside byte for byte, one ERROR line names the
    problem, and the server starts (its store empty) instead of crashing on the first request."""
    content, problem = WRONG_SHAPES[shape]
    raw = json.dumps({"version": 1, **content}, indent=1).encode()
    env = base_env(tmp_path, SERVER_URL=TEST_URL)
    config = rc_mcp.load_config(env)
    config.token_store_path.parent.mkdir(mode=0o700)
    config.token_store_path.write_bytes(raw)
    with caplog.at_level(logging.INFO, logger="rc_mcp"):
        app = rc_mcp.create_app(config)
        app.store.ensure_writable()  # what serve() does before it listens
    [aside] = config.token_store_path.parent.glob("tokens.json.corrupt-*")
    assert aside.read_bytes() == raw
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "TOKEN STORE UNREADABLE" in errors[0] and problem in errors[0], errors
    assert str(aside) in errors[0]
    assert all(app.store.count(kind) == 0 for kind in rc_mcp.STORE_KINDS)
    assert rc_mcp.store_problem(json.loads(config.token_store_path.read_bytes())) is None  # a fresh, valid file


class ForkServer:
    """testbed/fork_server.py: rc_mcp imported once in a parent process that forks a fresh server
    (`rc_mcp.serve`) per start, so a test can SIGKILL and restart it dozens of times cheaply."""

    def __init__(self, env: dict[str, str], cwd: Path, log_path: Path):
        self.log_path = log_path
        with log_path.open("w") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "testbed" / "fork_server.py")],
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
            )
        assert self._read() == "ready"
        self.child: int | None = None

    def _read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line, self.log_path.read_text()
        return line

    def _send(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def start(self) -> int:
        self.child = int(self._send("start"))
        return self.child

    def kill(self) -> None:
        """SIGKILL the running server (by its pid) and wait until it is gone."""
        assert self.child is not None
        os.kill(self.child, signal.SIGKILL)
        assert self._send(f"wait {self.child}") == f"exited {self.child} -{int(signal.SIGKILL)}"
        self.child = None

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the parent kills a child still running, then exits
        self.proc.wait(timeout=10)


async def test_every_answered_token_survives_sigkills_during_a_token_storm(tmp_path: Path) -> None:
    """SIGKILL the server 30 times at random moments while clients run code flows and refreshes as
    fast as they can, restarting it on the same port and store each time. The store file is always
    valid (never quarantined), and after a final restart every token whose answer reached a client
    still works: each chain's newest access token, and its newest refresh token (one whose rotation
    was written but whose answer was lost gets the same answer again: the retry grace)."""
    kills, workers = 30, 3
    rng = random.Random(20260)
    with listening_socket() as sock:
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    store_path = tmp_path / "store" / "tokens.json"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "MCP_SECRET": SECRET,
        "PROJECTS_BASE_DIR": str(tmp_path),
        "TOKEN_STORE_PATH": str(store_path),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SERVER_URL": url,
        "LOG_LEVEL": "WARNING",
    }
    authorize = {**AUTHORIZE, "resource": f"{url}/mcp"}
    chains: list[dict[str, str]] = []  # per chain: the newest tokens whose answer arrived
    lost = 0  # requests whose answer never came (the server was killed under them)

    class Round:
        up = anyio.Event()
        recovered: set[int] = set()
        all_recovered = anyio.Event()

    async def worker(index: int) -> None:
        nonlocal lost
        chain: dict[str, str] | None = None
        async with httpx2.AsyncClient(base_url=url, timeout=10) as http:
            while True:
                await Round.up.wait()
                try:
                    if chain is None or rng.random() < 0.05:
                        response = await http.get("/authorize", params=authorize)
                        assert response.status_code == 302, response.text
                        code = parse_qs(urlsplit(response.headers["location"]).query)["code"][0]
                        response = await http.post("/token", data={**token_form(code), "resource": f"{url}/mcp"})
                        assert response.status_code == 200, response.text
                        chain = {"access": response.json()["access_token"], "refresh": response.json()["refresh_token"]}
                        chains.append(chain)
                    else:
                        response = await http.post("/token", data=refresh_form(chain["refresh"]))
                        assert response.status_code == 200, (response.text, chain)
                        chain.update(access=response.json()["access_token"], refresh=response.json()["refresh_token"])
                except httpx2.TransportError:
                    lost += 1  # the server is gone: once it is back, the same request again
                    continue
                Round.recovered.add(index)
                if len(Round.recovered) == workers:
                    Round.all_recovered.set()

    server = ForkServer(env, tmp_path, tmp_path / "server.log")
    try:
        async with anyio.create_task_group() as group:
            for index in range(workers):
                group.start_soon(worker, index)
            for _ in range(kills):
                server.start()
                await wait_for_health(url, server.proc, server.log_path.read_text, poll=0.005)
                Round.recovered, Round.all_recovered = set(), anyio.Event()
                Round.up.set()
                # every client has had an answer since the restart (so no chain loses two answers
                # in a row, which would be a reuse of its refresh token), then a random moment
                with anyio.fail_after(20):
                    await Round.all_recovered.wait()
                await anyio.sleep(rng.uniform(0, 0.05))
                Round.up = anyio.Event()
                server.kill()
                on_disk = json.loads(store_path.read_bytes())
                assert rc_mcp.store_problem(on_disk) is None
            group.cancel_scope.cancel()
        server.start()  # the final restart: nothing is killed any more
        await wait_for_health(url, server.proc, server.log_path.read_text)
        assert lost >= 1 and len(chains) >= workers, (lost, len(chains))
        async with httpx2.AsyncClient(base_url=url, timeout=10) as http:
            for chain in chains:
                assert (await mcp_status(http, chain["access"])).status_code == 200, chain
            for chain in chains:
                response = await http.post("/token", data=refresh_form(chain["refresh"]))
                assert response.status_code == 200, (response.text, chain)
        assert [p.name for p in store_path.parent.iterdir() if "corrupt" in p.name or p.name.endswith(".tmp")] == []
    finally:
        server.close()


def test_a_write_starts_from_the_file_even_right_after_another_process_wrote(tmp_path: Path) -> None:
    """No waiting for a recheck: under the file lock, every write reads the file first."""
    path = tmp_path / "tokens.json"
    server = rc_mcp.TokenStore(path)
    server.transact(
        lambda data, now: (add_access(data, "a1", now, grant="g1"), add_access(data, "a2", now, grant="g2"))
    )
    rc_mcp.TokenStore(path).transact(lambda data, now: rc_mcp.revoke_grant(data, "g1"))
    server.transact(lambda data, now: add_access(data, "a3", now, grant="g3"))  # at once
    assert set(json.loads(path.read_text())["grants"]) == {"g2", "g3"}


@pytest.mark.parametrize(
    "content, problem",
    [
        (b'{"version": 1, "access": {"k": {"client_id": "c", "grant_id": "g", "scope": "s", "resource": "r", '
         b'"expires_at": Infinity}}}', "Infinity"),
        (b'{"version": 1, "refresh": {"k": {"client_id": "c", "grant_id": "g", "scope": "s", "resource": "r", '
         b'"expires_at": 9e9, "rotated_at": "yesterday"}}}', "invalid 'rotated_at'"),
        (b'{"version": 1, "clients": {"c": {"client_name": "x", "redirect_uris": [1], "created_at": 1, '
         b'"expires_at": 9e9}}}', "invalid 'redirect_uris'"),
        (b'{"version": 1, "codes": {"k": {"client_id": "c", "grant_id": "g", "expires_at": 9e9}}}', "incomplete"),
        (b'{"version": 1, "owner": {"code_failures": "many"}}', "'owner'"),
    ],
)  # fmt: skip
def test_records_that_would_fail_later_are_refused_at_once(
    tmp_path: Path, content: bytes, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(content)
    store = rc_mcp.TokenStore(path)
    assert store.count("access") == store.count("refresh") == store.count("clients") == 0
    [aside] = tmp_path.glob("tokens.json.corrupt-*")
    assert aside.read_bytes() == content and problem in caplog.text


def test_a_damaged_file_from_another_process_is_moved_aside_not_overwritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.json"
    server = rc_mcp.TokenStore(path)
    server.transact(lambda data, now: add_access(data, "a1", now))
    damaged = b'{"version": 1, "access": {"k": {"client_id": 5}}}'
    path.write_bytes(damaged)  # another process, gone wrong
    server.transact(lambda data, now: add_access(data, "a2", now, grant="g2"))
    [aside] = tmp_path.glob("tokens.json.corrupt-*")
    assert aside.read_bytes() == damaged and "changed by another process" in caplog.text
    assert "went on with what this server held before" in caplog.text
    assert set(json.loads(path.read_text())["access"]) == {"a1", "a2"}  # the server's last good state, and on


# ── Clients ───────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "secret, client_id, client_secret",
    [
        (SECRET, CLIENT_ID, CLIENT_SECRET),
        (
            "correct horse battery staple",
            "d25e9e3a45d3278673072aa18ccf51297d0e",
            "3e1b71cda294b600910bf83c48f2630a9c23035f00a3860aa0d18aa214da93ff",
        ),
    ],
)
def test_derive_client_credentials_matches_the_original_server(secret: str, client_id: str, client_secret: str) -> None:
    assert rc_mcp.derive_client_credentials(secret) == (client_id, client_secret)


@pytest.mark.parametrize(
    "header, parsed",
    [
        (_basic("id:secret"), ("id", "secret")),
        (_basic("id%3Ax:se%20cret"), ("id:x", "se cret")),  # RFC 6749 §2.3.1 form-encoding
        (_basic("id:"), ("id", "")),
        (_basic("no-colon"), None),
        ("Basic !!!", None),
        ("Bearer abc", None),
        ("Basic", None),
    ],
)
def test_parse_basic_auth(header: str, parsed: tuple[str, str] | None) -> None:
    assert rc_mcp.parse_basic_auth(header) == parsed


@pytest.mark.parametrize(
    "address, public",
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:93.184.216.34", True),
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("2002:a00:1::", False),  # 6to4
        ("224.0.0.1", False),
        ("not an address", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert rc_mcp.is_public_address(address) is public


async def test_register_never_hands_out_credentials(http: httpx2.AsyncClient) -> None:
    for body in (
        {"redirect_uris": [CALLBACK]},
        {"redirect_uris": [CALLBACK], "token_endpoint_auth_method": "client_secret_post", "client_name": "Claude"},
        {"redirect_uris": ["http://127.0.0.1:6274/oauth/callback"], "token_endpoint_auth_method": "none"},
    ):
        response = await http.post("/register", json=body)
        assert response.status_code == 201, response.text
        registered = response.json()
        assert registered["token_endpoint_auth_method"] == "none" and "client_secret" not in registered
        assert CLIENT_SECRET not in response.text and CLIENT_ID not in response.text
        assert registered["client_id"] != CLIENT_ID and registered["redirect_uris"] == body["redirect_uris"]


async def test_loopback_redirect_of_a_registered_client_matches_any_port(http: httpx2.AsyncClient) -> None:
    client_id = await register(http, "http://127.0.0.1:6276/oauth/callback")
    page = await http.get("/authorize", params=public_authorize(client_id, "http://127.0.0.1:50123/oauth/callback"))
    assert page.status_code == 200
    for other in (
        "http://127.0.0.1:50123/other",
        "http://localhost:50123/oauth/callback",
        "https://127.0.0.1:6276/oauth/callback",
    ):
        refused = await http.get("/authorize", params=public_authorize(client_id, other))
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_request")


async def test_registration_cannot_fill_the_disk(app: rc_mcp.App, http: httpx2.AsyncClient) -> None:
    for i in range(rc_mcp.MAX_REGISTERED_CLIENTS + 20):
        assert (await http.post("/register", json={"redirect_uris": [f"https://app{i}.example/cb"]})).status_code == 201
    assert app.store.count("clients") == rc_mcp.MAX_REGISTERED_CLIENTS
    # a client the owner approved is never evicted by strangers' registrations
    approved = await register(http)
    params = public_authorize(approved, INSPECTOR_CALLBACK)
    assert (await consent(http, params, action="approve", password=SECRET)).status_code == 302
    for i in range(rc_mcp.MAX_REGISTERED_CLIENTS):
        await http.post("/register", json={"redirect_uris": [f"https://again{i}.example/cb"]})
    assert (await http.get("/authorize", params=params)).status_code == 200


async def test_unused_registrations_expire(http: httpx2.AsyncClient, clock: Clock) -> None:
    client_id = await register(http)
    clock.now += rc_mcp.UNUSED_CLIENT_TTL + 1
    response = await http.get("/authorize", params=public_authorize(client_id, INSPECTOR_CALLBACK))
    assert (response.status_code, response.json()["error"]) == (400, "invalid_client")
    unknown = await http.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": "x", "client_id": client_id}
    )
    assert (unknown.status_code, unknown.json()["error"]) == (401, "invalid_client")  # Claude.ai re-registers


@pytest.mark.parametrize(
    "client_id, redirect_uri",
    [
        ("https://claude.ai/oauth/mcp-oauth-client-metadata", CALLBACK),
        ("https://claude.ai/oauth/claude-code-client-metadata", "http://localhost:53682/callback"),
        ("https://claude.ai/oauth/claude-code-client-metadata", "http://127.0.0.1:40000/callback"),
    ],
)
async def test_claude_metadata_document_clients(http: httpx2.AsyncClient, client_id: str, redirect_uri: str) -> None:
    params = public_authorize(client_id, redirect_uri)
    page = await http.get("/authorize", params=params)
    assert page.status_code == 200 and "Claude" in page.text
    approved = await consent(http, params, action="approve", password=SECRET)
    code = parse_qs(urlsplit(approved.headers["location"]).query)["code"][0]
    tokens = await http.post(
        "/token", data=token_form(code, client_id=client_id, client_secret=None, redirect_uri=redirect_uri)
    )
    assert tokens.status_code == 200, tokens.text


class FakeFetcher(rc_mcp.ClientMetadataFetcher):
    """Serves metadata documents from a dict instead of the network."""

    def __init__(self, documents: dict[str, Any]) -> None:
        super().__init__()
        self.documents = documents
        self.fetches = 0

    async def fetch(self, url: str) -> Any:
        self.fetches += 1
        if url not in self.documents:
            raise ValueError("404")
        return self.documents[url]


DOC_URL = "https://app.example/oauth/client.json"


@pytest.mark.parametrize(
    "document, ok, valid",
    [
        ({"client_id": DOC_URL, "client_name": "Example", "redirect_uris": ["https://app.example/cb"]}, True, True),
        ({"client_id": "https://other.example/client.json", "redirect_uris": ["https://app.example/cb"]}, False, False),
        ({"client_id": DOC_URL, "redirect_uris": ["https://elsewhere.example/cb"]}, False, True),  # redirect not listed
        ({"client_id": DOC_URL, "redirect_uris": ["javascript:alert(1)"]}, False, False),
        (
            {
                "client_id": DOC_URL,
                "redirect_uris": ["https://app.example/cb"],
                "token_endpoint_auth_method": "private_key_jwt",
            },
            False,
            False,
        ),
        (["not", "an", "object"], False, False),
    ],
)
async def test_fetched_metadata_documents_are_validated(
    tmp_path: Path, clock: Clock, document: Any, ok: bool, valid: bool
) -> None:
    config = rc_mcp.load_config(base_env(tmp_path, SERVER_URL=TEST_URL))
    fetcher = FakeFetcher({DOC_URL: document})
    app = rc_mcp.App(config, store=rc_mcp.TokenStore(config.token_store_path, clock=clock), fetcher=fetcher)
    async with asgi_client(app) as http:
        for _ in range(2):
            response = await http.get("/authorize", params=public_authorize(DOC_URL, "https://app.example/cb"))
            if ok:
                assert response.status_code == 200 and "Example" in response.text
            else:
                assert response.status_code == 400 and "location" not in response.headers
    assert fetcher.fetches == (1 if valid else 2)  # a valid document is cached


def no_http_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to send a request fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a request was about to be sent")

    monkeypatch.setattr(rc_mcp.httpx2, "AsyncClient", refuse)


@pytest.mark.parametrize(
    "url",
    [
        "https://localhost/client.json",
        "https://127.0.0.1/client.json",
        "https://[::1]/client.json",
        "https://10.0.0.1/c.json",
        "https://169.254.169.254/latest",
    ],
)
async def test_metadata_documents_are_never_fetched_from_private_addresses(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_http_client(monkeypatch)
    with pytest.raises(ValueError) as refused:
        await rc_mcp.ClientMetadataFetcher().fetch(url)
    # the same words as for a name that does not resolve: the answer maps no internal names
    assert str(refused.value) == rc_mcp.FETCH_FAILED


async def test_metadata_fetch_refuses_names_that_resolve_to_private_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    async def rebinding(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port)),
        ]

    async def unknown(host: str, port: int, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    no_http_client(monkeypatch)
    answers = []
    for resolver in (rebinding, unknown):
        monkeypatch.setattr(rc_mcp.anyio, "getaddrinfo", resolver)
        with pytest.raises(ValueError) as refused:
            await rc_mcp.ClientMetadataFetcher().fetch("https://evil.example/client.json")
        answers.append(str(refused.value))
    assert answers == [rc_mcp.FETCH_FAILED, rc_mcp.FETCH_FAILED]  # "not public" reads as "cannot resolve"


@pytest.fixture(scope="module")
def metadata_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Any]]:
    """A real HTTPS server on 127.0.0.1 with a self-signed certificate for "localhost"."""
    import datetime as dt
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    sock = listening_socket()
    port = sock.getsockname()[1]
    base = f"https://localhost:{port}"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        status, headers, body = 200, [(b"content-type", b"application/json")], b""
        if path == "/ok.json":
            body = json.dumps(
                {"client_id": base + "/ok.json", "client_name": "Fetched", "redirect_uris": ["https://app.example/cb"]}
            ).encode()
        elif path == "/redirect.json":
            status, headers = 302, [(b"location", (base + "/ok.json").encode())]
        elif path == "/huge.json":
            body = b" " * 100_000 + b"{}"
        elif path == "/slow.json":
            await anyio.sleep(5)  # ten times the fetcher's timeout; over long before this module's teardown
            body = b"{}"
        else:
            status = 404
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    server = ThreadedServer(
        app, sock, ssl_certfile=str(folder / "cert.pem"), ssl_keyfile=str(folder / "key.pem"), lifespan="off"
    )
    context = ssl.create_default_context(cafile=str(folder / "cert.pem"))
    try:
        yield port, context
    finally:
        server.stop()


@pytest.mark.parametrize(
    "path, outcome",
    [
        ("/ok.json", "Fetched"),
        ("/redirect.json", "answered 302"),  # redirects are never followed
        ("/huge.json", "larger than 64 KB"),
        ("/slow.json", "took too long"),
        ("/missing.json", "answered 404"),
    ],
)
async def test_metadata_fetch_guards(
    metadata_server: tuple[int, Any], monkeypatch: pytest.MonkeyPatch, path: str, outcome: str
) -> None:
    port, context = metadata_server

    async def resolve_to_loopback(host: str, port: int, **kwargs: Any) -> list[Any]:
        assert host == "localhost"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(rc_mcp.anyio, "getaddrinfo", resolve_to_loopback)
    # the test server lives on loopback, so this one fetcher is allowed to reach it
    # a total timeout long enough for a loopback TLS fetch, short enough not to wait long for /slow.json
    fetcher = rc_mcp.ClientMetadataFetcher(
        allow_address=lambda address: address == "127.0.0.1", verify=context, timeout=0.5
    )
    url = f"https://localhost:{port}{path}"
    if outcome == "Fetched":
        assert (await fetcher.get(url)).name == "Fetched"
    else:
        with pytest.raises(ValueError, match=outcome):
            await fetcher.get(url)
    # with the production policy the very same server is refused before anything is sent
    no_http_client(monkeypatch)
    with pytest.raises(ValueError) as refused:
        await rc_mcp.ClientMetadataFetcher(verify=context).fetch(url)
    assert str(refused.value) == rc_mcp.FETCH_FAILED


@pytest.mark.parametrize("mode", ["credentials", "dcr", "cimd"])
async def test_e2e_each_claude_ai_registration_mode(tools: Tools, mode: str) -> None:
    """Claude.ai's three ways to identify itself, each with its real callback URL, `resource` and auth method."""
    claude = ClaudeAi(SECRET, mode=mode, owner_password=SECRET)
    async with tools(claude) as (client, _):
        assert (await call(client, "list_projects"))["projects"] == EXPECTED_PROJECTS
    assert claude.authorizations == 1
    assert claude.consent_pages == {"credentials": 0, "dcr": 1, "cimd": 1}[mode]  # only the fixed client skips the page
    info = claude.storage.client_info
    assert info is not None
    expected = {
        "credentials": (CLIENT_ID, "client_secret_post", CLIENT_SECRET),
        "dcr": (info.client_id, "none", None),  # asked for client_secret_post, registered as public
        "cimd": ("https://claude.ai/oauth/mcp-oauth-client-metadata", "none", None),
    }[mode]
    assert (info.client_id, info.token_endpoint_auth_method, info.client_secret) == expected
    if mode == "dcr":
        assert info.client_id.startswith("rcc_")


@pytest.mark.parametrize(
    "uri, fragment",
    [
        ("https://app.example.com/callback", None),
        ("https://app.example.com/cb?x=1", None),
        ("http://127.0.0.1:6274/oauth/callback", None),
        ("http://localhost/callback", None),
        ("http://[::1]:3000/cb", None),
        ("http://app.example.com/cb", "must be https, or http on 127.0.0.1"),
        ("https://app.example.com/cb#frag", "must not carry a fragment or credentials"),
        ("https://user:pw@app.example.com/cb", "must not carry a fragment or credentials"),
        ("https://ex\u0430mple.com/cb", "must be ASCII"),
        ("https://app.example.com/c b", "is malformed"),
        ("https://app.example.com:99999/cb", "is malformed"),
        ("javascript:alert(1)", "must be https"),
        ("", "is malformed"),
        (42, "is malformed"),
        ("https://" + "a" * 2000, "is malformed"),
        ("https://a;b.example/cb", "has no valid host name"),
        ("https://*.example/cb", "has no valid host name"),
        ("https://-a.example/cb", "has no valid host name"),
    ],
)
def test_validate_redirect_uri(uri: Any, fragment: str | None) -> None:
    if fragment is None:
        assert rc_mcp.validate_redirect_uri(uri) == uri
    else:
        with pytest.raises(ValueError, match=re.escape(fragment)):
            rc_mcp.validate_redirect_uri(uri)


@pytest.mark.parametrize(
    "registered, requested, matches",
    [
        ("https://app.example.com/cb", "https://app.example.com/cb", True),
        ("https://app.example.com/cb", "https://app.example.com/cb/", False),
        ("https://app.example.com/cb", "https://APP.example.com/cb", False),
        ("https://app.example.com:443/cb", "https://app.example.com/cb", False),
        ("http://127.0.0.1/cb", "http://127.0.0.1:50123/cb", True),
        ("http://127.0.0.1:6274/cb", "http://127.0.0.1:50123/cb", True),
        ("http://localhost/cb", "http://127.0.0.1:50123/cb", False),
        ("http://127.0.0.1/cb", "http://127.0.0.1:50123/cb?x=1", False),
        ("http://127.0.0.1/cb", "http://127.0.0.1:50123/other", False),
        ("http://127.0.0.1/cb", "http://127.0.0.1:50123/cb#f", False),
        ("http://127.0.0.1/cb", "http://u@127.0.0.1:50123/cb", False),
        ("http://127.0.0.1/cb", "https://127.0.0.1:50123/cb", False),
        ("http://127.0.0.1/cb", "http://127.0.0.1:bad/cb", False),
        ("https://app.example.com/cb", "https://app.example.com:8443/cb", False),
    ],
)
def test_redirect_uri_matches(registered: str, requested: str, matches: bool) -> None:
    assert rc_mcp.redirect_uri_matches(registered, requested) is matches


@pytest.mark.parametrize(
    "name, shown",
    [
        ("MCP Inspector", "MCP Inspector"),
        ("Cl\u202eedua\u202c", "Cledua"),  # a right-to-left override would show "Claude"
        ("Clau\u200bde\u200d", "Claude"),  # zero-width space and joiner
        ("line\u2028break\nand\rreturn", "linebreakandreturn"),
        ("\u2066isolated\u2069 \ufeffbom", "isolated bom"),
        ("\u200b\u200b", "unnamed client"),
        ("x" * 200, "x" * 80),
    ],
)
def test_client_names_are_shown_as_they_read(name: str, shown: str) -> None:
    assert rc_mcp.clean_client_name(name) == shown


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"redirect_uris": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        b'{"redirect_uris": ["https://a.example/cb"], "grant_types": [{}]}',
        b'{"redirect_uris": ["https://a.example/cb"], "grant_types": [["authorization_code"]]}',
        b'{"redirect_uris": ["https://a.example/cb"], "response_types": [1]}',
        b'{"redirect_uris": [{"uri": "https://a.example/cb"}]}',
        b'{"redirect_uris": "https://a.example/cb"}',
        b'{"redirect_uris": ["https://a;b.example/cb"]}',
        b'{"redirect_uris": ["https://*.example/cb"]}',
    ],
)
async def test_register_answers_400_to_type_confusion_and_nesting(http: httpx2.AsyncClient, body: bytes) -> None:
    response = await http.post("/register", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] in ("invalid_client_metadata", "invalid_redirect_uri")


async def test_a_registration_flood_cannot_evict_a_client_awaiting_consent(
    app: rc_mcp.App, http: httpx2.AsyncClient
) -> None:
    owner = await register(http, name="Owner's app")
    params = public_authorize(owner, INSPECTOR_CALLBACK)
    assert (await http.get("/authorize", params=params)).status_code == 200  # the owner opens the consent page
    for i in range(rc_mcp.MAX_REGISTERED_CLIENTS + 10):  # … while a stranger floods /register
        response = await http.post("/register", json={"redirect_uris": [INSPECTOR_CALLBACK], "client_name": f"x{i}"})
        assert response.status_code == 201
    assert app.store.registered_client(owner) is not None
    approved = await consent(http, params, action="approve", password=SECRET)
    assert approved.status_code == 302 and "code=" in approved.headers["location"]


async def test_the_owner_is_never_queued_behind_guessers(app: rc_mcp.App, http: httpx2.AsyncClient) -> None:
    tokens = await get_tokens(http)
    guesses = app.oauth.clients.guesses
    for _ in range(20):
        guesses.fail()
    guesses._waiting = rc_mcp.GUESS_MAX_WAITING  # strangers fill the queue
    refreshed = await http.post("/token", data=refresh_form(tokens["refresh_token"]))
    assert refreshed.status_code == 200, refreshed.text  # id and secret right: no throttle at all
    guessed = await http.post("/token", data=token_form("x", client_secret="wrong"))
    assert (guessed.status_code, guessed.json()["error"]) == (429, "temporarily_unavailable")


async def test_only_a_few_open_consent_pages_are_kept_from_eviction(app: rc_mcp.App, http: httpx2.AsyncClient) -> None:
    clients = [await register(http, name=f"c{i}") for i in range(rc_mcp.AWAITING_CONSENT_KEPT + 4)]
    for client_id in clients:
        assert (await http.get("/authorize", params=public_authorize(client_id, INSPECTOR_CALLBACK))).status_code == 200
    assert list(app.oauth._awaiting_consent) == clients[-rc_mcp.AWAITING_CONSENT_KEPT :]


# ── Grants ────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "verifier, challenge, ok",
    [
        (VERIFIER, CHALLENGE, True),
        (VERIFIER, CHALLENGE[:-1] + "N", False),
        (VERIFIER[:-1], CHALLENGE, False),
        ("short", rc_mcp.pkce_challenge("short"), False),  # RFC 7636: 43..128 characters
        ("a" * 129, rc_mcp.pkce_challenge("a" * 129), False),
        ("a" * 43, rc_mcp.pkce_challenge("a" * 43), True),
        ("a" * 42 + "!", rc_mcp.pkce_challenge("a" * 42 + "!"), False),  # outside the unreserved set
        ("é" * 43, CHALLENGE, False),
        (VERIFIER, VERIFIER, False),  # "plain" is not accepted
    ],
)
def test_verify_pkce(verifier: str, challenge: str, ok: bool) -> None:
    assert rc_mcp.verify_pkce(verifier, challenge) is ok


@pytest.mark.parametrize(
    "url, canonical",
    [
        ("https://rc.example.com/mcp", "https://rc.example.com/mcp"),
        ("HTTPS://RC.Example.COM/mcp/", "https://rc.example.com/mcp"),
        ("https://rc.example.com:443/mcp", "https://rc.example.com/mcp"),
        ("http://127.0.0.1:8080/mcp", "http://127.0.0.1:8080/mcp"),
        ("http://[::1]:8080/mcp", "http://[::1]:8080/mcp"),
        ("https://rc.example.com/mcp#frag", None),
        ("ftp://rc.example.com/mcp", None),
        ("/mcp", None),
        ("https://rc.example.com:99999/mcp", None),
    ],
)
def test_canonical_resource(url: str, canonical: str | None) -> None:
    assert rc_mcp.canonical_resource(url) == canonical


async def test_code_flow_with_post_and_basic_client_auth(http: httpx2.AsyncClient) -> None:
    tokens = await get_tokens(http)
    # 30 days: Claude.ai often never refreshes (the link still ends after 7 idle days)
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 30 * 86400 and tokens["scope"] == "mcp:tools"
    for path in ("/mcp", "/mcp/"):  # both answered, no redirect
        response = await mcp_status(http, tokens["access_token"], path=path)
        assert response.status_code == 200, response.text
        assert "start_session" in response.text
    code = await get_code(http)
    basic = {"Authorization": _basic(f"{CLIENT_ID}:{CLIENT_SECRET}")}
    response = await http.post("/token", data=token_form(code, client_id=None, client_secret=None), headers=basic)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store" and response.headers["pragma"] == "no-cache"


async def test_authorize_by_post_form(http: httpx2.AsyncClient) -> None:
    response = await http.post("/authorize", data=AUTHORIZE)
    assert response.status_code == 302 and "code=" in response.headers["location"]


async def wait_for_use_records(app: rc_mcp.App) -> None:
    """The uses a request noted are written in the background (at most once a minute): let it finish."""
    if app.oauth._flush is not None:
        await app.oauth._flush


async def test_a_use_noted_while_uses_are_written_is_written_next(app: rc_mcp.App) -> None:
    """A use noted during a write starts no write of its own: the write under way makes one more."""
    grants, began, gate, written = app.oauth.grants, asyncio.Event(), asyncio.Event(), []

    async def transact(change: Any) -> None:
        data = {"grants": {"g": {"last_used": 0.0, "expires_at": 0.0}}}
        change(data, 0.0)
        written.append(data["grants"]["g"]["last_used"])
        began.set()
        await gate.wait()

    grants._transact = transact  # type: ignore[method-assign]
    grants._touched = {"g": 1.0}
    flush = asyncio.create_task(grants.flush_uses())
    await began.wait()
    grants._touched["g"] = 2.0  # what touch() does for a request now
    gate.set()
    await flush
    assert written == [1.0, 2.0] and grants._touched == {}


async def test_expiry_of_codes_and_tokens(app: rc_mcp.App, http: httpx2.AsyncClient, clock: Clock) -> None:
    code = await get_code(http)
    clock.now += 601
    response = await http.post("/token", data=token_form(code))
    assert response.json()["error"] == "invalid_grant"
    tokens = await get_tokens(http)
    for _ in range(30):  # used daily for 30 days, never refreshed: alive until the access token's own end
        assert (await mcp_status(http, tokens["access_token"])).status_code == 200
        await wait_for_use_records(app)
        clock.now += 86400
    assert (await mcp_status(http, tokens["access_token"])).status_code == 401


async def test_an_unused_link_ends_after_the_idle_limit(
    app: rc_mcp.App, http: httpx2.AsyncClient, clock: Clock
) -> None:
    tokens = await get_tokens(http)
    clock.now += 7 * 86400 - 60  # a week less a minute without use: still alive, and the use counts
    assert (await mcp_status(http, tokens["access_token"])).status_code == 200
    await wait_for_use_records(app)
    clock.now += 7 * 86400 - 60
    assert (await mcp_status(http, tokens["access_token"])).status_code == 200
    await wait_for_use_records(app)
    clock.now += 7 * 86400 + 1  # then a week and a second idle: the link is gone, refresh token too
    response = await mcp_status(http, tokens["access_token"])
    assert response.status_code == 401 and "unused for too long" in response.headers["www-authenticate"]
    refused = await http.post("/token", data=refresh_form(tokens["refresh_token"]))
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")


async def test_replayed_code_revokes_its_tokens(http: httpx2.AsyncClient) -> None:
    code = await get_code(http)
    tokens = (await http.post("/token", data=token_form(code))).json()
    replay = await http.post("/token", data=token_form(code))
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert (await mcp_status(http, tokens["access_token"])).status_code == 401
    refresh = {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    assert (await http.post("/token", data=refresh)).json()["error"] == "invalid_grant"


async def test_public_client_cannot_use_another_clients_code(http: httpx2.AsyncClient) -> None:
    first, second = await register(http), await register(http)
    approved = await consent(http, public_authorize(first, INSPECTOR_CALLBACK), action="approve", password=SECRET)
    code = parse_qs(urlsplit(approved.headers["location"]).query)["code"][0]
    stolen = await http.post(
        "/token", data=token_form(code, client_id=second, client_secret=None, redirect_uri=INSPECTOR_CALLBACK)
    )
    assert (stolen.status_code, stolen.json()["error"]) == (400, "invalid_grant")
    fixed = await http.post("/token", data=token_form(code, redirect_uri=INSPECTOR_CALLBACK))
    assert (fixed.status_code, fixed.json()["error"]) == (400, "invalid_grant")


async def test_refresh_tokens_rotate(http: httpx2.AsyncClient) -> None:
    tokens = await get_tokens(http)
    first = await http.post("/token", data=refresh_form(tokens["refresh_token"]))
    assert first.status_code == 200
    assert first.json()["refresh_token"] != tokens["refresh_token"]
    narrower = await http.post("/token", data=refresh_form(first.json()["refresh_token"], scope="mcp:tools"))
    assert narrower.status_code == 200
    wider = await http.post(
        "/token", data=refresh_form(narrower.json()["refresh_token"], scope="mcp:tools offline_access")
    )
    assert (wider.status_code, wider.json()["error"]) == (400, "invalid_scope")


async def test_concurrent_refresh_gets_one_grace_use(http: httpx2.AsyncClient) -> None:
    """Two refreshes racing with the same token must not log the user out (both get the same answer,
    so the grant stays one chain); a third use is theft."""
    tokens = await get_tokens(http)
    first, second = await asyncio.gather(
        *(http.post("/token", data=refresh_form(tokens["refresh_token"])) for _ in range(2))
    )
    assert first.status_code == second.status_code == 200
    assert (first.json()["access_token"], first.json()["refresh_token"]) == (
        second.json()["access_token"],
        second.json()["refresh_token"],
    )
    assert (await mcp_status(http, first.json()["access_token"])).status_code == 200
    third = await http.post("/token", data=refresh_form(tokens["refresh_token"]))
    assert (third.status_code, third.json()["error"]) == (400, "invalid_grant")
    # reuse revoked the whole grant
    assert (await mcp_status(http, first.json()["access_token"])).status_code == 401
    assert (await http.post("/token", data=refresh_form(first.json()["refresh_token"]))).status_code == 400


async def test_a_refused_refresh_does_not_use_up_the_grace(http: httpx2.AsyncClient) -> None:
    tokens = await get_tokens(http)
    rotated = (await http.post("/token", data=refresh_form(tokens["refresh_token"]))).json()
    wider = await http.post("/token", data=refresh_form(tokens["refresh_token"], scope="admin"))
    assert (wider.status_code, wider.json()["error"]) == (400, "invalid_scope")
    retry = await http.post("/token", data=refresh_form(tokens["refresh_token"]))
    assert retry.status_code == 200 and retry.json()["refresh_token"] == rotated["refresh_token"]
    assert (await http.post("/token", data=refresh_form(rotated["refresh_token"]))).status_code == 200  # one chain


async def test_rotated_refresh_token_after_the_grace_window_revokes_the_grant(
    http: httpx2.AsyncClient, clock: Clock
) -> None:
    tokens = await get_tokens(http)
    rotated = (await http.post("/token", data=refresh_form(tokens["refresh_token"]))).json()
    clock.now += rc_mcp.REFRESH_GRACE + 1
    reuse = await http.post("/token", data=refresh_form(tokens["refresh_token"]))
    assert (reuse.status_code, reuse.json()["error"]) == (400, "invalid_grant")
    assert (await http.post("/token", data=refresh_form(rotated["refresh_token"]))).json()["error"] == "invalid_grant"


async def test_a_new_mcp_secret_ends_every_old_token(tmp_path: Path, clock: Clock) -> None:
    async with asgi_client(make_app(tmp_path, clock)) as http:
        tokens = await get_tokens(http)
    async with asgi_client(make_app(tmp_path, clock, MCP_SECRET="a-brand-new-secret-0123456789")) as http:  # same store
        assert (await mcp_status(http, tokens["access_token"])).status_code == 401
        refused = await http.post("/token", data=refresh_form(tokens["refresh_token"]))
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")  # the old client is gone too


async def test_revocation(http: httpx2.AsyncClient) -> None:
    tokens = await get_tokens(http)
    creds = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    assert (await http.post("/revoke", data={"token": "unknown", **creds})).status_code == 200
    assert (await http.post("/revoke", data={"token": tokens["refresh_token"], **creds})).status_code == 200
    assert (await mcp_status(http, tokens["access_token"])).status_code == 401  # the grant went with it
    wrong = await http.post("/revoke", data={"token": "x", "client_id": CLIENT_ID, "client_secret": "nope"})
    assert wrong.status_code == 401


async def test_revoking_another_clients_token_does_nothing(http: httpx2.AsyncClient) -> None:
    tokens = await get_tokens(http)
    other = await register(http)
    response = await http.post("/revoke", data={"token": tokens["access_token"], "client_id": other})
    assert response.status_code == 200
    assert (await mcp_status(http, tokens["access_token"])).status_code == 200


async def test_token_for_another_resource_is_refused(app: rc_mcp.App, http: httpx2.AsyncClient) -> None:
    token = "rcat_other"
    app.store.transact(
        lambda data, now: (
            data["access"].__setitem__(
                rc_mcp.hash_secret(token),
                {
                    "client_id": CLIENT_ID,
                    "scope": "mcp:tools",
                    "resource": "https://other.example/mcp",
                    "grant_id": "g",
                    "expires_at": now + 60,
                },
            )
            or data["grants"].__setitem__("g", rc_mcp.new_grant(CLIENT_ID, "Claude", now, 3600))
        )
    )
    response = await mcp_status(http, token)
    assert response.status_code == 401 and "another resource" in response.headers["www-authenticate"]


async def test_refresh_token_is_not_an_access_token(http: httpx2.AsyncClient) -> None:
    tokens = await get_tokens(http)
    assert (await mcp_status(http, tokens["refresh_token"])).status_code == 401


async def test_e2e_silent_refresh_after_expiry(tools: Tools) -> None:
    claude = ClaudeAi(SECRET)
    async with tools(claude) as (client, server):
        await call(client, "list_sessions")
        first = claude.storage.tokens
        assert first is not None
        # The access token expires, on the server and by the client's clock: the next call
        # must refresh silently, without a new authorization.
        server.app.store.transact(lambda data, now: [r.update(expires_at=now - 1) for r in data["access"].values()])
        claude.last_provider.context.token_expiry_time = time.time() - 1
        await call(client, "list_sessions")
        assert claude.storage.tokens is not None and claude.storage.tokens.access_token != first.access_token
        assert claude.storage.tokens.refresh_token != first.refresh_token  # rotated
    assert claude.authorizations == 1


async def test_e2e_claude_ai_stays_linked_for_weeks_without_refreshing(tools: Tools) -> None:
    """Claude.ai often never refreshes: used every few days, the link lives on one token and one
    authorization (up to the token's 30 days); left alone for a week, it ends. (Time injected on the server.)"""
    claude, clock = ClaudeAi(SECRET), Clock()
    async with tools(claude) as (client, server):
        server.app.store.clock = clock
        await call(client, "list_sessions")
        first = claude.storage.tokens
        assert first is not None
        [grant_id] = server.app.store.grants()
        for _ in range(6):  # every 3 days, for 18 days
            clock.now += 3 * 86400
            await call(client, "list_sessions")
            deadline = time.monotonic() + 5  # the server writes the use down in the background
            while (server.app.store.grant(grant_id) or {}).get("last_used") != clock.now:
                assert time.monotonic() < deadline, "the use was never recorded"
                await asyncio.sleep(0.01)
        assert claude.storage.tokens.access_token == first.access_token  # never refreshed
        assert claude.authorizations == 1
        clock.now += 7 * 86400 + 1  # a week without use
        async with httpx2.AsyncClient(base_url=server.url) as raw:
            response = await mcp_status(raw, first.access_token)
        assert response.status_code == 401 and "unused for too long" in response.headers["www-authenticate"]


async def test_e2e_revocation_ends_access(devserver: DevServer, tmp_path: Path) -> None:
    claude = ClaudeAi(SECRET)
    with running(ssh_env(devserver, tmp_path)) as server:  # one server, two client sessions
        async with connect(server.url, claude) as client:
            await call(client, "list_sessions")
        tokens = claude.storage.tokens
        assert tokens is not None
        async with httpx2.AsyncClient() as http:
            revoked = await http.post(
                server.url + "/revoke",
                data={"token": tokens.refresh_token, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            )
            assert revoked.status_code == 200
            after = await http.post(
                server.url + "/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={
                    "Authorization": f"Bearer {tokens.access_token}",
                    "Accept": "application/json, text/event-stream",
                },
            )
            assert after.status_code == 401
        async with connect(server.url, claude) as client:  # the client has to authorize again
            await call(client, "list_sessions")
    assert claude.authorizations == 2


async def test_fixed_client_codes_are_sealed_and_stored_only_when_used(
    app: rc_mcp.App, http: httpx2.AsyncClient
) -> None:
    """Anyone may call /authorize with the (visible) client id: it must not pile up records."""
    codes = [await get_code(http) for _ in range(50)]
    assert app.store.count("codes") == 0
    assert all(code.startswith("rcsc_") for code in codes)
    tokens = await http.post("/token", data=token_form(codes[0]))
    assert tokens.status_code == 200
    assert app.store.count("codes") == 1  # the used-marker, so a replay is still caught
    replay = await http.post("/token", data=token_form(codes[0]))
    assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")
    assert (await mcp_status(http, tokens.json()["access_token"])).status_code == 401  # the replay revoked it


@pytest.mark.parametrize("tamper", ["payload", "mac", "prefix", "client"])
async def test_a_tampered_sealed_code_is_refused(app: rc_mcp.App, http: httpx2.AsyncClient, tamper: str) -> None:
    code = await get_code(http)
    body, mac = code.removeprefix("rcsc_").split(".")
    record = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    if tamper == "payload":
        record["redirect_uri"] = "https://evil.example/cb"
        body = base64.urlsafe_b64encode(json.dumps(record).encode()).rstrip(b"=").decode()
        forged = f"rcsc_{body}.{mac}"
    elif tamper == "mac":
        forged = f"rcsc_{body}.{mac[:-2]}AA"
    elif tamper == "prefix":
        forged = f"rcac_{body}.{mac}"
    else:  # sealed by this server, but for another client: not the fixed client's code
        forged = app.oauth.grants._seal({**record, "client_id": "someone-else"})
    response = await http.post("/token", data=token_form(forged))
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


async def test_unknown_client_and_wrong_secret_get_the_same_answer(http: httpx2.AsyncClient) -> None:
    code = await get_code(http)
    answers = []
    for client_id, client_secret in ((CLIENT_ID, "wrong"), ("0" * 36, CLIENT_SECRET), ("rcc_unknown", "x")):
        response = await http.post("/token", data=token_form(code, client_id=client_id, client_secret=client_secret))
        answers.append((response.status_code, response.json(), response.headers.get("www-authenticate")))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][:2] == (
        401,
        {"error": "invalid_client", "error_description": "unknown client or wrong client secret"},
    )


async def test_guessing_the_client_id_is_throttled_for_everyone(app: rc_mcp.App, http: httpx2.AsyncClient) -> None:
    """The client id is derived from MCP_SECRET, so a wrong one is a wrong guess of the secret: after
    a few, every attempt — the right id too, from any address — waits the same growing delay."""
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    app.oauth.clients.guesses.sleep = record
    for i in range(rc_mcp.GUESS_FREE):
        wrong = await http.get("/authorize", params={**AUTHORIZE, "client_id": f"{i:036x}"})
        assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_client")
    assert waits == []  # a few typos cost nothing
    for i in range(4):
        await http.get("/authorize", params={**AUTHORIZE, "client_id": f"g{i:035x}"})
    right = await http.get("/authorize", params=AUTHORIZE)
    assert right.status_code == 302  # the owner still gets in…
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8]  # …after the same wait as a wrong guess would have
    await http.post("/token", data=token_form("x", client_secret="wrong"))
    assert waits[-1] == 0.8 and app.oauth.clients.guesses.delay() == 1.6  # /token waits too, and counts
    for _ in range(10):
        await http.get("/authorize", params={**AUTHORIZE, "client_id": "f" * 36})
    assert waits[-1] == rc_mcp.GUESS_MAX_DELAY


# ── Consent page ──────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "address, key",
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("", ""),
    ],
)
def test_throttle_key(address: str, key: str) -> None:
    assert rc_mcp.throttle_key(address) == key


async def test_public_client_needs_the_owners_approval(http: httpx2.AsyncClient) -> None:
    client_id = await register(http)
    params = public_authorize(client_id, INSPECTOR_CALLBACK)
    page = await http.get("/authorize", params=params)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "MCP Inspector" in page.text and "localhost:6274" in page.text and 'type="password"' in page.text
    assert not re.search(r"<script|<link|<img|src=|href=|url\(", page.text)  # no JavaScript, no external assets
    assert (
        page.headers["x-frame-options"] == "DENY"
        and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    )
    assert page.headers["cache-control"] == "no-store" and "code=" not in page.text
    # a client nobody approved yet is not sent anywhere on "deny": it could be a stranger's
    denied = await consent(http, params, action="deny")
    assert denied.status_code == 200 and "location" not in denied.headers and "access_denied" in denied.text
    wrong = await consent(http, params, action="approve", password="guess")
    assert wrong.status_code == 403 and "Wrong code or password" in wrong.text and "location" not in wrong.headers
    approved = await consent(http, params, action="approve", password=SECRET)
    assert approved.status_code == 302
    back = parse_qs(urlsplit(approved.headers["location"]).query)
    assert approved.headers["location"].startswith(INSPECTOR_CALLBACK + "?") and back["iss"] == [TEST_URL]
    form = token_form(back["code"][0], client_id=client_id, client_secret=None, redirect_uri=INSPECTOR_CALLBACK)
    tokens = await http.post("/token", data=form)
    assert tokens.status_code == 200, tokens.text
    assert (await mcp_status(http, tokens.json()["access_token"])).status_code == 200
    refreshed = await http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens.json()["refresh_token"], "client_id": client_id},
    )
    assert refreshed.status_code == 200
    with_secret = await http.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refreshed.json()["refresh_token"],
            "client_id": client_id,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert (with_secret.status_code, with_secret.json()["error"]) == (401, "invalid_client")
    as_basic = await http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": refreshed.json()["refresh_token"]},
        headers={"Authorization": _basic(f"{client_id}:")},
    )
    assert (as_basic.status_code, as_basic.json()["error"]) == (
        401,
        "invalid_client",
    )  # public: no secret, not even an empty one
    # approved once, the client is the owner's: "deny" now goes back to it, with state and iss
    denied = await consent(http, params, action="deny")
    assert denied.status_code == 302
    back = parse_qs(urlsplit(denied.headers["location"]).query)
    assert back["error"] == ["access_denied"] and back["state"] == ["opaque-state"] and back["iss"] == [TEST_URL]


async def test_consent_password_is_throttled(http: httpx2.AsyncClient, clock: Clock) -> None:
    params = public_authorize(await register(http), INSPECTOR_CALLBACK)
    for _ in range(rc_mcp.CONSENT_MAX_FAILURES):
        assert (await consent(http, params, action="approve", password="guess")).status_code == 403
    blocked = await consent(http, params, action="approve", password=SECRET)  # even the right one, for now
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0 and "location" not in blocked.headers
    clock.now += rc_mcp.CONSENT_FAILURE_WINDOW + 1
    assert (await consent(http, params, action="approve", password=SECRET)).status_code == 302


async def test_e2e_without_the_owner_password_no_public_client_gets_in(tools: Tools, tmp_path: Path) -> None:
    claude = ClaudeAi(SECRET, mode="dcr", owner_password="not the secret")
    refused = pytest.RaisesExc(AssertionError, match="^/authorize answered 403 ")  # the consent page, again
    with pytest.RaisesGroup(refused, flatten_subgroups=True):
        async with tools(claude) as (client, _):
            await client.list_tools()
    assert (claude.authorizations, claude.consent_pages) == (1, 1)
    assert claude.storage.tokens is None


# RFC 4226 appendix D and RFC 6238 appendix B.
HOTP_VECTORS = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]
TOTP_KEYS = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890" * 1 + b"123456789012",
    "sha512": b"1234567890" * 6 + b"1234",
}
TOTP_VECTORS = [
    (59, "94287082", "46119246", "90693936"),
    (1111111109, "07081804", "68084774", "25091201"),
    (1111111111, "14050471", "67062674", "99943326"),
    (1234567890, "89005924", "91819424", "93441116"),
    (2000000000, "69279037", "90698825", "38618901"),
    (20000000000, "65353130", "77737706", "47863826"),
]


@pytest.mark.parametrize("counter, code", list(enumerate(HOTP_VECTORS)))
def test_hotp_rfc4226_vectors(counter: int, code: str) -> None:
    assert rc_mcp.hotp(b"12345678901234567890", counter, 6) == code


@pytest.mark.parametrize("at, sha1, sha256, sha512", TOTP_VECTORS)
def test_totp_rfc6238_vectors(at: int, sha1: str, sha256: str, sha512: str) -> None:
    for digest, code in (("sha1", sha1), ("sha256", sha256), ("sha512", sha512)):
        assert rc_mcp.totp(TOTP_KEYS[digest], at, 8, digest) == code


def authenticator_code(secret: str, at: float) -> str:
    return rc_mcp.totp(rc_mcp.consent_totp_key(secret), at)


async def test_the_owner_approves_with_an_authenticator_code(http: httpx2.AsyncClient, clock: Clock) -> None:
    client_id = await register(http)
    params = public_authorize(client_id, INSPECTOR_CALLBACK)
    code = authenticator_code(SECRET, clock.now)
    approved = await consent(http, params, action="approve", password=code[:3] + " " + code[3:])
    assert approved.status_code == 302 and "code=" in approved.headers["location"]
    replayed = await consent(http, params, action="approve", password=code)
    assert replayed.status_code == 403  # each code once
    clock.now += 30
    assert (
        await consent(http, params, action="approve", password=authenticator_code(SECRET, clock.now))
    ).status_code == 302
    old = authenticator_code(SECRET, clock.now - 90)
    assert (await consent(http, params, action="approve", password=old)).status_code == 403  # out of its window
    other = authenticator_code("another-secret-0123456789", clock.now)
    assert (await consent(http, params, action="approve", password=other)).status_code == 403


def consent_from(app: rc_mcp.App, address: str) -> httpx2.AsyncClient:
    """A client of `app` whose requests come from `address` (the Fly-Client-IP of a proxy on loopback)."""
    transport = httpx2.ASGITransport(app=app)
    return httpx2.AsyncClient(transport=transport, base_url=TEST_URL, headers={"Fly-Client-IP": address})


async def test_strangers_cannot_lock_the_owner_out(tmp_path: Path, clock: Clock) -> None:
    app = make_app(tmp_path, clock, CLIENT_IP_HEADER="Fly-Client-IP")
    async with app.session_manager.run():
        async with consent_from(app, "203.0.113.7") as stranger, consent_from(app, "198.51.100.2") as owner:
            client_id = await register(owner)
            params = public_authorize(client_id, INSPECTOR_CALLBACK)
            for _ in range(rc_mcp.CONSENT_MAX_FAILURES):
                assert (await consent(stranger, params, action="approve", password="guess")).status_code == 403
            assert (await consent(stranger, params, action="approve", password=SECRET)).status_code == 429
            # codes: a shared budget; spent by strangers, they pause — and the password still works
            for i in range(rc_mcp.TOTP_MAX_FAILURES):
                async with consent_from(app, f"192.0.2.{i + 10}") as elsewhere:
                    wrong = authenticator_code("not-the-secret-0123456789", clock.now + 1000 * i)
                    assert (await consent(elsewhere, params, action="approve", password=wrong)).status_code == 403
            paused = await consent(owner, params, action="approve", password=authenticator_code(SECRET, clock.now))
            assert paused.status_code == 409 and "type the server's MCP_SECRET" in paused.text
            assert (await consent(owner, params, action="approve", password=SECRET)).status_code == 302
            clock.now += rc_mcp.TOTP_FAILURE_WINDOW + 1
            fresh = authenticator_code(SECRET, clock.now)
            assert (await consent(owner, params, action="approve", password=fresh)).status_code == 302


def test_a_distributed_attack_leaves_each_address_one_try(clock: Clock) -> None:
    throttle = rc_mcp.ConsentThrottle(clock)
    for i in range(rc_mcp.CONSENT_GLOBAL_FAILURES):
        throttle.fail(f"10.1.{i // 250}.{i % 250}")
    assert throttle.retry_after("10.9.9.9") == 0  # an address that never failed still gets its try
    throttle.fail("10.9.9.9")
    assert throttle.retry_after("10.9.9.9") > 0
    clock.now += rc_mcp.CONSENT_FAILURE_WINDOW + 1
    assert throttle.retry_after("10.9.9.9") == 0


@pytest.mark.parametrize(
    "peer, header, trusted, address",
    [
        ("127.0.0.1", "203.0.113.9", "Fly-Client-IP", "203.0.113.9"),  # the platform's proxy names the client
        ("172.16.0.1", "2001:db8::1", "Fly-Client-IP", "2001:db8::1"),
        ("8.8.8.8", "203.0.113.9", "Fly-Client-IP", "8.8.8.8"),  # a public peer is no proxy of ours
        ("127.0.0.1", "not-an-address", "Fly-Client-IP", "127.0.0.1"),
        ("127.0.0.1", "203.0.113.9", None, "127.0.0.1"),  # header not configured: not read
        ("garbage", "", None, "unknown"),  # what a misconfigured X-Forwarded-For could hand over
        ("", "", None, "unknown"),
    ],
)
def test_client_address(peer: str, header: str, trusted: str | None, address: str) -> None:
    headers = {"fly-client-ip": header} if header else {}
    assert rc_mcp.client_address({"client": (peer, 1234)}, headers, trusted) == address


def test_addresses_that_failed_recently_are_never_forgotten_early(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rc_mcp, "CONSENT_TABLE_SIZE", 50)
    throttle = rc_mcp.ConsentThrottle(clock)
    for i in range(50):
        throttle.fail(f"2001:db8:{i:x}::1")
    # a full table of recent failures: a new address counts as locked, the old ones stay counted
    assert throttle.retry_after("2001:db8:ffff::1") == rc_mcp.CONSENT_FAILURE_WINDOW
    assert throttle.retry_after("2001:db8:0::2") > 0  # one failure each, in distributed mode: locked
    clock.now += rc_mcp.CONSENT_FAILURE_WINDOW + 1
    assert throttle.retry_after("2001:db8:ffff::1") == 0  # room again once they are old


def test_a_distributed_attack_is_counted_per_ipv6_48(clock: Clock) -> None:
    throttle = rc_mcp.ConsentThrottle(clock)
    for i in range(rc_mcp.CONSENT_GLOBAL_FAILURES):
        throttle.fail(f"198.18.{i // 250}.{i % 250}")
    throttle.fail("2001:db8:1:1::1")  # one /64 of a /48 fails …
    assert throttle.retry_after("2001:db8:1:2::1") > 0  # … and every other /64 of that /48 waits
    assert throttle.retry_after("2001:db8:2:1::1") == 0


def test_wrong_codes_have_a_budget_a_restart_does_not_refill(tmp_path: Path, clock: Clock) -> None:
    store = rc_mcp.TokenStore(tmp_path / "tokens.json", clock=clock)
    owner = rc_mcp.OwnerCheck(SECRET, store)
    for i in range(rc_mcp.TOTP_BUDGET):
        clock.now += 3600  # spread out: never more than the hourly limit
        assert owner.verify(authenticator_code("not-the-secret-0123456789", clock.now), f"192.0.2.{i % 200}") == "wrong"
    restarted = rc_mcp.OwnerCheck(SECRET, rc_mcp.TokenStore(tmp_path / "tokens.json", clock=clock))
    assert restarted.verify(authenticator_code(SECRET, clock.now), "198.51.100.1") == "codes paused"
    assert restarted.verify(SECRET, "198.51.100.1") == "approved"  # the owner, with the password …
    code = authenticator_code(SECRET, clock.now)
    assert restarted.verify(code, "198.51.100.1") == "approved"  # … gives codes their budget back
    again = rc_mcp.OwnerCheck(SECRET, rc_mcp.TokenStore(tmp_path / "tokens.json", clock=clock))
    assert again.verify(code, "198.51.100.1") == "wrong"  # and a used code stays used across a restart


# ── Endpoints ─────────────────────────────────────────────────────────────────────────────────


async def test_metadata_uses_one_issuer_string(http: httpx2.AsyncClient) -> None:
    server = (await http.get("/.well-known/oauth-authorization-server")).json()
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        resource = (await http.get(path)).json()
        assert resource["resource"] == f"{TEST_URL}/mcp"
        assert resource["authorization_servers"] == [server["issuer"]]
    assert server["issuer"] == TEST_URL
    assert server["code_challenge_methods_supported"] == ["S256"]
    assert server["authorization_response_iss_parameter_supported"] is True
    # "none" is what makes Claude.ai offer CIMD; public clients still need the owner's consent
    assert set(server["token_endpoint_auth_methods_supported"]) == {"client_secret_post", "client_secret_basic", "none"}
    assert server["client_id_metadata_document_supported"] is True
    assert server["registration_endpoint"] == f"{TEST_URL}/register"
    assert (await http.get("/.well-known/openid-configuration")).json() == server


async def test_mcp_without_token_points_at_the_metadata(http: httpx2.AsyncClient) -> None:
    for path in ("/mcp", "/mcp/"):
        response = await mcp_status(http, None, path=path)
        assert response.status_code == 401
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer error="invalid_token"')
        assert f'resource_metadata="{TEST_URL}/.well-known/oauth-protected-resource/mcp"' in challenge
        assert response.headers["cache-control"] == "no-store"


async def test_no_unauthenticated_sequence_yields_a_token(http: httpx2.AsyncClient) -> None:
    """Everything a stranger can send without MCP_SECRET: none of it gets a usable token."""
    texts = []
    texts.append((await http.post("/register", json={"redirect_uris": ["https://evil.example/cb"]})).text)
    texts.append((await http.get("/authorize", params={**AUTHORIZE, "redirect_uri": "https://evil.example/cb"})).text)
    texts.append((await http.get("/authorize", params={**AUTHORIZE, "client_id": "attacker"})).text)
    response = await http.get("/authorize", params=AUTHORIZE)
    location = response.headers["location"]
    assert location.startswith(CALLBACK)  # the code only ever goes to Claude's callback
    code = parse_qs(urlsplit(location).query)["code"][0]
    for form in (
        token_form(code, client_secret=None),
        token_form(code, client_secret="guess"),
        token_form(code, client_id="attacker", client_secret=None),
        token_form(code, client_id=None, client_secret=None),
    ):
        response = await http.post("/token", data=form)
        assert response.status_code == 401 and "access_token" not in response.text
    for text in texts:
        assert "access_token" not in text and CLIENT_SECRET not in text


def _form(**overrides: str | None) -> dict[str, str]:
    return {k: v for k, v in {**AUTHORIZE, **overrides}.items() if v is not None}


# (method, path, params or body, headers) → exact status and error. `location` rows are
# authorize errors redirected to Claude's callback.
HOSTILE_AUTHORIZE = [
    ("unknown client", _form(client_id="someone-else"), 400, "invalid_client", False),
    ("missing client", _form(client_id=None), 400, "invalid_client", False),
    ("foreign redirect", _form(redirect_uri="https://evil.example/cb"), 400, "invalid_request", False),
    ("redirect with extra path", _form(redirect_uri=CALLBACK + "/x"), 400, "invalid_request", False),
    ("redirect with query", _form(redirect_uri=CALLBACK + "?x=1"), 400, "invalid_request", False),
    ("redirect case changed", _form(redirect_uri=CALLBACK.upper()), 400, "invalid_request", False),
    ("http redirect", _form(redirect_uri=CALLBACK.replace("https", "http")), 400, "invalid_request", False),
    ("missing redirect", _form(redirect_uri=None), 400, "invalid_request", False),
    ("javascript redirect", _form(redirect_uri="javascript:alert(1)"), 400, "invalid_request", False),
    ("missing PKCE", _form(code_challenge=None, code_challenge_method=None), 302, "invalid_request", True),
    ("plain PKCE", _form(code_challenge=VERIFIER, code_challenge_method="plain"), 302, "invalid_request", True),
    ("PKCE without method", _form(code_challenge_method=None), 302, "invalid_request", True),
    ("malformed challenge", _form(code_challenge="short"), 302, "invalid_request", True),
    ("token response type", _form(response_type="token"), 302, "unsupported_response_type", True),
    ("missing response type", _form(response_type=None), 302, "unsupported_response_type", True),
    ("other resource", _form(resource="https://evil.example/mcp"), 302, "invalid_target", True),
    ("resource with fragment", _form(resource=f"{TEST_URL}/mcp#x"), 302, "invalid_target", True),
    ("unknown scope", _form(scope="admin"), 302, "invalid_scope", True),
]


@pytest.mark.parametrize(
    "label, params, status, error, redirected", HOSTILE_AUTHORIZE, ids=[r[0] for r in HOSTILE_AUTHORIZE]
)
async def test_hostile_authorize(
    http: httpx2.AsyncClient, label: str, params: dict[str, str], status: int, error: str, redirected: bool
) -> None:
    response = await http.get("/authorize", params=params)
    assert response.status_code == status
    if redirected:
        location = response.headers["location"]
        assert location.startswith(CALLBACK + "?")
        query = parse_qs(urlsplit(location).query)
        assert query["error"] == [error] and query["iss"] == [TEST_URL] and "code" not in query
    else:
        assert "location" not in response.headers
        assert response.json()["error"] == error


async def test_hostile_authorize_duplicate_parameter(http: httpx2.AsyncClient) -> None:
    query = urlencode(AUTHORIZE) + "&client_id=" + CLIENT_ID
    response = await http.get("/authorize?" + query)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


HOSTILE_TOKEN = [
    ("wrong secret", {"client_secret": "x" * 64}, 401, "invalid_client"),
    ("missing secret", {"client_secret": None}, 401, "invalid_client"),
    ("unknown client", {"client_id": "nobody"}, 401, "invalid_client"),
    ("no client at all", {"client_id": None, "client_secret": None}, 401, "invalid_client"),
    ("non-ascii secret", {"client_secret": "sécret"}, 401, "invalid_client"),
    ("wrong verifier", {"code_verifier": "x" * 43}, 400, "invalid_grant"),
    ("missing verifier", {"code_verifier": None}, 400, "invalid_request"),
    ("challenge as verifier", {"code_verifier": CHALLENGE}, 400, "invalid_grant"),
    ("redirect mismatch", {"redirect_uri": "https://claude.com/api/mcp/auth_callback"}, 400, "invalid_grant"),
    ("missing redirect", {"redirect_uri": None}, 400, "invalid_grant"),
    ("unknown code", {"code": "made-up"}, 400, "invalid_grant"),
    ("missing code", {"code": None}, 400, "invalid_request"),
    ("other resource", {"resource": "https://evil.example/mcp"}, 400, "invalid_target"),
    ("unsupported grant", {"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
    ("password grant", {"grant_type": "password"}, 400, "unsupported_grant_type"),
    ("missing grant", {"grant_type": None}, 400, "invalid_request"),
    ("refresh without token", {"grant_type": "refresh_token"}, 400, "invalid_request"),
    ("refresh with a code", {"grant_type": "refresh_token", "refresh_token": "rcrt_made_up"}, 400, "invalid_grant"),
]


@pytest.mark.parametrize("label, overrides, status, error", HOSTILE_TOKEN, ids=[r[0] for r in HOSTILE_TOKEN])
async def test_hostile_token(
    http: httpx2.AsyncClient, label: str, overrides: dict[str, str | None], status: int, error: str
) -> None:
    code = await get_code(http)
    response = await http.post("/token", data=token_form(code, **overrides))
    assert (response.status_code, response.json()["error"]) == (status, error), response.text
    assert response.headers["cache-control"] == "no-store"
    # the code is still good after a refused attempt: nothing was consumed
    if status == 400 and "code" not in overrides:
        assert (await http.post("/token", data=token_form(code))).status_code == 200


async def test_hostile_token_requests(http: httpx2.AsyncClient) -> None:
    code = await get_code(http)
    as_json = await http.post("/token", json=token_form(code))
    assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")
    both = await http.post(
        "/token", data=token_form(code), headers={"Authorization": _basic(f"{CLIENT_ID}:{CLIENT_SECRET}")}
    )
    assert (both.status_code, both.json()["error"]) == (400, "invalid_request")
    bad_basic = await http.post(
        "/token",
        data=token_form(code, client_id=None, client_secret=None),
        headers={"Authorization": _basic(f"{CLIENT_ID}:nope")},
    )
    assert bad_basic.status_code == 401 and bad_basic.headers["www-authenticate"].startswith("Basic")
    huge = await http.post(
        "/token",
        content=b"a=" + b"x" * (rc_mcp.MAX_FORM_BYTES + 1),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert huge.status_code == 413
    get = await http.get("/token")
    assert get.status_code == 405
    binary = await http.post(
        "/token", content=b"\xff\xfe=\x00", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert (binary.status_code, binary.json()["error"]) == (400, "invalid_request")


HOSTILE_REGISTER = [
    ("javascript redirect", {"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
    ("data redirect", {"redirect_uris": ["data:text/html,<script>alert(1)</script>"]}, "invalid_redirect_uri"),
    ("plain http to a remote host", {"redirect_uris": ["http://evil.example/cb"]}, "invalid_redirect_uri"),
    ("http to a private address", {"redirect_uris": ["http://10.0.0.5/cb"]}, "invalid_redirect_uri"),
    ("fragment", {"redirect_uris": ["https://app.example/cb#frag"]}, "invalid_redirect_uri"),
    ("credentials in the URI", {"redirect_uris": ["https://user:pw@app.example/cb"]}, "invalid_redirect_uri"),
    ("relative URI", {"redirect_uris": ["/cb"]}, "invalid_redirect_uri"),
    ("custom scheme", {"redirect_uris": ["myapp://cb"]}, "invalid_redirect_uri"),
    ("space in URI", {"redirect_uris": ["https://app.example/c b"]}, "invalid_redirect_uri"),
    ("bad port", {"redirect_uris": ["https://app.example:99999/cb"]}, "invalid_redirect_uri"),
    ("no redirect URIs", {"redirect_uris": []}, "invalid_redirect_uri"),
    ("redirect URIs not a list", {"redirect_uris": "https://app.example/cb"}, "invalid_redirect_uri"),
    (
        "eleven redirect URIs",
        {"redirect_uris": [f"https://app.example/{i}" for i in range(11)]},
        "invalid_redirect_uri",
    ),
    ("non-string redirect URI", {"redirect_uris": [42]}, "invalid_redirect_uri"),
    ("password grant", {"redirect_uris": [CALLBACK], "grant_types": ["password"]}, "invalid_client_metadata"),
    (
        "client_credentials grant",
        {"redirect_uris": [CALLBACK], "grant_types": ["client_credentials"]},
        "invalid_client_metadata",
    ),
    ("implicit response type", {"redirect_uris": [CALLBACK], "response_types": ["token"]}, "invalid_client_metadata"),
    ("look-alike Unicode host", {"redirect_uris": ["https://clаude.ai/api/mcp/auth_callback"]}, "invalid_redirect_uri"),
]


@pytest.mark.parametrize("label, body, error", HOSTILE_REGISTER, ids=[r[0] for r in HOSTILE_REGISTER])
async def test_hostile_register(
    app: rc_mcp.App, http: httpx2.AsyncClient, label: str, body: dict[str, Any], error: str
) -> None:
    response = await http.post("/register", json=body)
    assert (response.status_code, response.json()["error"]) == (400, error)
    assert app.store.count("clients") == 0


@pytest.mark.parametrize(
    "label, content, content_type, status, error",
    [
        ("not JSON", b"{nope", "application/json", 400, "invalid_client_metadata"),
        ("a JSON list", b"[]", "application/json", 400, "invalid_client_metadata"),
        (
            "form-encoded",
            b"redirect_uris=https://a.example/cb",
            "application/x-www-form-urlencoded",
            400,
            "invalid_client_metadata",
        ),
        ("oversize", b'{"client_name": "' + b"x" * 70000 + b'"}', "application/json", 413, "invalid_request"),
    ],
)
async def test_hostile_register_bodies(
    http: httpx2.AsyncClient, label: str, content: bytes, content_type: str, status: int, error: str
) -> None:
    response = await http.post("/register", content=content, headers={"Content-Type": content_type})
    assert (response.status_code, response.json()["error"]) == (status, error)


HOSTILE_PUBLIC = [
    ("unregistered client id", {"client_id": "rcc_made_up"}, 400, "invalid_client"),
    (
        "fixed client with a loopback redirect",
        {"client_id": CLIENT_ID, "redirect_uri": INSPECTOR_CALLBACK},
        400,
        "invalid_request",
    ),
    (
        "metadata URL on plain http",
        {"client_id": "http://claude.ai/oauth/mcp-oauth-client-metadata", "redirect_uri": CALLBACK},
        400,
        "invalid_client",
    ),
    (
        "Claude's document with another callback",
        {"client_id": "https://claude.ai/oauth/mcp-oauth-client-metadata", "redirect_uri": "https://evil.example/cb"},
        400,
        "invalid_request",
    ),
    (
        "Claude Code's document with a remote callback",
        {
            "client_id": "https://claude.ai/oauth/claude-code-client-metadata",
            "redirect_uri": "http://evil.example/callback",
        },
        400,
        "invalid_request",
    ),
    (
        "metadata document on a private address",
        {"client_id": "https://127.0.0.1/client.json", "redirect_uri": CALLBACK},
        400,
        "invalid_client",
    ),
]


@pytest.mark.parametrize("label, overrides, status, error", HOSTILE_PUBLIC, ids=[r[0] for r in HOSTILE_PUBLIC])
async def test_hostile_public_clients(
    http: httpx2.AsyncClient, label: str, overrides: dict[str, str], status: int, error: str
) -> None:
    response = await http.get("/authorize", params={**AUTHORIZE, **overrides})
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert "location" not in response.headers


async def test_hostile_consent_requests(http: httpx2.AsyncClient) -> None:
    client_id = await register(http)
    params = public_authorize(client_id, INSPECTOR_CALLBACK)
    # approval without the password, with an empty one, or by GET: never a code
    for response, status in (
        (await consent(http, params, action="approve"), 403),
        (await consent(http, params, action="approve", password=""), 403),
        (
            await http.get("/authorize", params={**params, "action": "approve", "password": SECRET}),
            200,
        ),  # the page again
        (await consent(http, params, action="approve", password=CLIENT_SECRET), 403),
    ):
        assert (response.status_code, "location" in response.headers, "code=" in response.text) == (
            status,
            False,
            False,
        )
    # tampering with the hidden fields is checked again on the POST
    tampered = await consent(
        http, {**params, "redirect_uri": "https://evil.example/cb"}, action="approve", password=SECRET
    )
    assert (tampered.status_code, tampered.json()["error"]) == (400, "invalid_request")
    # a stranger's client is never redirected to with an error (open redirect): a page says it
    plain = await consent(http, {**params, "code_challenge_method": "plain"}, action="approve", password=SECRET)
    assert plain.status_code == 400 and "location" not in plain.headers and "invalid_request" in plain.text
    assert plain.headers["x-frame-options"] == "DENY"


HOSTILE_REVOKE = [
    ("no client auth", {"token": "x"}, 401, "invalid_client"),
    ("wrong secret", {"token": "x", "client_id": CLIENT_ID, "client_secret": "nope"}, 401, "invalid_client"),
    ("no token", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, 400, "invalid_request"),
]


@pytest.mark.parametrize("label, form, status, error", HOSTILE_REVOKE, ids=[r[0] for r in HOSTILE_REVOKE])
async def test_hostile_revoke(
    http: httpx2.AsyncClient, label: str, form: dict[str, str], status: int, error: str
) -> None:
    response = await http.post("/revoke", data=form)
    assert (response.status_code, response.json()["error"]) == (status, error)


@pytest.mark.parametrize(
    "headers, query",
    [
        ({"Authorization": "Bearer "}, ""),
        ({"Authorization": "Bearer made-up-token"}, ""),
        ({"Authorization": "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()}, ""),
        ({"Authorization": "bearer"}, ""),
        ({}, "access_token=TOKEN"),  # tokens in the query string are never read
    ],
)
async def test_hostile_bearer(http: httpx2.AsyncClient, headers: dict[str, str], query: str) -> None:
    tokens = await get_tokens(http)
    url = "/mcp?" + query.replace("TOKEN", tokens["access_token"])
    response = await http.post(
        url,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Accept": "application/json, text/event-stream", **headers},
    )
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


# ── MCP ───────────────────────────────────────────────────────────────────────────────────────


async def test_e2e_claude_ai_connects_and_drives_all_four_tools(
    devserver: DevServer, tools: Tools, tmp_path: Path
) -> None:
    claude = ClaudeAi(SECRET)
    async with tools(claude) as (client, _):
        offered = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(offered) == TOOL_NAMES
        annotations = {name: tool.annotations for name, tool in offered.items()}
        assert annotations["list_sessions"] is not None and annotations["list_sessions"].read_only_hint is True
        assert annotations["list_projects"] is not None and annotations["list_projects"].idempotent_hint is True
        assert annotations["stop_session"] is not None and annotations["stop_session"].destructive_hint is True
        assert offered["start_session"].input_schema["properties"]["name"]["pattern"] == rc_mcp.SESSION_NAME.pattern

        projects = (await call(client, "list_projects"))["projects"]
        assert projects == EXPECTED_PROJECTS  # no hidden, plain, too deep or escaping directories

        started = await call(client, "start_session", name="alpha", path="alpha")
        assert started["status"] == "ready" and started["path"] == "alpha"
        assert re.fullmatch(r"alpha-[0-9a-f]{6}", started["id"])
        assert ENV_URL.match(started["url"])
        session = "rc-" + started["id"]
        # The URL is one claude printed: it is in the pane's raw log on the server.
        raw_log = devserver.run(f"cat ~/.local/state/rc-mcp/{session}.log").stdout
        assert started["url"].split("=", 1)[1] in raw_log
        [trace] = devserver.fake_claude_trace()
        assert trace["argv"] == ["remote-control", "--name", "alpha", "--spawn", "same-dir"]
        assert (trace["stdin_isatty"], trace["stdout_isatty"]) == (True, True)  # a real TTY, not a pipe
        assert Path(trace["cwd"]) == devserver.projects / "alpha"
        assert rc_sessions(devserver) == {session}
        assert devserver.run("stat -c %a ~/.local/state/rc-mcp").stdout == "700\n"

        listed = (await call(client, "list_sessions"))["sessions"]
        assert [(s["id"], s["url"], s["status"], s["path"], s["name"]) for s in listed] == [
            (started["id"], started["url"], "ready", "alpha", "alpha")
        ]

        stopped = await call(client, "stop_session", id=started["id"])
        assert stopped["stopped"] is True
        assert rc_sessions(devserver) == set()
        # what is left is what resume_session can bring back within claude's window
        [ended] = (await call(client, "list_sessions"))["sessions"]
        assert (ended["id"], ended["status"], ended["resumable"], ended["url"]) == (
            started["id"],
            "stopped",
            True,
            None,
        )
    assert claude.authorizations == 1


INSPECTOR = os.environ.get("RC_MCP_INSPECTOR")  # a folder with node@22 and @modelcontextprotocol/inspector (.ci/run)


async def test_e2e_mcp_inspector_cli_lists_tools(tools: Tools, tmp_path: Path) -> None:
    """The MCP Inspector CLI (2.x) lists the tools with a token obtained through the OAuth flow."""
    if not INSPECTOR:
        if REQUIRE_E2E:
            pytest.fail("RC_MCP_INSPECTOR is not set: .ci/run installs the Inspector and sets it")
        pytest.skip("set RC_MCP_INSPECTOR to a folder with node@22 and @modelcontextprotocol/inspector installed")
    node = Path(INSPECTOR) / "node_modules" / "node" / "bin" / "node"
    cli = (
        Path(INSPECTOR)
        / "node_modules"
        / "@modelcontextprotocol"
        / "inspector"
        / "clients"
        / "cli"
        / "build"
        / "index.js"
    )
    claude = ClaudeAi(SECRET)
    async with tools(claude) as (client, server):
        await client.list_tools()
        assert claude.storage.tokens is not None
        token = claude.storage.tokens.access_token

        async def inspector(*extra: str) -> subprocess.CompletedProcess[bytes]:
            command = [str(node), str(cli), server.url + "/mcp", "--transport", "http", "--method", "tools/list"]
            command += ["--stored-auth-only", "--format", "json", "-q", *extra]
            env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            with anyio.fail_after(120):
                return await anyio.run_process(command, env=env, check=False, stdin=subprocess.DEVNULL)

        results: dict[str, subprocess.CompletedProcess[bytes]] = {}

        async def run(label: str, bearer: str) -> None:
            results[label] = await inspector("--header", f"Authorization: Bearer {bearer}")

        async with anyio.create_task_group() as group:  # two node start-ups at once
            group.start_soon(run, "listed", token)
            group.start_soon(run, "refused", "not-a-token")
        listed, refused = results["listed"], results["refused"]
        assert listed.returncode == 0, listed.stderr
        names = {tool["name"] for tool in json.loads(listed.stdout)["result"]["tools"]}
        assert names == TOOL_NAMES
        assert refused.returncode == 3 and b"auth_required" in refused.stderr


def test_input_rules_come_from_the_tool_signatures() -> None:
    app = rc_mcp.App(
        rc_mcp.load_config(
            {"MCP_SECRET": SECRET, "PROJECTS_BASE_DIR": "/srv", "TOKEN_STORE_PATH": "/nonexistent/t.json"}
        ),
        store=rc_mcp.TokenStore(Path("/nonexistent/t.json")),
    )
    checks = [m for m in app.mcp.middleware if isinstance(m, rc_mcp.CheckInputs)]
    assert len(checks) == 1
    host = (rc_mcp.HOST, False)
    assert checks[0].rules == {
        "start_session": {
            "name": (rc_mcp.SESSION_NAME, True),
            "path": (rc_mcp.PROJECT_PATH, True),
            "permission_mode": (rc_mcp.PERMISSION_MODE, False),
            "host": host,
        },
        **{
            tool: {"id": (rc_mcp.SESSION_ID, True), "host": host}
            for tool in (
                "stop_session",
                "send_prompt",
                "get_reply",
                "interrupt_session",
                "resume_session",
                "answer_permission",
            )
        },  # fmt: skip
        "list_sessions": {"host": host},
        "list_projects": {"host": host},
    }


# ── HTTP & ASGI ───────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "server_url, allowed, refused",
    [
        (
            "https://rc.example.com",
            ["rc.example.com", "rc.example.com:443", "127.0.0.1:3000"],
            ["evil.example", "rc.example.com.evil.example"],
        ),
        ("http://127.0.0.1:8080", ["127.0.0.1:8080", "localhost:8080"], ["attacker.example:8080"]),
        ("https://[2001:db8::1]", ["[2001:db8::1]"], ["2001:db8::1"]),
    ],
)
def test_allowed_hosts(server_url: str, allowed: list[str], refused: list[str]) -> None:
    hosts = rc_mcp.allowed_hosts(server_url)
    patterns = [h[:-2] for h in hosts if h.endswith(":*")]

    def accepted(host: str) -> bool:  # the SDK's rule: exact, or "name:*" for any port
        return host in hosts or any(host.startswith(p + ":") for p in patterns)

    assert {h: accepted(h) for h in allowed + refused} == {**{h: True for h in allowed}, **{h: False for h in refused}}


@pytest.mark.parametrize(
    "raw, params",
    [
        ("a=1&b=", {"a": "1", "b": ""}),
        (
            "redirect_uri=https%3A%2F%2Fclaude.ai%2Fx&state=%F0%9F%94%91",
            {"redirect_uri": "https://claude.ai/x", "state": "🔑"},
        ),
        (b"grant_type=authorization_code", {"grant_type": "authorization_code"}),
        ("", {}),
    ],
)
def test_parse_params(raw: str | bytes, params: dict[str, str]) -> None:
    assert rc_mcp.parse_params(raw) == params


@pytest.mark.parametrize("raw", ["a=1&a=2", "&".join(f"k{i}=v" for i in range(65)), b"a=\xff", "a=%ff"])
def test_parse_params_rejects(raw: str | bytes) -> None:
    with pytest.raises(rc_mcp.OAuthError) as caught:
        rc_mcp.parse_params(raw)
    assert (caught.value.status, caught.value.error) == (400, "invalid_request")


@pytest.mark.parametrize(
    "url, values, result",
    [
        (CALLBACK, {"code": "c", "state": "s&t"}, CALLBACK + "?code=c&state=s%26t"),
        ("https://x.example/cb?keep=1", {"error": "access_denied"}, "https://x.example/cb?keep=1&error=access_denied"),
    ],
)
def test_add_query(url: str, values: dict[str, str], result: str) -> None:
    assert rc_mcp.add_query(url, values) == result


async def test_health(http: httpx2.AsyncClient) -> None:
    response = await http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "version": rc_mcp.VERSION, "mode": "local"}


async def test_dns_rebinding_host_is_refused(http: httpx2.AsyncClient) -> None:
    tokens = await get_tokens(http)
    assert (await mcp_status(http, tokens["access_token"])).status_code == 200
    # the same request and token, for a page served from the attacker's name
    assert (await mcp_status(http, tokens["access_token"], path="http://attacker.example/mcp")).status_code == 421


@contextlib.contextmanager
def guarded_server(app: Any, request_timeout: float) -> Iterator[harness.ThreadedServer]:
    """`app` under uvicorn with rc_mcp's guarded protocol, as `serve` runs it."""
    server = harness.ThreadedServer(app, http=rc_mcp.guarded_http_protocol(request_timeout), lifespan="on")
    try:
        yield server
    finally:
        server.stop()


def wait_closed(sock: socket.socket, deadline: float) -> bool:
    """True once the server has closed `sock` (bounded by the deadline)."""
    sock.settimeout(0.05)
    while time.monotonic() < deadline:
        try:
            if sock.recv(1024) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def test_slow_clients_are_closed_and_health_keeps_answering(tmp_path: Path, clock: Clock) -> None:
    app = make_app(tmp_path, clock)
    with guarded_server(app, request_timeout=1.0) as server:
        address = ("127.0.0.1", server.port)
        idle = [socket.create_connection(address) for _ in range(300)]
        half_header = socket.create_connection(address)
        half_header.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        half_body = socket.create_connection(address)
        half_body.sendall(b"POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\ngrant_type=")
        started = time.monotonic()
        with httpx2.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert client.get("/health").status_code == 200  # while 302 connections hang
        deadline = started + 5
        assert all(wait_closed(sock, deadline) for sock in [*idle, half_header, half_body])
        assert time.monotonic() - started < 4  # closed after REQUEST_TIMEOUT, not when the client gives up
        with httpx2.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert client.get("/health").status_code == 200
        for sock in [*idle, half_header, half_body]:
            sock.close()


def test_one_address_holds_a_bounded_number_of_connections(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rc_mcp, "is_proxy_address", lambda address: False)  # loopback plays a public client
    with guarded_server(make_app(tmp_path, clock), request_timeout=30) as server:
        address = ("127.0.0.1", server.port)
        held = [socket.create_connection(address) for _ in range(rc_mcp.MAX_CONNECTIONS_PER_ADDRESS)]
        extra = socket.create_connection(address)
        assert wait_closed(extra, time.monotonic() + 5)  # refused at once
        assert not wait_closed(held[0], time.monotonic() + 0.2)  # the first ones stay
        for sock in [*held, extra]:
            sock.close()


def test_logged_values_cannot_forge_a_line() -> None:
    formatter = rc_mcp.OneLineFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("rc_mcp", logging.WARNING, __file__, 1, "client %s", ("x\r\nERROR forged\x1b[2J",), None)
    assert formatter.format(record) == "WARNING client x\\r\\nERROR forged\\x1b[2J"


def test_the_access_log_hides_query_strings() -> None:
    rc_mcp.configure_logging("INFO")
    access = logging.getLogger("uvicorn.access")
    record = access.makeRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "GET", "/mcp?access_token=rcat_leak&x=1", "1.1", 401), None,
    )  # fmt: skip
    assert all(f.filter(record) for f in access.filters)
    assert record.getMessage() == '1.2.3.4:5 - "GET /mcp HTTP/1.1" 401'


async def test_a_revoked_link_ends_its_open_requests(devserver: DevServer, tools: Tools) -> None:
    devserver.fake_claude_config({"connect_delay": 30})  # start_session waits on the dev server
    claude = ClaudeAi(SECRET)
    async with tools(claude, START_TIMEOUT="30") as (client, server):
        await call(client, "list_sessions")
        assert claude.storage.tokens is not None
        headers = {
            "Authorization": f"Bearer {claude.storage.tokens.access_token}",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-06-18",
        }
        request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "start_session",
                   "arguments": {"name": "slow", "path": "alpha"}, "_meta": {"progressToken": 1}}}  # fmt: skip
        async with httpx2.AsyncClient(base_url=server.url, timeout=30) as http:
            async with http.stream("POST", "/mcp", json=request, headers=headers) as response:
                assert response.status_code == 200
                lines = response.aiter_lines()
                async for line in lines:  # wait until claude was launched: the call is in flight
                    if "launched in tmux" in line:
                        break
                [grant_id] = server.app.store.grants()
                revoked_at = time.monotonic()
                await anyio.to_thread.run_sync(server.app.oauth.grants.revoke_grants, [grant_id])  # as `grants revoke`
                rest = []
                with contextlib.suppress(httpx2.HTTPError):
                    rest = [line async for line in lines]
                assert time.monotonic() - revoked_at < 3  # ended within a second or two, not after START_TIMEOUT
                assert not any('"result"' in line for line in rest)


@pytest.mark.parametrize(
    "line, leaked",
    [
        ("rc_mcp: token: authorization_code grant for Claude (connector credentials)", None),
        ("rc_mcp: OAuth client_id: 9f7bd22e3e82dc889c30a316fe17dee118b4", None),
        ("rc_mcp: authorize refused for client rcat_short: x", None),  # too short to be a token
        (f"config: MCP_SECRET={SECRET}", "an MCP_SECRET"),
        (f"form client_secret={CLIENT_SECRET}", "a client secret"),
        ("Bearer rcat_" + "A" * 43, "a token or code"),
        ("refresh_token=rcrt_abcDEF-123_xyz", "a token or code"),
        ("code=rcsc_eyJjbGllbnRfaWQiOi.sig", "a token or code"),
        ("code=rcac_" + "b" * 43, "a token or code"),
        (
            "otpauth secret " + base64.b32encode(rc_mcp.consent_totp_key(STRONG_SECRET)).decode().rstrip("="),
            "a TOTP key",
        ),
        (f"load key with passphrase {PASSPHRASE!r}", "the SSH passphrase"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "a private key"),
    ],
)
def test_log_audit_finds_each_kind_of_secret(line: str, leaked: str | None) -> None:
    """The suite-wide log audit (fixture log_audit) can fail: each kind of secret is found."""
    found = leaked_secrets(["harmless", line])
    assert found == ([] if leaked is None else [f"{leaked}: {line}"])


def test_the_oldest_slow_connection_makes_room(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rc_mcp, "MAX_CONNECTIONS", 5)
    with guarded_server(make_app(tmp_path, clock), request_timeout=30) as server:
        address = ("127.0.0.1", server.port)
        slow = [socket.create_connection(address) for _ in range(5)]
        with httpx2.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert client.get("/health").status_code == 200  # a real client gets in …
        assert wait_closed(slow[0], time.monotonic() + 5)  # … and the oldest slow one made room
        for sock in slow:
            sock.close()


@pytest.mark.parametrize(
    "address, proxy",
    [
        ("127.0.0.1", True), ("::1", True), ("10.1.2.3", True), ("172.19.0.4", True), ("192.168.1.1", True),
        ("fdaa:0:1:a7b:1::2", True), ("::ffff:10.0.0.1", True),
        ("8.8.8.8", False), ("2606:4700::1", False), ("2002:c000:204::1", False), ("2001:0:4136::1", False),
        ("64:ff9b::a00:1", False), ("100.64.0.1", False), ("garbage", False), ("", False),
    ],
)  # fmt: skip
def test_is_proxy_address(address: str, proxy: bool) -> None:
    assert rc_mcp.is_proxy_address(address) is proxy


def test_log_lines_cannot_be_forged_with_unicode_line_breaks_or_tracebacks() -> None:
    formatter = rc_mcp.OneLineFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("rc_mcp", logging.INFO, __file__, 1, "%s", ("a\u2028INFO x\x85INFO y\u202eok",), None)
    assert formatter.format(record).splitlines() == ["INFO a\\u2028INFO x\\x85INFO y\\u202eok"]
    try:
        raise ValueError("line\nERROR forged")
    except ValueError:
        failed = logging.LogRecord("rc_mcp", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    lines = formatter.format(failed).splitlines()
    assert lines[0] == "ERROR boom" and all(line.startswith("  | ") for line in lines[1:])


async def test_answers_are_plain_json_unless_a_stream_is_needed(http: httpx2.AsyncClient) -> None:
    """A request without a progress token, to anything but a tool that may wait, is answered with
    plain JSON; one asking for progress, or calling start_session, on an SSE stream."""
    token = (await get_tokens(http))["access_token"]
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }

    async def content_type(method: str, params: dict[str, Any]) -> str:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        response = await http.post("/mcp", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert '"id":1' in response.text.replace(" ", ""), response.text
        return response.headers["content-type"].split(";")[0]

    assert await content_type("tools/list", {}) == "application/json"
    assert await content_type("tools/call", {"name": "stop_session", "arguments": {"id": "-"}}) == "application/json"
    assert await content_type("tools/list", {"_meta": {"progressToken": "p1"}}) == "text/event-stream"
    start = {"name": "start_session", "arguments": {"name": "-", "path": "-"}}
    assert await content_type("tools/call", start) == "text/event-stream"


async def test_e2e_the_sdk_client_keeps_its_connection(
    devserver: DevServer, tools: Tools, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short calls through the MCP SDK's client reuse one TCP connection (plain JSON answers are
    read to their end); start_session's progress still arrives, on its SSE stream."""
    peers: list[Any] = []
    async with tools() as (client, server):
        route = server.app.routes["/mcp"]
        inner = route.asgi
        assert inner is not None

        async def counting(scope: rc_mcp.ASGIScope, receive: rc_mcp.Receive, send: rc_mcp.Send) -> None:
            peers.append(scope.get("client"))
            await inner(scope, receive, send)

        monkeypatch.setitem(server.app.routes, "/mcp", dataclasses.replace(route, asgi=counting))
        await call(client, "list_sessions")  # the client's first requests may open a connection
        peers.clear()
        for _ in range(5):
            await call(client, "list_sessions")
            await call(client, "list_projects")
        assert len(peers) >= 10 and len(set(peers)) == 1, peers
        progress: list[str] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(message or "")

        result = await client.call_tool(
            "start_session", {"name": "kept", "path": "alpha"}, progress_callback=on_progress
        )
        assert not result.is_error and result.structured_content is not None, result.content
        assert len(progress) >= 2 and progress[0] == "connecting to the dev server", progress
        await call(client, "stop_session", id=result.structured_content["id"])


# ── main ──────────────────────────────────────────────────────────────────────────────────────


def cli_environment(monkeypatch: pytest.MonkeyPatch, cwd: Path, **env: str) -> None:
    """os.environ and the working directory as `python rc_mcp.py` would see them: only `env` of
    rc_mcp's own variables, and no .env file."""
    for name in list(os.environ):
        if name.startswith(("SSH_", "MCP_", "PROJECTS_", "TOKEN_", "SERVER_", "START_", "CLAUDE_", "PERMISSION_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)


def test_cli_credentials_needs_only_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_environment(monkeypatch, tmp_path, MCP_SECRET=SECRET)
    assert rc_mcp.main(["credentials"]) == 0
    shown = capsys.readouterr()
    assert shown.out.startswith(f"client_id:     {CLIENT_ID}\nclient_secret: {CLIENT_SECRET}\n")
    key = base64.b32encode(rc_mcp.consent_totp_key(SECRET)).decode().rstrip("=")
    assert (
        f"otpauth://totp/rc_mcp%3Alocalhost?secret={key}&issuer=rc_mcp&algorithm=SHA1&digits=6&period=30" in shown.out
    )
    assert "▀" in shown.out  # the QR code, in the terminal
    assert "MCP_SECRET is weak" in shown.err  # the test secret is a word and a sequence
    cli_environment(monkeypatch, tmp_path)
    assert rc_mcp.main(["credentials"]) == 2
    assert "MCP_SECRET is missing" in capsys.readouterr().err


async def test_e2e_check_reports_each_item(devserver: DevServer, tmp_path: Path) -> None:
    lines = await rc_mcp.run_checks(rc_mcp.load_config(ssh_env(devserver, tmp_path, MCP_SECRET=STRONG_SECRET)))
    assert [line.what for line in lines] == [
        "configuration",
        "MCP_SECRET",
        "token store",
        "SSH",
        "tmux",
        "claude",
        "claude login",
        "projects base",
    ]
    assert [line.ok for line in lines] == [True] * 8, [str(line) for line in lines]
    assert devserver.host_key_fingerprint in str(lines[3]) and "(Claude Code)" in str(lines[5])
    devserver.fake_claude_config({"logged_in": False})
    lines = await rc_mcp.run_checks(rc_mcp.load_config(ssh_env(devserver, tmp_path, PROJECTS_BASE_DIR="/nonexistent")))
    failed = {line.what: str(line) for line in lines if not line.ok}
    assert set(failed) == {"MCP_SECRET", "claude login", "projects base"}
    assert "claude auth login" in failed["claude login"] and "PROJECTS_BASE_DIR" in failed["projects base"]
    assert "MCP_SECRET is weak" in failed["MCP_SECRET"] and "openssl rand -hex 32" in failed["MCP_SECRET"]
    assert not await anyio.Path(
        tmp_path / "state"
    ).exists()  # check wrote nothing: no token store, no lock, no host key


def test_e2e_check_command_exit_codes(
    devserver: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python rc_mcp.py check`, in-process: every check passes (exit 0) or the failing one is named (exit 1)."""
    cli_environment(monkeypatch, tmp_path, **ssh_env(devserver, tmp_path, MCP_SECRET=STRONG_SECRET))
    assert rc_mcp.main(["check"]) == 0
    good = capsys.readouterr().out
    assert good.count("✓") == 8 and "✗" not in good, good
    cli_environment(
        monkeypatch, tmp_path, **ssh_env(devserver, tmp_path, SSH_KNOWN_HOSTS=str(devserver.known_hosts_wrong))
    )
    assert rc_mcp.main(["check"]) == 1
    bad = capsys.readouterr().out
    assert "✗ dev server: HOST KEY MISMATCH" in bad
    assert rc_mcp.main(["check"]) == 1
    cli_environment(monkeypatch, tmp_path, **ssh_env(devserver, tmp_path, PORT="0x"))
    assert rc_mcp.main(["check"]) == 2  # a configuration problem: nothing is checked
    assert "PORT" in capsys.readouterr().err


async def test_local_mode_python_rc_mcp_py(devhome: LocalDevHome, tmp_path: Path) -> None:
    with listening_socket() as sock:  # rc_mcp.py binds the port itself
        port = sock.getsockname()[1]
    env = devhome.env(
        {
            "MCP_SECRET": SECRET,
            "PROJECTS_BASE_DIR": str(devhome.projects),
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "SERVER_URL": f"http://127.0.0.1:{port}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    for var in ("SSH_HOST", "TOKEN_STORE_PATH", "XDG_STATE_HOME"):
        env.pop(var, None)
    store = rc_mcp.default_token_store_path(env)  # where rc_mcp.py, out of the box, keeps its tokens
    launched = time.time()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log_file:
        proc = await anyio.open_process(
            [sys.executable, str(ROOT / "rc_mcp.py")], cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        async with httpx2.AsyncClient() as probe:
            while True:
                assert proc.returncode is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                with contextlib.suppress(httpx2.TransportError):
                    if (await probe.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        break
                await anyio.sleep(0.05)
        async with connect(f"http://127.0.0.1:{port}", ClaudeAi(SECRET)) as client:
            assert (await call(client, "list_projects"))["projects"] == EXPECTED_PROJECTS
            started = await call(client, "start_session", name="local", path="web app")
            assert started["status"] == "ready" and ENV_URL.match(started["url"])
            assert [s["id"] for s in (await call(client, "list_sessions"))["sessions"]] == [started["id"]]
            assert (await call(client, "stop_session", id=started["id"]))["stopped"] is True
        text = log_path.read_text()
        assert "mode: local" in text and CLIENT_ID in text
        assert CLIENT_SECRET not in text and SECRET not in text
        assert store.stat().st_mtime >= launched - 1  # written by this server
    finally:
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            await proc.wait()


async def test_grants_lists_and_ends_links_while_the_server_runs(
    devserver: DevServer,
    tools: Tools,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kept, ended = ClaudeAi(SECRET), ClaudeAi(SECRET, mode="dcr", owner_password=SECRET)
    async with tools(kept) as (first, server), connect(server.url, ended) as second:
        await call(first, "list_sessions")
        await call(second, "list_sessions")
        env = {**ssh_env(devserver, tmp_path), "SERVER_URL": server.url}
        cli_environment(monkeypatch, tmp_path, **env)
        assert await anyio.to_thread.run_sync(rc_mcp.main, ["grants"]) == 0
        listing = capsys.readouterr().out.splitlines()
        assert len(listing) == 2 and "(connector credentials)" in listing[0] and "(registered client)" in listing[1]
        assert "rcat_" not in "".join(listing) and "rcrt_" not in "".join(listing)  # never a token
        grant_id = listing[1].split()[0]
        assert await anyio.to_thread.run_sync(rc_mcp.main, ["grants", "revoke", grant_id]) == 0
        assert "ended 1 link(s)" in capsys.readouterr().out
        assert ended.storage.tokens is not None
        deadline = time.monotonic() + 2
        async with httpx2.AsyncClient(base_url=server.url) as raw:
            while (await mcp_status(raw, ended.storage.tokens.access_token)).status_code != 401:
                assert time.monotonic() < deadline, "the revoked token still works"  # refused within a second
                await asyncio.sleep(0.05)
        await call(first, "list_sessions")  # the other link works, and the server's writes since …
        stored = json.loads(server.config.token_store_path.read_text())
        assert not [g for g in stored["grants"] if g.startswith(grant_id)]  # … did not bring the ended one back
    assert await anyio.to_thread.run_sync(rc_mcp.main, ["grants", "revoke", "nothing-such"]) == 2
    assert await anyio.to_thread.run_sync(rc_mcp.main, ["grants", "revoke", "--all"]) == 0
    assert "ended 1 link(s)" in capsys.readouterr().out


async def test_a_new_mcp_secret_ends_every_link(tmp_path: Path, clock: Clock) -> None:
    app = make_app(tmp_path, clock)
    async with asgi_client(app) as http:
        fixed = await get_tokens(http)
        client_id = await register(http)
        params = public_authorize(client_id, INSPECTOR_CALLBACK)
        approved = await consent(http, params, action="approve", password=SECRET)
        code = parse_qs(urlsplit(approved.headers["location"]).query)["code"][0]
        form = token_form(code, client_id=client_id, client_secret=None, redirect_uri=INSPECTOR_CALLBACK)
        public = (await http.post("/token", data=form)).json()
    assert await anyio.to_thread.run_sync(app.oauth.end_links_of_another_secret) == 0  # same secret: nothing ends
    rotated = make_app(tmp_path, clock, MCP_SECRET=STRONG_SECRET)
    assert await anyio.to_thread.run_sync(rotated.oauth.end_links_of_another_secret) == 2
    async with asgi_client(rotated) as http:
        for token in (fixed["access_token"], public["access_token"]):
            assert (await mcp_status(http, token)).status_code == 401
        refused = await http.post("/token", data={**refresh_form(public["refresh_token"]), "client_id": client_id})
        assert refused.status_code == 401  # the registration is gone too: register again


async def test_sigterm_during_a_slow_start_session_answers_and_keeps_the_session(
    devhome: LocalDevHome, tmp_path: Path
) -> None:
    """`python rc_mcp.py` gets SIGTERM (a deploy) while start_session waits for claude: the call is
    answered (starting, rc_mcp is restarting, call list_sessions), the process exits within 5 s,
    the tmux session keeps running, and the grant's last use is written on the way out."""
    fake_claude_config(devhome, connect_delay=30)
    with listening_socket() as sock:
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    store = tmp_path / "store" / "tokens.json"
    env = devhome.env(
        {
            "MCP_SECRET": SECRET,
            "PROJECTS_BASE_DIR": str(devhome.projects),
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "SERVER_URL": url,
            "TOKEN_STORE_PATH": str(store),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("SSH_HOST", None)
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log_file:
        proc = await anyio.open_process(
            [sys.executable, str(ROOT / "rc_mcp.py")], cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    session_id = None
    try:
        await wait_for_health(url, proc, log_path.read_text)
        claude = ClaudeAi(SECRET)
        async with connect(url, claude) as client:
            await client.list_tools()
        assert claude.storage.tokens is not None
        headers = {
            "Authorization": f"Bearer {claude.storage.tokens.access_token}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        }
        body = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {
                "name": "start_session",
                "arguments": {"name": "deploy", "path": "alpha"},
                "_meta": {"progressToken": "p7"},
            },
        }
        called = time.time()
        signalled = 0.0
        result = None
        progress = []
        async with httpx2.AsyncClient(timeout=20) as http:
            with anyio.fail_after(20):
                async with http.stream("POST", f"{url}/mcp", json=body, headers=headers) as response:
                    assert response.status_code == 200
                    async for message in sse_messages(response):
                        if message.get("method") == "notifications/progress":
                            progress.append(message["params"]["message"])
                            if "launched" in message["params"]["message"] and not signalled:
                                proc.send_signal(signal.SIGTERM)
                                signalled = time.monotonic()
                        elif message.get("id") == 7:
                            result = message["result"]
        assert signalled, progress
        assert result is not None and not result.get("isError"), result
        started = result["structuredContent"]
        session_id = started["id"]
        assert started["status"] == "starting" and started["url"] is None, started
        message = started["message"]
        assert "rc_mcp is restarting" in message and "keeps starting" in message and "list_sessions" in message
        with anyio.fail_after(5):
            await proc.wait()
        assert time.monotonic() - signalled < 5
        # a clean shutdown: uvicorn re-raises the signal it handled, so the exit status says SIGTERM
        assert proc.returncode in (0, -signal.SIGTERM), log_path.read_text()
        assert "Application shutdown complete" in log_path.read_text()
        assert devhome.run(f"tmux has-session -t =rc-{session_id}").returncode == 0  # still starting there
        [grant] = json.loads(store.read_bytes())["grants"].values()
        assert grant["last_used"] >= called, (grant, called)  # written at shutdown (not due for 60 s)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        if session_id is not None:
            devhome.run(f"tmux kill-session -t =rc-{session_id}")
