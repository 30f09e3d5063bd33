"""rc_mcp — start Claude Code Remote Control sessions on your own dev server from Claude.ai.

A self-hosted MCP server, added to Claude.ai (web, desktop, mobile) as a custom connector. Asked to
"start a Claude Code session in project X", it runs `claude remote-control` in a detached tmux
session on the dev server — over SSH, or on this machine in local mode — waits for the URL on the
server side and hands it back. It also lists and stops those sessions and finds projects.

The OAuth flow (this module is both the authorization server and the MCP resource server):
  1. POST /mcp without a token → 401 with `WWW-Authenticate: Bearer … resource_metadata="…"`.
  2. The client reads /.well-known/oauth-protected-resource/mcp, then the RFC 8414 metadata.
  3. GET /authorize with PKCE S256: the fixed client (id and secret derived from MCP_SECRET) is
     approved for Claude's callback URLs only; any other client (registered at /register, or a
     metadata-document URL) only once the owner types MCP_SECRET on the consent page.
  4. POST /token with the PKCE verifier (and the fixed client's secret) → access + refresh token.
  5. /mcp with `Authorization: Bearer …`; refresh tokens rotate on every use.

Threat model — whoever can call /mcp can run code on the dev server, so:
  - only the fixed client's secret or the owner's consent leads to a token; /register hands out
    no secret, and consent passwords are throttled;
  - codes and tokens are random, short-lived, kept only as SHA-256 hashes in a 0600 file, and
    every secret is compared in constant time;
  - the dev server's host key is pinned (SSH_KNOWN_HOSTS) or recorded on first use, and a changed
    key stops everything before authentication;
  - every remote value is validated, then shell-quoted; tmux targets are exact (`=rc-ID`);
  - the Host header is checked against SERVER_URL (DNS rebinding) and request bodies are capped.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import datetime
import hashlib
import hmac
import html
import io
import ipaddress
import json
import logging
import os
import re
import secrets
import shlex
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx2
import paramiko
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field
from starlette.authentication import AuthCredentials

log = logging.getLogger("rc_mcp")

VERSION = "1.0.0"

# ── Constants ─────────────────────────────────────────────────────────────────────────────────

DEFAULT_PORT = 3000
DEFAULT_HOST = "0.0.0.0"

CODE_TTL = 600  # OAuth 2.1 §4.1.2: authorization codes live at most 10 minutes
DEFAULT_ACCESS_TOKEN_TTL = 3600
DEFAULT_REFRESH_TOKEN_TTL = 30 * 86400

MAX_FORM_BYTES = 64 * 1024  # /token, /authorize, /register, /revoke bodies; /mcp has the SDK's 4 MiB cap
MIN_SECRET_LENGTH = 16  # the client_id is visible in Claude.ai's settings: a short secret can be guessed offline

FIXED_CLIENT_REDIRECT_URIS = (
    "https://claude.ai/api/mcp/auth_callback",
    "https://claude.com/api/mcp/auth_callback",
)
SCOPE = "mcp:tools"  # what the original server advertised; Claude.ai also sends "mcp"
ACCEPTED_SCOPES = frozenset({"mcp:tools", "mcp", "offline_access"})
AUTHORIZE_PARAMETERS = (
    "response_type", "client_id", "redirect_uri", "code_challenge", "code_challenge_method", "state", "scope", "resource",
)
REFRESH_GRACE = 30  # seconds the previous refresh token still works once (concurrent refreshes)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_REGISTERED_CLIENTS = 64
UNUSED_CLIENT_TTL = 24 * 3600  # a registered client never approved on the consent page expires
MAX_CLIENT_NAME = 80
CONSENT_MAX_FAILURES = 5  # wrong consent passwords from one address…
CONSENT_FAILURE_WINDOW = 900  # …within this many seconds → 429
# Claude's hosted client ids: known without fetching (the fetch often meets a bot challenge).
KNOWN_CLIENT_METADATA: dict[str, dict[str, Any]] = {
    "https://claude.ai/oauth/mcp-oauth-client-metadata": {
        "client_name": "Claude",
        "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
        "token_endpoint_auth_method": "none",
    },
    "https://claude.ai/oauth/claude-code-client-metadata": {
        "client_name": "Claude Code",
        "redirect_uris": ["http://localhost/callback", "http://127.0.0.1/callback"],  # any port
        "token_endpoint_auth_method": "none",
    },
}
CIMD_TIMEOUT = 5.0
CIMD_MAX_BYTES = 64 * 1024
CIMD_CACHE_TTL = 600
CIMD_CACHE_ENTRIES = 64
CIMD_CONCURRENT_FETCHES = 4

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$"
SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,40}-[0-9a-f]{6}$"
PATH_PATTERN = r"^[^/\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"  # relative, no control characters
NAME_RE = re.compile(NAME_PATTERN)
SESSION_ID_RE = re.compile(SESSION_ID_PATTERN)
PATH_RE = re.compile(PATH_PATTERN)
MAX_PATH_LENGTH = 1024
PKCE_CHALLENGE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # BASE64URL(SHA256(verifier)), unpadded
PKCE_VERIFIER_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 §4.1

TMUX_PREFIX = "rc-"
REMOTE_STATE_DIR = '"${XDG_STATE_HOME:-$HOME/.local/state}/rc-mcp"'  # sh expression, 0700, never /tmp
REMOTE_PATH_PREFIX = 'PATH="$HOME/.local/bin:$PATH"; export PATH'  # where claude's installer puts it
# Each of these makes `claude remote-control` refuse to start (reference: feature flags, API keys).
SCRUBBED_ENV = (
    "DISABLE_TELEMETRY",
    "DO_NOT_TRACK",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_GROWTHBOOK",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
)
LOG_TAIL_BYTES = 8192
PRIVATE_ENV = frozenset({"MCP_SECRET", "SSH_PRIVATE_KEY", "SSH_PASSPHRASE"})  # never passed to local commands

DEFAULT_START_TIMEOUT = 45.0  # Claude.ai gives a tool call 300 s
DEFAULT_COMMAND_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
# OpenSSH's default MaxSessions is 10 channels per connection; an 11th fails. Stay below it.
SSH_MAX_CHANNELS = 8
SSH_KEEPALIVE = 30

# Remote Control output (reference: claude-remote-control §5). Match URLs, never labels or "any URL".
OSC8_RE = re.compile(r"\x1b\]8;[^;\x07\x1b]*;([^\x07\x1b]*)(?:\x07|\x1b\\)")
OSC_RE = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
CSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
ENV_URL_RE = re.compile(r"https://claude\.ai/code\?(?:environment|bridge)=env_[A-Za-z0-9_-]{1,124}(?![A-Za-z0-9_-])")
SESSION_URL_RE = re.compile(r"https://claude\.ai/code/((?:session|cse)_[A-Za-z0-9_-]{1,128})(?![A-Za-z0-9_-])")
# The same environment URL as a POSIX ERE, for the server-side wait loop. The trailing character
# class proves the URL was written completely (raw pty logs end it with ESC[0m, BEL or \r).
ENV_URL_ERE = r"https://claude\.ai/code\?(environment|bridge)=env_[A-Za-z0-9_-]+[^A-Za-z0-9_-]"
CONSENT_PROMPT = "Enable Remote Control? (y/n)"
CONNECTING_LABEL = "Connecting"
# Prompts that wait for a person at the dev server: workspace trust, and the spawn-mode question.
ATTENTION_ERE = r"Trust .*\? \[y/N\]|Quick safety check|Spawn mode for this project"
LIST_TAIL_BYTES = 3072
PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "plan")

ENV_BOOL_TRUE = frozenset({"1", "true", "yes", "on"})
ENV_BOOL_FALSE = frozenset({"0", "false", "no", "off", ""})


# ── Errors ────────────────────────────────────────────────────────────────────────────────────


class ConfigError(Exception):
    """Every configuration problem at once, each naming its variable and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(f"  - {p}" for p in problems))


class OAuthError(Exception):
    """An RFC 6749 §5.2 error; raised by handlers, rendered once by the router."""

    def __init__(self, status: int, error: str, description: str, headers: Mapping[str, str] | None = None):
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description
        self.headers = dict(headers or {})


class RemoteError(Exception):
    """The dev server could not be reached or a command failed; the message says what to do."""


class HostKeyError(RemoteError):
    """The dev server's host key is unknown or changed: nothing was run."""


class ConnectionLost(Exception):
    """The SSH connection died before a command started (internal: triggers one reconnect)."""


# ── Config ────────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Config:
    mcp_secret: str
    server_url: str  # no trailing slash: the issuer, byte-identical everywhere
    projects_base_dir: str
    ssh_host: str | None  # None: local mode
    ssh_user: str
    ssh_port: int
    ssh_key: paramiko.PKey | None  # decrypted once at start-up
    known_hosts: paramiko.HostKeys | None  # SSH_KNOWN_HOSTS; None: trust on first use
    claude_bin: str
    spawn_worktree: bool
    permission_mode: str | None  # claude's default when None
    token_store_path: Path
    host: str
    port: int
    start_timeout: float
    command_timeout: float
    connect_timeout: float
    access_token_ttl: int
    refresh_token_ttl: int

    @property
    def local(self) -> bool:
        return self.ssh_host is None

    @property
    def resource(self) -> str:
        return f"{self.server_url}/mcp"

    @property
    def host_keys_path(self) -> Path:
        """Where a host key seen on first use is recorded: beside the token store."""
        return self.token_store_path.parent / "known_hosts"

    @property
    def ssh_target(self) -> str:
        """The name known_hosts uses for the dev server (`[host]:port` unless port 22)."""
        return self.ssh_host if self.ssh_port == 22 else f"[{self.ssh_host}]:{self.ssh_port}"


def default_token_store_path(environ: Mapping[str, str]) -> Path:
    data = Path("/data")
    if data.is_dir() and os.access(data, os.W_OK):
        return data / "oauth-tokens.json"
    state = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".local" / "state")
    return Path(state) / "rc_mcp" / "oauth-tokens.json"


def read_value_or_file(value: str) -> str:
    """`SSH_PRIVATE_KEY` and `SSH_KNOWN_HOSTS` hold content or the path of a file with it."""
    if "\n" not in value and "-----BEGIN" not in value:
        path = Path(value).expanduser()
        if path.is_file():
            return path.read_text()
        if value.startswith(("/", "~", ".")):
            raise FileNotFoundError(f"no such file: {value}")
    # A key pasted into a one-line variable often carries literal "\n" sequences.
    if "\n" not in value and "\\n" in value:
        value = value.replace("\\n", "\n")
    return value


def load_private_key(text: str, passphrase: str | None) -> paramiko.PKey:
    """Parse an ed25519, ECDSA or RSA key (OpenSSH or PEM), decrypting it once."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    data = text.strip().encode() + b"\n"
    password = passphrase.encode() if passphrase else None
    try:
        try:
            loaded = serialization.load_ssh_private_key(data, password=password)
        except ValueError as exc:
            if "not openssh" not in str(exc).lower() and b"OPENSSH PRIVATE KEY" in data:
                raise
            loaded = serialization.load_pem_private_key(data, password=password)
    except TypeError as exc:  # "Password was not given but private key is encrypted" and its reverse
        if password is None:
            raise ValueError("the key is encrypted: set SSH_PASSPHRASE") from exc
        raise ValueError("SSH_PASSPHRASE is set but the key is not encrypted: unset it") from exc
    except ValueError as exc:
        if password is not None and re.search(r"decrypt|password|checksum", str(exc), re.I):
            raise ValueError("SSH_PASSPHRASE does not decrypt the key (or the key is damaged)") from exc
        raise ValueError(f"not a private key in OpenSSH or PEM format ({exc})") from exc
    key_class: type[paramiko.PKey]
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    elif isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    else:
        raise ValueError(f"unsupported key type {type(loaded).__name__}: use ed25519, ECDSA or RSA")
    return key_class.from_private_key(io.StringIO(data.decode()), password=passphrase or None)


def parse_known_hosts(text: str) -> paramiko.HostKeys:
    host_keys = paramiko.HostKeys()
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno=number)
        except paramiko.hostkeys.InvalidHostKey as exc:
            raise ValueError(f"line {number} is not a known_hosts entry ({exc})") from exc
        if entry is None or entry.key is None:
            raise ValueError(f"line {number} is not a known_hosts entry (unsupported key type?)")
        for name in entry.hostnames:
            host_keys.add(name, entry.key.get_name(), entry.key)
    return host_keys


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ENV_BOOL_TRUE:
        return True
    if lowered in ENV_BOOL_FALSE:
        return False
    raise ValueError(value)


def load_config(environ: Mapping[str, str]) -> Config:
    """Build the configuration from environment variables, reporting every problem at once."""
    problems: list[str] = []

    def get(name: str, default: str | None = None) -> str | None:
        value = environ.get(name)
        return default if value is None or value.strip() == "" else value.strip()

    def number(name: str, default: float, low: float, high: float, kind: type = int) -> Any:
        raw = get(name)
        if raw is None:
            return kind(default)
        try:
            value = kind(raw)
        except ValueError:
            problems.append(f"{name} has value {raw!r}: not a {'whole ' if kind is int else ''}number.")
            return kind(default)
        if not low <= value <= high:
            problems.append(f"{name} has value {raw!r}: must be between {low:g} and {high:g}.")
        return value

    secret = get("MCP_SECRET")
    if secret is None:
        problems.append("MCP_SECRET is missing: set it to a long random string (e.g. `openssl rand -hex 32`).")
        secret = ""
    elif len(secret) < MIN_SECRET_LENGTH:
        problems.append(
            f"MCP_SECRET is {len(secret)} characters: use at least {MIN_SECRET_LENGTH} "
            "(e.g. `openssl rand -hex 32`); the client id derived from it is visible, so a short one can be guessed."
        )

    port = number("PORT", DEFAULT_PORT, 1, 65535)
    host = get("HOST", DEFAULT_HOST) or DEFAULT_HOST

    server_url = (get("SERVER_URL") or f"http://localhost:{port}").rstrip("/")
    parts = urlsplit(server_url)
    try:
        parts.port  # noqa: B018 — raises on a bad port
    except ValueError:
        parts = urlsplit("invalid:")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"SERVER_URL has value {server_url!r}: must be the public http(s) URL of this server.")
    elif parts.path or parts.query or parts.fragment or parts.username:
        problems.append(
            f"SERVER_URL has value {server_url!r}: give only scheme and host (and port), "
            "e.g. https://rc.example.com — the MCP endpoint is SERVER_URL/mcp."
        )

    base = get("PROJECTS_BASE_DIR")
    if base is None:
        problems.append("PROJECTS_BASE_DIR is missing: set it to the directory on the dev server holding your projects.")
        base = ""
    elif not (base.startswith("/") or base == "~" or base.startswith("~/")) or re.search(r"[\x00-\x1f\x7f]", base):
        problems.append(f"PROJECTS_BASE_DIR has value {base!r}: must be an absolute path (or start with ~/).")
    base = base.rstrip("/") or base

    claude_bin = get("CLAUDE_BIN", "claude") or "claude"
    if re.search(r"[\x00-\x1f\x7f]", claude_bin) or claude_bin.startswith("-"):
        problems.append(f"CLAUDE_BIN has value {claude_bin!r}: must be a command name or a path.")

    permission_mode = get("PERMISSION_MODE")
    if permission_mode is not None and permission_mode not in PERMISSION_MODES:
        problems.append(f"PERMISSION_MODE has value {permission_mode!r}: use one of {', '.join(PERMISSION_MODES)}.")

    try:
        spawn_worktree = parse_bool(get("SPAWN_WORKTREE", "false") or "false")
    except ValueError:
        problems.append(f"SPAWN_WORKTREE has value {get('SPAWN_WORKTREE')!r}: use true or false.")
        spawn_worktree = False

    ssh_host = get("SSH_HOST")
    if ssh_host is not None and ssh_host.lower() == "local":
        ssh_host = None
    ssh_user = get("SSH_USER") or ""
    ssh_port = number("SSH_PORT", 22, 1, 65535)
    ssh_key: paramiko.PKey | None = None
    known_hosts: paramiko.HostKeys | None = None
    if ssh_host is not None:
        if not re.fullmatch(r"[A-Za-z0-9._:-]+|\[[0-9A-Fa-f:.]+\]", ssh_host) or ssh_host.startswith("-"):
            problems.append(f"SSH_HOST has value {ssh_host!r}: must be a host name or IP address (or `local`).")
        ssh_host = ssh_host.strip("[]")
        if not ssh_user:
            problems.append("SSH_USER is missing: it is required when SSH_HOST is set.")
        raw_key = get("SSH_PRIVATE_KEY")
        if raw_key is None:
            problems.append("SSH_PRIVATE_KEY is missing: set it to the key's content or the path of the key file.")
        else:
            try:
                ssh_key = load_private_key(read_value_or_file(raw_key), environ.get("SSH_PASSPHRASE") or None)
            except (OSError, ValueError, paramiko.SSHException) as exc:
                problems.append(f"SSH_PRIVATE_KEY cannot be used: {exc}.")
        raw_known = get("SSH_KNOWN_HOSTS")
        if raw_known is not None:
            try:
                known_hosts = parse_known_hosts(read_value_or_file(raw_known))
            except (OSError, ValueError) as exc:
                problems.append(f"SSH_KNOWN_HOSTS cannot be used: {exc}.")
            else:
                target = ssh_host if ssh_port == 22 else f"[{ssh_host}]:{ssh_port}"
                if not known_hosts.lookup(target):
                    problems.append(
                        f"SSH_KNOWN_HOSTS has no key for {target}: add the line from "
                        f"`ssh-keyscan -p {ssh_port} {ssh_host}` (after checking its fingerprint on the server)."
                    )

    raw_store = get("TOKEN_STORE_PATH")
    token_store_path = Path(raw_store).expanduser() if raw_store else default_token_store_path(environ)

    start_timeout = number("START_TIMEOUT", DEFAULT_START_TIMEOUT, 5, 240, float)
    command_timeout = number("COMMAND_TIMEOUT", DEFAULT_COMMAND_TIMEOUT, 1, 600, float)
    connect_timeout = number("SSH_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT, 1, 120, float)
    access_ttl = number("ACCESS_TOKEN_TTL", DEFAULT_ACCESS_TOKEN_TTL, 60, 86400)
    refresh_ttl = number("REFRESH_TOKEN_TTL", DEFAULT_REFRESH_TOKEN_TTL, 3600, 365 * 86400)

    if problems:
        raise ConfigError(problems)
    return Config(
        mcp_secret=secret,
        server_url=server_url,
        projects_base_dir=base,
        ssh_host=ssh_host,
        ssh_user=ssh_user,
        ssh_port=ssh_port,
        ssh_key=ssh_key,
        known_hosts=known_hosts,
        claude_bin=claude_bin,
        spawn_worktree=spawn_worktree,
        permission_mode=permission_mode,
        token_store_path=token_store_path,
        host=host,
        port=port,
        start_timeout=start_timeout,
        command_timeout=command_timeout,
        connect_timeout=connect_timeout,
        access_token_ttl=access_ttl,
        refresh_token_ttl=refresh_ttl,
    )


def read_environment(cwd: Path | None = None) -> dict[str, str]:
    """The process environment over `.env` in the working directory (real variables win)."""
    from dotenv import dotenv_values

    env_file = (cwd or Path.cwd()) / ".env"
    values = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file.is_file() else {}
    return {**values, **os.environ}


# ── Pure helpers ──────────────────────────────────────────────────────────────────────────────


def derive_client_credentials(mcp_secret: str) -> tuple[str, str]:
    """The fixed client's id and secret, exactly as the original server derived them."""
    client_id = hashlib.sha256(f"{mcp_secret}:client_id".encode()).hexdigest()[:36]
    client_secret = hashlib.sha256(f"{mcp_secret}:client_secret".encode()).hexdigest()
    return client_id, client_secret


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_pkce(verifier: str, challenge: str) -> bool:
    if not PKCE_VERIFIER_RE.fullmatch(verifier):
        return False
    return hmac.compare_digest(pkce_challenge(verifier), challenge)


def hash_secret(value: str) -> str:
    """Codes and tokens are stored only as this hash: a leaked store file grants nothing."""
    return hashlib.sha256(value.encode()).hexdigest()


def canonical_resource(url: str) -> str | None:
    """RFC 8707 resource in canonical form (lower-case scheme and host, no default port,
    no trailing slash), or None when it is not an absolute URL without a fragment."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.fragment:
        return None
    scheme = parts.scheme.lower()
    netloc = parts.hostname.lower()
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


def parse_basic_auth(header: str) -> tuple[str, str] | None:
    """RFC 6749 §2.3.1: HTTP Basic with form-urlencoded id and secret."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, sep, client_secret = decoded.partition(":")
    if not sep:
        return None
    return unquote(client_id.replace("+", " ")), unquote(client_secret.replace("+", " "))


def host_key_fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def validate_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid name {name!r}: use 1-41 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


def validate_session_id(session_id: str) -> str:
    if not SESSION_ID_RE.fullmatch(session_id):
        raise ValueError(
            f"invalid session id {session_id!r}: it looks like 'my-project-a1b2c3' — call list_sessions for the ids"
        )
    return session_id


def validate_project_path(path: str) -> str:
    """A path relative to PROJECTS_BASE_DIR, normalized (`a//b/` → `a/b`). The server also checks
    that it resolves inside the base directory, symlinks included."""
    if len(path) > MAX_PATH_LENGTH or not PATH_RE.fullmatch(path):
        raise ValueError(
            f"invalid path {path!r}: give a directory relative to the projects base directory "
            "(no leading '/', no control characters) — call list_projects for the accepted values"
        )
    segments = [s for s in path.split("/") if s]
    if not segments or any(s in (".", "..") for s in segments):
        raise ValueError(
            f"invalid path {path!r}: '.' and '..' are not allowed — call list_projects for the accepted values"
        )
    return "/".join(segments)


def shell_path(path: str) -> str:
    """A quoted sh word for a configured path; a leading `~/` becomes "$HOME"."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def strip_terminal(raw: str) -> str:
    """Terminal output as plain text: OSC and CSI sequences removed, carriage returns as newlines."""
    text = OSC_RE.sub("", raw)
    text = CSI_RE.sub("", text)
    return text.replace("\r\n", "\n").replace("\r", "\n")


@dataclass(frozen=True)
class RemoteControlUrls:
    environment_url: str | None
    session_url: str | None


def extract_remote_control_urls(raw: str) -> RemoteControlUrls:
    """The newest environment and session URL claude printed, from raw pty bytes.

    OSC-8 hyperlink targets are collected first (tmux and plain stripping would drop them), then
    escapes are removed and the text searched. Only claude.ai/code URLs of the documented shapes
    count: a docs link or a bare https://claude.ai/code is never returned.
    """
    candidates = OSC8_RE.findall(raw)
    candidates.append(strip_terminal(raw))
    text = "\n".join(candidates)
    env_matches = list(ENV_URL_RE.finditer(text))
    session_matches = list(SESSION_URL_RE.finditer(text))
    # Exactly as printed (2.1.84 wrote ?bridge=, later versions ?environment=); a session URL
    # without its query string (?from=cli), which only says where the link came from.
    environment_url = env_matches[-1].group(0) if env_matches else None
    session_url = f"https://claude.ai/code/{session_matches[-1].group(1)}" if session_matches else None
    return RemoteControlUrls(environment_url, session_url)


# What a failed or stuck claude printed → the cause and the fix on the dev server, first match wins.
FAILURE_EXPLANATIONS: tuple[tuple[str, str], ...] = (
    (
        r"You must be logged in to use Remote Control",
        "claude is not logged in on the dev server: run `claude auth login` there with a claude.ai account "
        "(Pro, Max, Team or Enterprise), then start again.",
    ),
    (
        r"requires a full-scope login token",
        "claude is using a long-lived token (`claude setup-token` / CLAUDE_CODE_OAUTH_TOKEN), which cannot run Remote "
        "Control: run `claude auth login` on the dev server and remove that token from its settings.",
    ),
    (
        r"feature-flag evaluation, which is disabled because (\w+) is set",
        "{0} is set for claude on the dev server (in a settings file or the login environment) and switches Remote "
        "Control off: remove it there, then start again.",
    ),
    (
        r"feature-flag evaluation, which is unavailable",
        "claude cannot reach its feature-flag service from the dev server: check that it can reach the internet "
        "(proxy settings), then start again.",
    ),
    (
        r"is your home directory, and for security home-directory trust is never saved",
        "claude refuses to run in the home directory: pick a project directory.",
    ),
    (
        r"Workspace not trusted|Quick safety check|Trust .*\? \[y/N\]",
        "claude does not trust {path} yet: on the dev server run `claude` once in that directory and accept the "
        "trust dialog (trusting the projects base directory covers every project in it), then start again.",
    ),
    (
        r"Another `claude remote-control` instance \(pid (\d+)\)",
        "a `claude remote-control` that rc_mcp did not start (pid {0}) already serves {path}: use that one, or stop "
        "it on the dev server (`kill {0}`) and start again.",
    ),
    (
        r"not yet enabled for your account|environments are not available for your account",
        "Remote Control is not available for this claude.ai account: it needs a Pro, Max, Team or Enterprise plan "
        "(on Team and Enterprise an admin must allow it).",
    ),
    (
        r"Multi-session Remote Control is not enabled",
        "this Claude Code version is too old for server mode: run `claude update` on the dev server.",
    ),
    (
        r"Unknown argument|is not supported by claude remote-control|--spawn requires one of",
        "this Claude Code version does not accept rc_mcp's arguments: run `claude update` on the dev server.",
    ),
    (
        r"ANTHROPIC_API_KEY|API key|Bedrock|Vertex|Foundry|ANTHROPIC_BASE_URL",
        "Remote Control needs a claude.ai login, not an API key or a cloud provider: on the dev server run "
        "`claude auth login` and remove ANTHROPIC_API_KEY / provider settings from claude's settings.",
    ),
    (
        r"Spawn mode for this project",
        "claude is asking for a spawn mode on the dev server: run `claude remote-control` there once and choose.",
    ),
    (
        r"command not found|No such file or directory",
        "the claude CLI was not found on the dev server: install Claude Code there, or set CLAUDE_BIN to its "
        "absolute path (`command -v claude` in a login shell shows it).",
    ),
)

SessionStatus = Literal["starting", "ready", "connected", "needs attention", "exited"]
STATUS_LABEL_RE = re.compile(r"·[^·\n]{1,3}·\s*(Connecting|Ready|Connected)\b")
ATTENTION_RE = re.compile(ATTENTION_ERE + "|" + re.escape(CONSENT_PROMPT) + r"|Reconnecting\b")


def explain_failure(raw: str, path: str = "the project") -> str | None:
    """The cause and the fix for what claude printed, or None when it is not a known failure."""
    text = strip_terminal(raw)
    for pattern, explanation in FAILURE_EXPLANATIONS:
        match = re.search(pattern, text)
        if match:
            return explanation.format(*match.groups(), path=path)
    return None


def classify_session(raw: str) -> tuple[SessionStatus, str | None]:
    """A running session's status from the end of its output: the newest status label or prompt wins."""
    text = strip_terminal(raw)
    status: SessionStatus = "starting"
    reason: str | None = None
    position = -1
    for match in STATUS_LABEL_RE.finditer(text):
        status, position = {"Connecting": "starting", "Ready": "ready", "Connected": "connected"}[match.group(1)], match.start()  # type: ignore[assignment]
    attention = None
    for attention in ATTENTION_RE.finditer(text):
        pass
    if attention is not None and attention.start() > position:
        status = "needs attention"
        if attention.group(0).startswith("Reconnecting"):
            reason = "claude lost its connection to claude.ai and is reconnecting"
        elif attention.group(0) == CONSENT_PROMPT:
            reason = "claude is waiting for an answer to 'Enable Remote Control? (y/n)' on the dev server"
        else:
            reason = explain_failure(attention.group(0)) or "claude is waiting for an answer on the dev server"
    return status, reason


def tail_lines(raw: str, count: int = 12) -> str:
    """The last lines of claude's output as readable text, repaints collapsed."""
    lines = [line.rstrip() for line in strip_terminal(raw).split("\n")]
    lines = [line for line in lines if line.strip()]
    deduped: list[str] = []
    for line in lines:
        if not deduped or deduped[-1] != line:
            deduped.append(line)
    return "\n".join(deduped[-count:])


# ── Remote scripts ────────────────────────────────────────────────────────────────────────────
# Every command sent to the dev server is built here: pure functions returning POSIX sh, every
# interpolated value validated first and shlex-quoted. Output lines starting with @@ are for us;
# raw claude output is framed as `@@tail` … `@@end-<nonce>` with a nonce chosen per call.


def spawn_mode(worktree: bool) -> str:
    return "worktree" if worktree else "same-dir"


def _remote_script(*lines: str) -> str:
    return "\n".join((REMOTE_PATH_PREFIX, *lines)) + "\n"


def _emit_tail(path_expr: str, nonce: str, size: int = LOG_TAIL_BYTES) -> str:
    """sh that prints the end of a log file, framed so nothing in it can pass for a control line."""
    return f"printf '@@tail\\n'; tail -c {size} {path_expr} 2>/dev/null; printf '\\n@@end-%s\\n' {shlex.quote(nonce)}"


# A dead pane's exit status or signal reaches tmux a moment after the pty closes; tmux 3.3 has
# been seen never to learn it (its child left unreaped), so after 1 s the pane counts as exited.
_PANE_STATE = (
    '  pane=$(tmux display-message -p -t "=$session:" \'#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}\' '
    "2>/dev/null) || { status=gone; break; }\n"
    '  case "$pane" in 1::) dead=$((dead + 1)); [ $dead -ge 10 ] && { status=exited; code=; break; } ;; '
    '1::*) status=exited; code="signal ${pane##*:}"; break ;; '
    '1:*) status=exited; code=${pane#1:}; code=${code%%:*}; break ;; esac'
)


def build_start_script(
    *,
    base_dir: str,
    path: str,
    session_id: str,
    name: str,
    claude_bin: str,
    spawn: str,
    timeout: float,
    nonce: str,
    permission_mode: str | None = None,
) -> str:
    """Launch claude in a detached tmux session and wait, on the server, for its URL.

    Prints `@@error <code>` for a refusal before launch, or `@@existing <session>` when one of our
    sessions already serves that directory; otherwise `@@state launched|consent|connecting` as
    they happen, then `@@status ready|exited|attention|timeout|gone` (`@@exit <code>` for a dead
    pane), the URL as `@@url`, and the tail of claude's output. One SSH command, no polling from here.
    """
    q = shlex.quote
    session = TMUX_PREFIX + session_id
    claude_args = ["remote-control", "--name", name, "--spawn", spawn]
    if permission_mode:
        claude_args += ["--permission-mode", permission_mode]
    scrub = " ".join(f"-u{var}" for var in SCRUBBED_ENV)
    return _remote_script(
        f"base={shell_path(base_dir)}; rel={q(path)}; session={q(session)}; name={q(name)}; timeout={int(timeout)}",
        f"claude={shell_path(claude_bin)}",
        f"state={REMOTE_STATE_DIR}",
        'log="$state/$session.log"; meta="$state/$session.meta"; url_file="$state/$session.url"',
        "command -v tmux >/dev/null 2>&1 || { echo '@@error no-tmux'; exit 0; }",
        'base_real=$(cd -P -- "$base" 2>/dev/null && pwd -P) || { echo \'@@error no-base\'; exit 0; }',
        'dir=$(cd -P -- "$base/$rel" 2>/dev/null && pwd -P) || { echo \'@@error no-dir\'; exit 0; }',
        # A symlink inside the base may point anywhere: compare resolved paths.
        'case "$dir/" in "${base_real%/}"/?*) ;; *) echo \'@@error outside\'; exit 0 ;; esac',
        # claude never saves trust for the home directory, so a session there could never start.
        'home_real=$(cd -P -- "$HOME" 2>/dev/null && pwd -P)',
        '[ "$dir" = "$home_real" ] && { echo \'@@error home\'; exit 0; }',
        'command -v -- "$claude" >/dev/null 2>&1 || { echo \'@@error no-claude\'; exit 0; }',
        "umask 077",
        'mkdir -p -- "$state" && chmod 700 -- "$state" || { echo \'@@error state\'; exit 0; }',
        # Two starts for one directory at once: the second waits here, then finds the first's session.
        'lock="$state/.lock-$(printf \'%s\' "$dir" | cksum | cut -d \' \' -f 1)"; i=0',
        'until mkdir -- "$lock" 2>/dev/null; do',
        '  i=$((i + 1)); [ $i -ge 100 ] && rm -rf -- "$lock"  # a lock older than 5 s was left by a killed start',
        "  sleep 0.05",
        "done",
        "trap 'rmdir -- \"$lock\" 2>/dev/null' EXIT",
        # One Remote Control server per directory: a live session of ours there is the answer.
        f'for m in "$state"/{TMUX_PREFIX}*.meta; do',
        '  [ -f "$m" ] || continue; s=${m##*/}; s=${s%.meta}; here=0',
        "  while IFS='\t' read -r k v; do [ \"$k\" = dir ] && [ \"$v\" = \"$dir\" ] && here=1; done < \"$m\"",
        '  [ $here = 1 ] || continue',
        '  [ "$(tmux display-message -p -t "=$s:" \'#{pane_dead}\' 2>/dev/null)" = 0 ] || continue',
        '  echo "@@existing $s"',
        "  [ -s \"$state/$s.url\" ] && IFS= read -r u < \"$state/$s.url\" && printf '@@url\\t%s\\n' \"$u\"",
        "  " + _emit_tail('"$state/$s.log"', nonce),
        "  exit 0",
        "done",
        'tmux has-session -t "=$session" 2>/dev/null && { echo \'@@error exists\'; exit 0; }',
        'rm -f -- "$url_file"',
        # pipe-pane runs its command through /bin/sh after expanding tmux formats: quote for both.
        "qlog=$(printf '%s' \"$log\" | sed -e \"s/'/'\\\\\\\\''/g\" -e 's/#/##/g')",
        # tmux expands formats (#{…}, #(…)) in -c: start the client in the directory instead.
        'cd -- "$dir" || { echo \'@@error no-dir\'; exit 0; }',
        # The pane has a real TTY for claude. It waits for a signal before exec'ing claude, so
        # pipe-pane and remain-on-exit are in place even if claude dies at once; and the words
        # after new-session's options are exec'd directly, so the login shell does not matter.
        # Variables that make Remote Control refuse to start are removed from claude's environment.
        'tmux new-session -d -s "$session" -x 200 -y 50 '
        "/bin/sh -c 'tmux wait-for \"$0\" && exec \"$@\"' \"$session-go\" "
        f'env {scrub} "$claude" {" ".join(q(a) for a in claude_args)} \\; '
        'pipe-pane -o -t "=$session:" "cat >> \'$qlog\'" \\; '
        'set-option -t "=$session:" remain-on-exit on >/dev/null 2>&1 '
        "|| { tmux kill-session -t \"=$session\" 2>/dev/null; echo '@@error tmux'; exit 0; }",
        # Our files exist only while the session does (list_sessions relies on that).
        "printf 'name\\t%s\\npath\\t%s\\ndir\\t%s\\nstarted\\t%s\\n' \"$name\" \"$rel\" \"$dir\" \"$(date +%s)\" > \"$meta\"",
        'rmdir -- "$lock" 2>/dev/null',  # the directory is taken: the next start there will find this session
        'tmux wait-for -S "$session-go"',
        "echo '@@state launched'",
        'deadline=$(( $(date +%s) + timeout )); answered=0; connecting=0; dead=0; status=timeout',
        "while :; do",
        f"  if grep -a -q -E {q(ENV_URL_ERE)} \"$log\"; then status=ready; break; fi",
        _PANE_STATE,
        f"  if [ $connecting = 0 ] && grep -a -q -F {q(CONNECTING_LABEL)} \"$log\"; then",
        "    connecting=1; echo '@@state connecting'",
        "  fi",
        # First run: claude asks before enabling Remote Control. The user asked for exactly that.
        f"  if [ $answered = 0 ] && grep -a -q -F {q(CONSENT_PROMPT)} \"$log\"; then",
        '    tmux send-keys -t "=$session:" y Enter; answered=1; echo \'@@state consent\'',
        "  fi",
        # Prompts only a person should answer (workspace trust; spawn mode, which --spawn avoids).
        f"  grep -a -q -E {q(ATTENTION_ERE)} \"$log\" && {{ status=attention; break; }}",
        '  [ "$(date +%s)" -ge "$deadline" ] && break',
        "  sleep 0.1",
        "done",
        'if [ $status = ready ]; then',
        f"  grep -a -o -E {q(ENV_URL_ERE)} \"$log\" | tail -n 1 > \"$url_file\"",
        "  IFS= read -r u < \"$url_file\" && printf '@@url\\t%s\\n' \"$u\"",
        "fi",
        'echo "@@status $status"',
        '[ $status = exited ] && echo "@@exit $code"',
        _emit_tail('"$log"', nonce),
        # A session that died or waits for a person is cleaned up, after its output was read.
        'case $status in exited|gone|attention)',
        '  tmux kill-session -t "=$session" 2>/dev/null; rm -f -- "$meta" "$log" "$url_file" ;;',
        "esac",
    )


def build_list_script(nonce: str) -> str:
    """Every `rc-*` tmux session with its metadata, cached URL and the end of its output, in one
    round trip. Also drops files of sessions that no longer exist — only in this server's own
    state directory."""
    return _remote_script(
        f"state={REMOTE_STATE_DIR}",
        # ':' separates fields: tmux never allows it in session names, and (unlike a tab) tmux
        # does not rewrite it when the locale is not UTF-8. The possibly empty field goes last.
        "panes=$(tmux list-panes -a -F '#{session_name}:#{pane_dead}:#{session_created}:#{pane_dead_status}' 2>/dev/null)",
        "printf '%s\\n' \"$panes\" | while IFS=: read -r session dead created code; do",
        f'  case "$session" in {TMUX_PREFIX}?*) ;; *) continue ;; esac',
        "  printf '@@session\\t%s\\t%s\\t%s\\t%s\\n' \"$session\" \"$dead\" \"$created\" \"$code\"",
        # Shell builtins where they repeat per session: a fork per session per line adds up.
        '  if [ -f "$state/$session.meta" ]; then',
        "    while IFS= read -r line; do printf '@@meta\\t%s\\n' \"$line\"; done < \"$state/$session.meta\"",
        "  fi",
        '  [ -f "$state/$session.log" ] || continue',
        '  if [ ! -s "$state/$session.url" ]; then',
        f"    grep -a -o -E {shlex.quote(ENV_URL_ERE)} \"$state/$session.log\" | tail -n 1 > \"$state/$session.url\"",
        "  fi",
        "  if [ -s \"$state/$session.url\" ] && IFS= read -r url < \"$state/$session.url\"; then",
        "    printf '@@url\\t%s\\n' \"$url\"",
        "  fi",
        "  " + _emit_tail('"$state/$session.log"', nonce, LIST_TAIL_BYTES),
        "done",
        # Files are written only after their session exists, so a session that is not running
        # now (checked again: one may have started since the snapshot) has left them behind.
        f'for f in "$state"/{TMUX_PREFIX}*.meta; do',
        '  [ -e "$f" ] || continue',
        '  s=${f##*/}; s=${s%.meta}',
        '  case "\n$panes" in *"\n$s:"*) continue ;; esac',
        '  tmux has-session -t "=$s" 2>/dev/null || rm -f -- "$state/$s.meta" "$state/$s.log" "$state/$s.url"',
        "done",
        "echo '@@end'",
    )


def build_stop_script(session_id: str) -> str:
    session = shlex.quote(TMUX_PREFIX + session_id)
    return _remote_script(
        f"state={REMOTE_STATE_DIR}; session={session}",
        "pid=$(tmux display-message -p -t \"=$session:\" '#{pane_pid}' 2>/dev/null)",
        # `=` makes the target exact: "rc-al" must never match "rc-alpha-…".
        'if tmux kill-session -t "=$session" 2>/dev/null; then r=stopped; else r=not-found; fi',
        'rm -f -- "$state/$session.meta" "$state/$session.log" "$state/$session.url"',
        # claude holds its directory until it has exited: wait (≤ 5 s) so a new start there works.
        # A zombie counts as exited (some containers' init never reaps orphans).
        'alive() { kill -0 "$1" 2>/dev/null && ! ps -o stat= -p "$1" 2>/dev/null | grep -q "^Z"; }',
        'i=0; while [ -n "$pid" ] && [ $i -lt 50 ] && alive "$pid"; do sleep 0.1; i=$((i + 1)); done',
        'echo "@@$r"',
    )


def build_projects_script(base_dir: str) -> str:
    """Directories up to two levels below the base that hold `.git` or `.claude`, NUL-separated;
    hidden ones are skipped by the glob; symlinks leading outside the base and the home directory
    (where claude cannot run) are dropped."""
    return _remote_script(
        f"cd -P -- {shell_path(base_dir)} 2>/dev/null || {{ echo '@@error no-base'; exit 0; }}",
        'base_real=$(pwd -P); home_real=$(cd -P -- "$HOME" 2>/dev/null && pwd -P)',
        "echo '@@projects'",
        "for d in */ */*/; do",
        '  [ -d "$d" ] || continue',
        '  d=${d%/}',
        '  { [ -e "$d/.git" ] || [ -e "$d/.claude" ]; } || continue',
        '  real=$(cd -P -- "$d" 2>/dev/null && pwd -P) || continue',
        '  [ "$real" = "$home_real" ] && continue',
        "  case \"$real/\" in \"${base_real%/}\"/?*) printf '%s\\0' \"$d\" ;; esac",
        "done",
    )


def build_check_script(base_dir: str, claude_bin: str) -> str:
    base = shell_path(base_dir)
    return _remote_script(
        f"claude={shell_path(claude_bin)}",
        "printf '@@tmux\\t%s\\n' \"$(tmux -V 2>/dev/null)\"",
        "printf '@@claude_path\\t%s\\n' \"$(command -v -- \"$claude\" 2>/dev/null)\"",
        # Where a login shell finds claude, to suggest CLAUDE_BIN when the plain PATH does not.
        "printf '@@claude_login_path\\t%s\\n' \"$(bash -lc 'command -v claude' 2>/dev/null </dev/null | tail -n 1)\"",
        "printf '@@claude_version\\t%s\\n' \"$(\"$claude\" --version 2>/dev/null </dev/null | head -n 1)\"",
        "printf '@@claude_auth\\t%s\\n' \"$(\"$claude\" auth status --json 2>/dev/null </dev/null | tr -d '\\n')\"",
        f"if [ -d {base} ] && [ -r {base} ] && [ -x {base} ]; then echo '@@base\tok'; else echo '@@base\tmissing'; fi",
    )


def parse_script_output(output: str, nonce: str = "") -> list[tuple[str, list[str]]]:
    """Script output as (key, fields) pairs: `@@key\\tfield\\tfield` lines, and ("tail", [text])
    for each framed piece of raw claude output. Anything else (a chatty login shell) is ignored."""
    events: list[tuple[str, list[str]]] = []
    end_marker = f"\n@@end-{nonce}\n"
    position = 0
    while position < len(output):
        newline = output.find("\n", position)
        line = output[position:] if newline < 0 else output[position:newline]
        position = len(output) if newline < 0 else newline + 1
        if line == "@@tail" and nonce:
            end = output.find(end_marker, position - 1)
            tail = output[position:] if end < 0 else output[position:end]
            position = len(output) if end < 0 else end + len(end_marker)
            events.append(("tail", [tail]))
            continue
        match = re.match(r"@@([a-z_-]+)[ \t]?(.*)$", line)
        if match:
            rest = match.group(2)
            events.append((match.group(1), rest.split("\t") if rest else []))
    return events


# ── Token store ───────────────────────────────────────────────────────────────────────────────

STORE_VERSION = 1
STORE_KINDS = ("codes", "access", "refresh", "clients")


def import_legacy_store(
    old: Mapping[str, Any], now: float, *, client_id: str, resource: str, access_ttl: int, refresh_ttl: int
) -> dict[str, Any]:
    """Convert the Node.js server's token file: `{"tokens": {<plaintext token>: {clientId, scopes,
    expiresAt (ms), type?: "refresh"}}, "codes": {…}}`. Tokens of the fixed client are hashed and
    kept with their expiry (refresh tokens had none: they get a fresh lifetime); codes are dropped
    (they carried the client secret and live minutes anyway)."""
    data: dict[str, Any] = {"version": STORE_VERSION, **{kind: {} for kind in STORE_KINDS}}
    for token, record in (old.get("tokens") or {}).items():
        if not isinstance(token, str) or not isinstance(record, dict) or record.get("clientId") != client_id:
            continue
        scopes = record.get("scopes") if isinstance(record.get("scopes"), list) else []
        scope = " ".join(str(s) for s in scopes if str(s) in ACCEPTED_SCOPES) or SCOPE
        grant = {"client_id": client_id, "scope": scope, "resource": resource, "grant_id": secrets.token_hex(16)}
        if record.get("type") == "refresh":
            data["refresh"][hash_secret(token)] = {**grant, "expires_at": now + refresh_ttl}
        else:
            expires_ms = record.get("expiresAt")
            expires_at = expires_ms / 1000 if isinstance(expires_ms, (int, float)) else now + access_ttl
            if expires_at > now:
                data["access"][hash_secret(token)] = {**grant, "expires_at": expires_at}
    return data


def is_legacy_store(data: Any) -> bool:
    return isinstance(data, dict) and "version" not in data and isinstance(data.get("tokens"), dict)


class TokenStore:
    """OAuth state in one JSON file holding only SHA-256 hashes of codes and tokens.

    The file is 0600 in a 0700 directory, written atomically (temp file in the same directory,
    fsync, rename), writes are serialized, and expired records are pruned on every write. A file
    that cannot be read is moved aside, loudly, never overwritten. The older Node.js server's
    file is imported (tokens hashed) after a 0600 backup of the original.
    """

    def __init__(
        self,
        path: Path,
        clock: Callable[[], float] = time.time,
        import_legacy: Callable[[Mapping[str, Any], float], dict[str, Any]] | None = None,
    ):
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()  # the in-memory data
        self._write_lock = threading.Lock()  # one read-modify-write-persist at a time
        self._written: str | None = None  # what the file holds, as last written here
        self._data: dict[str, Any] = self._empty()
        self._load(import_legacy)

    @staticmethod
    def _empty() -> dict[str, Any]:
        return {"version": STORE_VERSION, **{kind: {} for kind in STORE_KINDS}}

    def _load(self, import_legacy: Callable[[Mapping[str, Any], float], dict[str, Any]] | None) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            data = json.loads(raw)
            if is_legacy_store(data) and import_legacy is not None:
                self._import(raw, import_legacy(data, self.clock()))
                return
            if not (
                isinstance(data, dict)
                and data.get("version") == STORE_VERSION
                and all(isinstance(data.get(kind, {}), dict) for kind in STORE_KINDS)
            ):
                raise ValueError("not an rc_mcp token store")
        except ValueError as exc:
            self._quarantine(str(exc))
            return
        self._data = {**self._empty(), **data}

    def _import(self, original: bytes, data: dict[str, Any]) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        backup = self.path.with_name(f"{self.path.name}.nodejs-backup-{stamp}")
        fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the original held plaintext tokens
        with os.fdopen(fd, "wb") as handle:
            handle.write(original)
            handle.flush()
            os.fsync(handle.fileno())
        self._data = data
        self._save()
        log.warning(
            "imported the Node.js server's token file %s: %d access and %d refresh tokens, now stored as hashes "
            "(original kept as %s, mode 0600 — delete it once the connector works). The Node.js server's /register "
            "gave its client secret to anyone who asked: if it was reachable by others, set a new MCP_SECRET and add "
            "the connector again, which ends every old token.",
            self.path,
            len(data["access"]),
            len(data["refresh"]),
            backup,
        )

    def _quarantine(self, reason: str) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        os.replace(self.path, aside)
        log.error(
            "TOKEN STORE UNREADABLE (%s): moved %s to %s and started empty — connectors must "
            "authorize again. Inspect the moved file; nothing was overwritten.",
            reason,
            self.path,
            aside,
        )

    def _prune(self, now: float) -> None:
        for kind in STORE_KINDS:
            records = self._data[kind]
            for key in [k for k, rec in records.items() if rec.get("expires_at", 0) <= now]:
                del records[key]

    def _save(self) -> None:
        """Persist the current data. Callers hold the write lock, not the data lock: /mcp requests
        read tokens while the file is written and fsynced."""
        with self._lock:
            self._prune(self.clock())
            snapshot = json.dumps(self._data, separators=(",", ":"))
        if snapshot == self._written:
            return  # nothing changed: no disk write for requests that changed nothing
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
        elif directory.stat().st_mode & 0o077 and directory.stat().st_uid == os.getuid():
            log.warning("%s is accessible to other users: `chmod 700 %s`", directory, directory)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)  # mode 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(snapshot)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._written = snapshot

    def ensure_writable(self) -> None:
        """Create the directory and file now, so a bad TOKEN_STORE_PATH fails at start-up."""
        with self._write_lock:
            self._save()

    def find(self, kind: str, secret: str, hashed: bool = True) -> dict[str, Any] | None:
        """The unexpired record of a code, token or client (no I/O: used on every /mcp request)."""
        with self._lock:
            record = self._data[kind].get(hash_secret(secret) if hashed else secret)
            if record is None or record["expires_at"] <= self.clock():
                return None
            return dict(record)

    def transact(self, change: Callable[[dict[str, Any], float], Any]) -> Any:
        """Run `change(data, now)` atomically and persist the result; writes happen one at a time.

        `change` may return an OAuthError to raise after its changes (e.g. a revocation) are saved.
        """
        with self._write_lock:
            with self._lock:
                result = change(self._data, self.clock())
            self._save()
        if isinstance(result, OAuthError):
            raise result
        return result

    def count(self, kind: str) -> int:
        with self._lock:
            return len(self._data[kind])


# ── Remote ────────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


LineCallback = Callable[[str], Awaitable[None]]


class Runner(Protocol):
    """Runs one POSIX sh script on the dev server."""

    description: str

    async def run(self, script: str, *, timeout: float, on_line: LineCallback | None = None) -> CommandResult: ...

    async def close(self) -> None: ...


class LocalRunner:
    """Local mode: the same scripts, run on this machine by /bin/sh."""

    description = "local (this machine, no SSH)"

    async def run(self, script: str, *, timeout: float, on_line: LineCallback | None = None) -> CommandResult:
        # This server's own secrets must not reach tmux, claude or the sessions' environment.
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            script,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # so the whole process group can be ended
        )
        assert proc.stdout is not None and proc.stderr is not None
        stdout = bytearray()

        async def read_stdout() -> None:
            pending = b""
            while chunk := await proc.stdout.read(65536):  # type: ignore[union-attr]
                stdout.extend(chunk)
                if on_line is not None:
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    for line in complete:
                        await on_line(line.decode(errors="replace"))

        try:
            async with asyncio.timeout(timeout):
                stderr, _ = await asyncio.gather(proc.stderr.read(), read_stdout())
                await proc.wait()
        except TimeoutError:
            raise RemoteError(f"the command on this machine did not finish within {timeout:g} s") from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        return CommandResult(proc.returncode or 0, stdout.decode(errors="replace"), stderr.decode(errors="replace"))

    async def close(self) -> None:
        return None


class SSHRunner:
    """One paramiko connection, kept open and shared by every call, reconnected when it drops.

    The host key is verified before authentication, so nothing runs on a server whose key is
    unknown or changed. Concurrent calls share the connection but never open more channels than
    sshd's default MaxSessions allows. All blocking work runs in worker threads.
    """

    def __init__(self, config: Config):
        self.config = config
        self.description = f"SSH {config.ssh_user}@{config.ssh_target}"
        self._transport: paramiko.Transport | None = None
        self._in_use: dict[paramiko.Transport, int] = {}  # commands running, per connection
        self._connect_lock = threading.Lock()
        # Awaited before a worker thread is taken, so waiting commands never hold threads that
        # the token endpoints need.
        self._channels: asyncio.Semaphore | None = None
        self.connects = 0  # how many connections were opened (for tests and benchmarks)
        self.execs = 0  # how many commands were run

    # Host keys ----------------------------------------------------------------------------

    def _known_keys(self) -> tuple[str, Any]:
        """Where the dev server's key is pinned or recorded, and the keys there for it."""
        config = self.config
        if config.known_hosts is not None:
            return "SSH_KNOWN_HOSTS", config.known_hosts.lookup(config.ssh_target)
        source = str(config.host_keys_path)
        try:
            return source, parse_known_hosts(config.host_keys_path.read_text()).lookup(config.ssh_target)
        except FileNotFoundError:
            return source, None
        except (OSError, ValueError) as exc:
            raise HostKeyError(f"cannot read the recorded host keys in {source} ({exc}). Nothing was run. Fix or delete that file.") from exc

    def _verify_host_key(self, key: paramiko.PKey) -> None:
        target = self.config.ssh_target
        offered = f"{key.get_name()} {host_key_fingerprint(key)}"
        source, known = self._known_keys()
        if not known and self.config.known_hosts is None:
            self._record_host_key(key)
            return
        if not known:
            raise HostKeyError(
                f"{source} has no key for {target}; the server offered {offered}. Nothing was run. "
                f"Verify that fingerprint on the server (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`) and add "
                f"the key to {source}."
            )
        expected = known.get(key.get_name())
        if expected is not None and hmac.compare_digest(expected.asbytes(), key.asbytes()):
            return
        pinned = ", ".join(f"{k.get_name()} {host_key_fingerprint(k)}" for k in known.values())
        raise HostKeyError(
            f"HOST KEY MISMATCH for {target}: the server offered {offered}, but {source} has {pinned}. "
            "Nothing was run. Someone may be intercepting the connection, or the server was reinstalled. "
            "Check the fingerprint on the server (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`); only if it "
            f"really changed, replace the entry for {target} in {source} and restart."
        )

    def _record_host_key(self, key: paramiko.PKey) -> None:
        path = self.config.host_keys_path
        line = f"{self.config.ssh_target} {key.get_name()} {key.get_base64()}\n"
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise HostKeyError(f"cannot record the dev server's host key in {path} ({exc}); set SSH_KNOWN_HOSTS") from exc
        log.warning(
            "first connection to %s: recorded its host key %s %s in %s (trust on first use). "
            "Set SSH_KNOWN_HOSTS to pin it instead.",
            self.config.ssh_target,
            key.get_name(),
            host_key_fingerprint(key),
            path,
        )

    def _known_key_types(self) -> list[str]:
        known = self._known_keys()[1]
        return list(known.keys()) if known else []

    # Connection ---------------------------------------------------------------------------

    def _open_socket(self) -> socket.socket:
        config = self.config
        last_error: OSError | None = None
        try:
            addresses = socket.getaddrinfo(config.ssh_host, config.ssh_port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise RemoteError(f"cannot resolve the dev server {config.ssh_host!r}: {exc}. Check SSH_HOST.") from exc
        for family, kind, proto, _, address in addresses:
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as exc:
                last_error = exc
                continue
            try:
                # Before connect: avoids Nagle x delayed-ACK stalls (44 ms → 2 ms per exec on loopback).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(config.connect_timeout)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                last_error = exc
        raise RemoteError(
            f"cannot connect to the dev server {config.ssh_target}: {last_error}. "
            "Check SSH_HOST and SSH_PORT, and that sshd is running."
        )

    def _connect(self) -> paramiko.Transport:
        config = self.config
        sock = self._open_socket()
        transport = paramiko.Transport(sock)
        try:
            known_types = self._known_key_types()
            if known_types:  # negotiate the host key type we can check, as OpenSSH does
                options = transport.get_security_options()
                options.key_types = known_types + [t for t in options.key_types if t not in known_types]
            try:
                transport.start_client(timeout=config.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise RemoteError(f"SSH handshake with {config.ssh_target} failed: {exc}") from exc
            self._verify_host_key(transport.get_remote_server_key())
            try:
                transport.auth_publickey(config.ssh_user, config.ssh_key)
            except paramiko.AuthenticationException as exc:
                raise RemoteError(
                    f"the dev server refused the key for user {config.ssh_user!r} ({exc}). Add the public key "
                    f"to ~{config.ssh_user}/.ssh/authorized_keys, or fix SSH_USER / SSH_PRIVATE_KEY."
                ) from exc
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise RemoteError(f"SSH authentication with {config.ssh_target} failed: {exc}") from exc
        except BaseException:
            transport.close()
            raise
        transport.set_keepalive(SSH_KEEPALIVE)
        self.connects += 1
        log.info("connected to %s (%s)", self.description, host_key_fingerprint(transport.get_remote_server_key()))
        return transport

    def _acquire(self) -> paramiko.Transport:
        """The shared connection (opened or reopened as needed), counted as in use."""
        with self._connect_lock:
            transport = self._transport
            if transport is not None and not transport.is_active():
                self._transport = None
                self._close_if_idle(transport)
                transport = None
            if transport is None:
                transport = self._transport = self._connect()
            self._in_use[transport] = self._in_use.get(transport, 0) + 1
            return transport

    def _release(self, transport: paramiko.Transport, retire: bool = False) -> None:
        """Give the connection back; a retired one takes no new commands and closes when idle."""
        with self._connect_lock:
            self._in_use[transport] -= 1
            if retire and self._transport is transport:
                self._transport = None
            if transport is not self._transport:
                self._close_if_idle(transport)

    def _close_if_idle(self, transport: paramiko.Transport) -> None:
        if self._in_use.get(transport, 0) <= 0:
            self._in_use.pop(transport, None)
            transport.close()

    def _open_channel(self, transport: paramiko.Transport) -> paramiko.Channel:
        deadline = time.monotonic() + self.config.connect_timeout
        delay = 0.02
        while True:
            try:
                return transport.open_session(timeout=max(deadline - time.monotonic(), 0.1))
            except paramiko.ChannelException as exc:
                # sshd refused the channel (MaxSessions): a closed channel frees its slot only
                # once sshd has reaped its command, a moment later. The connection is fine.
                if time.monotonic() + delay >= deadline:
                    raise RemoteError(
                        f"the dev server refused a new SSH channel ({exc}); too many commands at once — try again"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise ConnectionLost(str(exc)) from exc

    def _exec(self, script: str, timeout: float, on_line: LineCallback | None) -> CommandResult:
        for attempt in (1, 2):
            transport = self._acquire()
            try:
                channel = self._open_channel(transport)
                break
            except ConnectionLost as exc:
                # The connection dropped since its last use: reconnect once. Safe: nothing ran.
                self._release(transport, retire=True)
                if attempt == 2:
                    raise RemoteError(f"cannot open an SSH channel to {self.config.ssh_target}: {exc}") from exc
            except BaseException:
                self._release(transport)
                raise
        self.execs += 1
        retire = False
        try:
            # The login shell may be fish or zsh: run POSIX sh explicitly.
            channel.exec_command("/bin/sh -c " + shlex.quote(script))
            return self._read(channel, timeout, on_line)
        except RemoteError:
            # Timed out: the command still holds its channel slot on the server, so new
            # commands go to a fresh connection.
            retire = True
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            retire = True
            raise RemoteError(
                f"lost the connection to the dev server while the command ran ({exc or type(exc).__name__}); "
                "it may or may not have completed — call list_sessions to see the current state"
            ) from exc
        finally:
            channel.close()
            self._release(transport, retire)

    def _read(self, channel: paramiko.Channel, timeout: float, on_line: LineCallback | None) -> CommandResult:
        deadline = time.monotonic() + timeout
        stdout = bytearray()
        stderr = bytearray()
        pending = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RemoteError(f"the command on the dev server did not finish within {timeout:g} s")
            channel.settimeout(min(remaining, 1.0))
            try:
                chunk = channel.recv(65536)
            except socket.timeout:
                chunk = None
            while channel.recv_stderr_ready():
                stderr += channel.recv_stderr(65536)
            if chunk is None:
                continue
            if not chunk:
                break
            stdout += chunk
            if on_line is not None:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    anyio.from_thread.run(on_line, line.decode(errors="replace"))
        channel.settimeout(max(deadline - time.monotonic(), 0.1))
        status = channel.recv_exit_status()
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(65536)
        return CommandResult(status, stdout.decode(errors="replace"), stderr.decode(errors="replace"))

    def connect(self) -> paramiko.PKey:
        """Open the connection now (start-up warm-up and `check`); returns the server's host key."""
        transport = self._acquire()
        self._release(transport)
        return transport.get_remote_server_key()

    async def run(self, script: str, *, timeout: float, on_line: LineCallback | None = None) -> CommandResult:
        if self._channels is None:
            self._channels = asyncio.Semaphore(SSH_MAX_CHANNELS)
        async with self._channels:
            return await anyio.to_thread.run_sync(self._exec, script, timeout, on_line)

    async def close(self) -> None:
        with self._connect_lock:
            for transport in {*self._in_use, *([self._transport] if self._transport else [])}:
                transport.close()
            self._in_use.clear()
            self._transport = None


def make_runner(config: Config) -> Runner:
    return LocalRunner() if config.local else SSHRunner(config)


# ── Sessions ──────────────────────────────────────────────────────────────────────────────────


class SessionStarted(BaseModel):
    id: str = Field(description="Session id, for stop_session")
    url: str | None = Field(description="Open this at claude.ai/code (null while still starting)")
    status: Literal["ready", "starting", "connected"]
    path: str = Field(description="Project path relative to the projects base directory")
    name: str
    session_url: str | None = Field(default=None, description="URL of a session a device is attached to")
    already_running: bool = Field(default=False, description="True when this directory's running session was returned")
    message: str


class SessionInfo(BaseModel):
    id: str
    name: str | None = None
    url: str | None = Field(default=None, description="Environment URL to open at claude.ai/code")
    session_url: str | None = None
    status: SessionStatus
    reason: str | None = Field(default=None, description="Why the session needs attention, and the fix")
    path: str | None = None
    started: str | None = Field(default=None, description="ISO 8601, UTC")
    exit_code: int | None = None


class SessionList(BaseModel):
    sessions: list[SessionInfo]


class SessionStopped(BaseModel):
    id: str
    stopped: bool
    message: str


class ProjectList(BaseModel):
    projects: list[str] = Field(description="Values accepted by start_session's path")


class ToolFailure(Exception):
    """A tool call that failed in a way the model can act on; the message says how."""


# Refusals of the start script, before anything was launched: what happened and the fix.
START_ERRORS = {
    "no-tmux": "tmux is not installed on the dev server. Install it there (e.g. `sudo apt install tmux`).",
    "no-base": "the projects base directory {base} does not exist on the dev server. Fix PROJECTS_BASE_DIR.",
    "no-dir": "there is no directory {path!r} in {base}. Call list_projects for the available paths.",
    "outside": "{path!r} resolves outside {base} (through a symlink); only projects inside it can be used.",
    "home": "{path!r} is the home directory, where claude never saves workspace trust; pick a project directory.",
    "no-claude": "the claude CLI ({claude}) was not found on the dev server. Install Claude Code there, or set "
    "CLAUDE_BIN to its absolute path (`command -v claude` in a login shell shows it).",
    "state": "cannot create the state directory (~/.local/state/rc-mcp) on the dev server; check the home "
    "directory's permissions and free space.",
    "exists": "a session with id {id} already exists; call start_session again.",
    "tmux": "tmux could not create the session on the dev server; run `tmux new-session -d true` there to see why.",
}


def first(events: list[tuple[str, list[str]]], key: str) -> list[str] | None:
    return next((fields for k, fields in events if k == key), None)


class Sessions:
    """start / list / stop / projects, each one script run by the runner."""

    def __init__(self, config: Config, runner: Runner):
        self.config = config
        self.runner = runner

    async def _run(self, script: str, *, timeout: float | None = None, on_line: LineCallback | None = None) -> str:
        result = await self.runner.run(script, timeout=timeout or self.config.command_timeout, on_line=on_line)
        if result.exit_status != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-500:]
            raise RemoteError(f"the command on the dev server failed (exit {result.exit_status}): {detail}")
        return result.stdout

    async def start(
        self,
        name: str,
        path: str,
        worktree: bool | None = None,
        on_state: Callable[[str], Awaitable[None]] | None = None,
        permission_mode: str | None = None,
    ) -> SessionStarted:
        name = validate_name(name)
        path = validate_project_path(path)
        config = self.config
        permission_mode = permission_mode or config.permission_mode
        if permission_mode is not None and permission_mode not in PERMISSION_MODES:
            raise ValueError(f"invalid permission_mode {permission_mode!r}: use one of {', '.join(PERMISSION_MODES)}")
        session_id = f"{name}-{secrets.token_hex(3)}"
        nonce = secrets.token_hex(8)
        script = build_start_script(
            base_dir=config.projects_base_dir,
            path=path,
            session_id=session_id,
            name=name,
            claude_bin=config.claude_bin,
            spawn=spawn_mode(config.spawn_worktree if worktree is None else worktree),
            timeout=config.start_timeout,
            nonce=nonce,
            permission_mode=permission_mode,
        )

        in_tail = False

        async def on_line(line: str) -> None:
            nonlocal in_tail
            in_tail = in_tail or line == "@@tail"  # claude's own output is never a progress report
            if on_state is not None and not in_tail and line.startswith("@@state "):
                try:
                    await on_state(line[len("@@state ") :])
                except Exception as exc:  # a client that went away must not break the start
                    log.info("progress notification failed: %s", exc)

        output = await self._run(script, timeout=config.start_timeout + config.command_timeout, on_line=on_line)
        events = parse_script_output(output, nonce)
        tail = (first(events, "tail") or [""])[0]
        urls = extract_remote_control_urls(tail + "\n" + "\n".join((first(events, "url") or [])))
        error = first(events, "error")
        if error is not None:
            code = (error or ["?"])[0]
            template = START_ERRORS.get(code, "the dev server refused to start the session ({code}).")
            raise ToolFailure(
                "Not started: "
                + template.format(base=config.projects_base_dir, path=path, id=session_id, claude=config.claude_bin, code=code)
            )
        existing = first(events, "existing")
        if existing is not None:
            existing_id = (existing or [""])[0][len(TMUX_PREFIX) :]
            status, _ = classify_session(tail)
            url = urls.environment_url
            return SessionStarted(
                id=existing_id,
                url=url,
                status="connected" if status == "connected" else ("ready" if url else "starting"),
                path=path,
                name=name,
                session_url=urls.session_url,
                already_running=True,
                message=(
                    f"A Claude Code session ({existing_id}) is already running in {path} — claude serves one per "
                    "directory, so that one is returned: "
                    + (f"open {url}." if url else "it has no URL yet; call list_sessions in a minute.")
                ),
            )
        status = (first(events, "status") or ["gone"])[0]
        if status == "ready" and urls.environment_url:
            return SessionStarted(
                id=session_id,
                url=urls.environment_url,
                status="ready",
                path=path,
                name=name,
                session_url=urls.session_url,
                message=(
                    f"Claude Code session {session_id} is ready in {path}. Open {urls.environment_url} "
                    "(or pick it in the Claude app under Code); stop it with stop_session when done."
                ),
            )
        if status in ("ready", "timeout"):
            return SessionStarted(
                id=session_id,
                url=None,
                status="starting",
                path=path,
                name=name,
                message=(
                    f"Session {session_id} was launched in {path} but claude printed no URL within "
                    f"{config.start_timeout:g} s. It is still running: call list_sessions in a minute to get the "
                    "URL, or stop_session to give up. Last output:\n" + (tail_lines(tail) or "(none)")
                ),
            )
        explanation = explain_failure(tail, path)
        if status == "attention":
            cause = explanation or "claude is waiting for an answer on the dev server."
            raise ToolFailure(f"Not started: {cause} Nothing is left running. Its last output:\n{tail_lines(tail)}")
        exit_code = (first(events, "exit") or [""])[0]
        cause = explanation or "see its last output below, and run `python rc_mcp.py check` on the server."
        raise ToolFailure(
            f"claude remote-control exited{f' (code {exit_code})' if exit_code else ''} before printing a URL; "
            "nothing is left running. "
            f"Cause: {cause}\nIts last output:\n{tail_lines(tail) or '(none)'}"
        )

    async def list(self) -> list[SessionInfo]:
        nonce = secrets.token_hex(8)
        output = await self._run(build_list_script(nonce))
        sessions: dict[str, SessionInfo] = {}
        current: SessionInfo | None = None
        for key, fields in parse_script_output(output, nonce):
            if key == "session" and len(fields) >= 4:
                current = None
                session_id = fields[0][len(TMUX_PREFIX) :]
                if not SESSION_ID_RE.fullmatch(session_id) or session_id in sessions:
                    continue  # not one of ours, or a second pane of the same session
                dead = fields[1] == "1"
                started = None
                if fields[2].isdigit():
                    started = datetime.datetime.fromtimestamp(int(fields[2]), datetime.timezone.utc).isoformat()
                current = sessions[session_id] = SessionInfo(
                    id=session_id,
                    status="exited" if dead else "starting",
                    started=started,
                    exit_code=int(fields[3]) if dead and fields[3].lstrip("-").isdigit() else None,
                )
            elif current is None:
                continue
            elif key == "meta" and len(fields) == 2:
                if fields[0] == "name" and NAME_RE.fullmatch(fields[1]):
                    current.name = fields[1]
                elif fields[0] == "path":
                    with contextlib.suppress(ValueError):
                        current.path = validate_project_path(fields[1])
            elif key == "url" and fields:
                current.url = extract_remote_control_urls(fields[0]).environment_url
            elif key == "tail" and fields:
                urls = extract_remote_control_urls(fields[0])
                current.session_url = urls.session_url
                current.url = current.url or urls.environment_url
                if current.status == "exited":
                    current.reason = explain_failure(fields[0], current.path or "the project")
                else:
                    current.status, current.reason = classify_session(fields[0])
                    if current.status == "starting" and current.url:
                        current.status = "ready"
        return sorted(sessions.values(), key=lambda s: (s.started or "", s.id))

    async def stop(self, session_id: str) -> SessionStopped:
        session_id = validate_session_id(session_id)
        events = parse_script_output(await self._run(build_stop_script(session_id)))
        if first(events, "stopped") is not None:
            return SessionStopped(id=session_id, stopped=True, message=f"Stopped session {session_id}.")
        return SessionStopped(
            id=session_id,
            stopped=False,
            message=f"No session {session_id!r} is running (nothing was stopped). Call list_sessions for the ids.",
        )

    async def projects(self) -> list[str]:
        output = await self._run(build_projects_script(self.config.projects_base_dir))
        _, found, listing = output.partition("@@projects\n")
        if not found:
            raise ToolFailure(START_ERRORS["no-base"].format(base=self.config.projects_base_dir))
        projects = set()
        for entry in listing.split("\0"):
            with contextlib.suppress(ValueError):
                if entry and validate_project_path(entry) == entry:
                    projects.add(entry)
        return sorted(projects, key=str.lower)


# ── HTTP plumbing ─────────────────────────────────────────────────────────────────────────────


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its first value
    body: bytes
    client: str = ""  # the peer address (a proxy's, behind one)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    async def send(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        headers = [(k.lower().encode(), v.encode()) for k, v in self.headers]
        headers.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


NO_STORE = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]


def json_response(status: int, payload: Any, headers: Iterable[tuple[str, str]] = (), no_store: bool = True) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    all_headers = [("Content-Type", "application/json"), *(NO_STORE if no_store else []), *headers]
    return Response(status, body, all_headers)


def error_response(error: OAuthError) -> Response:
    """The one place OAuth errors are rendered (RFC 6749 §5.2: JSON, no-store)."""
    payload = {"error": error.error, "error_description": error.description}
    return json_response(error.status, payload, error.headers.items())


def redirect_response(url: str) -> Response:
    # 302, never 307/308: those make the browser POST to Claude's GET-only callback.
    return Response(302, b"", [("Location", url), *NO_STORE])


def add_query(url: str, values: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(values)}" if parts.query else urlencode(values)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def parse_params(raw: str | bytes) -> dict[str, str]:
    """Form or query parameters; RFC 6749 §3.1: a parameter must not be repeated."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise OAuthError(400, "invalid_request", "the request body is not UTF-8") from None
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, max_num_fields=64, errors="strict")
    except ValueError:
        raise OAuthError(400, "invalid_request", "malformed or too many parameters") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise OAuthError(400, "invalid_request", f"parameter {key!r} is repeated")
        params[key] = value
    return params


def secret_equal(given: str | None, expected: str) -> bool:
    """Constant-time comparison that also works for non-ASCII input."""
    return hmac.compare_digest((given or "").encode(), expected.encode())


def require_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise OAuthError(400, "invalid_request", "send the parameters as application/x-www-form-urlencoded")
    return parse_params(request.body)


# ── OAuth clients ─────────────────────────────────────────────────────────────────────────────
# Who may ask for a code: the fixed client, registered public clients, metadata-document clients;
# and the owner's consent page, which every client but the fixed one must pass.


@dataclass(frozen=True)
class OAuthClient:
    """A client this server will issue codes to: the fixed one (confidential, MCP_SECRET-derived),
    one registered through /register, or one identified by its metadata document URL (both public)."""

    client_id: str
    kind: Literal["fixed", "registered", "metadata_document"]
    name: str
    redirect_uris: tuple[str, ...] = ()

    @property
    def public(self) -> bool:
        return self.kind != "fixed"

    def accepts_redirect(self, uri: str) -> bool:
        if self.kind == "fixed":
            return uri in self.redirect_uris  # exact string match, OAuth 2.1 §4.1.3
        return any(redirect_uri_matches(registered, uri) for registered in self.redirect_uris)


def validate_redirect_uri(uri: Any) -> str:
    """A registrable redirect URI: https without fragment, or http on a loopback address (RFC 8252 §7.3)."""
    if not isinstance(uri, str) or not uri or len(uri) > 2000 or re.search(r"[\x00-\x20\x7f]", uri):
        raise ValueError(f"redirect URI {str(uri)[:100]!r} is malformed")
    if not uri.isascii():  # a look-alike Unicode host would read as a trusted one on the consent page
        raise ValueError(f"redirect URI {uri[:100]!r} must be ASCII (write an international host name in punycode)")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 — raises on a bad port
    except ValueError as exc:
        raise ValueError(f"redirect URI {uri[:100]!r} is malformed") from exc
    if "#" in uri or parts.username is not None or parts.password is not None:
        raise ValueError(f"redirect URI {uri[:100]!r} must not carry a fragment or credentials")
    if parts.scheme == "https" and parts.hostname:
        return uri
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return uri
    raise ValueError(f"redirect URI {uri[:100]!r} must be https, or http on 127.0.0.1, localhost or [::1]")


def redirect_uri_matches(registered: str, requested: str) -> bool:
    """Exact match, except that a loopback redirect URI matches on any port (RFC 8252 §7.3)."""
    if registered == requested:
        return True
    try:
        r, q = urlsplit(registered), urlsplit(requested)
        q.port  # noqa: B018
    except ValueError:
        return False
    return (
        r.scheme == q.scheme == "http"
        and r.hostname in LOOPBACK_HOSTS
        and (r.hostname, r.path, r.query, q.fragment) == (q.hostname, q.path, q.query, "")
        and q.username is None
    )


def validate_client_metadata_document(url: str, document: Any) -> OAuthClient:
    """A Client ID Metadata Document: its client_id is its own URL, and it lists redirect URIs."""
    if not isinstance(document, dict):
        raise ValueError("the client metadata document is not a JSON object")
    if document.get("client_id") != url:
        raise ValueError("the client metadata document's client_id is not its own URL")
    uris = document.get("redirect_uris")
    if not isinstance(uris, list) or not uris:
        raise ValueError("the client metadata document lists no redirect_uris")
    method = document.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise ValueError(f"token_endpoint_auth_method {str(method)[:40]!r} is not supported for metadata documents")
    name = document.get("client_name") if isinstance(document.get("client_name"), str) else urlsplit(url).hostname
    return OAuthClient(url, "metadata_document", clean_client_name(name or url), tuple(validate_redirect_uri(u) for u in uris))


def clean_client_name(name: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]", "", name).strip()[:MAX_CLIENT_NAME] or "unnamed client"


def is_metadata_document_url(client_id: str) -> bool:
    try:
        parts = urlsplit(client_id)
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and bool(parts.hostname)
        and parts.path not in ("", "/")
        and len(client_id) <= 2000
        and client_id.isascii()
    )


def is_public_address(address: str) -> bool:
    """Only globally routable unicast addresses: no loopback, private, link-local, NAT64 or mapped tricks."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in ipaddress.ip_network("64:ff9b::/96") or ip in ipaddress.ip_network("64:ff9b:1::/48"):
            return False  # NAT64 can reach any IPv4 address, private ones included
        elif ip.sixtofour is not None or ip.teredo is not None:
            return False
    return ip.is_global and not ip.is_multicast


class ClientMetadataFetcher:
    """Fetches Client ID Metadata Documents with SSRF guards: https only, public addresses only
    (the address checked is the address connected to), no redirects, 5 s in all, 64 KB, a few at a
    time, results cached. Claude's own documents are known in advance (fetching them is often
    blocked by a bot challenge)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        allow_address: Callable[[str], bool] = is_public_address,
        verify: Any = True,
        timeout: float = CIMD_TIMEOUT,
    ):
        self._clock = clock
        self._allow_address = allow_address
        self._verify = verify
        self._timeout = timeout
        self._cache: dict[str, tuple[float, OAuthClient]] = {}
        self._running: asyncio.Semaphore | None = None

    async def get(self, url: str) -> OAuthClient:
        if url in KNOWN_CLIENT_METADATA:
            return validate_client_metadata_document(url, {"client_id": url, **KNOWN_CLIENT_METADATA[url]})
        cached = self._cache.get(url)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        client = validate_client_metadata_document(url, await self.fetch(url))
        if len(self._cache) >= CIMD_CACHE_ENTRIES:
            self._cache.pop(next(iter(self._cache)))
        self._cache[url] = (self._clock() + CIMD_CACHE_TTL, client)
        return client

    async def fetch(self, url: str) -> Any:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or parts.username or parts.password or not url.isascii():
            raise ValueError("client metadata documents must be fetched over https from an ASCII host name")
        if self._running is None:
            self._running = asyncio.Semaphore(CIMD_CONCURRENT_FETCHES)
        try:
            with anyio.fail_after(self._timeout):
                async with self._running:
                    return await self._fetch(parts)
        except TimeoutError:
            raise ValueError("fetching the client metadata document took too long") from None

    async def _fetch(self, parts: Any) -> Any:
        host, port = parts.hostname, parts.port or 443
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            raise ValueError(f"cannot resolve {host}") from None
        addresses = [str(info[4][0]) for info in infos]
        # SSRF: an attacker-chosen client_id must not make this server reach internal services.
        if not addresses or not all(self._allow_address(a) for a in addresses):
            raise ValueError(f"{host} does not resolve to public addresses only")
        # Connect to the address just checked (no second lookup to rebind); TLS still verifies the name.
        address = addresses[0]
        netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        target = urlunsplit(("https", netloc, parts.path or "/", parts.query, ""))
        headers = {"Host": parts.netloc, "Accept": "application/json"}
        try:
            async with httpx2.AsyncClient(
                timeout=self._timeout, follow_redirects=False, trust_env=False, verify=self._verify
            ) as http:
                async with http.stream("GET", target, headers=headers, extensions={"sni_hostname": host}) as response:
                    if response.status_code != 200:
                        raise ValueError(f"fetching the client metadata document answered {response.status_code}")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > CIMD_MAX_BYTES:
                            raise ValueError("the client metadata document is larger than 64 KB")
        except httpx2.HTTPError:
            # No details: they would tell a caller which internal-looking ports answer.
            raise ValueError("the client metadata document could not be fetched") from None
        try:
            return json.loads(body)
        except ValueError:
            raise ValueError("the client metadata document is not JSON") from None


def throttle_key(address: str) -> str:
    """The unit a throttle counts: one IPv4 address, or one IPv6 /64 (what one host is given)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


class ConsentThrottle:
    """Repeated wrong consent passwords from one address (IPv6: one /64) are answered 429 for a while."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._failures: dict[str, list[float]] = {}

    def _recent(self, key: str, now: float) -> list[float]:
        return [t for t in self._failures.get(key, []) if t > now - CONSENT_FAILURE_WINDOW]

    def retry_after(self, address: str) -> int:
        now = self._clock()
        recent = self._recent(throttle_key(address), now)
        if len(recent) < CONSENT_MAX_FAILURES:
            return 0
        return int(recent[0] + CONSENT_FAILURE_WINDOW - now) + 1

    def fail(self, address: str) -> None:
        key, now = throttle_key(address), self._clock()
        if key not in self._failures and len(self._failures) >= 10_000:
            self._failures.pop(next(iter(self._failures)))
        self._failures[key] = [*self._recent(key, now), now]


ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign-in request refused</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem}}</style>
</head><body><h1>This sign-in request was refused</h1>
<p><code>{error}</code>: {description}.</p>
<p>Start the connection again from the app.</p></body></html>
"""


def html_headers(form_target: str = "") -> list[tuple[str, str]]:
    """Headers of the pages this server shows: no scripts, no external assets, not framable."""
    return [
        ("Content-Type", "text/html; charset=utf-8"),
        *NO_STORE,
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        (
            "Content-Security-Policy",
            f"default-src 'none'; style-src 'unsafe-inline'; form-action 'self' {form_target}".rstrip()
            + "; frame-ancestors 'none'; base-uri 'none'",
        ),
    ]


CONSENT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Allow {client} to start Claude Code sessions?</title>
<style>
body{{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f5f4ef;color:#1f1e1d}}
main{{max-width:28rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:12px;box-shadow:0 1px 4px #0002}}
h1{{font-size:1.25rem;margin:0 0 1rem}} .host{{font-family:monospace;word-break:break-all}}
.error{{background:#fde8e8;color:#8a1c1c;padding:.5rem .75rem;border-radius:8px}}
label{{display:block;margin:1rem 0 .25rem;font-weight:600}}
input[type=password]{{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem;border:1px solid #aaa;border-radius:8px}}
.buttons{{display:flex;gap:.75rem;margin-top:1.25rem}}
button{{flex:1;padding:.7rem;font-size:1rem;border-radius:8px;border:1px solid #888;background:#fff}}
button[value=approve]{{background:#c96442;border-color:#c96442;color:#fff}}
</style></head>
<body><main>
<h1>Allow <strong>{client}</strong> to start Claude Code sessions on {dev_server}?</h1>
<p>Approving lets this app list your projects and start, list and stop Claude Code sessions there —
that is, run code on that machine. It will be sent back to <span class="host">{redirect_host}</span>.</p>
{error}
<form method="post" action="/authorize">
{hidden}
<label for="password">Owner password (the server's MCP_SECRET)</label>
<input id="password" name="password" type="password" autocomplete="current-password" autofocus>
<div class="buttons">
<button type="submit" name="action" value="deny">Deny</button>
<button type="submit" name="action" value="approve">Approve</button>
</div>
</form>
</main></body></html>
"""


# ── OAuth endpoints ───────────────────────────────────────────────────────────────────────────


class OAuthServer:
    """The authorization server (fixed client, registered and metadata-document clients with the
    owner's consent) and the bearer check for /mcp."""

    def __init__(self, config: Config, store: TokenStore, fetcher: ClientMetadataFetcher | None = None):
        self.config = config
        self.store = store
        self.fetcher = fetcher or ClientMetadataFetcher(store.clock)
        self.throttle = ConsentThrottle(store.clock)
        self.issuer = config.server_url  # one string, byte-identical everywhere
        self.resource = config.resource
        self._resource_key = canonical_resource(config.resource)
        client_id, self._client_secret = derive_client_credentials(config.mcp_secret)
        self._rotation_key = hashlib.sha256(f"{config.mcp_secret}:refresh-rotation".encode()).digest()
        self.fixed_client = OAuthClient(client_id, "fixed", "Claude (connector credentials)", FIXED_CLIENT_REDIRECT_URIS)
        self.resource_metadata_url = f"{self.issuer}/.well-known/oauth-protected-resource/mcp"
        self.dev_server = config.ssh_host or "this server"

    # Metadata -----------------------------------------------------------------------------

    def authorization_server_metadata(self) -> dict[str, Any]:
        """RFC 8414."""
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "registration_endpoint": f"{self.issuer}/register",
            "revocation_endpoint": f"{self.issuer}/revoke",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic", "none"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": [SCOPE],
            "authorization_response_iss_parameter_supported": True,  # RFC 9207
            "client_id_metadata_document_supported": True,
        }

    def protected_resource_metadata(self) -> dict[str, Any]:
        """RFC 9728."""
        return {
            "resource": self.resource,
            "authorization_servers": [self.issuer],
            "scopes_supported": [SCOPE],
            "bearer_methods_supported": ["header"],
            "resource_name": "rc_mcp — Claude Code sessions on your dev server",
        }

    # Clients ------------------------------------------------------------------------------

    def _registered_client(self, client_id: str) -> OAuthClient | None:
        record = self.store.find("clients", client_id, hashed=False)
        if record is None:
            return None
        return OAuthClient(client_id, "registered", record["client_name"], tuple(record["redirect_uris"]))

    async def _client_for_authorize(self, client_id: str) -> OAuthClient | None:
        if secret_equal(client_id, self.fixed_client.client_id):
            return self.fixed_client
        if is_metadata_document_url(client_id):
            try:
                return await self.fetcher.get(client_id)
            except Exception as exc:  # any failure to fetch or validate: the client is unknown
                log.info("client metadata document %s refused: %s", client_id[:200], exc)
                raise OAuthError(400, "invalid_client", f"cannot use the client metadata document: {exc}") from None
        return self._registered_client(client_id)

    def _authenticate_client(self, request: Request, form: Mapping[str, str]) -> OAuthClient:
        """RFC 6749 §2.3.1: client_secret_basic or client_secret_post for the fixed client, never
        both; public clients send only their client_id (`none`)."""
        header = request.headers.get("authorization")
        basic = parse_basic_auth(header) if header else None
        challenge = {"WWW-Authenticate": 'Basic realm="rc_mcp"'} if header else {}
        if header and basic is None:
            raise OAuthError(401, "invalid_client", "malformed Authorization header", challenge)
        if basic is not None:
            if "client_secret" in form or form.get("client_id", basic[0]) != basic[0]:
                raise OAuthError(400, "invalid_request", "use one client authentication method, not two")
            client_id, client_secret = basic
        else:
            client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if not client_id:
            raise OAuthError(401, "invalid_client", "client authentication is required", challenge)
        if secret_equal(client_id, self.fixed_client.client_id):
            if not secret_equal(client_secret, self._client_secret):
                raise OAuthError(401, "invalid_client", "unknown client or wrong client secret", challenge)
            return self.fixed_client
        client = self._registered_client(client_id)
        if client is None and is_metadata_document_url(client_id):
            client = OAuthClient(client_id, "metadata_document", client_id)  # its codes were bound at /authorize
        if client is None:
            # Claude.ai registers again when it sees this.
            raise OAuthError(401, "invalid_client", "unknown client or wrong client secret; register again", challenge)
        if client_secret is not None:
            raise OAuthError(401, "invalid_client", "this is a public client: send only its client_id", challenge)
        return client

    # Shared checks ------------------------------------------------------------------------

    def _check_resource(self, raw: str | None) -> str:
        """RFC 8707: tokens are only for this server's MCP endpoint."""
        if raw is None or raw == "":
            return self.resource
        if canonical_resource(raw) != self._resource_key:
            raise OAuthError(400, "invalid_target", f"resource must be {self.resource}")
        return self.resource

    @staticmethod
    def _parse_scope(raw: str | None, granted: str | None = None) -> str:
        if raw is None or not raw.strip():
            return granted or SCOPE
        requested = list(dict.fromkeys(raw.split()))
        allowed = set(granted.split()) if granted is not None else ACCEPTED_SCOPES
        unknown = [s for s in requested if s not in allowed]
        if unknown:
            raise OAuthError(400, "invalid_scope", f"scope {' '.join(unknown)!r} is not available; use {SCOPE!r}")
        return " ".join(requested)

    def _successor_tokens(self, refresh_token: str) -> tuple[str, str]:
        """The tokens a refresh token rotates into, derived from it with a server key: a retried
        (racing) refresh computes the same pair instead of forking the grant."""

        def derive(label: str) -> str:
            digest = hmac.new(self._rotation_key, f"{label}:{refresh_token}".encode(), hashlib.sha256).digest()
            return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

        return "rcat_" + derive("access"), "rcrt_" + derive("refresh")

    def _issue_tokens(
        self, data: dict[str, Any], now: float, grant: Mapping[str, Any], tokens: tuple[str, str] | None = None
    ) -> dict[str, Any]:
        config = self.config
        access, refresh = tokens or ("rcat_" + secrets.token_urlsafe(32), "rcrt_" + secrets.token_urlsafe(32))
        record = {k: grant[k] for k in ("client_id", "scope", "resource", "grant_id")}
        data["access"][hash_secret(access)] = {**record, "expires_at": now + config.access_token_ttl}
        data["refresh"][hash_secret(refresh)] = {**record, "expires_at": now + config.refresh_token_ttl}
        self._keep_client(data, grant["client_id"], now)  # a client in use does not expire
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": config.access_token_ttl,
            "refresh_token": refresh,
            "scope": grant["scope"],
        }

    def _keep_client(self, data: dict[str, Any], client_id: str, now: float, approved: bool = False) -> None:
        """A registered client the owner approved, or that is in use, lives as long as its tokens."""
        registered = data["clients"].get(client_id)
        if registered is not None:
            registered["approved"] = registered.get("approved", False) or approved
            registered["expires_at"] = max(registered["expires_at"], now + self.config.refresh_token_ttl)

    @staticmethod
    def _revoke_grant(data: dict[str, Any], grant_id: str) -> int:
        revoked = 0
        for kind in ("access", "refresh"):
            records = data[kind]
            for key in [k for k, rec in records.items() if rec.get("grant_id") == grant_id]:
                del records[key]
                revoked += 1
        return revoked

    # Registration -------------------------------------------------------------------------

    async def register(self, request: Request) -> Response:
        """RFC 7591: registers a public client. Never reveals a secret: the client still needs the
        owner's approval on the consent page before it gets a code."""
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise OAuthError(400, "invalid_client_metadata", "send the registration as application/json")
        try:
            metadata = json.loads(request.body)
        except ValueError:
            raise OAuthError(400, "invalid_client_metadata", "the body is not JSON") from None
        if not isinstance(metadata, dict):
            raise OAuthError(400, "invalid_client_metadata", "the body must be a JSON object")
        uris = metadata.get("redirect_uris")
        if not isinstance(uris, list) or not uris or len(uris) > 10:
            raise OAuthError(400, "invalid_redirect_uri", "redirect_uris must list 1 to 10 URIs")
        try:
            redirect_uris = [validate_redirect_uri(uri) for uri in uris]
        except ValueError as exc:
            raise OAuthError(400, "invalid_redirect_uri", str(exc)) from None
        grant_types = metadata.get("grant_types", ["authorization_code", "refresh_token"])
        if not isinstance(grant_types, list) or not set(grant_types) <= {"authorization_code", "refresh_token"}:
            raise OAuthError(400, "invalid_client_metadata", "grant_types may only be authorization_code and refresh_token")
        response_types = metadata.get("response_types", ["code"])
        if not isinstance(response_types, list) or set(response_types) != {"code"}:
            raise OAuthError(400, "invalid_client_metadata", "response_types must be [\"code\"]")
        name = metadata.get("client_name")
        client_name = clean_client_name(name if isinstance(name, str) else "")
        client_id = "rcc_" + secrets.token_urlsafe(18)

        def remember(data: dict[str, Any], now: float) -> Any:
            clients = data["clients"]
            if len(clients) >= MAX_REGISTERED_CLIENTS:
                # Unauthenticated callers must not fill the disk: drop the oldest never-approved one.
                unused = sorted((rec["created_at"], cid) for cid, rec in clients.items() if not rec.get("approved"))
                if not unused:
                    return OAuthError(400, "invalid_client_metadata", "too many registered clients; try again later")
                del clients[unused[0][1]]
            clients[client_id] = {
                "client_name": client_name,
                "redirect_uris": redirect_uris,
                "created_at": now,
                "expires_at": now + UNUSED_CLIENT_TTL,
            }
            return now

        now = await anyio.to_thread.run_sync(self.store.transact, remember)
        log.info("register: public client %s (%s)", client_id[:12], client_name)
        return json_response(
            201,
            {
                "client_id": client_id,
                "client_id_issued_at": int(now),
                "client_name": client_name,
                "redirect_uris": redirect_uris,
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",  # even when client_secret_post was asked for
                "scope": SCOPE,
            },
        )

    # Authorization ------------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        params = parse_params(request.query) if request.method == "GET" else require_form(request)
        client_id = params.get("client_id")
        redirect_uri = params.get("redirect_uri")
        # RFC 6749 §4.1.2.1: a bad client or redirect URI is answered here, never redirected to.
        client = await self._client_for_authorize(client_id) if client_id else None
        if client is None:
            raise OAuthError(400, "invalid_client", "unknown client_id")
        if not redirect_uri or not client.accepts_redirect(redirect_uri):
            raise OAuthError(400, "invalid_request", "redirect_uri is not registered for this client")
        state = params.get("state")

        def back(**values: str) -> Response:
            values["iss"] = self.issuer  # RFC 9207
            if state is not None:
                values["state"] = state
            return redirect_response(add_query(redirect_uri, values))

        try:
            if params.get("response_type") != "code":
                raise OAuthError(400, "unsupported_response_type", "only response_type=code is supported")
            challenge = params.get("code_challenge")
            if not challenge:
                raise OAuthError(400, "invalid_request", "code_challenge is required (PKCE S256)")
            if params.get("code_challenge_method") != "S256":
                raise OAuthError(400, "invalid_request", "code_challenge_method must be S256")
            if not PKCE_CHALLENGE_RE.fullmatch(challenge):
                raise OAuthError(400, "invalid_request", "code_challenge is not a BASE64URL SHA-256 digest")
            resource = self._check_resource(params.get("resource"))
            scope = self._parse_scope(params.get("scope"))
        except OAuthError as exc:
            log.info("authorize refused for client %s: %s", client.client_id[:12], exc)
            if client.public:
                # Redirecting a stranger's client to its own URI would make this an open redirect.
                return self._error_page(exc)
            return back(error=exc.error, error_description=exc.description)

        if client.public:
            # Everyone but the fixed client needs the owner's approval on a page.
            action = params.get("action") if request.method == "POST" else None
            if action == "deny":
                log.info("authorize: the owner denied %s", client.name)
                return back(error="access_denied", error_description="the owner denied access")
            if action != "approve":
                return self._consent_page(request, client, redirect_uri, params)
            address = request.client
            wait = self.throttle.retry_after(address)
            if wait:
                return self._consent_page(request, client, redirect_uri, params, status=429, retry_after=wait)
            if not secret_equal(params.get("password"), self.config.mcp_secret):
                self.throttle.fail(address)
                log.warning("authorize: wrong consent password from %s for %s", address, client.name)
                return self._consent_page(request, client, redirect_uri, params, status=403)

        code = secrets.token_urlsafe(32)

        def remember(data: dict[str, Any], now: float) -> None:
            data["codes"][hash_secret(code)] = {
                "client_id": client.client_id,
                "redirect_uri": redirect_uri,
                "code_challenge": challenge,
                "resource": resource,
                "scope": scope,
                "grant_id": secrets.token_hex(16),
                "expires_at": now + CODE_TTL,
            }
            self._keep_client(data, client.client_id, now, approved=True)

        await anyio.to_thread.run_sync(self.store.transact, remember)
        log.info("authorize: code issued to %s for %s", client.name, urlsplit(redirect_uri).netloc)
        return back(code=code)

    def _consent_page(
        self,
        request: Request,
        client: OAuthClient,
        redirect_uri: str,
        params: Mapping[str, str],
        status: int = 200,
        retry_after: int = 0,
    ) -> Response:
        hidden = "\n".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
            if k in AUTHORIZE_PARAMETERS
        )
        error = ""
        if status == 403:
            error = '<p class="error" role="alert">Wrong password. Try again.</p>'
        elif status == 429:
            error = f'<p class="error" role="alert">Too many wrong passwords. Try again in {retry_after} seconds.</p>'
        target = urlsplit(redirect_uri)
        page = CONSENT_PAGE.format(
            client=html.escape(client.name),
            dev_server=html.escape(self.dev_server),
            redirect_host=html.escape(target.netloc),
            error=error,
            hidden=hidden,
        )
        headers = html_headers(f"{target.scheme}://{target.netloc}")
        if retry_after:
            headers.append(("Retry-After", str(retry_after)))
        return Response(status, page.encode(), headers)

    @staticmethod
    def _error_page(error: OAuthError) -> Response:
        page = ERROR_PAGE.format(error=html.escape(error.error), description=html.escape(error.description))
        return Response(400, page.encode(), html_headers())

    # Tokens -------------------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        # RFC 6749 order: authenticate the client, then the grant.
        form = require_form(request)
        client = self._authenticate_client(request, form)
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            payload = await self._exchange_code(client, form)
        elif grant_type == "refresh_token":
            payload = await self._refresh(client, form)
        elif not grant_type:
            raise OAuthError(400, "invalid_request", "grant_type is required")
        else:
            raise OAuthError(400, "unsupported_grant_type", "use authorization_code or refresh_token")
        log.info("token: %s grant for %s", grant_type, client.name)
        return json_response(200, payload)

    async def _exchange_code(self, client: OAuthClient, form: Mapping[str, str]) -> dict[str, Any]:
        code, verifier = form.get("code"), form.get("code_verifier")
        if not code:
            raise OAuthError(400, "invalid_request", "code is required")
        if not verifier:
            raise OAuthError(400, "invalid_request", "code_verifier is required (PKCE)")
        redirect_uri, resource = form.get("redirect_uri"), form.get("resource")

        def exchange(data: dict[str, Any], now: float) -> Any:
            record = data["codes"].get(hash_secret(code))
            # A code of another client is treated as if it did not exist.
            if record is None or record["expires_at"] <= now or not secret_equal(client.client_id, record["client_id"]):
                return OAuthError(400, "invalid_grant", "the authorization code is invalid or expired")
            if record.get("used_at"):
                # OAuth 2.1 §4.1.3: a replayed code may have been stolen; revoke what it produced.
                self._revoke_grant(data, record["grant_id"])
                log.warning("authorization code replayed for %s: its tokens were revoked", client.name)
                return OAuthError(400, "invalid_grant", "the authorization code was already used; its tokens are revoked")
            if redirect_uri != record["redirect_uri"]:
                return OAuthError(400, "invalid_grant", "redirect_uri does not match the authorization request")
            if not verify_pkce(verifier, record["code_challenge"]):
                return OAuthError(400, "invalid_grant", "code_verifier does not match the code_challenge")
            if resource and canonical_resource(resource) != canonical_resource(record["resource"]):
                return OAuthError(400, "invalid_target", f"resource must be {record['resource']}")
            record["used_at"] = now
            return self._issue_tokens(data, now, record)

        return await anyio.to_thread.run_sync(self.store.transact, exchange)

    async def _refresh(self, client: OAuthClient, form: Mapping[str, str]) -> dict[str, Any]:
        refresh_token = form.get("refresh_token")
        if not refresh_token:
            raise OAuthError(400, "invalid_request", "refresh_token is required")
        scope, resource = form.get("scope"), form.get("resource")

        def rotate(data: dict[str, Any], now: float) -> Any:
            key = hash_secret(refresh_token)
            record = data["refresh"].get(key)
            if record is None or record["expires_at"] <= now or not secret_equal(client.client_id, record["client_id"]):
                return OAuthError(400, "invalid_grant", "the refresh token is invalid, expired or revoked")
            rotated = record.get("rotated_at") is not None
            if rotated:
                successor = data["refresh"].get(record.get("successor", ""))
                in_grace = now - record["rotated_at"] <= REFRESH_GRACE and not record.get("grace_used")
                if not (in_grace and successor is not None and successor.get("rotated_at") is None):
                    # OAuth 2.1 §4.3.1: reuse of a rotated refresh token means it leaked.
                    self._revoke_grant(data, record["grant_id"])
                    log.warning("rotated refresh token reused by %s: the grant was revoked", client.name)
                    return OAuthError(400, "invalid_grant", "the refresh token was already used; sign in again")
            try:
                granted_scope = self._parse_scope(scope, granted=record["scope"])  # never wider than granted
            except OAuthError as exc:
                return exc
            if resource and canonical_resource(resource) != canonical_resource(record["resource"]):
                return OAuthError(400, "invalid_target", f"resource must be {record['resource']}")
            access, refresh = self._successor_tokens(refresh_token)
            if rotated:
                # The racing twin of the refresh that rotated this token (within the grace window,
                # once): it gets the very same answer, so the grant stays one chain.
                record["grace_used"] = True
                issued = data["access"].get(hash_secret(access))
                if issued is None or issued["expires_at"] <= now:
                    return OAuthError(400, "invalid_grant", "the refresh token was already used; sign in again")
                return {
                    "access_token": access,
                    "token_type": "Bearer",
                    "expires_in": int(issued["expires_at"] - now),
                    "refresh_token": refresh,
                    "scope": issued["scope"],
                }
            payload = self._issue_tokens(data, now, {**record, "scope": granted_scope}, (access, refresh))
            record["rotated_at"] = now  # kept (until it expires) to detect reuse
            record["successor"] = hash_secret(refresh)
            return payload

        return await anyio.to_thread.run_sync(self.store.transact, rotate)

    async def revoke(self, request: Request) -> Response:
        """RFC 7009: revoke the client's own token (a refresh token takes its grant along)."""
        form = require_form(request)
        client = self._authenticate_client(request, form)
        token = form.get("token")
        if not token:
            raise OAuthError(400, "invalid_request", "token is required")

        def revoke(data: dict[str, Any], now: float) -> None:
            key = hash_secret(token)
            for kind in ("refresh", "access"):
                record = data[kind].get(key)
                if record is not None and secret_equal(client.client_id, record["client_id"]):
                    if kind == "refresh":
                        self._revoke_grant(data, record["grant_id"])
                    data[kind].pop(key, None)

        await anyio.to_thread.run_sync(self.store.transact, revoke)
        return json_response(200, {})  # also for unknown tokens (RFC 7009 §2.2)

    # Resource server ----------------------------------------------------------------------

    def authenticate_bearer(self, headers: Mapping[str, str]) -> dict[str, Any]:
        """The access token record for this request, or a 401 that points at the metadata."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise self._unauthorized("a bearer token is required")
        record = self.store.find("access", token)
        if record is None:
            raise self._unauthorized("the access token is invalid, expired or revoked")
        if canonical_resource(record["resource"]) != self._resource_key:  # RFC 8707 audience
            raise self._unauthorized("the access token was issued for another resource")
        client_id = record["client_id"]
        # A new MCP_SECRET (a new fixed client) or an expired registration ends its tokens at once.
        if not (
            secret_equal(client_id, self.fixed_client.client_id)
            or is_metadata_document_url(client_id)
            or self.store.find("clients", client_id, hashed=False) is not None
        ):
            raise self._unauthorized("the access token's client no longer exists")
        return record

    def _unauthorized(self, description: str) -> OAuthError:
        challenge = (
            f'Bearer error="invalid_token", error_description="{description}", '
            f'resource_metadata="{self.resource_metadata_url}", scope="{SCOPE}"'
        )
        return OAuthError(401, "invalid_token", description, {"WWW-Authenticate": challenge})


# ── MCP ───────────────────────────────────────────────────────────────────────────────────────

INSTRUCTIONS = """\
Starts and manages Claude Code Remote Control sessions on the user's dev server. To start one,
call list_projects if you do not know the exact path, then start_session; give the user the URL it
returns (it opens at claude.ai/code or in the Claude app). list_sessions shows what is running;
stop_session ends a session by its id."""

START_PROGRESS = {
    "launched": (1, "claude remote-control launched in tmux"),
    "consent": (1.5, "answered claude's 'Enable Remote Control?' prompt with y"),
    "connecting": (2, "claude is connecting to claude.ai"),
}


def tool_result(model: BaseModel, text: str) -> CallToolResult:
    """Structured content for clients, plus a text rendering written for the model."""
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=model.model_dump(mode="json"))


async def run_tool(work: Awaitable[Any]) -> Any:
    try:
        return await work
    except (ValueError, ToolFailure, RemoteError) as exc:
        raise ToolError(str(exc)) from exc


def render_sessions(sessions: list[SessionInfo]) -> str:
    if not sessions:
        return "No Claude Code sessions are running. Start one with start_session."
    lines = [f"{len(sessions)} session(s):"]
    for s in sessions:
        where = s.path or "?"
        url = s.url or ("exited" if s.status == "exited" else "no URL yet")
        lines.append(f"- {s.id} · {s.status} · {where} · {url}" + (f" — {s.reason}" if s.reason else ""))
    return "\n".join(lines)


def build_mcp_server(sessions: Sessions) -> MCPServer:
    mcp: MCPServer = MCPServer(
        "rc_mcp", title="Claude Code Remote Control", version=VERSION, instructions=INSTRUCTIONS
    )

    @mcp.tool(
        annotations=ToolAnnotations(
            title="Start a Claude Code session",
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=True,
        )
    )
    async def start_session(
        name: Annotated[
            str,
            Field(
                pattern=NAME_PATTERN,
                min_length=1,
                max_length=41,
                description="Short label shown in claude.ai/code: 1-41 letters, digits, '-' or '_'",
            ),
        ],
        path: Annotated[
            str,
            Field(
                pattern=PATH_PATTERN,
                min_length=1,
                max_length=MAX_PATH_LENGTH,
                description="Project directory relative to the projects base directory, e.g. 'my-app' or "
                "'org/repo' (list_projects returns the accepted values)",
            ),
        ],
        ctx: Context,
        worktree: Annotated[
            bool | None,
            Field(description="Give each on-demand session its own git worktree (default: server setting)"),
        ] = None,
        permission_mode: Annotated[
            Literal["acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "plan"] | None,
            Field(description="claude's permission mode for the sessions (default: server setting, else claude's)"),
        ] = None,
    ) -> Annotated[CallToolResult, SessionStarted]:
        """Start a Claude Code Remote Control session in a project on the dev server and return the URL
        to open at claude.ai/code. Waits until the session is ready (usually a few seconds)."""

        async def on_state(state: str) -> None:
            if state in START_PROGRESS:
                step, message = START_PROGRESS[state]
                await ctx.report_progress(step, 3, message)

        await ctx.report_progress(0, 3, "connecting to the dev server")
        started = await run_tool(sessions.start(name, path, worktree, on_state, permission_mode))
        await ctx.report_progress(3, 3, f"session {started.id}: {started.status}")
        return tool_result(started, started.message)

    @mcp.tool(
        annotations=ToolAnnotations(
            title="List Claude Code sessions", read_only_hint=True, idempotent_hint=True, open_world_hint=False
        )
    )
    async def list_sessions() -> Annotated[CallToolResult, SessionList]:
        """List the Claude Code Remote Control sessions running on the dev server, with their URLs."""
        found = await run_tool(sessions.list())
        return tool_result(SessionList(sessions=found), render_sessions(found))

    @mcp.tool(
        annotations=ToolAnnotations(
            title="Stop a Claude Code session",
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=True,
            open_world_hint=False,
        )
    )
    async def stop_session(
        id: Annotated[
            str,
            Field(
                pattern=SESSION_ID_PATTERN,
                max_length=48,
                description="Session id exactly as returned by start_session or list_sessions, e.g. 'my-app-a1b2c3'",
            ),
        ],
    ) -> Annotated[CallToolResult, SessionStopped]:
        """Stop a Claude Code session (its tmux session and claude process) by its exact id."""
        stopped = await run_tool(sessions.stop(id))
        return tool_result(stopped, stopped.message)

    @mcp.tool(
        annotations=ToolAnnotations(
            title="List projects", read_only_hint=True, idempotent_hint=True, open_world_hint=False
        )
    )
    async def list_projects() -> Annotated[CallToolResult, ProjectList]:
        """List project directories (containing .git or .claude, up to two levels deep) that start_session accepts as path."""
        projects = await run_tool(sessions.projects())
        text = (
            f"{len(projects)} project(s): " + ", ".join(projects)
            if projects
            else "No projects (directories with .git or .claude) found in the projects base directory."
        )
        return tool_result(ProjectList(projects=projects), text)

    return mcp


# ── ASGI app ──────────────────────────────────────────────────────────────────────────────────

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
CORS = [("Access-Control-Allow-Origin", "*")]  # browser-based MCP clients read metadata and call /token


def allowed_hosts(server_url: str) -> list[str]:
    """Host header values accepted on /mcp (DNS-rebinding protection): SERVER_URL's host, and
    loopback names so health checks and local clients work."""
    parts = urlsplit(server_url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    hosts = {host, f"{host}:*", "127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"}
    if parts.port:
        hosts.add(f"{host}:{parts.port}")
    return sorted(hosts)


async def read_request(scope: Scope, receive: Receive) -> Request:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        headers.setdefault(raw_name.decode("latin-1").lower(), raw_value.decode("latin-1"))
    declared = headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > MAX_FORM_BYTES:
        if declared.isdigit():
            raise OAuthError(413, "invalid_request", f"request body larger than {MAX_FORM_BYTES} bytes")
        raise OAuthError(400, "invalid_request", "bad Content-Length")
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        if len(body) > MAX_FORM_BYTES:
            raise OAuthError(413, "invalid_request", f"request body larger than {MAX_FORM_BYTES} bytes")
        if not message.get("more_body"):
            break
    return Request(
        method=scope["method"],
        path=scope["path"],
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        body=bytes(body),
        client=str((scope.get("client") or ("",))[0]),
    )


class App:
    """The router: path → handler. OAuth errors are rendered in one place."""

    def __init__(
        self,
        config: Config,
        *,
        runner: Runner | None = None,
        store: TokenStore | None = None,
        fetcher: ClientMetadataFetcher | None = None,
    ):
        self.config = config
        self.store = store or open_token_store(config)
        self.runner = runner or make_runner(config)
        self.oauth = OAuthServer(config, self.store, fetcher)
        self.sessions = Sessions(config, self.runner)
        self.mcp = build_mcp_server(self.sessions)
        self.mcp.streamable_http_app(
            stateless_http=True,  # nothing to lose on restart; every request carries its token
            json_response=False,  # SSE, so progress notifications reach the client
            transport_security=TransportSecuritySettings(
                allowed_hosts=allowed_hosts(config.server_url),
                allowed_origins=[config.server_url],
            ),
        )
        self.session_manager = self.mcp.session_manager
        oauth = self.oauth
        self.routes: dict[str, tuple[tuple[str, ...], Callable[[Request], Awaitable[Response]]]] = {
            "/health": (("GET",), self._health),
            "/.well-known/oauth-authorization-server": (("GET",), self._as_metadata),
            "/.well-known/openid-configuration": (("GET",), self._as_metadata),  # some clients look here
            "/.well-known/oauth-protected-resource": (("GET",), self._pr_metadata),
            "/.well-known/oauth-protected-resource/mcp": (("GET",), self._pr_metadata),
            "/register": (("POST",), oauth.register),
            "/authorize": (("GET", "POST"), oauth.authorize),
            "/token": (("POST",), oauth.token),
            "/revoke": (("POST",), oauth.revoke),
        }

    async def _health(self, request: Request) -> Response:
        return json_response(200, {"ok": True, "version": VERSION, "mode": "local" if self.config.local else "ssh"})

    async def _as_metadata(self, request: Request) -> Response:
        return json_response(200, self.oauth.authorization_server_metadata(), CORS, no_store=False)

    async def _pr_metadata(self, request: Request) -> Response:
        return json_response(200, self.oauth.protected_resource_metadata(), CORS, no_store=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            if scope["path"] in ("/mcp", "/mcp/"):  # both answered, no redirect
                await self._mcp(scope, receive, send)
            else:
                await self._route(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        route = self.routes.get(scope["path"])
        cors = CORS if scope["path"] != "/authorize" else []
        try:
            if route is None:
                raise OAuthError(404, "not_found", f"no endpoint {scope['path']}; the MCP endpoint is /mcp")
            methods, handler = route
            if method == "OPTIONS" and cors:
                preflight = [
                    *cors,
                    ("Access-Control-Allow-Methods", ", ".join(methods)),
                    ("Access-Control-Allow-Headers", "Authorization, Content-Type, MCP-Protocol-Version"),
                    ("Access-Control-Max-Age", "86400"),
                ]
                await Response(204, b"", preflight).send(send)
                return
            if method not in methods:
                raise OAuthError(405, "invalid_request", f"use {' or '.join(methods)}", {"Allow": ", ".join(methods)})
            response = await handler(await read_request(scope, receive))
        except OAuthError as exc:
            response = error_response(exc)
        except Exception:
            log.exception("unhandled error on %s %s", method, scope["path"])
            response = error_response(OAuthError(500, "server_error", "internal error; see the server log"))
        response.headers.extend(cors)
        await response.send(send)

    async def _mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            record = self.oauth.authenticate_bearer(headers)
        except OAuthError as exc:
            await error_response(exc).send(send)
            return
        scopes = record["scope"].split()
        user = AuthenticatedUser(
            AccessToken(
                token=hash_secret(headers["authorization"].partition(" ")[2].strip()),  # never the token itself
                client_id=record["client_id"],
                scopes=scopes,
                expires_at=int(record["expires_at"]),
                resource=record["resource"],
            )
        )
        reset = auth_context_var.set(user)
        try:
            inner = {**scope, "path": "/mcp", "raw_path": b"/mcp", "user": user, "auth": AuthCredentials(scopes)}
            await self.session_manager.handle_request(inner, receive, send)
        finally:
            auth_context_var.reset(reset)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        stack = contextlib.AsyncExitStack()
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await stack.enter_async_context(self.session_manager.run())
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                if isinstance(self.runner, SSHRunner):
                    asyncio.get_running_loop().run_in_executor(None, self._warm_up, self.runner)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await stack.aclose()
                await self.runner.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    def _warm_up(runner: SSHRunner) -> None:
        """Connect at start-up so the first tool call is fast and a bad host key shows in the log."""
        try:
            runner.connect()
        except RemoteError as exc:
            log.error("dev server not reachable yet: %s", exc)


def open_token_store(config: Config, clock: Callable[[], float] = time.time) -> TokenStore:
    """The token store, importing the Node.js server's file if that is what TOKEN_STORE_PATH holds."""
    client_id, _ = derive_client_credentials(config.mcp_secret)

    def import_legacy(old: Mapping[str, Any], now: float) -> dict[str, Any]:
        return import_legacy_store(
            old,
            now,
            client_id=client_id,
            resource=config.resource,
            access_ttl=config.access_token_ttl,
            refresh_ttl=config.refresh_token_ttl,
        )

    return TokenStore(config.token_store_path, clock=clock, import_legacy=import_legacy)


def create_app(config: Config, *, runner: Runner | None = None) -> App:
    return App(config, runner=runner)


# ── main ──────────────────────────────────────────────────────────────────────────────────────


def describe_mode(config: Config) -> str:
    if config.local:
        return "local (commands run on this machine, no SSH)"
    pinning = "host key pinned by SSH_KNOWN_HOSTS" if config.known_hosts else f"host key trusted on first use ({config.host_keys_path})"
    return f"SSH {config.ssh_user}@{config.ssh_target}, {pinning}"


def serve(config: Config) -> int:
    import uvicorn

    try:
        app = create_app(config)
        app.store.ensure_writable()
    except OSError as exc:
        print(f"rc_mcp: cannot use the token store {config.token_store_path}: {exc}. Fix TOKEN_STORE_PATH.", file=sys.stderr)
        return 2
    client_id, _ = derive_client_credentials(config.mcp_secret)
    log.info("rc_mcp %s serving %s/mcp (listening on %s:%d)", VERSION, config.server_url, config.host, config.port)
    log.info("mode: %s; projects in %s", describe_mode(config), config.projects_base_dir)
    log.info("OAuth client_id: %s (the secret: `python rc_mcp.py credentials`)", client_id)
    if urlsplit(config.server_url).scheme != "https" and urlsplit(config.server_url).hostname not in ("localhost", "127.0.0.1", "::1"):
        log.warning("SERVER_URL is not https: Claude.ai only connects to https URLs on port 443")
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level="info",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    return 0


def print_credentials(environ: Mapping[str, str]) -> int:
    secret = (environ.get("MCP_SECRET") or "").strip()
    if not secret:
        print("rc_mcp: MCP_SECRET is missing: set it (e.g. `openssl rand -hex 32`).", file=sys.stderr)
        return 2
    client_id, client_secret = derive_client_credentials(secret)
    print(f"client_id:     {client_id}\nclient_secret: {client_secret}")
    return 0


@dataclass
class CheckLine:
    ok: bool
    what: str
    detail: str

    def __str__(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.what}: {self.detail}"


async def run_checks(config: Config) -> list[CheckLine]:
    lines = [CheckLine(True, "configuration", describe_mode(config))]
    try:
        store = open_token_store(config)
        store.ensure_writable()
        lines.append(CheckLine(True, "token store", f"{config.token_store_path} is writable"))
    except OSError as exc:
        lines.append(CheckLine(False, "token store", f"{config.token_store_path}: {exc} — fix TOKEN_STORE_PATH"))
    runner = make_runner(config)
    try:
        if isinstance(runner, SSHRunner):
            key = await anyio.to_thread.run_sync(runner.connect)
            lines.append(CheckLine(True, "SSH", f"{runner.description}, host key {key.get_name()} {host_key_fingerprint(key)}"))
        result = await runner.run(build_check_script(config.projects_base_dir, config.claude_bin), timeout=config.command_timeout)
    except RemoteError as exc:
        lines.append(CheckLine(False, "dev server", str(exc)))
        return lines
    finally:
        await runner.close()
    values = {key: (fields[0] if fields else "") for key, fields in parse_script_output(result.stdout)}
    tmux = values.get("tmux", "")
    lines.append(CheckLine(bool(tmux), "tmux", tmux or "not found — install tmux on the dev server"))
    claude_path = values.get("claude_path", "")
    if claude_path:
        lines.append(CheckLine(True, "claude", f"{claude_path} ({values.get('claude_version') or 'version unknown'})"))
    elif values.get("claude_login_path"):
        lines.append(CheckLine(False, "claude", f"{config.claude_bin} not found on the SSH PATH — set CLAUDE_BIN={values['claude_login_path']}"))
    else:
        lines.append(CheckLine(False, "claude", f"{config.claude_bin} not found — install Claude Code, or set CLAUDE_BIN to its absolute path"))
    try:
        auth = json.loads(values.get("claude_auth") or "{}")
    except ValueError:
        auth = {}
    logged_in = bool(auth.get("loggedIn")) and auth.get("authMethod") in ("claude.ai", None)
    lines.append(
        CheckLine(
            logged_in,
            "claude login",
            f"logged in ({auth.get('authMethod')})" if logged_in else "not logged in with a claude.ai account — run `claude auth login` on the dev server",
        )
    )
    base_ok = values.get("base") == "ok"
    lines.append(
        CheckLine(base_ok, "projects base", config.projects_base_dir + (" is readable" if base_ok else " is missing or unreadable — fix PROJECTS_BASE_DIR"))
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rc_mcp.py", description="MCP server that starts Claude Code Remote Control sessions on a dev server."
    )
    parser.add_argument("command", nargs="?", default="serve", choices=("serve", "credentials", "check"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    environ = read_environment()
    if args.command == "credentials":
        return print_credentials(environ)
    try:
        config = load_config(environ)
    except ConfigError as exc:
        print(f"rc_mcp: the configuration has {len(exc.problems)} problem(s):\n{exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        lines = asyncio.run(run_checks(config))
        for line in lines:
            print(line)
        return 0 if all(line.ok for line in lines) else 1
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
