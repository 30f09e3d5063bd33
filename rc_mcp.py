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

Reading order: settings and errors; the dev server half (claude's output, remote scripts, host
keys, runners, sessions); the OAuth half (token store, clients, grants, consent page, endpoints);
serving (MCP tools, HTTP routing, the command line). Code refers only to what stands above it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import copy
import ctypes
import dataclasses
import datetime
import fcntl
import gc
import glob
import hashlib
import hmac
import html
import inspect
import io
import ipaddress
import json
import logging
import math
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
import tomllib
import typing
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx2
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field
from starlette.authentication import AuthCredentials

# paramiko imports `invoke` (and its YAML parser, 4 MiB in all) only for `Match exec` in OpenSSH
# config files, which rc_mcp never reads: paramiko goes without it.
sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
import paramiko  # noqa: E402

log = logging.getLogger("rc_mcp")

VERSION = "1.0.0"

# ── Settings ──────────────────────────────────────────────────────────────────────────────────
# Every environment variable is one row of SETTINGS (README's configuration table is printed
# from it); load_config reads them in one loop and reports every problem at once.

MIN_SECRET_LENGTH = 16  # the client_id is visible in Claude.ai's settings: a short secret can be guessed offline
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
CONTROL_CHARS = "\x00-\x1f\x7f"  # inside a regex character class
CONTROL_RE = re.compile(f"[{CONTROL_CHARS}]")
# claude's --permission-mode values.
PermissionMode = Literal["acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "manual", "plan"]
PERMISSION_MODES: tuple[str, ...] = typing.get_args(PermissionMode)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ENV_BOOL_TRUE = frozenset({"1", "true", "yes", "on"})
ENV_BOOL_FALSE = frozenset({"0", "false", "no", "off", ""})
SECRET_FIX = "`openssl rand -hex 32`"


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ENV_BOOL_TRUE:
        return True
    if lowered in ENV_BOOL_FALSE:
        return False
    raise ValueError("use true or false")


# ── Secrets ───────────────────────────────────────────────────────────────────────────────────
# The rules for MCP_SECRET, for `serve`, `check` and `credentials` alike.


def secret_problem(secret: str) -> str | None:
    """Why MCP_SECRET cannot be used, or None: the one rule for `serve`, `check` and `credentials`."""
    if len(secret) < MIN_SECRET_LENGTH:
        return (
            f"MCP_SECRET is {len(secret)} characters: use at least {MIN_SECRET_LENGTH} (e.g. {SECRET_FIX}); "
            "the client id derived from it is visible, so a short one can be guessed."
        )
    return None


WEAK_SECRET_BITS = 112  # estimated entropy below which MCP_SECRET is called weak (hex of 32 bytes: far above)


def secret_bits(secret: str) -> float:
    """MCP_SECRET's estimated entropy, by zxcvbn (words, sequences, repeats, dates, keyboard walks);
    a phrase is rated word by word (zxcvbn does not split on spaces), whichever is lower."""
    import zxcvbn  # only when asked: its word lists take a moment to load (the server asks a child process)

    def rate(text: str) -> float:
        # A text that is mostly random stretches is rated by the size of their alphabet: zxcvbn
        # counts ten symbols per character there, which would call random hex weak.
        result = zxcvbn.zxcvbn(text)
        matches = result["sequence"]
        if sum(len(m["token"]) for m in matches if m["pattern"] != "bruteforce") * 3 >= len(text):
            return math.log2(max(float(result["guesses"]), 1.0))
        bits = 0.0
        for match in matches:
            token = match["token"]
            if match["pattern"] != "bruteforce":
                bits += math.log2(max(float(match["guesses"]), 1.0))
                continue
            classes = (
                (10, any(c.isdigit() for c in token)),
                (26, any(c.islower() for c in token)),
                (26, any(c.isupper() for c in token)),
                (33, any(not c.isalnum() for c in token)),
            )
            bits += len(token) * math.log2(max(sum(size for size, present in classes if present), 10))
        return bits

    text = secret[:100]  # zxcvbn slows down with length; 100 characters tell enough
    words = [w for w in re.split(r"[\s._-]+", text) if w]
    phrase = sum(rate(w) for w in words) + 2 * (len(words) - 1) if len(words) > 1 else math.inf
    return min(rate(text), phrase)


def weak_secret_warning(secret: str) -> str | None:
    """The warning for a guessable MCP_SECRET, or None."""
    bits = secret_bits(secret)
    if bits >= WEAK_SECRET_BITS:
        return None
    return (
        f"MCP_SECRET is weak (about {bits:.0f} bits of entropy; words, sequences and repeats are easy to guess). "
        f"Set a random one — {SECRET_FIX} — and add the connector again (a new MCP_SECRET ends every link)."
    )


def read_mcp_secret(environ: Mapping[str, str]) -> str:
    """MCP_SECRET, or the content of MCP_SECRET_FILE; ValueError with the fix when unusable. The
    one rule for `serve`, `check` and `credentials`."""
    secret = (environ.get("MCP_SECRET") or "").strip()
    secret_file = (environ.get("MCP_SECRET_FILE") or "").strip()
    if secret and secret_file:
        raise ValueError("MCP_SECRET and MCP_SECRET_FILE are both set: remove one.")
    if secret_file:
        try:
            secret = Path(secret_file).expanduser().read_text().strip()
        except OSError as exc:
            raise ValueError(f"MCP_SECRET_FILE cannot be read: {exc}.") from None
    if not secret:
        raise ValueError(f"MCP_SECRET is missing: set it to a long random string (e.g. {SECRET_FIX}).")
    problem = secret_problem(secret)
    if problem:
        raise ValueError(problem)
    return secret


# ── Setting table ─────────────────────────────────────────────────────────────────────────────
# How each variable is read; README's configuration table is printed from SETTINGS.


def check_absolute_path(value: str) -> str:
    if not (value.startswith("/") or value == "~" or value.startswith("~/")) or CONTROL_RE.search(value):
        raise ValueError("must be an absolute path (or start with ~/)")
    return value.rstrip("/") or value


def check_command(value: str) -> str:
    # tmux takes an argument's final ';' for its command separator
    if CONTROL_RE.search(value) or value.startswith("-") or value.endswith(";"):
        raise ValueError("must be a command name or a path")
    return value


def check_ssh_host(value: str) -> str | None:
    """None for local mode; brackets of an IPv6 literal dropped."""
    if value.lower() == "local":
        return None
    # Defense in depth: a leading '-' would be read as an option by tools that take the host.
    if not re.fullmatch(r"[A-Za-z0-9._:-]+|\[[0-9A-Fa-f:.]+\]", value) or value.startswith("-"):
        raise ValueError("must be a host name or IP address (or `local`)")
    return value.strip("[]")


def check_bind_address(value: str) -> str:
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(value))
    if re.fullmatch(r"[0-9.]+", value) or not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", value):
        raise ValueError("must be an IP address or a host name of this machine (e.g. 0.0.0.0 or 127.0.0.1)")
    return value


def check_server_url(value: str) -> str:
    url = value.rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 — raises on a bad port
    except ValueError:
        raise ValueError("must be the public http(s) URL of this server") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be the public http(s) URL of this server")
    if parts.path or parts.query or parts.fragment or parts.username:
        raise ValueError(
            "give only scheme and host (and port), e.g. https://rc.example.com — the MCP endpoint is SERVER_URL/mcp"
        )
    return url


def check_proxy_list(value: str) -> str:
    for item in (part.strip() for part in value.split(",")):
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
    return value


def check_header_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", value):
        raise ValueError("must be an HTTP header name, e.g. Fly-Client-IP")
    return value


@dataclass(frozen=True)
class Setting:
    """One environment variable: how it is read, its default and its line in README's table."""

    name: str
    kind: Literal["str", "int", "float", "bool", "choice", "secret"]
    help: str
    default: Any = None
    required: str = "no"  # README wording: "yes", "with `SSH_HOST`"
    low: float = 0
    high: float = 0
    choices: tuple[str, ...] = ()
    check: Callable[[str], Any] | None = None  # raises ValueError with what a valid value looks like
    shown_default: str | None = None  # README's default when it is not the literal one
    missing: str = ""  # what to do when a required one is unset
    strip: bool = True  # surrounding white space is dropped (not from a passphrase)

    def parse(self, raw: str) -> Any:
        if self.kind == "bool":
            return parse_bool(raw)
        if self.kind == "choice":
            value = raw.upper() if self.name == "LOG_LEVEL" else raw
            if value not in self.choices:
                raise ValueError(f"use one of {', '.join(self.choices)}")
            return value
        if self.kind in ("int", "float"):
            try:
                number = int(raw) if self.kind == "int" else float(raw)
            except ValueError:
                raise ValueError(f"not a {'whole ' if self.kind == 'int' else ''}number") from None
            if not self.low <= number <= self.high:
                raise ValueError(f"must be between {number_text(self.low)} and {number_text(self.high)}")
            return number
        return self.check(raw) if self.check else raw

    def readme_row(self) -> str:
        if self.required != "no":
            required = self.required
        elif self.shown_default is not None:
            required = f"no ({self.shown_default})"
        elif self.default is None or self.default == "":
            required = "no"
        elif self.kind in ("str", "choice"):
            required = f"no (`{self.default}`)"
        else:
            required = f"no ({str(self.default).lower() if self.kind == 'bool' else number_text(self.default)})"
        meaning = self.help
        if self.kind in ("int", "float"):
            meaning += f" ({number_text(self.low)}–{number_text(self.high)})"
        return f"| `{self.name}` | {required} | {meaning} |"


def number_text(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def lifetime_setting(name: str, help: str, days: int, low: int, high_days: int = 365) -> Setting:
    """A lifetime in seconds, whose default README shows in days too."""
    seconds = days * 86400
    return Setting(
        name, "int", help, default=seconds, low=low, high=high_days * 86400, shown_default=f"{seconds} = {days} days"
    )


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "MCP_SECRET",
        "secret",
        "≥ 16 characters; the OAuth client id and secret are derived from it",
        required="yes (or `MCP_SECRET_FILE`)",
    ),
    Setting(
        "PROJECTS_BASE_DIR",
        "str",
        "projects directory on the dev server (absolute, or `~/…`); `path` inputs are relative to it",
        required="yes (unless `DEV_SERVERS`)",
        check=check_absolute_path,
        missing="set it to the directory on the dev server holding your projects",
    ),
    Setting(
        "DEV_SERVERS",
        "str",
        "a TOML hosts file naming several dev servers (see *Several dev servers*); replaces the `SSH_*`, "
        "`PROJECTS_BASE_DIR` and `CLAUDE_BIN` variables",
    ),
    Setting(
        "MCP_SECRET_FILE",
        "str",
        "a file holding `MCP_SECRET` (a Docker or systemd secret), read when `MCP_SECRET` is unset",
    ),
    Setting(
        "SERVER_URL",
        "str",
        "public URL of this server, no path; the OAuth issuer; the MCP endpoint is `$SERVER_URL/mcp`",
        check=check_server_url,
        shown_default="`https://$FLY_APP_NAME.fly.dev` on Fly.io, else `http://localhost:$PORT`",
    ),
    Setting(
        "SSH_HOST", "str", "dev server; unset or `local`: commands run on this machine, no SSH", check=check_ssh_host
    ),
    Setting("SSH_USER", "str", "SSH user (use a dedicated, non-root one)", required="with `SSH_HOST`"),
    Setting(
        "SSH_PRIVATE_KEY",
        "secret",
        "key content or path: ed25519, ECDSA or RSA, OpenSSH or PEM",
        required="with `SSH_HOST`",
    ),
    Setting("SSH_PASSPHRASE", "secret", "passphrase of an encrypted key (decrypted once at start-up)", strip=False),
    Setting("SSH_PORT", "int", "SSH port of the dev server", default=22, low=1, high=65535),
    Setting(
        "SSH_KNOWN_HOSTS",
        "str",
        "known_hosts content or path pinning the dev server's host key; unset: the "
        "first key seen is recorded in `known_hosts` beside the token store, and a changed key is refused",
    ),
    Setting("CLAUDE_BIN", "str", "claude on the dev server", default="claude", check=check_command),
    Setting("SPAWN_WORKTREE", "bool", "default of `start_session`'s `worktree`", default=False),
    Setting(
        "PERMISSION_MODE",
        "choice",
        "default of `start_session`'s `permission_mode`: " + ", ".join(f"`{m}`" for m in PERMISSION_MODES),
        choices=PERMISSION_MODES,
        shown_default="claude's default",
    ),
    Setting(
        "ALLOW_CHAT_APPROVALS",
        "bool",
        "let the chat answer claude's permission prompts (`answer_permission`); off: only a person at the "
        "session's link approves actions",
        default=False,
    ),
    Setting(
        "TOKEN_STORE_PATH",
        "str",
        "OAuth state file; default `/data/oauth-tokens.json` when `/data` is "
        "writable, else `~/.local/state/rc_mcp/oauth-tokens.json`",
    ),
    Setting("PORT", "int", "listening port", default=3000, low=1, high=65535),
    Setting(
        "HOST",
        "str",
        "bind address",
        default="0.0.0.0",
        check=check_bind_address,
        shown_default="`0.0.0.0`; `127.0.0.1` in local mode",
    ),
    Setting(
        "START_TIMEOUT",
        "float",
        "seconds `start_session` waits for claude's URL; Claude.ai allows a tool 300 s",
        default=45.0,
        low=5,
        high=240,
    ),
    Setting("COMMAND_TIMEOUT", "float", "seconds for other remote commands", default=30.0, low=1, high=600),
    Setting("SSH_CONNECT_TIMEOUT", "float", "seconds to connect and authenticate", default=10.0, low=1, high=120),
    lifetime_setting(
        "ACCESS_TOKEN_TTL", "access-token lifetime in seconds; long, because Claude.ai often never refreshes", 30, 60
    ),
    lifetime_setting(
        "TOKEN_IDLE_TTL", "a link unused for this many seconds ends, whatever its tokens' lifetimes", 7, 600
    ),
    lifetime_setting("REFRESH_TOKEN_TTL", "refresh-token lifetime in seconds", 90, 3600, high_days=3650),
    Setting(
        "REQUEST_TIMEOUT",
        "float",
        "seconds a client has to send a whole request; slower connections are closed",
        default=10.0,
        low=1,
        high=120,
    ),
    Setting(
        "FORWARDED_ALLOW_IPS",
        "str",
        "reverse proxies (IP addresses or networks, comma-separated) whose `X-Forwarded-For` names the client; "
        "`*` trusts anyone — never on a public port",
        default="127.0.0.1,::1",
        check=check_proxy_list,
    ),
    Setting(
        "CLIENT_IP_HEADER",
        "str",
        "header in which the platform's proxy names the client, trusted only from private addresses",
        check=check_header_name,
        shown_default="`Fly-Client-IP` on Fly.io, else none",
    ),
    Setting(
        "LOG_LEVEL",
        "choice",
        "log verbosity: " + ", ".join(f"`{level}`" for level in LOG_LEVELS),
        default="INFO",
        choices=LOG_LEVELS,
    ),
)


def settings_table() -> str:
    """README's configuration table."""
    return "\n".join(["| variable | required | meaning |", "|---|---|---|", *(s.readme_row() for s in SETTINGS)])


# ── Keys and known hosts ──────────────────────────────────────────────────────────────────────
# Values of SSH_PRIVATE_KEY and SSH_KNOWN_HOSTS, read once at start-up.


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


def load_private_key(text: str, passphrase: str | None, passphrase_name: str = "SSH_PASSPHRASE") -> paramiko.PKey:
    """Parse an ed25519, ECDSA or RSA key (OpenSSH or PEM), decrypting it once."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    data = text.strip().encode() + b"\n"
    password = passphrase.encode() if passphrase else None
    loaded: Any
    try:
        try:
            loaded = serialization.load_ssh_private_key(data, password=password)
        except ValueError as exc:
            if "not openssh" not in str(exc).lower() and b"OPENSSH PRIVATE KEY" in data:
                raise
            loaded = serialization.load_pem_private_key(data, password=password)
    except TypeError as exc:  # "Password was not given but private key is encrypted" and its reverse
        if password is None:
            raise ValueError(f"the key is encrypted: set {passphrase_name}") from exc
        raise ValueError(f"{passphrase_name} is set but the key is not encrypted: unset it") from exc
    except ValueError as exc:
        if password is not None and re.search(r"decrypt|password|checksum", str(exc), re.I):
            raise ValueError(f"{passphrase_name} does not decrypt the key (or the key is damaged)") from exc
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


# ── Config ────────────────────────────────────────────────────────────────────────────────────


def ssh_target(host: str, port: int) -> str:
    """The name known_hosts uses for a server (`[host]:port` unless port 22)."""
    return host if port == 22 else f"[{host}]:{port}"


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
    log_level: str = "INFO"
    idle_ttl: int = 7 * 86400
    request_timeout: float = 10.0
    forwarded_allow_ips: str = "127.0.0.1,::1"
    client_ip_header: str | None = None
    allow_chat_approvals: bool = False
    host_name: str = "default"  # the dev server's name in tool calls (DEV_SERVERS)
    hosts: tuple[Config, ...] = ()  # with DEV_SERVERS: every dev server, this one first

    in_hosts_file: bool = False  # its settings are keys of its table in DEV_SERVERS

    @property
    def all_hosts(self) -> tuple[Config, ...]:
        return self.hosts or (self,)

    def setting(self, variable: str) -> str:
        """How a message names a setting of this dev server: its variable, or its key in the hosts file."""
        if not self.in_hosts_file:
            return variable
        key = next((k for k, v in HOST_KEYS.items() if v == variable), HOST_VARIABLE_KEYS.get(variable, variable))
        return f"{key} of [{self.host_name}] in DEV_SERVERS"

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
        return ssh_target(self.ssh_host or "", self.ssh_port)

    @property
    def mode(self) -> str:
        """How the dev server is reached, in words for logs and `check`."""
        if self.local:
            return "local (commands run on this machine, no SSH)"
        pinning = (
            "host key pinned by SSH_KNOWN_HOSTS"
            if self.known_hosts
            else f"host key trusted on first use ({self.host_keys_path})"
        )
        return f"SSH {self.ssh_user}@{self.ssh_target}, {pinning}"


def default_token_store_path(environ: Mapping[str, str], data_dir: Path = Path("/data")) -> Path:
    """A writable /data (a container volume) when there is one, else the user's state directory."""
    if data_dir.is_dir() and os.access(data_dir, os.W_OK):
        return data_dir / "oauth-tokens.json"
    state = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".local" / "state")
    return Path(state) / "rc_mcp" / "oauth-tokens.json"


class ConfigError(Exception):
    """Every configuration problem at once, each naming its variable and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(f"  - {p}" for p in problems))


# With DEV_SERVERS, these belong in each host's table.
HOST_VARIABLES = (
    "SSH_HOST", "SSH_USER", "SSH_PRIVATE_KEY", "SSH_PASSPHRASE", "SSH_PORT", "SSH_KNOWN_HOSTS", "PROJECTS_BASE_DIR",
    "CLAUDE_BIN",
)  # fmt: skip
DEV_SERVER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
MAX_HOSTS = 64


def load_ssh_access(
    host: str,
    port: int,
    key: str | None,
    passphrase: str | None,
    known: str | None,
    problems: list[str],
    names: Mapping[str, str],
) -> tuple[paramiko.PKey | None, paramiko.HostKeys | None]:
    """The private key and pinned host keys of one dev server; each problem named by `names`."""
    ssh_key: paramiko.PKey | None = None
    known_hosts: paramiko.HostKeys | None = None
    if not key:
        problems.append(f"{names['key']} is missing: set it to the key's content or the path of the key file.")
    else:
        try:
            ssh_key = load_private_key(read_value_or_file(key), passphrase, names.get("passphrase", "SSH_PASSPHRASE"))
        except (OSError, ValueError, paramiko.SSHException) as exc:
            problems.append(f"{names['key']} cannot be used: {exc}.")
    if known:
        target = ssh_target(host, port)
        try:
            known_hosts = parse_known_hosts(read_value_or_file(known))
        except (OSError, ValueError) as exc:
            problems.append(f"{names['known_hosts']} cannot be used: {exc}.")
        else:
            if not known_hosts.lookup(target):
                problems.append(
                    f"{names['known_hosts']} has no key for {target}: add the line from "
                    f"`ssh-keyscan -p {port} {host}` (after checking its fingerprint on the server)."
                )
    return ssh_key, known_hosts


# A host's table in the hosts file: key → (the variable whose rules it follows, or a type).
HOST_KEYS: dict[str, str | type] = {
    "ssh_host": "SSH_HOST",
    "user": str,
    "port": "SSH_PORT",
    "key": str,
    "passphrase_env": str,
    "known_hosts": str,
    "projects_base_dir": "PROJECTS_BASE_DIR",
    "claude_bin": "CLAUDE_BIN",
    "spawn_worktree": bool,
    "permission_mode": "PERMISSION_MODE",
    "connect_timeout": "SSH_CONNECT_TIMEOUT",
    "command_timeout": "COMMAND_TIMEOUT",
    "start_timeout": "START_TIMEOUT",
}
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}
# The variables whose key in a host's table does not follow the variable's rules.
HOST_VARIABLE_KEYS = {
    "SSH_USER": "user",
    "SSH_PRIVATE_KEY": "key",
    "SSH_PASSPHRASE": "passphrase_env",
    "SSH_KNOWN_HOSTS": "known_hosts",
}


def relative_to(folder: Path, value: str) -> str:
    """A relative file name in the hosts file means a file beside it; key content stays as it is."""
    if "\n" in value or value.startswith(("/", "~", "-----")) or not (folder / value).is_file():
        return value
    return str(folder / value)


def load_hosts_file(path: str, base: Config, environ: Mapping[str, str]) -> tuple[Config, ...]:
    """Every dev server of a DEV_SERVERS file, in its order, each problem named by host and key."""
    try:
        with open(Path(path).expanduser(), "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigError([f"DEV_SERVERS: cannot read {path}: {exc.strerror or exc}."]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"DEV_SERVERS: {path} is not valid TOML: {exc}."]) from exc
    problems: list[str] = []
    folder = Path(path).expanduser().resolve().parent
    tables = [(name, table) for name, table in document.items()]
    seen: dict[tuple[Any, ...], str] = {}
    if not tables:
        problems.append(f"DEV_SERVERS: {path} names no dev server: add a table such as [home] with ssh_host, …")
    if len(tables) > MAX_HOSTS:
        problems.append(f"DEV_SERVERS: {len(tables)} hosts; at most {MAX_HOSTS}.")
    hosts: list[Config] = []
    for name, table in tables:
        where = f"DEV_SERVERS host {name!r}"
        if not DEV_SERVER_NAME_RE.fullmatch(name):
            problems.append(
                f"{where}: the name must be 1-32 lowercase letters, digits or '-', starting with a letter or digit."
            )
            continue
        if not isinstance(table, dict):
            problems.append(f"{where}: must be a table ([{name}] followed by its keys).")
            continue
        values: dict[str, Any] = {}
        for key, value in table.items():
            rule = HOST_KEYS.get(key)
            if rule is None:
                problems.append(f"{where}: unknown key {key!r}; the keys are {', '.join(HOST_KEYS)}.")
                continue
            if isinstance(rule, str):
                setting = SETTINGS_BY_NAME[rule]
                expected: type | tuple[type, ...] = (
                    int if setting.kind == "int" else (int, float) if setting.kind == "float" else str
                )
                if not isinstance(value, expected) or isinstance(value, bool):
                    problems.append(
                        f"{where}: {key} must be "
                        + {"int": "a whole number", "float": "a number"}.get(setting.kind, "a string")
                        + "."
                    )
                    continue
                try:
                    values[key] = setting.parse(str(value))
                except ValueError as exc:
                    problems.append(f"{where}: {key} = {value!r}: {exc}.")
            elif not isinstance(value, rule):
                problems.append(f"{where}: {key} must be a {'boolean' if rule is bool else 'string'}.")
            else:
                values[key] = value
        ssh_host = values.get("ssh_host") if "ssh_host" in table else None
        if "ssh_host" not in table:
            problems.append(f'{where}: ssh_host is missing: the dev server\'s address, or "local".')
        if "projects_base_dir" not in table:
            problems.append(f"{where}: projects_base_dir is missing: the directory holding your projects there.")
        port = values.get("port", 22)
        key = known = None
        if ssh_host is not None:
            if not values.get("user"):
                problems.append(f"{where}: user is missing: it is required with ssh_host.")
            passphrase = None
            if "passphrase_env" in values:
                passphrase = environ.get(values["passphrase_env"])
                if passphrase is None:
                    problems.append(f"{where}: passphrase_env names {values['passphrase_env']}, which is not set.")
            names = {
                "key": f"{where}: key",
                "known_hosts": f"{where}: known_hosts",
                "passphrase": "passphrase_env" if "passphrase_env" not in values else values["passphrase_env"],
            }
            files = {k: relative_to(folder, values[k]) for k in ("key", "known_hosts") if k in values}
            key, known = load_ssh_access(
                ssh_host, port, files.get("key"), passphrase, files.get("known_hosts"), problems, names
            )
        target = (ssh_host, port, values.get("user")) if ssh_host is not None else ("local",)
        if target in seen:
            problems.append(f"{where}: the same dev server as {seen[target]!r}; its sessions would be listed twice.")
        seen.setdefault(target, name)
        hosts.append(
            dataclasses.replace(
                base,
                host_name=name,
                in_hosts_file=True,
                ssh_host=ssh_host,
                ssh_user=values.get("user", ""),
                ssh_port=port,
                ssh_key=key,
                known_hosts=known,
                projects_base_dir=values.get("projects_base_dir", ""),
                claude_bin=values.get("claude_bin", base.claude_bin),
                spawn_worktree=values.get("spawn_worktree", base.spawn_worktree),
                permission_mode=values.get("permission_mode", base.permission_mode),
                connect_timeout=values.get("connect_timeout", base.connect_timeout),
                command_timeout=values.get("command_timeout", base.command_timeout),
                start_timeout=values.get("start_timeout", base.start_timeout),
            )
        )
    if problems:
        raise ConfigError(problems)
    return tuple(hosts)


def load_config(environ: Mapping[str, str]) -> Config:
    """Build the configuration from environment variables, reporting every problem at once."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    hosts_file = (environ.get("DEV_SERVERS") or "").strip()
    for setting in SETTINGS:
        raw = environ.get(setting.name)
        raw = raw.strip() if raw is not None and setting.strip else raw
        values[setting.name] = setting.default
        if raw is None or raw == "":
            if setting.required == "yes" or (setting.name == "PROJECTS_BASE_DIR" and not hosts_file):
                problems.append(f"{setting.name} is missing: {setting.missing or 'set it'}.")
            continue
        given[setting.name] = raw
        if setting.kind == "secret":
            values[setting.name] = raw  # checked below, never echoed
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            problems.append(f"{setting.name} has value {raw!r}: {exc}.")

    try:
        secret = read_mcp_secret(environ)
    except ValueError as exc:
        problems.insert(0, str(exc))
        secret = ""
    # On Fly.io (FLY_APP_NAME is set in its Machines) the app's own origin: fly.toml names it once.
    fly_app = environ.get("FLY_APP_NAME", "").strip()
    server_url = values["SERVER_URL"] or (
        f"https://{fly_app}.fly.dev"
        if re.fullmatch(r"[a-z0-9-]{1,63}", fly_app)
        else f"http://localhost:{values['PORT']}"
    )

    ssh_host: str | None = values["SSH_HOST"]
    ssh_port: int = values["SSH_PORT"]
    ssh_key: paramiko.PKey | None = None
    known_hosts: paramiko.HostKeys | None = None
    if hosts_file:
        single = [n for n in HOST_VARIABLES if n in given]
        if single:
            problems.append(
                f"DEV_SERVERS is set, and so is {', '.join(single)}: each dev server's settings are in the hosts file. "
                f"Remove {', '.join(single)} (or DEV_SERVERS)."
            )
    elif ssh_host is not None:
        if "SSH_USER" not in given:
            problems.append("SSH_USER is missing: it is required when SSH_HOST is set.")
        ssh_key, known_hosts = load_ssh_access(
            ssh_host, ssh_port, given.get("SSH_PRIVATE_KEY"), given.get("SSH_PASSPHRASE"),
            given.get("SSH_KNOWN_HOSTS"), problems, {"key": "SSH_PRIVATE_KEY", "known_hosts": "SSH_KNOWN_HOSTS"},
        )  # fmt: skip
    store = given.get("TOKEN_STORE_PATH")
    if problems:
        raise ConfigError(problems)
    config = Config(
        mcp_secret=secret,
        server_url=server_url,
        projects_base_dir=values["PROJECTS_BASE_DIR"] or "",
        ssh_host=ssh_host,
        ssh_user=values["SSH_USER"] or "",
        ssh_port=ssh_port,
        ssh_key=ssh_key,
        known_hosts=known_hosts,
        claude_bin=values["CLAUDE_BIN"],
        spawn_worktree=values["SPAWN_WORKTREE"],
        permission_mode=values["PERMISSION_MODE"],
        token_store_path=Path(store).expanduser() if store else default_token_store_path(environ),
        # Local mode runs commands on this machine: by default reachable from it alone.
        host=values["HOST"] if "HOST" in given else ("127.0.0.1" if ssh_host is None else "0.0.0.0"),
        port=values["PORT"],
        start_timeout=values["START_TIMEOUT"],
        command_timeout=values["COMMAND_TIMEOUT"],
        connect_timeout=values["SSH_CONNECT_TIMEOUT"],
        access_token_ttl=values["ACCESS_TOKEN_TTL"],
        refresh_token_ttl=values["REFRESH_TOKEN_TTL"],
        log_level=values["LOG_LEVEL"],
        idle_ttl=values["TOKEN_IDLE_TTL"],
        request_timeout=values["REQUEST_TIMEOUT"],
        forwarded_allow_ips=values["FORWARDED_ALLOW_IPS"],
        # Fly.io's proxy names the client in Fly-Client-IP (Fly sets FLY_APP_NAME in its Machines).
        client_ip_header=values["CLIENT_IP_HEADER"] or ("Fly-Client-IP" if environ.get("FLY_APP_NAME") else None),
        allow_chat_approvals=values["ALLOW_CHAT_APPROVALS"],
    )
    if not hosts_file:
        return config
    hosts = load_hosts_file(hosts_file, config, environ)  # raises ConfigError with every problem
    return dataclasses.replace(hosts[0], hosts=hosts)


def read_environment(cwd: Path | None = None) -> dict[str, str]:
    """The process environment over `.env` in the working directory (real variables win)."""
    from dotenv import dotenv_values

    env_file = (cwd or Path.cwd()) / ".env"
    values = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file.is_file() else {}
    return {**values, **os.environ}


# ── Errors ────────────────────────────────────────────────────────────────────────────────────


class OAuthError(Exception):
    """An HTTP error in RFC 6749 §5.2 form; handlers raise it, the router renders it once."""

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


class CommandInterrupted(RemoteError):
    """The connection broke while a command ran: it may or may not have completed."""


class ConnectionLost(Exception):
    """The SSH connection died before a command started (internal: triggers one reconnect)."""


class ToolFailure(Exception):
    """A tool call that failed in a way the model can act on; the message says how."""


def describe_error(exc: BaseException) -> str:
    """An exception as words, never empty (some of paramiko's carry no message)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ── Files ─────────────────────────────────────────────────────────────────────────────────────


def write_private_file(path: Path, data: bytes, how: Literal["replace", "new", "append"]) -> None:
    """Write a 0600 file durably: `replace` atomically (temp file in the same directory, fsync,
    rename, fsync of the directory), `new` only if it does not exist, `append` to the end."""
    directory = path.parent
    if how == "replace":
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)  # mode 0600
    else:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if how == "new" else os.O_APPEND)
        fd, name = os.open(path, flags, 0o600), str(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if how == "replace":
            os.replace(name, path)
    except BaseException:
        if how == "replace":
            with contextlib.suppress(OSError):
                os.unlink(name)
        raise
    with contextlib.suppress(OSError):  # make the new name itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def utc_stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


# ═════════════════════════════════════════════════════════════════════════════════════════════
# The dev server: what claude prints, the scripts that run there, and how they get there.
# ═════════════════════════════════════════════════════════════════════════════════════════════

# ── Claude's output ───────────────────────────────────────────────────────────────────────────
# Remote Control output (reference: claude-remote-control §5). Match URLs, never labels or "any URL".

OSC8_RE = re.compile(r"\x1b\]8;[^;\x07\x1b]*;([^\x07\x1b]*)(?:\x07|\x1b\\)")
OSC_RE = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
CSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
CURSOR_SKIP_RE = re.compile(r"\x1b\[[0-9]*[CG]")
ENV_URL_RE = re.compile(r"https://claude\.ai/code\?(?:environment|bridge)=env_[A-Za-z0-9_-]{1,124}(?![A-Za-z0-9_-])")
SESSION_URL_RE = re.compile(r"https://claude\.ai/code/((?:session|cse)_[A-Za-z0-9_-]{1,128})(?![A-Za-z0-9_-])")
# The same environment URL as a POSIX ERE, for the server-side wait loop. The trailing character
# class proves the URL was written completely (raw pty logs end it with ESC[0m, BEL or \r).
ENV_URL_ERE = r"https://claude\.ai/code\?(environment|bridge)=env_[A-Za-z0-9_-]+[^A-Za-z0-9_-]"
CONSENT_PROMPT = "Enable Remote Control? (y/n)"
CONNECTING_LABEL = "Connecting"
STATUS_LABEL_RE = re.compile(r"·[^·\n]{1,3}·\s*(Connecting|Ready|Connected)\b")

SessionStatus = Literal["starting", "ready", "connected", "needs attention", "exited", "stopped"]
LABEL_STATUS: dict[str, SessionStatus] = {"Connecting": "starting", "Ready": "ready", "Connected": "connected"}


def strip_terminal(raw: str) -> str:
    """Terminal output as plain text: OSC and CSI sequences removed, carriage returns as newlines."""
    text = OSC_RE.sub("", raw)
    text = CURSOR_SKIP_RE.sub(" ", text)  # the TUI moves the cursor over the space between words
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


@dataclass(frozen=True)
class ClaudeText:
    """Something claude can print, and what it means for the person at the other end.

    `failure`: claude stops with it. `question`: claude waits for a person at the dev server (the
    start script stops waiting when it appears). `notice`: a running session needs attention.
    `pattern` is a regex that is also a POSIX ERE (the start script greps for questions);
    `cause` is the cause and the fix, with the pattern's groups as {0}… and the project as {path}.
    """

    kind: Literal["failure", "question", "notice"]
    pattern: str
    cause: str


DIRECTORY_CHANGED = "rc_mcp: the project directory changed while the session started; claude was not started"
TRUST_CAUSE = (
    "claude does not trust {path} yet: on the dev server run `claude` once in that directory and accept the trust "
    "dialog, then start again."
)

# First match wins: a new prompt or error text of claude is one row here.
CLAUDE_TEXTS: tuple[ClaudeText, ...] = (
    ClaudeText(
        "failure",
        re.escape(DIRECTORY_CHANGED),
        "{path} was replaced (by a symlink?) between rc_mcp's check and the launch, so claude was not started: find "
        "out what changes it on the dev server, then start again.",
    ),
    ClaudeText(
        "failure",
        r"You must be logged in to use Remote Control",
        "claude is not logged in on the dev server: run `claude auth login` there with a claude.ai account "
        "(Pro, Max, Team or Enterprise), then start again.",
    ),
    ClaudeText(
        "failure",
        r"requires a full-scope login token",
        "claude is using a long-lived token (`claude setup-token` / CLAUDE_CODE_OAUTH_TOKEN), which cannot run Remote "
        "Control: run `claude auth login` on the dev server and remove that token from its settings.",
    ),
    ClaudeText(
        "failure",
        r"feature-flag evaluation, which is disabled because (\w+) is set",
        "{0} is set for claude on the dev server (in a settings file or the login environment) and switches Remote "
        "Control off: remove it there, then start again.",
    ),
    ClaudeText(
        "failure",
        r"feature-flag evaluation, which is unavailable",
        "claude cannot reach its feature-flag service from the dev server: check that it can reach the internet "
        "(proxy settings), then start again.",
    ),
    ClaudeText(
        "failure",
        r"is your home directory, and for security home-directory trust is never saved",
        "claude refuses to run in the home directory: pick a project directory.",
    ),
    ClaudeText("failure", r"Workspace not trusted", TRUST_CAUSE),
    # The TUI moves the cursor between its words (ESC[<n>G) instead of writing spaces.
    ClaudeText("question", r"Quick.{0,12}safety.{0,12}check|Trust .*\? \[y/N\]", TRUST_CAUSE),
    ClaudeText(
        "failure",
        r"Another `claude remote-control` instance \(pid ([0-9]+)\)",
        "a `claude remote-control` that rc_mcp did not start (pid {0}) already serves {path}: use that one, or stop "
        "it on the dev server (`kill {0}`) and start again.",
    ),
    ClaudeText(
        "failure",
        r"(?:Session|Environment) [^ ]+ is already being served by another `claude remote-control` instance "
        r"\(pid ([0-9]+)\) in ([^\n]+?)\. Use that",
        "another `claude remote-control` (pid {0}) already serves that session from {1}: use that one, or stop it "
        "on the dev server (`kill {0}`) and start again.",
    ),
    ClaudeText(
        "failure",
        r"not yet enabled for your account|environments are not available for your account",
        "Remote Control is not available for this claude.ai account: it needs a Pro, Max, Team or Enterprise plan "
        "(on Team and Enterprise an admin must allow it).",
    ),
    ClaudeText(
        "failure",
        r"Multi-session Remote Control is not enabled",
        "this Claude Code version is too old for server mode: run `claude update` on the dev server.",
    ),
    ClaudeText(
        "failure",
        r"Unknown argument|is not supported by claude remote-control|--spawn requires one of",
        "this Claude Code version does not accept rc_mcp's arguments: run `claude update` on the dev server.",
    ),
    ClaudeText(
        "failure",
        r"ANTHROPIC_API_KEY|API key|Bedrock|Vertex|Foundry|ANTHROPIC_BASE_URL",
        "Remote Control needs a claude.ai login, not an API key or a cloud provider: on the dev server run "
        "`claude auth login` and remove ANTHROPIC_API_KEY / provider settings from claude's settings.",
    ),
    ClaudeText(
        "question",
        r"Spawn mode for this project",
        "claude is asking for a spawn mode on the dev server: run `claude remote-control` there once and choose.",
    ),
    ClaudeText(
        "failure",
        r"command not found|No such file or directory",
        "the claude CLI was not found on the dev server: install Claude Code there, or set CLAUDE_BIN to its "
        "absolute path (`command -v claude` in a login shell shows it).",
    ),
    # The start script answers this one; a session still showing it waits for a person.
    ClaudeText(
        "notice",
        re.escape(CONSENT_PROMPT),
        f"claude is waiting for an answer to '{CONSENT_PROMPT}' on the dev server",
    ),
    ClaudeText("notice", r"Reconnecting\b", "claude lost its connection to claude.ai and is reconnecting"),
)
QUESTIONS_ERE = "|".join(t.pattern for t in CLAUDE_TEXTS if t.kind == "question")
ATTENTION_TEXTS = tuple(t for t in CLAUDE_TEXTS if t.kind != "failure")


def describe_text(text: ClaudeText, match: re.Match[str], path: str) -> str:
    groups = [g for g in match.groups() if g is not None]
    return text.cause.format(*groups, path=path)


def explain_failure(raw: str, path: str = "the project") -> str | None:
    """The cause and the fix for what claude printed, or None when it is not a known failure."""
    plain = strip_terminal(raw)
    for text in CLAUDE_TEXTS:
        if text.kind != "notice" and (match := re.search(text.pattern, plain)):
            return describe_text(text, match, path)
    return None


def classify_session(raw: str) -> tuple[SessionStatus, str | None]:
    """A running session's status from the end of its output: the newest status label or prompt wins."""
    plain = strip_terminal(raw)
    status: SessionStatus = "starting"
    position = -1
    for label in STATUS_LABEL_RE.finditer(plain):
        status, position = LABEL_STATUS[label.group(1)], label.start()
    found = [(m.start(), -i, m) for i, t in enumerate(ATTENTION_TEXTS) for m in re.finditer(t.pattern, plain)]
    if not found:
        return status, None
    start, row, match = max(found, key=lambda f: (f[0], f[1]))  # the newest; at one place, the first row
    if start < position:
        return status, None
    return "needs attention", describe_text(ATTENTION_TEXTS[-row], match, "the project")


LINK_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^\s\"'<>()]+", re.I)
CLAUDE_LINK_RE = re.compile(r"https://(?:[a-z0-9-]+\.)*claude\.(?:ai|com)(?:[/?#][^\s\"'<>()]*)?", re.I)


def keep_claude_links(text: str) -> str:
    """Links other than claude.ai's and claude.com's removed: claude's output relayed to the model
    must not carry someone else's link (a project file could have put one on the screen)."""
    return LINK_RE.sub(lambda m: m.group() if CLAUDE_LINK_RE.fullmatch(m.group()) else "[link removed]", text)


def tail_lines(raw: str, count: int = 12) -> str:
    """The last lines of claude's output as readable text for a message: repaints collapsed,
    foreign links removed."""
    lines = [line.rstrip() for line in keep_claude_links(strip_terminal(raw)).split("\n")]
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

TMUX_PREFIX = "rc-"
REMOTE_STATE_DIR = '"${XDG_STATE_HOME:-$HOME/.local/state}/rc-mcp"'  # sh expression, 0700, never /tmp
REMOTE_PATH_PREFIX = 'PATH="$HOME/.local/bin:$PATH"; export PATH'  # where claude's installer puts it
# Each of these makes `claude remote-control` refuse to start (they switch off its feature flags,
# or put an API key or a cloud provider in place of the claude.ai login).
SCRUBBED_ENV = tuple(
    "DISABLE_TELEMETRY DO_NOT_TRACK CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC DISABLE_GROWTHBOOK ANTHROPIC_API_KEY "
    "ANTHROPIC_BASE_URL CLAUDE_CODE_OAUTH_TOKEN CLAUDE_CODE_USE_BEDROCK CLAUDE_CODE_USE_VERTEX "
    "CLAUDE_CODE_USE_FOUNDRY".split()
)
LOG_TAIL_BYTES = 8192
LIST_TAIL_BYTES = 3072
# The files of one session in the state directory (sh variable → suffix); they exist only while
# its tmux session does.
SESSION_FILES = {"meta": ".meta", "log": ".log", "log_old": ".log.1", "url_file": ".url"}
# claude's output goes to the log through this (sh, $1 the log) rather than `cat`: a claude that
# prints forever fills at most two chunks of the log — the newest output, and the chunk before it
# as .log.1. dd, unlike head, writes what it reads at once (the start script waits for the URL);
# the log stays open, so once its session's files are removed nothing brings it back.
LOG_CHUNK_BYTES = 1024 * 1024
CAP_LOG_SCRIPT = (
    'exec 3>> "$1" || exit 0; while :; do before=$(wc -c < "$1" 2>/dev/null) || exit 0; '
    "dd bs=65536 count=16 2>/dev/null >&3 || exit 0; "
    'after=$(wc -c < "$1" 2>/dev/null) || exit 0; [ "$after" -eq "$before" ] && exit 0; '
    f'if [ "$after" -ge {LOG_CHUNK_BYTES} ]; then mv -f -- "$1" "$1.1" && exec 3>> "$1"; fi; done'
)
# The pane's own first command: wait for the go signal, then check once more, right before exec,
# that the directory is the one checked — a symlink swapped in meanwhile could lead outside the
# base. ($0: the signal, $1: the physical directory with a '/' appended — tmux would take a final
# ';' of an argument for its command separator — then claude's command.)
# Variables that make Remote Control refuse to start are removed here, by the shell (env(1) would
# take a CLAUDE_BIN holding '=' for an assignment).
PANE_PRELUDE = (
    'tmux wait-for "$0" || exit 1; d=${1%/}; cd -P -- "$d" 2>/dev/null && [ "$(pwd -P)" = "$d" ] || '
    f'{{ echo "{DIRECTORY_CHANGED}"; exit 1; }}; shift; unset {" ".join(SCRUBBED_ENV)}; exec "$@"'
)


# Conversations (`claude --rc NAME`, the interactive TUI): claude's own files, read and never written.
CLAUDE_CONFIG = '"${CLAUDE_CONFIG_DIR:-$HOME/.claude}"'  # sh expression: transcripts, session registry
# What resume_session needs, kept after the session ends (until stop_session with forget): `.conv`
# for a conversation (its uuid and where it runs, and `.turn`, the transcript offset of the last
# prompt), `.srv` for a Remote Control server.
RECORD_FILES = {"conv": ".conv", "turn": ".turn", "srv": ".srv"}
RECORD_DAYS = 30  # records of ended sessions older than this are dropped (claude keeps transcripts 30 days)
TRANSCRIPT_READ_MAX = 8 * 1024 * 1024  # bytes of transcript one call reads at most (the newest ones)
# A line of the transcript after our prompt that means the turn has produced its outcome (once
# the registry says idle): an answer, a local command's output, the turn's end, an interruption.
# Matched on the raw JSON: inside a string, quotes are escaped, so a prompt cannot fake these.
TURN_OUTCOME_ERE = r'"type":"assistant"|"subtype":"(local_command|turn_duration)"|"text":"\[Request interrupted by user'
# The conversation's pane: as PANE_PRELUDE, then ($2) the file holding the first prompt or '-'.
# The prompt becomes claude's last argument after `--` (a prompt starting with '-' is no option);
# the file is read and removed by the pane itself, so the text never passes through a shell parser.
CONVERSATION_PRELUDE = (
    'tmux wait-for "$0" || exit 1; d=${1%/}; f=$2; cd -P -- "$d" 2>/dev/null && [ "$(pwd -P)" = "$d" ] || '
    f'{{ echo "{DIRECTORY_CHANGED}"; exit 1; }}; shift 2; unset {" ".join(SCRUBBED_ENV)}; '
    '[ "$f" = - ] && exec "$@"; p=$(cat -- "$f") || exit 1; rm -f -- "$f"; exec "$@" -- "$p"'
)


def shell_path(path: str) -> str:
    """A quoted sh word for a configured path; a leading `~/` becomes "$HOME"."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def spawn_mode(worktree: bool) -> str:
    return "worktree" if worktree else "same-dir"


def double_quoted(text: str) -> str:
    """`text` for the inside of an sh double-quoted string: nothing in it is expanded."""
    return re.sub(r'([\\"$`])', r"\\\1", text)


# A line (the first or second) of a script whose second run does what one run does (it reads, or
# tidies what is already gone): after a lost connection the runner may send it again. Never a
# start or a send.
RERUN_SAFE = ": rerun-safe"


def is_rerun_safe(script: str) -> bool:
    return RERUN_SAFE in script.split("\n", 2)[:2]


def _remote_script(*lines: str, rerun_safe: bool = False) -> str:
    return "\n".join((REMOTE_PATH_PREFIX, *((RERUN_SAFE,) if rerun_safe else ()), *lines)) + "\n"


def _session_files(session: str) -> str:
    """The sh words naming every file of the session whose name is the sh expression `session`."""
    return " ".join(f'"$state/{session}{suffix}"' for suffix in SESSION_FILES.values())


def _record_files(session: str) -> str:
    return " ".join(f'"$state/{session}{suffix}"' for suffix in RECORD_FILES.values())


def _read_registry(pid_expr: str) -> str:
    """sh that sets $r to claude's session registry entry of the process `pid_expr` (one line; empty
    without one) and $s to its status: idle, busy, waiting, none or unknown. Builtins only."""
    registry = f'"$cfg/sessions/"{pid_expr}".json"'
    statuses = " ".join(f'*\'"status":"{w}"\'*|*\'"status": "{w}"\'*) s={w} ;;' for w in ("idle", "busy", "waiting"))
    return (
        f"r=; if [ -n {pid_expr} ] && [ -f {registry} ]; then "
        f'while IFS= read -r l || [ -n "$l" ]; do r="$r$l"; done < {registry}; fi; '
        f"case \"$r\" in {statuses} '') s=none ;; *) s=unknown ;; esac"
    )


def _session_paths(session: str, prefix: str = "") -> str:
    """sh that sets $meta, $log and $url_file (each after `prefix`) to the files of `session`."""
    return "; ".join(f'{prefix}{var}="$state/{session}{suffix}"' for var, suffix in SESSION_FILES.items())


def _emit_tail(path_expr: str, nonce: str, size: int = LOG_TAIL_BYTES) -> str:
    """sh that prints the end of a log file, framed so nothing in it can pass for a control line."""
    return f"printf '@@tail\\n'; tail -c {size} {path_expr} 2>/dev/null; printf '\\n@@end-%s\\n' {shlex.quote(nonce)}"


def _save_latest_url(log_expr: str, url_expr: str) -> str:
    """sh that writes the newest complete environment URL in a log to the session's .url file."""
    return f"grep -a -o -E {shlex.quote(ENV_URL_ERE)} {log_expr} | tail -n 1 > {url_expr}"


# A loop over the sessions that have files here: $m is the .meta file, $s the tmux session.
_FOR_EACH_SESSION_FILES = (
    f'for m in "$state"/{TMUX_PREFIX}*{SESSION_FILES["meta"]}; do',
    f'  [ -f "$m" ] || continue; s=${{m##*/}}; s=${{s%{SESSION_FILES["meta"]}}}',
)


# Where claude may run: inside the base directory (compared as resolved paths, since a symlink
# inside the base may point anywhere) and never the home directory (claude never saves trust
# there, so a session could never start). Needs $base_real.
_DIRECTORY_RULES = (
    'home_real=$(cd -P -- "$HOME" 2>/dev/null && pwd -P)',
    'inside_base() { case "$1/" in "${base_real%/}"/?*) return 0 ;; esac; return 1; }',
    'is_home() { [ "$1" = "$home_real" ]; }',
)


# ── Script builders ───────────────────────────────────────────────────────────────────────────
# One script per tool call; each prints @@ lines for interpret_* and framed claude output.


# A dead pane's exit status or signal reaches tmux a moment after the pty closes; tmux 3.3 has
# been seen never to learn it (its child left unreaped), so after 1 s the pane counts as exited.
_PANE_STATE = (
    "  pane=$(tmux display-message -p -t \"=$session:\" '#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}' "
    "2>/dev/null) || { status=gone; break; }\n"
    '  case "$pane" in 1::) dead=$((dead + 1)); [ $dead -ge 10 ] && { status=exited; code=; break; } ;; '
    '1::*) status=exited; code="signal ${pane##*:}"; break ;; '
    "1:*) status=exited; code=${pane#1:}; code=${code%%:*}; break ;; esac"
)


@dataclass(frozen=True)
class Launch:
    """What a start runs: a Remote Control server, or a conversation with its uuid (and whether
    the first prompt arrives on the script's stdin); `resume` continues an ended one."""

    conversation_uuid: str | None = None
    prompt: bool = False
    resume: bool = False


def claude_arguments(launch: Launch, name: str, spawn: str, permission_mode: str | None) -> list[str]:
    if launch.conversation_uuid is None:
        # --continue reattaches to what claude last recorded for the directory; it refuses --spawn.
        args = ["remote-control", "--name", name] + (["--continue"] if launch.resume else ["--spawn", spawn])
    else:
        args = ["--rc", name, "--resume" if launch.resume else "--session-id", launch.conversation_uuid]
    return args + (["--permission-mode", permission_mode] if permission_mode else [])


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
    launch: Launch = Launch(),
) -> str:
    """Launch claude in a detached tmux session and wait, on the server, for its URL.

    Prints `@@error <code>` for a refusal before launch, or `@@existing <session>` when one of our
    servers already serves that directory; otherwise `@@state launched|consent|connecting|registered`
    as they happen, then `@@status ready|exited|attention|timeout|gone` (`@@exit <code>` for a dead
    pane), the URL as `@@url`, a conversation's registry entry as `@@registry`, and the tail of
    claude's output. One SSH command, no polling from here. A conversation's first prompt is read
    from stdin into a file that only the pane reads.
    """
    q = shlex.quote
    session = TMUX_PREFIX + session_id
    conversation = launch.conversation_uuid is not None
    claude_args = claude_arguments(launch, name, spawn, permission_mode)
    if conversation:
        prelude, prompt_arg = CONVERSATION_PRELUDE, ('"$prompt_file"' if launch.prompt else "-")
    else:
        prelude, prompt_arg = PANE_PRELUDE, ""
    record = "conv" if conversation else "srv"
    if conversation:
        # Signed out, the TUI starts anyway and answers every prompt with "Not logged in": ask first.
        # `auth status` prints JSON by default since 2.1.332 (older versions: with --json).
        preflight = [
            'auth_json() { "$claude" auth status "$@" 2>/dev/null </dev/null | tr -d \'\\n \'; }',
            'auth=$(auth_json); case "$auth" in "{"*) ;; *) auth=$(auth_json --json) ;; esac',
            "case \"$auth\" in *'\"loggedIn\":false'*) echo '@@error signed-out'; exit 0 ;; esac",
        ]
        existing: list[str] = []
    else:
        preflight = []
        # One Remote Control server per directory: a live session of ours there is the answer.
        existing = [
            *_FOR_EACH_SESSION_FILES,
            "  here=0; mode=server",
            '  while IFS=\'\t\' read -r k v; do [ "$k" = dir ] && [ "$v" = "$dir" ] && here=1; '
            '[ "$k" = mode ] && mode=$v; done < "$m"',
            "  [ $here = 1 ] && [ $mode = server ] || continue",
            '  [ "$(tmux display-message -p -t "=$s:" \'#{pane_dead}\' 2>/dev/null)" = 0 ] || continue',
            '  echo "@@existing $s"',
            "  " + _session_paths("$s", "s_"),
            '  [ -s "$s_url_file" ] && IFS= read -r u < "$s_url_file" && printf \'@@url\\t%s\\n\' "$u"',
            "  " + _emit_tail('"$s_log"', nonce),
            "  exit 0",
            "done",
        ]
    if conversation:
        # Up once claude has written its registry entry (past the trust dialog), ready once that
        # names the Remote Control session.
        wait_ready = [
            "  if [ $registered = 0 ] && [ -f \"$registry\" ]; then registered=1; echo '@@state registered'; fi",
            '  if [ $registered = 1 ] && grep -q \'"bridgeSessionId"\' "$registry" 2>/dev/null; then '
            "status=ready; break; fi",
        ]
    else:
        wait_ready = [f'  if grep -a -q -E {q(ENV_URL_ERE)} "$log"; then status=ready; break; fi']
    # A failed first start leaves nothing behind; a failed resume keeps what a later one needs.
    forget = "" if launch.resume else f" {_record_files('$session')}"
    return _remote_script(
        f"base={shell_path(base_dir)}; rel={q(path)}; session={q(session)}; name={q(name)}; timeout={int(timeout)}",
        f"claude={shell_path(claude_bin)}; cfg={CLAUDE_CONFIG}",
        f"state={REMOTE_STATE_DIR}",
        _session_paths("$session"),
        f'record="$state/$session{RECORD_FILES[record]}"; prompt_file="$state/$session.prompt"',
        "command -v tmux >/dev/null 2>&1 || { echo '@@error no-tmux'; exit 0; }",
        "base_real=$(cd -P -- \"$base\" 2>/dev/null && pwd -P) || { echo '@@error no-base'; exit 0; }",
        "dir=$(cd -P -- \"$base/$rel\" 2>/dev/null && pwd -P) || { echo '@@error no-dir'; exit 0; }",
        *_DIRECTORY_RULES,
        "inside_base \"$dir\" || { echo '@@error outside'; exit 0; }",
        "is_home \"$dir\" && { echo '@@error home'; exit 0; }",
        "command -v -- \"$claude\" >/dev/null 2>&1 || { echo '@@error no-claude'; exit 0; }",
        *preflight,
        "umask 077",
        'mkdir -p -- "$state" && chmod 700 -- "$state" || { echo \'@@error state\'; exit 0; }',
        *(["cat > \"$prompt_file\" || { echo '@@error state'; exit 0; }"] if launch.prompt else []),
        # Two starts for one directory at once: the second waits here, then finds the first's session.
        "lock=\"$state/.lock-$(printf '%s' \"$dir\" | cksum | cut -d ' ' -f 1)\"; i=0",
        'until mkdir -- "$lock" 2>/dev/null; do',
        '  i=$((i + 1)); [ $i -ge 100 ] && rm -rf -- "$lock"  # still taken after 5 s: left by a killed start',
        "  sleep 0.05",
        "done",
        'trap \'rmdir -- "$lock" 2>/dev/null; rm -f -- "$prompt_file"\' EXIT',
        *existing,
        # A resumed session takes its id back: only an exited one may be replaced.
        *(
            [
                '[ "$(tmux display-message -p -t "=$session:" \'#{pane_dead}\' 2>/dev/null)" = 0 ] '
                "&& { echo '@@error running'; exit 0; }",
                'tmux kill-session -t "=$session" 2>/dev/null',
            ]
            if launch.resume
            else []
        ),
        "tmux has-session -t \"=$session\" 2>/dev/null && { echo '@@error exists'; exit 0; }",
        'rm -f -- "$url_file"',
        # pipe-pane runs its command through /bin/sh after expanding tmux formats: quote for both.
        "tmux_quote() { printf '%s' \"$1\" | sed -e \"s/'/'\\\\\\\\''/g\" -e 's/#/##/g'; }",
        'qlog=$(tmux_quote "$log")',
        # tmux expands formats (#{…}, #(…)) in -c: start the client in the directory instead.
        "cd -- \"$dir\" || { echo '@@error no-dir'; exit 0; }",
        # The pane has a real TTY for claude. It waits for a signal before exec'ing claude, so
        # pipe-pane and remain-on-exit are in place even if claude dies at once; and the words
        # after new-session's options are exec'd directly, so the login shell does not matter.
        # Variables that make Remote Control refuse to start are removed from claude's environment.
        'tmux new-session -d -s "$session" -x 200 -y 50 '
        f'/bin/sh -c {q(prelude)} "$session-go" "$dir/" {prompt_arg} '
        f'"$claude" {" ".join(q(a) for a in claude_args)} \\; '
        f'pipe-pane -o -t "=$session:" "/bin/sh -c {double_quoted(q(CAP_LOG_SCRIPT))} rc-log \'$qlog\'" \\; '
        'set-option -t "=$session:" remain-on-exit on >/dev/null 2>&1 '
        "|| { tmux kill-session -t \"=$session\" 2>/dev/null; echo '@@error tmux'; exit 0; }",
        # Our session files exist only while the session does (list_sessions relies on that); the
        # record stays for resume_session.
        'printf \'name\\t%s\\npath\\t%s\\ndir\\t%s\\nstarted\\t%s\\n\' "$name" "$rel" "$dir" "$(date +%s)" > "$meta"',
        *(
            [
                f"printf 'mode\\tconversation\\nuuid\\t%s\\n' {q(launch.conversation_uuid or '')} >> \"$meta\"",
            ]
            if conversation
            else []
        ),
        f'cp -- "$meta" "$record" && printf \'permission\\t%s\\n\' {q(permission_mode or "")} >> "$record"',
        *(["printf '0\\n' > \"$state/$session.turn\""] if launch.prompt else []),
        'rmdir -- "$lock" 2>/dev/null',  # the directory is taken: the next start there will find this session
        'tmux wait-for -S "$session-go"',
        "echo '@@state launched'",
        *(
            [
                "pid=$(tmux display-message -p -t \"=$session:\" '#{pane_pid}' 2>/dev/null)",
                'registry="$cfg/sessions/$pid.json"',
            ]
            if conversation
            else []
        ),
        "deadline=$(( $(date +%s) + timeout )); answered=0; connecting=0; dead=0; registered=0; status=timeout",
        "while :; do",
        *wait_ready,
        _PANE_STATE,
        f'  if [ $connecting = 0 ] && grep -a -q -F {q(CONNECTING_LABEL)} "$log"; then',
        "    connecting=1; echo '@@state connecting'",
        "  fi",
        # First run: claude asks before enabling Remote Control. The user asked for exactly that.
        # Once a conversation is up its pane shows the prompt, which may quote these texts.
        f'  if [ $answered = 0 ] && [ $registered = 0 ] && grep -a -q -F {q(CONSENT_PROMPT)} "$log"; then',
        "    tmux send-keys -t \"=$session:\" y Enter; answered=1; echo '@@state consent'",
        "  fi",
        # Prompts only a person should answer (workspace trust; spawn mode, which --spawn avoids).
        f'  [ $registered = 0 ] && grep -a -q -E {q(QUESTIONS_ERE)} "$log" && {{ status=attention; break; }}',
        '  [ "$(date +%s)" -ge "$deadline" ] && break',
        # 20 looks a second: a URL is seen 25 ms after claude prints it, on average, for a few forks
        # (grep, tmux) per look.
        "  sleep 0.05",
        "done",
        "if [ $status = ready ]; then",
        "  " + _save_latest_url('"$log"', '"$url_file"'),
        '  IFS= read -r u < "$url_file" && printf \'@@url\\t%s\\n\' "$u"',
        "fi",
        *(
            ["  " + _read_registry('"$pid"'), '[ -n "$r" ] && printf \'@@registry\\t%s\\n\' "$r"']
            if conversation
            else []
        ),
        'echo "@@status $status"',
        '[ $status = exited ] && echo "@@exit $code"',
        _emit_tail('"$log"', nonce),
        # A session that died or waits for a person is cleaned up, after its output was read.
        "case $status in exited|gone|attention)",
        f'  tmux kill-session -t "=$session" 2>/dev/null; rm -f -- {_session_files("$session")}{forget} ;;',
        "esac",
    )


def build_list_script(nonce: str) -> str:
    """Every `rc-*` tmux session with its metadata, cached URL, a conversation's registry entry and
    the end of its output, then the records of ended sessions that can be resumed — one round trip.
    Also drops files of sessions that no longer exist — only in this server's own state directory.

    The ends of all logs come from one `tail` at the end (a fork per session was 1.5 ms each):
    `@@tailed` marks each session whose log is read, and after `@@tails` come their ends in that
    order, each followed by the line `@@end-<nonce>` — printed by a file holding just that line,
    named after each log on tail's command line. No log can fake it: the nonce is new each call."""
    q_nonce = shlex.quote(nonce)
    return _remote_script(
        f"state={REMOTE_STATE_DIR}; cfg={CLAUDE_CONFIG}",
        f'mark="$state/.list-end.{hashlib.sha256(nonce.encode()).hexdigest()[:16]}"; '
        "trap 'rm -f -- \"$mark\"' EXIT; set --",
        # ':' separates fields: tmux never allows it in session names, and (unlike a tab) tmux
        # does not rewrite it when the locale is not UTF-8. The possibly empty field goes last.
        "panes=$(tmux list-panes -a 2>/dev/null "
        "-F '#{session_name}:#{pane_dead}:#{session_created}:#{pane_pid}:#{pane_dead_status}')",
        # A here-document, not a pipeline: the loop runs in this shell, one fork fewer.
        "while IFS=: read -r session dead created pid code; do",
        f'  case "$session" in {TMUX_PREFIX}?*) ;; *) continue ;; esac',
        '  printf \'@@session\\t%s\\t%s\\t%s\\t%s\\n\' "$session" "$dead" "$created" "$code"',
        # Shell builtins where they repeat per session: a fork per session per line adds up.
        "  " + _session_paths("$session"),
        "  conversation=0",
        '  if [ -f "$meta" ]; then',
        "    while IFS= read -r line; do printf '@@meta\\t%s\\n' \"$line\"; "
        "case $line in 'mode\tconversation') conversation=1 ;; esac; done < \"$meta\"",
        "  fi",
        '  if [ $conversation = 1 ] && [ "$dead" = 0 ]; then',
        "    " + _read_registry('"$pid"'),
        '    [ -n "$r" ] && printf \'@@registry\\t%s\\n\' "$r"',
        "  fi",
        '  [ -f "$log" ] || continue',
        '  if [ $conversation = 0 ] && [ ! -s "$url_file" ]; then',
        "    " + _save_latest_url('"$log"', '"$url_file"'),
        "  fi",
        '  if [ -s "$url_file" ] && IFS= read -r url < "$url_file"; then',
        "    printf '@@url\\t%s\\n' \"$url\"",
        "  fi",
        '  echo @@tailed; set -- "$@" "$log" "$mark"',
        "done <<EOF",
        "$panes",
        "EOF",
        # Files are written only after their session exists, so a session that is not running
        # now (checked again: one may have started since the snapshot) has left them behind.
        *_FOR_EACH_SESSION_FILES,
        '  case "\n$panes" in *"\n$s:"*) continue ;; esac',
        f'  tmux has-session -t "=$s" 2>/dev/null || rm -f -- {_session_files("$s")}',
        "done",
        # Ended sessions that resume_session can bring back (each record's age: its modification time).
        f'for f in "$state"/{TMUX_PREFIX}*{RECORD_FILES["conv"]} "$state"/{TMUX_PREFIX}*{RECORD_FILES["srv"]}; do',
        '  [ -f "$f" ] || continue; s=${f##*/}; s=${s%.*}',
        '  case "\n$panes" in *"\n$s:"*) continue ;; esac',
        f'  if [ -n "$(find "$f" -mtime +{RECORD_DAYS} 2>/dev/null)" ]; then',
        f"    rm -f -- {_record_files('$s')}; continue",
        "  fi",
        '  printf \'@@record\\t%s\\t%s\\t%s\\n\' "$s" "${f##*.}" "$(date -r "$f" +%s 2>/dev/null)"',
        '  while IFS= read -r line; do printf \'@@meta\\t%s\\n\' "$line"; done < "$f"',
        "done",
        # Last: a full disk that leaves the end-line file short costs only the ends of the logs.
        f"if [ $# -gt 0 ] && printf '\\n@@end-%s\\n' {q_nonce} > \"$mark\" &&"
        f' {{ IFS= read -r _; IFS= read -r end; }} < "$mark" && [ "$end" = {shlex.quote("@@end-" + nonce)} ]; then',
        f'  echo @@tails; tail -q -c {LIST_TAIL_BYTES} -- "$@" 2>/dev/null',
        "fi",
        "echo '@@end'",
        rerun_safe=True,
    )


def build_stop_script(session_id: str, forget: bool = False) -> str:
    """Ends the tmux session; the record resume_session needs stays (dated now), unless `forget`."""
    session = shlex.quote(TMUX_PREFIX + session_id)
    keep = (
        f"rm -f -- {_record_files('$session')}"
        if forget
        else f'for f in {_record_files("$session")}; do [ -f "$f" ] && touch -- "$f"; done'
    )
    return _remote_script(
        f"state={REMOTE_STATE_DIR}; session={session}",
        "pid=$(tmux display-message -p -t \"=$session:\" '#{pane_pid}' 2>/dev/null)",
        # `=` makes the target exact: "rc-al" must never match "rc-alpha-…".
        'if tmux kill-session -t "=$session" 2>/dev/null; then r=stopped; else r=not-found; fi',
        f'rm -f -- {_session_files("$session")} "$state/$session.prompt"',
        'rmdir -- "$state/$session.sending" 2>/dev/null',
        f'known=0; for f in {_record_files("$session")}; do [ -f "$f" ] && known=1; done',
        keep,
        # claude holds its directory until it has exited: wait (≤ 5 s) so a new start there works.
        # A zombie counts as exited (some containers' init never reaps orphans).
        'alive() { kill -0 "$1" 2>/dev/null && ! ps -o stat= -p "$1" 2>/dev/null | grep -q "^Z"; }',
        'i=0; while [ -n "$pid" ] && [ $i -lt 250 ] && alive "$pid"; do sleep 0.02; i=$((i + 1)); done',
        'echo "@@$r"',
        '[ $known = 1 ] && echo "@@record"',
        "exit 0",
    )


def build_record_script(session_id: str) -> str:
    """What resume_session needs: the session's record, its age, and whether it still runs."""
    session = shlex.quote(TMUX_PREFIX + session_id)
    return _remote_script(
        f"state={REMOTE_STATE_DIR}; session={session}",
        '[ "$(tmux display-message -p -t "=$session:" \'#{pane_dead}\' 2>/dev/null)" = 0 ] && echo "@@running"',
        f'for f in "$state/$session{RECORD_FILES["conv"]}" "$state/$session{RECORD_FILES["srv"]}"; do',
        '  [ -f "$f" ] || continue',
        '  printf \'@@record\\t%s\\t%s\\t%s\\n\' "$session" "${f##*.}" "$(date -r "$f" +%s 2>/dev/null)"',
        '  while IFS= read -r line; do printf \'@@meta\\t%s\\n\' "$line"; done < "$f"; break',
        "done",
        rerun_safe=True,
    )


TurnAction = Literal["reply", "send", "interrupt", "allow", "deny"]
PERMISSION_KEYS = {"allow": "1", "deny": "Escape"}  # the prompt's "1. Yes"; Esc is its "No"


def build_turn_script(
    *, session_id: str, action: TurnAction, wait: float, expect_size: int = -1, read_max: int = TRANSCRIPT_READ_MAX
) -> str:
    """A conversation's turn: do `action` (paste the prompt from stdin, interrupt, answer the
    permission prompt), then follow the transcript from the last prompt's offset until the turn
    has its outcome, claude waits for someone, the pane exits, or `wait` seconds pass.

    Prints `@@error unknown` for no such conversation, `@@refused <why>` when the action was not
    done (and why), `@@sent <offset>`, `@@noprompt`; new transcript lines as `@@t<TAB><json>`
    (complete lines only, at most `read_max` bytes — `@@skipped` when older ones were left out),
    the registry entry as `@@registry` whenever it changes, and at the end `@@size <offset>` and
    `@@status done|waiting|running|exited`. An answer is sent only while the transcript still
    ends at `expect_size`: a newer prompt of claude cannot be answered by a stale decision.
    """
    q = shlex.quote
    session = TMUX_PREFIX + session_id
    act = {
        "reply": [],
        "send": [
            'prompt_file="$state/$session.prompt"; lock="$state/$session.sending"',
            # The prompt file goes with the script however it ends (a dropped connection: SIGPIPE).
            "trap 'rm -f -- \"$prompt_file\"' EXIT; trap 'rm -f -- \"$prompt_file\"; exit 1' HUP PIPE TERM",
            'umask 077; cat > "$prompt_file" || { refuse state; exit 0; }',
            # The lock is held only from the idle check to Enter (well under a second); one older
            # than a minute was left by a killed send.
            '[ -n "$(find "$lock" -prune -mmin +1 2>/dev/null)" ] && rmdir -- "$lock" 2>/dev/null',
            "if [ $live = 0 ]; then refuse exited",
            # Two prompts at once: the second one is refused, not queued behind the first.
            'elif ! mkdir -- "$lock" 2>/dev/null; then refuse sending',
            'elif [ $s != idle ]; then rmdir -- "$lock"; refuse $s',
            "else",
            '  size=0; find_transcript && size=$(wc -c < "$t")',
            # C-u empties the input box; -p wraps the text in a bracketed paste, so its newlines
            # are text, not Enter, and the whole prompt arrives as one.
            '  if tmux load-buffer -b "$session-prompt" "$prompt_file" && tmux send-keys -t "=$session:" C-u '
            '&& tmux paste-buffer -p -d -b "$session-prompt" -t "=$session:"; then',
            # Something opened a dialog meanwhile: Enter would answer it. Leave the text in the box.
            "    " + _read_registry('"$pid"'),
            "    if [ $s != idle ]; then refuse $s; else",
            '      tmux send-keys -t "=$session:" Enter',
            '      printf \'%s\\n\' "$size" > "$turn"; off=$size; echo "@@sent $size"',
            "    fi",
            "  else refuse tmux; fi",
            '  rmdir -- "$lock"',
            "fi",
        ],
        "interrupt": [
            "if [ $live = 1 ] && { [ $s = busy ] || [ $s = waiting ]; }; then",
            "  tmux send-keys -t \"=$session:\" Escape; echo '@@interrupting'",
            # Esc ends the turn (or answers a permission prompt with No, and the turn goes on).
            "  i=0; while [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); " + _read_registry('"$pid"') + "; "
            '[ $s = idle ] && break; [ $i = 20 ] && tmux send-keys -t "=$session:" Escape; done',
            "fi",
        ],
        "allow": [],
        "deny": [],
    }[action]
    if action in ("allow", "deny"):
        act = [
            '  size=0; find_transcript && size=$(wc -c < "$t")',
            "case \"$r\" in *'permission prompt'*) waiting_permission=1 ;; *) waiting_permission=0 ;; esac",
            "if [ $live = 1 ] && [ $s = waiting ] && [ $waiting_permission = 1 ] "
            f'&& [ "$size" = {int(expect_size)} ]; then',
            f"  tmux send-keys -t \"=$session:\" {PERMISSION_KEYS[action]}; echo '@@answered'",
            "  i=0; while [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); "
            + _read_registry('"$pid"')
            + "; [ $s = waiting ] || break; done",
            "else refuse stale; fi",
        ]
    return _remote_script(
        f"state={REMOTE_STATE_DIR}; cfg={CLAUDE_CONFIG}; session={q(session)}; wait={int(wait)}",
        'conv="$state/$session.conv"; turn="$state/$session.turn"',
        # A server session takes no prompts; anything else is not ours.
        '[ -f "$conv" ] || { if [ -f "$state/$session.meta" ] || [ -f "$state/$session.srv" ]; then '
        "echo '@@error server'; else echo '@@error unknown'; fi; exit 0; }",
        'uuid=; while IFS=\'\t\' read -r k v; do [ "$k" = uuid ] && uuid=$v; done < "$conv"',
        "case \"$uuid\" in ''|*[!0-9a-f-]*) echo '@@error unknown'; exit 0 ;; esac",
        'off=; [ -f "$turn" ] && IFS= read -r off < "$turn"',
        "case \"$off\" in ''|*[!0-9]*) off= ;; esac",
        "pane() { p=$(tmux display-message -p -t \"=$session:\" '#{pane_dead}:#{pane_pid}' 2>/dev/null) || p=gone; "
        "case $p in 0:*) pid=${p#0:}; live=1 ;; *) pid=; live=0 ;; esac; }",
        'find_transcript() { [ -n "$t" ] && return 0; for f in "$cfg"/projects/*/"$uuid.jsonl"; do '
        '[ -f "$f" ] && t=$f; done; [ -n "$t" ]; }',
        "t=; pane; " + _read_registry('"$pid"'),
        'refuse() { echo "@@refused $1"; wait=0; }',  # an action not done: report at once
        *act,
        "[ -n \"$off\" ] || { echo '@@noprompt'; off=0; }",
        f"deadline=$(( $(date +%s) + wait )); seen=0; last=; left={int(read_max)}",
        "while :; do",
        # Only complete lines: the last byte read must be a newline (claude may be mid-write).
        '  if find_transcript && size=$(wc -c < "$t") && [ "$size" -gt "$off" ] '
        '&& [ -z "$(tail -c +"$size" "$t" | tr -d \'\\n\')" ]; then',
        # At most read_max bytes per call, the newest ones; the outcome is looked for in all of it.
        '    from=$off; [ $((size - off)) -gt $left ] && { from=$((size - left)); echo "@@skipped $from"; }',
        "    [ $from -lt $size ] && tail -c +$((from + 1)) \"$t\" | head -c $((size - from)) | sed 's/^/@@t\t/'",
        "    left=$((left - size + from))",
        f'    tail -c +$((off + 1)) "$t" | head -c $((size - off)) | grep -q -E {q(TURN_OUTCOME_ERE)} && seen=1',
        "    off=$size",
        "  fi",
        '  [ "$r" = "$last" ] || printf \'@@registry\\t%s\\n\' "$r"; last=$r',
        "  [ $live = 1 ] || { status=exited; break; }",
        "  [ $s = waiting ] && { status=waiting; break; }",
        "  [ $s = idle ] && [ $seen = 1 ] && { status=done; break; }",
        '  [ "$(date +%s)" -ge $deadline ] && { status=running; break; }',
        "  sleep 0.2; pane; " + _read_registry('"$pid"'),
        "done",
        'echo "@@size $off"; echo "@@status $status"',
    )


def build_projects_script(base_dir: str) -> str:
    """Directories up to two levels below the base that hold `.git` or `.claude`, NUL-separated;
    hidden ones are skipped by the glob; symlinks leading outside the base and the home directory
    (where claude cannot run) are dropped."""
    return _remote_script(
        f"cd -P -- {shell_path(base_dir)} 2>/dev/null || {{ echo '@@error no-base'; exit 0; }}",
        "base_real=$(pwd -P)",
        *_DIRECTORY_RULES,
        "echo '@@projects'",
        "for d in */ */*/; do",
        '  [ -d "$d" ] || continue',
        "  d=${d%/}",
        '  { [ -e "$d/.git" ] || [ -e "$d/.claude" ]; } || continue',
        # "./": `cd -- -` would go to $OLDPWD, not into a directory named '-'
        '  real=$(cd -P -- "./$d" 2>/dev/null && pwd -P) || continue',
        '  is_home "$real" && continue',
        '  inside_base "$real" && printf \'%s\\0\' "$d"',
        "done",
        rerun_safe=True,
    )


def build_check_script(base_dir: str, claude_bin: str) -> str:
    base = shell_path(base_dir)
    return _remote_script(
        f"claude={shell_path(claude_bin)}",
        "printf '@@tmux\\t%s\\n' \"$(tmux -V 2>/dev/null)\"",
        'printf \'@@claude_path\\t%s\\n\' "$(command -v -- "$claude" 2>/dev/null)"',
        # Where a login shell finds claude, to suggest CLAUDE_BIN when the plain PATH does not.
        "printf '@@claude_login_path\\t%s\\n' \"$(bash -lc 'command -v claude' 2>/dev/null </dev/null | tail -n 1)\"",
        'printf \'@@claude_version\\t%s\\n\' "$("$claude" --version 2>/dev/null </dev/null | head -n 1)"',
        # `auth status` prints JSON by default since 2.1.332 (older versions: with --json)
        'auth_json() { "$claude" auth status "$@" 2>/dev/null </dev/null | tr -d \'\\n\'; }',
        'auth=$(auth_json); case "$auth" in "{"*) ;; *) auth=$(auth_json --json) ;; esac',
        "printf '@@claude_auth\\t%s\\n' \"$auth\"",
        f"if [ -d {base} ] && [ -r {base} ] && [ -x {base} ]; then echo '@@base\tok'; else echo '@@base\tmissing'; fi",
        rerun_safe=True,
    )


def parse_script_output(output: str, nonce: str = "") -> list[tuple[str, list[str]]]:
    """Script output as (key, fields) pairs: `@@key\\tfield\\tfield` lines, and ("tail", [text])
    for each framed piece of raw claude output: after `@@tail` one, after `@@tails` one for each
    `@@tailed` before it. Anything else (a chatty login shell) is ignored."""
    events: list[tuple[str, list[str]]] = []
    end_marker = f"\n@@end-{nonce}\n"
    position = 0
    while position < len(output):
        newline = output.find("\n", position)
        line = output[position:] if newline < 0 else output[position:newline]
        position = len(output) if newline < 0 else newline + 1
        if line in ("@@tail", "@@tails") and nonce:
            if line == "@@tails":
                events.append(("tails", []))
            for _ in range(1 if line == "@@tail" else sum(key == "tailed" for key, _ in events)):
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


# ── Host keys ─────────────────────────────────────────────────────────────────────────────────


def host_key_fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def describe_key(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {host_key_fingerprint(key)}"


class HostKeyTrust:
    """Which host key the dev server may present: the one pinned by SSH_KNOWN_HOSTS, or else the
    first one seen, recorded in a known_hosts file; any other key stops the connection before
    authentication, so nothing runs on a server that may be an impostor."""

    def __init__(
        self,
        target: str,
        pinned: paramiko.HostKeys | None,
        record_path: Path,
        record: bool = True,
        pin_name: str = "SSH_KNOWN_HOSTS",
    ):
        self.target = target
        self.pinned = pinned
        self.pin_name = pin_name  # how messages name the setting that pins the key
        self.record_path = record_path
        self.record = record  # False: a first key is accepted, not written down (`check` writes nothing)

    def known_keys(self) -> tuple[str, Mapping[str, paramiko.PKey] | None]:
        """Where the server's key is pinned or recorded, and the keys there for it."""
        if self.pinned is not None:
            return self.pin_name, self.pinned.lookup(self.target)
        source = str(self.record_path)
        try:
            return source, parse_known_hosts(self.record_path.read_text()).lookup(self.target)
        except FileNotFoundError:
            return source, None
        except (OSError, ValueError) as exc:
            raise HostKeyError(
                f"cannot read the recorded host keys in {source} ({exc}). Nothing was run. Fix or delete that file."
            ) from exc

    def key_types(self) -> list[str]:
        """The key types to negotiate first, so the server offers one that can be checked."""
        known = self.known_keys()[1]
        return list(known.keys()) if known else []

    def verify(self, key: paramiko.PKey) -> None:
        target, offered = self.target, describe_key(key)
        source, known = self.known_keys()
        if not known and self.pinned is None:
            if self.record:
                self._record(key)
            else:
                log.info("host key %s of %s is not recorded yet: the server records it", offered, target)
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
        pinned = ", ".join(describe_key(k) for k in known.values())
        raise HostKeyError(
            f"HOST KEY MISMATCH for {target}: the server offered {offered}, but {source} has {pinned}. "
            "Nothing was run. Someone may be intercepting the connection, or the server was reinstalled. "
            "Check the fingerprint on the server (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub`); only if it "
            f"really changed, replace the entry for {target} in {source} and restart."
        )

    def _record(self, key: paramiko.PKey) -> None:
        path = self.record_path
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_private_file(path, f"{self.target} {key.get_name()} {key.get_base64()}\n".encode(), "append")
        except OSError as exc:
            raise HostKeyError(
                f"cannot record the dev server's host key in {path} ({exc}); set {self.pin_name}"
            ) from exc
        log.warning(
            "first connection to %s: recorded its host key %s in %s (trust on first use). Set %s to pin it instead.",
            self.target,
            describe_key(key),
            path,
            self.pin_name,
        )


# ── Runners ───────────────────────────────────────────────────────────────────────────────────
# A runner runs one POSIX sh script on the dev server: LocalRunner on this machine, SSHRunner
# (next section) over SSH.

PRIVATE_ENV = frozenset({"MCP_SECRET", "SSH_PRIVATE_KEY", "SSH_PASSPHRASE"})  # never passed to local commands


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


LineCallback = Callable[[str], Coroutine[Any, Any, None]]


class LineSplitter:
    """Complete lines of a byte stream, as they arrive."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[str]:
        *complete, self._pending = (self._pending + chunk).split(b"\n")
        return [line.decode(errors="replace") for line in complete]


class Runner(Protocol):
    async def connect(self) -> str | None:
        """Reach the dev server now (start-up warm-up, `check`): what was reached, or None locally."""
        ...

    async def run(
        self, script: str, *, timeout: float, on_line: LineCallback | None = None, stdin: bytes = b""
    ) -> CommandResult:
        """Run the script; `stdin` is its standard input (then end of file), so data never passes
        through a shell parser."""
        ...

    async def close(self) -> None: ...


class LocalRunner:
    """Local mode: the same scripts, run on this machine by /bin/sh."""

    async def connect(self) -> str | None:
        return None

    async def run(
        self, script: str, *, timeout: float, on_line: LineCallback | None = None, stdin: bytes = b""
    ) -> CommandResult:
        # This server's own secrets must not reach tmux, claude or the sessions' environment.
        env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            script,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # so the whole process group can be ended
        )
        stdout_pipe, stderr_pipe = proc.stdout, proc.stderr
        if stdout_pipe is None or stderr_pipe is None:
            raise RuntimeError("the subprocess has no pipes")
        stdout = bytearray()
        lines = LineSplitter()

        async def read_stdout() -> None:
            while chunk := await stdout_pipe.read(65536):
                stdout.extend(chunk)
                if on_line is not None:
                    for line in lines.feed(chunk):
                        await on_line(line)

        async def write_stdin() -> None:
            if proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    proc.stdin.write(stdin)
                    await proc.stdin.drain()
                proc.stdin.close()

        try:
            async with asyncio.timeout(timeout):
                stderr, _, _ = await asyncio.gather(stderr_pipe.read(), read_stdout(), write_stdin())
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


# ── SSH runner ────────────────────────────────────────────────────────────────────────────────
# One kept connection (host key checked before authentication). Short scripts run in a few kept
# remote shells (no channel to open, no exec request, no sshd session fork: one round trip);
# long commands (start_session, conversation turns, anything with stdin) get a channel each.

# OpenSSH's default MaxSessions is 10 channels per connection; an 11th fails. Stay below it.
SSH_MAX_CHANNELS = 8
TOOL_CALL_SECONDS = 295  # Claude.ai gives a tool call 300 s
# Of those, kept for the shells of short scripts: however many long commands wait (8 starts
# waiting for claude), a list_sessions never waits behind them. Beside them one spare channel,
# opened ahead for the next long command (9 of sshd's 10).
SSH_SHELLS = 2
SSH_KEEPALIVE = 30


class SSHPool:
    """The kept SSH connection: opened on first use, shared by every command, replaced when it
    drops; a connection taken out of service closes once its last command is done."""

    def __init__(self, config: Config, record_host_keys: bool = True):
        self.config = config
        self.trust = HostKeyTrust(
            config.ssh_target,
            config.known_hosts,
            config.host_keys_path,
            record_host_keys,
            config.setting("SSH_KNOWN_HOSTS"),
        )
        self._transport: paramiko.Transport | None = None
        self._in_use: dict[paramiko.Transport, int] = {}  # commands running, per connection
        self._lock = threading.Lock()
        self.connects = 0  # how many connections were opened (for tests and benchmarks)

    def _open_socket(self, timeout: float) -> socket.socket:
        config = self.config
        last_error: OSError | None = None
        try:
            addresses = socket.getaddrinfo(config.ssh_host, config.ssh_port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise RemoteError(
                f"cannot resolve the dev server {config.ssh_host!r}: {exc}. Check {config.setting('SSH_HOST')}."
            ) from exc
        for family, kind, proto, _, address in addresses:
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as exc:
                last_error = exc
                continue
            try:
                # Before connect: avoids Nagle x delayed-ACK stalls (44 ms → 2 ms per exec on loopback).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(timeout)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                last_error = exc
        raise RemoteError(
            f"cannot connect to the dev server {config.ssh_target}: {last_error}. "
            f"Check {config.setting('SSH_HOST')} and {config.setting('SSH_PORT')}, and that sshd is running."
        )

    def _connect(self, deadline: float) -> paramiko.Transport:
        """Connect, check the host key and authenticate before the deadline (a frozen sshd accepts
        the TCP connection, then says nothing)."""
        config = self.config

        def remaining() -> float:
            return max(deadline - time.monotonic(), 0.1)

        transport = paramiko.Transport(self._open_socket(remaining()))
        transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = remaining()
        try:
            known_types = self.trust.key_types()
            if known_types:  # negotiate the host key type we can check, as OpenSSH does
                options = transport.get_security_options()
                options.key_types = known_types + [t for t in options.key_types if t not in known_types]
            try:
                transport.start_client(timeout=remaining())
                key = transport.get_remote_server_key()
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise RemoteError(
                    f"SSH handshake with {config.ssh_target} failed within {config.connect_timeout:g} s "
                    f"({describe_error(exc)}): is sshd running and responsive there?"
                ) from exc
            self.trust.verify(key)
            transport.auth_timeout = remaining()
            try:
                transport.auth_publickey(config.ssh_user, typing.cast(paramiko.PKey, config.ssh_key))
            except paramiko.AuthenticationException as exc:
                raise RemoteError(
                    f"the dev server refused the key for user {config.ssh_user!r} ({describe_error(exc)}). Add the "
                    f"public key to ~{config.ssh_user}/.ssh/authorized_keys, or fix {config.setting('SSH_USER')} / "
                    f"{config.setting('SSH_PRIVATE_KEY')}."
                ) from exc
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise RemoteError(f"SSH authentication with {config.ssh_target} failed: {describe_error(exc)}") from exc
        except BaseException:
            transport.close()
            raise
        transport.set_keepalive(SSH_KEEPALIVE)
        self.connects += 1
        log.info("connected to %s", self.describe(transport))
        return transport

    def describe(self, transport: paramiko.Transport) -> str:
        key = transport.get_remote_server_key()
        return f"{self.config.ssh_user}@{self.config.ssh_target}, host key {describe_key(key)}"

    def acquire(self, deadline: float | None = None) -> paramiko.Transport:
        """The shared connection (opened or reopened as needed, by the deadline), counted as in use."""
        with self._lock:
            transport = self._transport
            if transport is not None and not transport.is_active():
                self._transport = None
                self._close_if_idle(transport)
                transport = None
            if transport is None:
                transport = self._transport = self._connect(deadline or time.monotonic() + self.config.connect_timeout)
            self._in_use[transport] = self._in_use.get(transport, 0) + 1
            return transport

    def acquire_current(self) -> paramiko.Transport | None:
        """The shared connection counted as in use if it is up; None rather than connecting."""
        with self._lock:
            transport = self._transport
            if transport is None or not transport.is_active():
                return None
            self._in_use[transport] += 1
            return transport

    def release(self, transport: paramiko.Transport, retire: bool = False) -> None:
        """Give the connection back; a retired one takes no new commands and closes when idle."""
        with self._lock:
            if transport not in self._in_use:  # the pool was closed meanwhile: nothing left to count
                transport.close()
                return
            self._in_use[transport] -= 1
            if retire and self._transport is transport:
                self._transport = None
            if transport is not self._transport:
                self._close_if_idle(transport)

    def _close_if_idle(self, transport: paramiko.Transport) -> None:
        if self._in_use.get(transport, 0) <= 0:
            self._in_use.pop(transport, None)
            transport.close()

    def close(self) -> None:
        with self._lock:
            for transport in {*self._in_use, *([self._transport] if self._transport else [])}:
                transport.close()
            self._in_use.clear()
            self._transport = None


class ShellLost(Exception):
    """A kept shell ended, or its connection broke, before a script's end marker (internal);
    `sent` says whether the script may have run."""

    def __init__(self, detail: str, sent: bool):
        super().__init__(detail)
        self.sent = sent


class ShellSilent(Exception):
    """A kept shell did not even begin a script within SSH_CONNECT_TIMEOUT (internal): the
    connection or sshd is frozen, as an unanswered channel open would show."""


class RemoteShell:
    """A kept `/bin/sh` (no PTY) on a channel of its own, reading scripts from its stdin. Each
    script runs in a subshell with stdin from /dev/null, as the word of an `eval` (so its text is
    never parsed by the kept shell itself), between begin and end lines carrying a nonce chosen
    per script — on stdout and on stderr, the end line of stdout with the exit status. Nothing the
    script prints can fake them: it never sees the nonce."""

    def __init__(self, transport: paramiko.Transport, channel: paramiko.Channel):
        self.transport = transport
        self.channel = channel
        self.pid: int | None = None  # the shell's process on the server, once it has run a script
        self.runs = 0

    def alive(self) -> bool:
        channel = self.channel
        return (
            self.transport.is_active()
            and not channel.closed
            and not channel.eof_received
            and not channel.exit_status_ready()
            and not channel.recv_ready()  # output between scripts: something outlived its script
            and not channel.recv_stderr_ready()
        )

    def run(self, script: str, timeout: float, answer_within: float) -> CommandResult:
        """Run `script`; its begin line must arrive within `answer_within` seconds (one round trip)."""
        nonce = secrets.token_hex(16)
        begin, end = f"{nonce}-begin ".encode(), f"\n{nonce} ".encode()
        err_begin, err_end = f"{nonce}-begin\n".encode(), f"\n{nonce}\n".encode()
        wrapper = (
            f"printf '%s %s\\n' {nonce}-begin $$; printf '%s\\n' {nonce}-begin >&2; "
            f"( eval {shlex.quote(script)} ) </dev/null; "
            f"printf '\\n%s %s\\n' {nonce} $?; printf '\\n%s\\n' {nonce} >&2\n"
        )
        deadline = time.monotonic() + timeout
        answer_deadline = min(deadline, time.monotonic() + answer_within)
        channel = self.channel
        try:
            channel.settimeout(max(timeout, 0.1))
            channel.sendall(wrapper.encode())
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ShellLost(describe_error(exc), sent=False) from exc
        stdout, stderr = bytearray(), bytearray()
        status: int | None = None
        err_done = False
        while status is None or not err_done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RemoteError(f"the command on the dev server did not finish within {timeout:g} s")
            wait = min(remaining, 1.0)
            if status is None and begin not in stdout:
                if time.monotonic() >= answer_deadline:
                    raise ShellSilent()
                wait = min(wait, max(answer_deadline - time.monotonic(), 0.01))
            channel.settimeout(wait)
            try:
                # stdout first; once its end line is in, stderr's follows at once
                chunk = channel.recv(65536) if status is None else channel.recv_stderr(65536)
            except TimeoutError:
                chunk = None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise ShellLost(describe_error(exc), sent=True) from exc
            if chunk == b"":
                raise ShellLost("the shell on the dev server ended", sent=True)
            if chunk is not None:
                (stdout if status is None else stderr).extend(chunk)
            while channel.recv_stderr_ready():
                stderr += channel.recv_stderr(65536)
            if status is None:
                status = self._end_status(stdout, begin, end)
            err_done = err_done or err_end in stderr
        out_from = stdout.index(begin) + len(begin)
        line_end = stdout.index(b"\n", out_from)
        if self.pid is None and stdout[out_from:line_end].isdigit():
            self.pid = int(stdout[out_from:line_end])
        err_from = stderr.find(err_begin)
        err_from = 0 if err_from < 0 else err_from + len(err_begin)
        self.runs += 1
        return CommandResult(
            status,
            stdout[line_end + 1 : stdout.rindex(end)].decode(errors="replace"),
            stderr[err_from : stderr.rindex(err_end)].decode(errors="replace"),
        )

    @staticmethod
    def _end_status(stdout: bytearray, begin: bytes, end: bytes) -> int | None:
        """The exit status once the end line has arrived after the begin line; else None."""
        start = stdout.find(begin)
        at = stdout.find(end, start + 1) if start >= 0 else -1
        line_end = stdout.find(b"\n", at + len(end)) if at >= 0 else -1
        if line_end < 0:
            return None
        code = stdout[at + len(end) : line_end]
        if not code.isdigit():
            raise ShellLost("the shell's output lost its framing", sent=True)
        return int(code)

    def close(self) -> None:
        self.channel.close()


class SSHRunner:
    """Commands over the pool's connection, never more channels at once than sshd's default
    MaxSessions allows: short scripts in up to SSH_SHELLS kept shells, long ones (stdin, progress
    lines, or a timeout above COMMAND_TIMEOUT) each on a channel of its own, from a separate
    allowance so neither waits for the other. All blocking work runs in worker threads."""

    def __init__(self, config: Config, record_host_keys: bool = True):
        self.config = config
        self.pool = SSHPool(config, record_host_keys)
        # Awaited before a worker thread is taken, so waiting commands never hold threads that
        # the token endpoints need.
        self._channels: asyncio.Semaphore | None = None
        self._shell_turns: asyncio.Semaphore | None = None
        self._threads: anyio.CapacityLimiter | None = None
        self._idle_shells: list[RemoteShell] = []  # each holds its connection in use
        self._shells_lock = threading.Lock()  # also for the spare channel
        self._spare: tuple[paramiko.Transport, paramiko.Channel] | None = None  # holds its connection in use
        self._refilling = False
        self._closed = False
        self.execs = 0  # how many commands were run (for tests and benchmarks)
        self.shells_opened = 0

    @property
    def connects(self) -> int:
        return self.pool.connects

    def _open_channel(self, transport: paramiko.Transport, deadline: float) -> paramiko.Channel:
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
                raise ConnectionLost(describe_error(exc)) from exc

    def _channel(self) -> tuple[paramiko.Transport, paramiko.Channel]:
        """A new channel on the shared connection (held in use), reconnecting once if it dropped."""
        deadline = time.monotonic() + self.config.connect_timeout  # for a channel, reconnect included
        for attempt in (1, 2):
            transport = self.pool.acquire(deadline)
            try:
                return transport, self._open_channel(transport, deadline)
            except ConnectionLost as exc:
                # The connection dropped since its last use: reconnect once. Safe: nothing ran.
                self.pool.release(transport, retire=True)
                if attempt == 2 or time.monotonic() >= deadline:
                    raise RemoteError(
                        f"cannot open an SSH channel to {self.config.ssh_target} within "
                        f"{self.config.connect_timeout:g} s ({exc}): is sshd running and responsive there?"
                    ) from exc
            except BaseException:
                self.pool.release(transport)
                raise
        raise AssertionError("unreachable")

    def _exec(self, script: str, timeout: float, on_line: LineCallback | None, stdin: bytes) -> CommandResult:
        # The login shell may be fish or zsh: run POSIX sh explicitly.
        transport, channel = self._started("/bin/sh -c " + shlex.quote(script))
        self.execs += 1
        retire = False
        try:
            self._refill_spare()
            if stdin:
                channel.settimeout(timeout)
                channel.sendall(stdin)
            channel.shutdown_write()
            return self._read(channel, timeout, on_line)
        except RemoteError:
            # Timed out: the command still holds its channel slot on the server, so new
            # commands go to a fresh connection.
            retire = True
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            retire = True
            raise CommandInterrupted(describe_error(exc)) from exc
        finally:
            channel.close()
            self.pool.release(transport, retire)
            self._drop_stale_shells()  # here, on a worker thread: it may wait for the pool's lock

    def _exec_request(self, channel: paramiko.Channel, command: str) -> None:
        """channel.exec_command, bounded: paramiko waits for sshd's answer without a timeout, so a
        frozen dev server would hold the call (and a channel slot) for good. After
        SSH_CONNECT_TIMEOUT the channel is closed, which ends the wait: a RemoteError."""
        unanswered = threading.Event()

        def give_up() -> None:
            unanswered.set()
            channel.close()

        timer = threading.Timer(self.config.connect_timeout, give_up)
        timer.daemon = True
        with contextlib.suppress(RuntimeError):  # no thread to be had (a task limit): unbounded, as paramiko is
            timer.start()
        try:
            channel.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError):
            if not unanswered.is_set():
                raise
        finally:
            timer.cancel()
        if unanswered.is_set():
            raise RemoteError(
                f"the dev server did not answer over SSH within {self.config.connect_timeout:g} s "
                f"({self.config.ssh_target}): is sshd running and responsive there?"
            )

    def _started(self, command: str) -> tuple[paramiko.Transport, paramiko.Channel]:
        """A channel running `command` (held in use): the spare one if it is still open — the
        command then costs one round trip, not two — else a new one."""
        spare = self._take_spare()
        if spare is not None:
            transport, channel = spare
            try:
                self._exec_request(channel, command)
                return spare
            except (paramiko.SSHException, EOFError, OSError) as exc:
                channel.close()
                if not transport.is_active():  # dropped while the request was on its way: it may have run
                    self.pool.release(transport, retire=True)
                    raise CommandInterrupted(describe_error(exc)) from exc
                # sshd closed the channel while it waited (ChannelTimeout): the request found no
                # channel and ran nothing, so a new channel takes the command.
                self.pool.release(transport)
            except BaseException:
                channel.close()
                self.pool.release(transport, retire=True)
                raise
        transport, channel = self._channel()
        try:
            self._exec_request(channel, command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            channel.close()
            self.pool.release(transport, retire=True)
            raise CommandInterrupted(describe_error(exc)) from exc
        except BaseException:
            channel.close()
            self.pool.release(transport, retire=True)
            raise
        return transport, channel

    def _take_spare(self) -> tuple[paramiko.Transport, paramiko.Channel] | None:
        with self._shells_lock:
            spare, self._spare = self._spare, None
        if spare is None:
            return None
        transport, channel = spare
        if transport is self.pool._transport and transport.is_active() and not channel.closed:
            return spare
        channel.close()
        self.pool.release(transport, retire=not transport.is_active())
        return None

    def _refill_spare(self) -> None:
        """Opens the spare channel in the background, on the connection that is up."""
        with self._shells_lock:
            if self._spare is not None or self._refilling or self._closed:
                return
            self._refilling = True
        try:
            threading.Thread(target=self._open_spare, name="rc_mcp-spare-channel", daemon=True).start()
        except RuntimeError as exc:  # no thread to be had (a task limit): no spare this time
            log.debug("no spare SSH channel: %s", exc)
            with self._shells_lock:
                self._refilling = False

    def _open_spare(self) -> None:
        try:
            transport = self.pool.acquire_current()
            if transport is None:
                return
            try:
                channel = transport.open_session(timeout=self.config.connect_timeout)
            except Exception as exc:  # MaxSessions, a drop, the pool closed: no spare then
                self.pool.release(transport)
                log.debug("no spare SSH channel: %s", describe_error(exc))
                return
            with self._shells_lock:
                if self._spare is None and not self._closed and transport is self.pool._transport:
                    self._spare = (transport, channel)
                    return
            channel.close()
            self.pool.release(transport)
        finally:
            with self._shells_lock:
                self._refilling = False

    def _read(self, channel: paramiko.Channel, timeout: float, on_line: LineCallback | None) -> CommandResult:
        deadline = time.monotonic() + timeout
        stdout = bytearray()
        stderr = bytearray()
        lines = LineSplitter()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RemoteError(f"the command on the dev server did not finish within {timeout:g} s")
            channel.settimeout(min(remaining, 1.0))
            try:
                chunk = channel.recv(65536)
            except TimeoutError:
                chunk = None
            while channel.recv_stderr_ready():
                stderr += channel.recv_stderr(65536)
            if chunk is None:
                continue
            if not chunk:
                break
            stdout += chunk
            if on_line is not None:
                for line in lines.feed(chunk):
                    anyio.from_thread.run(on_line, line)
        channel.settimeout(max(deadline - time.monotonic(), 0.1))
        status = channel.recv_exit_status()
        if status == -1:  # the channel closed without an exit status: the connection broke
            raise CommandInterrupted("the SSH connection closed before the command finished")
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(65536)
        return CommandResult(status, stdout.decode(errors="replace"), stderr.decode(errors="replace"))

    def _take_shell(self) -> RemoteShell:
        """An idle kept shell on the current connection, or a new one (at most SSH_SHELLS exist:
        only that many scripts take one at a time)."""
        with self._shells_lock:
            while self._idle_shells:
                shell = self._idle_shells.pop()
                if shell.alive() and shell.transport is self.pool._transport:
                    return shell
                self._drop_shell(shell)
        transport, channel = self._channel()
        try:
            # exec, so the login shell (fish, zsh…) leaves only POSIX sh behind; no PTY: no echo,
            # no prompt, and stdout and stderr stay apart.
            self._exec_request(channel, "exec /bin/sh -s")
        except RemoteError:
            channel.close()
            self.pool.release(transport, retire=True)
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            channel.close()
            self.pool.release(transport, retire=True)
            raise ShellLost(describe_error(exc), sent=False) from exc
        self.shells_opened += 1
        return RemoteShell(transport, channel)

    def _drop_shell(self, shell: RemoteShell, retire: bool = False) -> None:
        shell.close()
        self.pool.release(shell.transport, retire or not shell.transport.is_active())

    def _drop_stale_shells(self) -> None:
        """Idle shells (and the spare channel) of a connection taken out of service: closed, so
        that connection can close."""
        with self._shells_lock:
            current = self.pool._transport
            for shell in [s for s in self._idle_shells if s.transport is not current]:
                self._idle_shells.remove(shell)
                self._drop_shell(shell)
            spare = self._spare
            if spare is not None and spare[0] is not current:
                self._spare = None
                spare[1].close()
                self.pool.release(spare[0])

    def _short(self, script: str, timeout: float) -> CommandResult:
        try:
            return self._in_shell(script, timeout)
        finally:
            self._drop_stale_shells()  # here, on a worker thread: it may wait for the pool's lock

    def _in_shell(self, script: str, timeout: float) -> CommandResult:
        # Sent again after a lost shell only if it never reached the shell, or says it is safe.
        rerun_safe = is_rerun_safe(script)
        for attempt in (1, 2):
            shell = self._take_shell()
            self.execs += 1
            try:
                result = shell.run(script, timeout, self.config.connect_timeout)
            except ShellSilent:
                self._drop_shell(shell, retire=True)
                raise RemoteError(
                    f"the dev server did not answer over SSH within {self.config.connect_timeout:g} s "
                    f"({self.config.ssh_target}): is sshd running and responsive there?"
                ) from None
            except ShellLost as exc:
                self._drop_shell(shell)
                if attempt == 1 and (rerun_safe or not exc.sent):
                    log.info("the kept shell on the dev server was lost (%s); running the script again", exc)
                    continue
                raise CommandInterrupted(str(exc)) from exc
            except RemoteError:
                # Timed out: its script still runs there and holds a channel slot, as an exec would.
                self._drop_shell(shell, retire=True)
                raise
            except BaseException:
                self._drop_shell(shell)
                raise
            with self._shells_lock:
                self._idle_shells.append(shell)
            return result
        raise AssertionError("unreachable")

    def _connect_now(self) -> str:
        transport = self.pool.acquire()
        self.pool.release(transport)
        return "SSH " + self.pool.describe(transport)

    async def connect(self) -> str | None:
        return await anyio.to_thread.run_sync(self._connect_now, limiter=self._threads)

    def is_short(self, timeout: float, on_line: LineCallback | None, stdin: bytes) -> bool:
        """A script for a kept shell: no input, no progress lines, no wait beyond COMMAND_TIMEOUT."""
        return not stdin and on_line is None and timeout <= self.config.command_timeout

    async def run(
        self, script: str, *, timeout: float, on_line: LineCallback | None = None, stdin: bytes = b""
    ) -> CommandResult:
        # Worker threads of its own: SSH commands that wait never hold the threads the OAuth
        # endpoints need, nor another dev server's.
        if self._threads is None:
            self._threads = anyio.CapacityLimiter(SSH_MAX_CHANNELS + 1)
        if self.is_short(timeout, on_line, stdin):
            if self._shell_turns is None:
                self._shell_turns = asyncio.Semaphore(SSH_SHELLS)
            async with self._shell_turns:
                return await anyio.to_thread.run_sync(self._short, script, timeout, limiter=self._threads)
        if self._channels is None:
            self._channels = asyncio.Semaphore(SSH_MAX_CHANNELS - SSH_SHELLS)
        # A long command waits for a channel only as long as the whole call still ends within
        # the time Claude.ai gives a tool.
        try:
            await asyncio.wait_for(self._channels.acquire(), max(TOOL_CALL_SECONDS - timeout, 1.0))
        except TimeoutError:
            raise RemoteError(
                f"{SSH_MAX_CHANNELS - SSH_SHELLS} long commands (starts, waits for answers) are already running on "
                "the dev server; try again when one of them ends"
            ) from None
        try:
            return await anyio.to_thread.run_sync(self._exec, script, timeout, on_line, stdin, limiter=self._threads)
        finally:
            self._channels.release()

    async def close(self) -> None:
        with self._shells_lock:
            self._closed = True
            shells, self._idle_shells = self._idle_shells, []
            spare, self._spare = self._spare, None
        for shell in shells:
            shell.close()
        if spare is not None:
            spare[1].close()
        self.pool.close()


def make_runner(config: Config) -> Runner:
    return LocalRunner() if config.local else SSHRunner(config)


# ── Tool inputs ───────────────────────────────────────────────────────────────────────────────
# Each input rule is defined once: the tool schema and the check (whose refusal the model reads)
# both come from it.


@dataclass(frozen=True)
class InputRule:
    """One tool input: the constraints clients see in its schema, and the check whose refusal
    tells the model what a valid value looks like and which tool to call."""

    description: str
    refusal: str  # {value} is the refused value
    pattern: str = ""
    max_length: int = 0
    choices: tuple[str, ...] = ()

    @property
    def field(self) -> Any:
        if self.choices:
            return Field(description=self.description)  # the Literal type gives the schema its enum
        return Field(pattern=self.pattern, min_length=1, max_length=self.max_length, description=self.description)

    def check(self, value: object) -> str:
        shown = repr(value)[:80] if isinstance(value, str) else f"{json.dumps(value)[:80]} (not a string)"
        if not isinstance(value, str):
            raise ValueError(self.refusal.format(value=shown))
        if self.choices:
            if value not in self.choices:
                raise ValueError(self.refusal.format(value=shown))
        elif len(value) > self.max_length or not re.fullmatch(self.pattern, value):
            raise ValueError(self.refusal.format(value=shown))
        return value


SESSION_NAME = InputRule(
    description="Short label shown in claude.ai/code: 1-41 letters, digits, '-' or '_'",
    refusal="invalid name {value}: use 1-41 letters, digits, '-' or '_', starting with a letter or digit "
    "(e.g. 'my-app')",
    pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$",
    max_length=41,
)
PROJECT_PATH = InputRule(
    description="Project directory relative to the projects base directory, e.g. 'my-app' or 'org/repo' "
    "(list_projects returns the accepted values)",
    refusal="invalid path {value}: give a directory relative to the projects base directory (no leading '/', no "
    "control characters, no '.' or '..') — call list_projects for the accepted values",
    pattern=rf"^[^/{CONTROL_CHARS}][^{CONTROL_CHARS}]*$",
    max_length=1024,
)
SESSION_ID = InputRule(
    description="Session id exactly as returned by start_session or list_sessions, e.g. 'my-app-a1b2c3' "
    "(with several dev servers, 'home.my-app-a1b2c3')",
    refusal="no session {value}: ids look like 'my-project-a1b2c3' (the name, '-', 6 hex digits; with several dev "
    "servers the host and '.' first) — call list_sessions for the ids",
    pattern=r"^(?:" + DEV_SERVER_NAME_RE.pattern[1:-1] + r"\.)?" + SESSION_NAME.pattern[1:-1] + r"-[0-9a-f]{6}$",
    max_length=48 + 33,
)
HOST = InputRule(
    description="Which dev server (see list_hosts); default: the first one",
    refusal="no dev server {value}: host names are lowercase letters, digits and '-' — call list_hosts for them",
    pattern=DEV_SERVER_NAME_RE.pattern,
    max_length=32,
)
PERMISSION_MODE = InputRule(
    description="claude's permission mode for the sessions (default: server setting, else claude's)",
    refusal="invalid permission_mode {value}: use one of " + ", ".join(PERMISSION_MODES) + " (or leave it out)",
    choices=PERMISSION_MODES,
)
SessionName = Annotated[str, SESSION_NAME.field, SESSION_NAME]
ProjectPath = Annotated[str, PROJECT_PATH.field, PROJECT_PATH]
SessionId = Annotated[str, SESSION_ID.field, SESSION_ID]
HostName = Annotated[str | None, HOST.field, HOST]
PermissionModeInput = Annotated[PermissionMode | None, PERMISSION_MODE.field, PERMISSION_MODE]


def validate_name(name: str) -> str:
    return SESSION_NAME.check(name)


def validate_session_id(session_id: str) -> str:
    """An id without its host: Hosts.pick has taken the host off."""
    SESSION_ID.check(session_id)
    if "." in session_id:
        raise ValueError(SESSION_ID.refusal.format(value=repr(session_id)[:80]))
    return session_id


def validate_project_path(path: str) -> str:
    """A path relative to PROJECTS_BASE_DIR, normalized (`a//b/` → `a/b`). The server also checks
    that it resolves inside the base directory, symlinks included."""
    PROJECT_PATH.check(path)
    segments = [s for s in path.split("/") if s]
    if not segments or any(s in (".", "..") for s in segments):
        raise ValueError(PROJECT_PATH.refusal.format(value=repr(path)[:80]))
    return "/".join(segments)


# ── Session results ───────────────────────────────────────────────────────────────────────────
# What the tools return, and the pure interpretation of what the scripts printed.


class SessionStarted(BaseModel):
    id: str = Field(description="Session id, for stop_session")
    url: str | None = Field(description="Open this at claude.ai/code (null while still starting)")
    status: Literal["ready", "starting", "connected"]
    path: str = Field(description="Project path relative to the projects base directory")
    name: str
    session_url: str | None = Field(default=None, description="URL of a session a device is attached to")
    already_running: bool = Field(default=False, description="True when this directory's running session was returned")
    mode: Literal["server", "conversation"] = "server"
    host: str | None = Field(default=None, description="The dev server (DEV_SERVERS); pass it back as host")
    message: str


class SessionInfo(BaseModel):
    id: str
    host: str | None = None
    name: str | None = None
    url: str | None = Field(default=None, description="Environment URL to open at claude.ai/code")
    session_url: str | None = None
    status: SessionStatus
    reason: str | None = Field(default=None, description="Why the session needs attention, and the fix")
    path: str | None = None
    started: str | None = Field(default=None, description="ISO 8601, UTC")
    exit_code: int | None = None
    mode: Literal["server", "conversation"] = "server"
    state: Literal["idle", "busy", "waiting"] | None = Field(
        default=None, description="A conversation's state in claude's session registry"
    )
    waiting_for: str | None = Field(default=None, description="What a waiting conversation waits for")
    last_activity: str | None = Field(default=None, description="ISO 8601, UTC: claude's last change of state")
    resumable: bool = Field(default=False, description="resume_session can bring it back once it has ended")


class HostError(BaseModel):
    host: str
    error: str = Field(description="Why this dev server's part is missing (the others are listed)")


class SessionList(BaseModel):
    sessions: list[SessionInfo]
    errors: list[HostError] = Field(default_factory=list, description="Dev servers that could not be asked")


class SessionStopped(BaseModel):
    id: str
    host: str | None = None
    stopped: bool
    forgotten: bool = Field(default=False, description="What resume_session would need was removed")
    message: str


class HostProjects(BaseModel):
    host: str
    projects: list[str] = Field(default_factory=list)
    error: str | None = None


class ProjectList(BaseModel):
    projects: list[str] = Field(description="Values accepted by start_session's path (on the first dev server)")
    hosts: list[HostProjects] = Field(default_factory=list, description="Each dev server's projects")


# Refusals of the start script, before anything was launched: what happened and the fix.
START_ERRORS = {
    "no-tmux": "tmux is not installed on the dev server. Install it there (e.g. `sudo apt install tmux`).",
    "no-base": "the projects base directory {base} does not exist on the dev server. Fix {base_setting}.",
    "no-dir": "there is no directory {path!r} in {base}. Call list_projects for the available paths.",
    "outside": "{path!r} resolves outside {base} (through a symlink); only projects inside it can be used.",
    "home": "{path!r} is the home directory, where claude never saves workspace trust; pick a project directory.",
    "no-claude": "the claude CLI ({claude}) was not found on the dev server. Install Claude Code there, or set "
    "{claude_setting} to its absolute path (`command -v claude` in a login shell shows it).",
    "state": "cannot create the state directory (~/.local/state/rc-mcp) on the dev server; check the home "
    "directory's permissions and free space.",
    "exists": "a session with id {id} already exists; call start_session again.",
    "tmux": "tmux could not create the session on the dev server; run `tmux new-session -d true` there to see why.",
    "signed-out": "claude is not logged in on the dev server (`claude auth status` says so): run `claude auth login` "
    "there with a claude.ai account, then start again. Nothing was started.",
    "running": "session {id} is still running: send it a prompt, or stop it first.",
}

Event = tuple[str, list[str]]


def first_fields(events: list[Event], key: str) -> list[str] | None:
    """The fields of the first event with this key, or None."""
    return next((fields for k, fields in events if k == key), None)


def first_field(events: list[Event], key: str, default: str = "") -> str:
    fields = first_fields(events, key)
    return fields[0] if fields else default


def still_starting(session_id: str, name: str, path: str, message: str) -> SessionStarted:
    """A session launched that has no URL yet: never a made-up one."""
    return SessionStarted(id=session_id, url=None, status="starting", path=path, name=name, message=message)


def interpret_start(
    events: list[Event],
    *,
    session_id: str,
    name: str,
    path: str,
    config: Config,
    launch: Launch = Launch(),
    id_prefix: str = "",
) -> SessionStarted:
    """What the start script's output means for the model: a session, or a ToolFailure with the fix."""
    tail = first_field(events, "tail")
    urls = extract_remote_control_urls(tail + "\n" + "\n".join(first_fields(events, "url") or []))
    if first_fields(events, "error") is not None:
        code = first_field(events, "error", "?")
        template = START_ERRORS.get(code, "the dev server refused to start the session ({code}).")
        details = {
            "base": config.projects_base_dir,
            "path": path,
            "id": session_id,
            "claude": config.claude_bin,
            "base_setting": config.setting("PROJECTS_BASE_DIR"),
            "claude_setting": config.setting("CLAUDE_BIN"),
        }
        raise ToolFailure(
            ("Not resumed: " if launch.resume else "Not started: ") + template.format(code=code, **details)
        )
    if launch.conversation_uuid is not None:
        return interpret_conversation_start(events, session_id=session_id, name=name, path=path, launch=launch)
    if first_fields(events, "existing") is not None:
        existing_id = id_prefix + first_field(events, "existing")[len(TMUX_PREFIX) :]
        url = urls.environment_url
        return SessionStarted(
            id=existing_id,
            url=url,
            status="connected" if classify_session(tail)[0] == "connected" else ("ready" if url else "starting"),
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
    status = first_field(events, "status", "gone")
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
        return still_starting(
            session_id,
            name,
            path,
            f"Session {session_id} was launched in {path} but claude printed no URL within "
            f"{config.start_timeout:g} s. It is still running: call list_sessions in a minute to get the "
            "URL, or stop_session to give up. Last output:\n" + (tail_lines(tail) or "(none)"),
        )
    raise start_failure(events, tail, path, "started", "claude remote-control exited{code} before printing a URL")


def start_failure(events: list[Event], tail: str, path: str, verb: str, exited: str) -> ToolFailure:
    """Why a start left nothing running: a question only a person should answer, or claude's exit."""
    explanation = explain_failure(tail, path)
    if first_field(events, "status") == "attention":
        cause = explanation or "claude is waiting for an answer on the dev server."
        return ToolFailure(f"Not {verb}: {cause} Nothing is left running. Its last output:\n{tail_lines(tail)}")
    exit_code = first_field(events, "exit")
    cause = explanation or "see its last output below, and run `python rc_mcp.py check` on the server."
    return ToolFailure(
        exited.format(code=f" (code {exit_code})" if exit_code else "")
        + f"; nothing is left running. Cause: {cause}\nIts last output:\n{tail_lines(tail) or '(none)'}"
    )


def interpret_conversation_start(
    events: list[Event], *, session_id: str, name: str, path: str, launch: Launch
) -> SessionStarted:
    tail = first_field(events, "tail")
    status = first_field(events, "status", "gone")
    registry = parse_registry("\t".join(first_fields(events, "registry") or []))
    url = registry_url(registry)
    started = "resumed" if launch.resume else "started"
    then = (
        f"It is working on the prompt: get_reply('{session_id}') returns the answer; send_prompt follows up."
        if launch.prompt
        else f"Send it a prompt with send_prompt('{session_id}', …)."
    )
    if status in ("ready", "timeout") and registry:
        link = f"Open {url} to watch or take over." if url else "claude has not named its Remote Control link yet."
        return SessionStarted(
            id=session_id,
            url=url,
            session_url=url,
            status="ready" if url else "starting",
            path=path,
            name=name,
            mode="conversation",
            message=f"Conversation {session_id} {started} in {path}. {then} {link}",
        )
    if status == "timeout":
        return SessionStarted(
            id=session_id,
            url=None,
            status="starting",
            path=path,
            name=name,
            mode="conversation",
            message=f"Conversation {session_id} was launched in {path}, but claude has not come up within the start "
            "timeout. It is still running: list_sessions shows its state, stop_session gives up. Last output:\n"
            + (tail_lines(tail) or "(none)"),
        )
    raise start_failure(events, tail, path, started, "claude exited{code} before the conversation was up")


def iso_from_seconds(text: str) -> str | None:
    return datetime.datetime.fromtimestamp(int(text), datetime.UTC).isoformat() if text.isdigit() else None


def interpret_list(events: list[Event], now: float | None = None) -> list[SessionInfo]:
    """The sessions the list script found, oldest first, then the ended ones that can be resumed;
    anything not ours is ignored. The ends of the logs come last, in the order of `tailed`."""
    now = time.time() if now is None else now
    sessions: dict[str, SessionInfo] = {}
    current: SessionInfo | None = None
    registry: dict[str, Any] | None = None
    registries: dict[str, dict[str, Any]] = {}
    awaiting: collections.deque[SessionInfo | None] = collections.deque()  # whose log ends come, in order
    for key, fields in events:
        if key == "tailed":
            awaiting.append(current)
            continue
        if key == "tail":
            current = awaiting.popleft() if awaiting else None
            registry = registries.get(current.id) if current is not None else None
        if key in ("session", "record"):
            current, registry = None, None
            session_id = fields[0][len(TMUX_PREFIX) :] if fields else ""
            if not re.fullmatch(SESSION_ID.pattern, session_id) or session_id in sessions:
                continue  # not one of ours, or a second pane of the same session
        if key == "session" and len(fields) >= 4:
            dead = fields[1] == "1"
            current = sessions[session_id] = SessionInfo(
                id=session_id,
                status="exited" if dead else "starting",
                started=iso_from_seconds(fields[2]),
                exit_code=int(fields[3]) if dead and fields[3].lstrip("-").isdigit() else None,
            )
        elif key == "record" and len(fields) >= 3:
            # An ended session: a conversation can always be resumed (claude keeps its transcript),
            # a server only within claude's own window, counted from when it was stopped.
            conversation = fields[1] == RECORD_FILES["conv"][1:]
            ended = int(fields[2]) if fields[2].isdigit() else 0
            if not conversation and now - ended > SERVER_RESUME_WINDOW:
                continue
            current = sessions[session_id] = SessionInfo(
                id=session_id,
                status="stopped",
                mode="conversation" if conversation else "server",
                resumable=True,
                last_activity=iso_from_seconds(fields[2]),
            )
        elif current is None:
            continue
        elif key == "meta" and len(fields) == 2:
            if fields[0] == "name" and re.fullmatch(SESSION_NAME.pattern, fields[1]):
                current.name = fields[1]
            elif fields[0] == "path":
                with contextlib.suppress(ValueError):
                    current.path = validate_project_path(fields[1])
            elif fields[0] == "started" and current.started is None:
                current.started = iso_from_seconds(fields[1])
            elif fields == ["mode", "conversation"]:
                current.mode = "conversation"
                current.resumable = True
        elif key == "registry" and fields:
            registry = registries[current.id] = parse_registry("\t".join(fields))
            state = registry.get("status")
            current.state = state if state in ("idle", "busy", "waiting") else None
            waiting = registry.get("waitingFor")
            current.waiting_for = waiting if current.state == "waiting" and isinstance(waiting, str) else None
            current.last_activity = registry_time(registry)
            current.session_url = current.url = registry_url(registry)
        elif key == "url" and fields and current.mode == "server":
            current.url = extract_remote_control_urls(fields[0]).environment_url
        elif key == "tail" and fields:
            if current.status == "exited":
                current.reason = explain_failure(fields[0], current.path or "the project")
            elif current.mode == "conversation":
                status, reason = classify_session(fields[0])
                if status == "needs attention":
                    current.status, current.reason = status, reason
                elif registry:
                    current.status = "ready"
                if current.state == "waiting":
                    current.reason = f"waits for {current.waiting_for or 'a person'}: answer it at the session's link"
            else:
                urls = extract_remote_control_urls(fields[0])
                current.session_url = urls.session_url
                current.url = current.url or urls.environment_url
                current.status, current.reason = classify_session(fields[0])
                if current.status == "starting" and current.url:
                    current.status = "ready"
    return sorted(sessions.values(), key=lambda s: (s.status == "stopped", s.started or "", s.id))


def interpret_record(events: list[Event], session_id: str, now: float) -> dict[str, str]:
    """The validated record of an ended session, or a ToolFailure saying why it cannot be resumed."""
    if first_fields(events, "running") is not None:
        raise ToolFailure(f"Session {session_id} is still running: nothing to resume. list_sessions shows it.")
    header = first_fields(events, "record")
    if header is None or len(header) < 3:
        raise ToolFailure(
            f"Nothing to resume for {session_id!r}: no record of it on the dev server (never started here, or "
            "stopped with forget). Call list_sessions for the ids, or start_session for a new one."
        )
    record = {fields[0]: fields[1] for key, fields in events if key == "meta" and len(fields) == 2}
    try:
        record["name"] = validate_name(record.get("name", ""))
        record["path"] = validate_project_path(record.get("path", ""))
    except ValueError as exc:
        raise ToolFailure(
            f"The record of {session_id} on the dev server is damaged ({exc}); start a new session."
        ) from exc
    if record.get("permission") and record["permission"] not in PERMISSION_MODES:
        record["permission"] = ""
    if header[1] == RECORD_FILES["conv"][1:]:
        if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", record.get("uuid", "")):
            raise ToolFailure(f"The record of {session_id} on the dev server is damaged (no conversation id).")
        return record
    record.pop("uuid", None)
    ended = int(header[2]) if header[2].isdigit() else 0
    if now - ended > SERVER_RESUME_WINDOW:
        raise ToolFailure(
            f"Session {session_id} ended {(now - ended) / 3600:.1f} h ago; claude remote-control resumes only what it "
            f"recorded within about {SERVER_RESUME_WINDOW // 3600} h. Start a new session with start_session."
        )
    return record


def interpret_projects(output: str, base_dir: str, base_setting: str = "PROJECTS_BASE_DIR") -> list[str]:
    """The projects script's NUL-separated paths, each one start_session accepts."""
    _, found, listing = output.partition("@@projects\n")
    if not found:
        raise ToolFailure(START_ERRORS["no-base"].format(base=base_dir, base_setting=base_setting))
    projects = set()
    for entry in listing.split("\0"):
        with contextlib.suppress(ValueError):
            if entry and validate_project_path(entry) == entry:
                projects.add(entry)
    return sorted(projects, key=str.lower)


# ── Conversation turns ────────────────────────────────────────────────────────────────────────
# A conversation's transcript and registry entry, as the turn script streams them: what the
# turn did, what it waits for, and its answer — only what claude wrote, nothing inferred.

MAX_PROMPT_BYTES = 120_000  # claude takes the first prompt as one argument: Linux caps those at 128 KiB
PROMPT_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0/C1 controls but tab and newline
DEFAULT_WAIT = 90
MAX_WAIT = 240  # Claude.ai gives a tool call 300 s
SERVER_RESUME_WINDOW = 4 * 3600  # claude remote-control --continue finds what it recorded within ~4 h
MAX_ACTIONS = 50
ACTION_DETAIL = 200
ACTION_KEYS = ("command", "file_path", "path", "pattern", "url", "query", "description", "prompt", "skill")
INTERRUPTED_MARK = "[Request interrupted by user"
SUBAGENT_TOOLS = frozenset({"Task", "Agent"})
COMMAND_TAG_RE = re.compile(r"^<command-name>(/[^<]*)</command-name>")
LOCAL_OUTPUT_RE = re.compile(r"<local-command-(?:stdout|stderr)>(.*?)</local-command-(?:stdout|stderr)>", re.S)


def clean_prompt(prompt: str) -> tuple[str, int]:
    """The prompt as it is sent (controls but tab and newline removed, as a paste would end at
    one), and how many characters were removed; ValueError when nothing is left or it is too big."""
    if not isinstance(prompt, str):
        raise ValueError("prompt must be a string")
    cleaned = PROMPT_CONTROL_RE.sub("", prompt.replace("\r\n", "\n"))
    removed = len(prompt) - len(cleaned) - prompt.count("\r\n")
    if not cleaned.strip():
        raise ValueError("the prompt is empty: give claude an instruction or a slash command such as /review")
    if cleaned.lstrip().startswith("!"):
        # In the TUI a leading '!' runs the rest as a shell command, without claude's permission prompt.
        raise ValueError(
            "a prompt starting with '!' would run a shell command in claude's bash mode, past its permission prompt: "
            "ask claude to run it instead (e.g. 'run `make test`')"
        )
    try:
        size = len(cleaned.encode())
    except UnicodeEncodeError:
        raise ValueError("the prompt holds invalid Unicode (a lone surrogate): send it as plain UTF-8 text") from None
    if size > MAX_PROMPT_BYTES:
        raise ValueError(
            f"the prompt is {size:,} bytes; at most {MAX_PROMPT_BYTES:,} are sent. Put long material in a file in the "
            "project and ask claude to read it."
        )
    return cleaned, removed


class Action(BaseModel):
    tool: str
    detail: str = Field(default="", description="The command run, the file edited, … (shortened)")


class PermissionRequest(BaseModel):
    tool: str
    detail: str = ""
    prompt_id: str = Field(
        description="Pass to answer_permission: it answers this prompt and no later one (empty: only a person at the "
        "link can answer it)"
    )


def entry_text(content: Any) -> str:
    """The text of a message's content: a string, or its text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def describe_action(block: Mapping[str, Any]) -> Action:
    tool_input = block.get("input")
    detail = ""
    if isinstance(tool_input, dict):
        detail = next((str(tool_input[k]) for k in ACTION_KEYS if isinstance(tool_input.get(k), str)), "")
    detail = " ".join(detail.split())
    if len(detail) > ACTION_DETAIL:
        detail = detail[: ACTION_DETAIL - 1] + "…"
    return Action(tool=str(block.get("name") or "?")[:60], detail=detail)


class TurnLog:
    """The main chain of a transcript from one prompt on, fed one JSON line at a time."""

    def __init__(self, expected_prompt: str | None = None):
        self.expected = expected_prompt  # what send_prompt pasted; None: whatever the last prompt was
        self.prompt: str | None = None  # the prompt as the transcript has it
        self.newer_prompts = 0  # prompts after the first one
        self.exact = True  # the transcript has the expected prompt as sent
        self.actions: list[Action] = []
        self.dropped_actions = 0
        self.pending: dict[str, Action] = {}  # tool_use id → action without a result yet
        self._texts: dict[str, list[str]] = {}
        self._last_text_id: str | None = None
        self.answer_complete = False  # the last message with text has its stop_reason
        self.local_output: list[str] = []
        self.api_error: str | None = None
        self.interrupted = False
        self.ended = False
        self.skipped = False
        self._assumed = False  # the prompt was taken as read: its line was left out

    def skip(self) -> None:
        """Older lines were left out. The offset is where our prompt begins: if its line was among
        them, the turn is still ours."""
        self.skipped = True
        if self.prompt is None:
            self._begin(self.expected or "")
            self._assumed = True

    def _begin(self, text: str) -> None:
        """A prompt: the first one after the offset is ours; a later one (typed at the link, say)
        takes over, since the answer belongs to the newest prompt."""
        if self._assumed:
            self._assumed = False  # the prompt's own line after all: it was not left out
        elif self.prompt is not None:
            self.newer_prompts += 1
        elif self.expected is not None:
            command = self.expected.startswith("/") and text.startswith("/")
            self.exact = command or text.strip() == self.expected.strip()
        self.prompt = text
        self.actions, self.pending, self._texts, self._last_text_id = [], {}, {}, None
        self.local_output, self.api_error, self.interrupted, self.ended = [], None, False, False
        self.dropped_actions = 0

    def feed(self, line: str) -> str | None:
        """Take one transcript line; a progress message when the turn advanced visibly."""
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        if not isinstance(entry, dict) or entry.get("isSidechain") is True:
            return None  # subagents' own chains are theirs, not the answer
        kind, message = entry.get("type"), entry.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if kind == "user" and not entry.get("isMeta"):
            return self._user(content)
        if self.prompt is None:
            return None
        if kind == "assistant" and isinstance(message, dict):
            return self._assistant(entry, message, content)
        if kind == "system" and entry.get("subtype") == "turn_duration":
            self.ended = True
        elif kind == "system" and entry.get("subtype") == "local_command":
            found = LOCAL_OUTPUT_RE.findall(str(entry.get("content") or ""))
            self.local_output += [text.strip() for text in found if text.strip()]
        return None

    def _user(self, content: Any) -> str | None:
        if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
            for block in content:
                if isinstance(block, dict):
                    self.pending.pop(str(block.get("tool_use_id")), None)
            return None
        text = entry_text(content)
        if isinstance(content, list) and text.startswith(INTERRUPTED_MARK):  # claude's own mark, not a typed prompt
            if self.prompt is not None:
                self.interrupted = True
                return "the turn was interrupted"
            return None
        if not text:
            return None
        command = COMMAND_TAG_RE.match(text)
        self._begin(text if command is None else command.group(1))
        return "claude has the prompt"

    def _assistant(self, entry: Mapping[str, Any], message: Mapping[str, Any], content: Any) -> str | None:
        if entry.get("isApiErrorMessage") or entry.get("error"):
            self.api_error = entry_text(content).strip() or str(entry.get("error"))
            return "claude's API answered with an error"
        progress = None
        message_id = str(message.get("id") or entry.get("uuid") or "")
        for block in content if isinstance(content, list) else [{"type": "text", "text": str(content or "")}]:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and block.get("text"):
                self._texts.setdefault(message_id, []).append(str(block["text"]))
                self._last_text_id = message_id
                self.answer_complete = message.get("stop_reason") not in (None, "tool_use")
                progress = "claude is writing its answer"
            elif block.get("type") == "thinking":
                progress = "claude is thinking"
            elif block.get("type") == "tool_use":
                action = describe_action(block)
                self.pending[str(block.get("id"))] = action
                if len(self.actions) < MAX_ACTIONS:
                    self.actions.append(action)
                else:
                    self.dropped_actions += 1
                progress = f"claude uses {action.tool}" + (f": {action.detail}" if action.detail else "")
        return progress

    @property
    def reply(self) -> str | None:
        """The final answer: every text of the last message that had text, as claude wrote it."""
        if self._last_text_id is not None:
            return "".join(self._texts[self._last_text_id])
        return "\n".join(self.local_output) if self.local_output else None

    @property
    def complete(self) -> bool:
        """Whether the answer is whole: the turn ended, or its last text has its stop reason and no
        tool call is open, or a local command answered."""
        if self.ended:
            return True
        if self._last_text_id is not None:
            return self.answer_complete and not self.pending
        return bool(self.local_output)

    def permission(self, registry: Mapping[str, Any]) -> PermissionRequest | None:
        """What a permission prompt asks: the one tool call without a result. With several open
        (claude asks about them in turn) or a subagent's (its own calls are in its own file), which
        one the dialog shows is not known here: it is reported without a prompt_id, so the chat
        cannot answer it."""
        if registry.get("waitingFor") != "permission prompt" or not self.pending:
            return None
        tool_id, action = list(self.pending.items())[-1]
        if len(self.pending) > 1 or action.tool in SUBAGENT_TOOLS:
            what = "one of several tool calls" if len(self.pending) > 1 else "a tool call of a subagent"
            return PermissionRequest(tool=action.tool, detail=f"{what}; see the link", prompt_id="")
        return PermissionRequest(tool=action.tool, detail=action.detail, prompt_id=tool_id)


def parse_registry(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def registry_url(registry: Mapping[str, Any]) -> str | None:
    """The claude.ai/code link of the conversation's Remote Control session."""
    bridge = registry.get("bridgeSessionId")
    if isinstance(bridge, str) and re.fullmatch(r"(?:session|cse)_[A-Za-z0-9_-]{1,128}", bridge):
        return f"https://claude.ai/code/{bridge}"
    return None


def registry_time(registry: Mapping[str, Any]) -> str | None:
    stamps = [v for k in ("statusUpdatedAt", "updatedAt") if isinstance(v := registry.get(k), int | float)]
    if not stamps:
        return None
    with contextlib.suppress(OverflowError, OSError, ValueError):
        return datetime.datetime.fromtimestamp(max(stamps) / 1000, datetime.UTC).isoformat()
    return None


TurnStatus = Literal["done", "running", "waiting", "exited", "idle", "interrupted"]


class TurnResult(BaseModel):
    id: str
    host: str | None = None
    status: TurnStatus = Field(
        description="done: the answer is in reply; running: the turn goes on (call get_reply); waiting: claude "
        "waits for a person (waiting_for); exited: claude ended (resume_session); idle: no prompt yet; interrupted"
    )
    reply: str | None = Field(default=None, description="claude's final answer, exactly as written")
    actions: list[Action] = Field(default_factory=list, description="What the turn did so far")
    waiting_for: str | None = None
    permission: PermissionRequest | None = None
    url: str | None = Field(default=None, description="The session at claude.ai/code")
    interrupted: bool | None = Field(default=None, description="interrupt_session: the turn was stopped")
    answered: bool | None = Field(default=None, description="answer_permission: the prompt was answered")
    message: str


REFUSALS = {
    "exited": "claude in session {id} has exited: resume_session('{id}') brings the conversation back.",
    "sending": "another prompt is being sent to session {id} right now; try again once it is done.",
    "busy": "session {id} is busy with a turn. get_reply('{id}') waits for its answer; interrupt_session('{id}') "
    "stops it.",
    "none": "claude in session {id} has not registered itself yet (still starting, or showing a dialog): see "
    "list_sessions, or open the session's link.",
    "unknown": "claude in session {id} reports a state this server does not know; open the session's link.",
    "tmux": "tmux could not type into session {id} on the dev server; see list_sessions.",
    "state": "the state directory on the dev server is not writable; check its permissions and free space.",
    "stale": "the permission prompt you answered is no longer the one session {id} shows (it was answered, or "
    "another one came): nothing was pressed. Call get_reply('{id}', wait_seconds=0) for the current one.",
}


def waiting_text(session_id: str, waiting_for: str | None, permission: PermissionRequest | None) -> str:
    if permission is not None:
        what = f"permission to use {permission.tool}" + (f" ({permission.detail})" if permission.detail else "")
        return f"session {session_id} waits for {what}: approve or deny it at the session's link"
    return f"session {session_id} waits for a person ({waiting_for or 'a dialog'}): answer it at the session's link"


def interpret_turn(
    session_id: str, log: TurnLog, events: list[Event], *, allow_approvals: bool = False, removed: int = 0
) -> TurnResult:
    """What a turn script's events and transcript lines mean for the model. An API error or a
    refusal is a ToolFailure; an answer is only ever claude's own text."""
    error = first_field(events, "error")
    if error == "server":
        raise ToolFailure(
            f"session {session_id} is a Remote Control server: it takes prompts at its link, not from here. Start a "
            "conversation with start_session(..., prompt=…) to talk to claude from this chat."
        )
    if error:
        raise ToolFailure(f"no conversation {session_id!r} on the dev server: call list_sessions for the ids.")
    registry: dict[str, Any] = {}
    for key, fields in events:
        if key == "registry" and fields:
            registry = parse_registry("\t".join(fields)) or registry
    url = registry_url(registry)
    waiting_for = registry.get("waitingFor") if isinstance(registry.get("waitingFor"), str) else None
    permission = log.permission(registry)
    refused = first_field(events, "refused")
    if refused:
        if refused == "waiting":
            cause = waiting_text(session_id, waiting_for, permission)
            if permission is not None and permission.prompt_id and allow_approvals:
                cause += f", or with answer_permission(prompt_id='{permission.prompt_id}')"
            raise ToolFailure(f"Not done: {cause}." + (f" Link: {url}" if url else ""))
        cause = REFUSALS.get(refused, REFUSALS["unknown"]).format(id=session_id)
        raise ToolFailure(f"Not done: {cause}" + (f" Link: {url}" if url else ""))
    status = first_field(events, "status", "running")
    actions = list(log.actions)
    notes = []
    if removed:
        notes.append(f"{removed} control character(s) were removed from the prompt before it was sent.")
    if not log.exact:
        notes.append("claude's transcript holds the prompt in a different form than it was sent.")
    if log.newer_prompts:
        notes.append("Another prompt followed (typed at the session's link): this is the state of the newest one.")
    if log.skipped:
        notes.append("The turn's transcript was too long to read whole: its oldest actions are left out.")
    if log.dropped_actions:
        notes.append(f"{log.dropped_actions} more action(s) are not listed.")
    did = "; ".join(f"{a.tool} {a.detail}".strip() for a in actions[:10])
    did_text = f" It did: {did}." if did else ""
    if log.api_error is not None and status in ("done", "exited"):
        raise ToolFailure(
            f"claude's turn in session {session_id} ended with an error from its API, not an answer: "
            f"{log.api_error}" + (f" Link: {url}" if url else "")
        )

    def result(status: TurnStatus, message: str, **fields: Any) -> TurnResult:
        text = " ".join([message, *notes])
        return TurnResult(id=session_id, status=status, actions=actions, url=url, message=text, **fields)

    if first_fields(events, "noprompt") is not None and log.prompt is None:
        return result("idle", f"Session {session_id} has no prompt yet: send one with send_prompt.")
    if status == "waiting":
        text = waiting_text(session_id, waiting_for, permission)
        if permission is not None and permission.prompt_id and allow_approvals:
            text += f" (or answer_permission(id='{session_id}', decision=…, prompt_id='{permission.prompt_id}'))"
        return result(
            "waiting",
            text + "." + did_text + (f" Link: {url}" if url else ""),
            waiting_for=waiting_for,
            permission=permission,
        )
    if log.interrupted:
        return result("interrupted", f"The turn in session {session_id} was interrupted.{did_text}")
    if status == "done" and log.prompt is not None:
        reply = log.reply
        if reply is None:
            return result("done", f"claude finished the turn in session {session_id} without a text answer.{did_text}")
        return result("done", f"claude answered in session {session_id}:\n{reply}", reply=reply)
    if status == "exited":
        reply = log.reply if log.complete else None
        return result(
            "exited",
            f"claude in session {session_id} has exited; resume_session('{session_id}') brings it back."
            + (f" Its last answer:\n{reply}" if reply else ""),
            reply=reply,
        )
    if log.prompt is None:
        return result(
            "running",
            f"claude in session {session_id} has not taken the prompt up yet (its transcript does not show it). Call "
            f"get_reply('{session_id}') in a moment" + (f", or look at {url}." if url else "."),
        )
    return result(
        "running",
        f"claude is still working in session {session_id}.{did_text} Call get_reply('{session_id}') to wait for the "
        "answer.",
    )


# ── Sessions ──────────────────────────────────────────────────────────────────────────────────
# The tools' work on the dev server: one script per call, run by the runner.


class ShuttingDown(RemoteError):
    """This server is stopping (a restart or a deploy) while a command ran."""


T = typing.TypeVar("T")


class SharedRun(typing.Generic[T]):
    """Concurrent callers share one run of the work: a caller joins the next run to start — never
    one that started before its request, whose answer could be older than it. The run is a task
    of its own, so no caller's cancellation ends it for the others."""

    def __init__(self) -> None:
        self._turn = asyncio.Lock()
        self._next: asyncio.Task[T] | None = None

    async def __call__(self, work: Callable[[], Awaitable[T]]) -> T:
        upcoming = self._next
        if upcoming is None:
            upcoming = self._next = asyncio.ensure_future(self._run(work))
            # Retrieved: a failed run whose callers all left is no warning.
            upcoming.add_done_callback(lambda task: task.cancelled() or task.exception())
        return await asyncio.shield(upcoming)

    async def _run(self, work: Callable[[], Awaitable[T]]) -> T:
        async with self._turn:  # the run before this one finishes first
            if self._next is asyncio.current_task():
                self._next = None  # callers from now on wait for the run after this one
            return await work()


class Sessions:
    """start / list / stop / projects, each one script run by the runner. When the server starts
    to shut down, calls still waiting are answered at once: the commands run on by themselves."""

    def __init__(self, config: Config, runner: Runner, *, host_in_ids: bool = False):
        self.config = config
        self.runner = runner
        self.host = config.host_name
        self.prefix = f"{self.host}." if host_in_ids else ""  # the ids this server hands out name their host
        self.stopping = asyncio.Event()
        self._list: SharedRun[list[SessionInfo]] = SharedRun()
        self._projects: SharedRun[list[str]] = SharedRun()

    def public(self, session_id: str) -> str:
        """The id as the tools show it."""
        return self.prefix + session_id

    async def _run(
        self,
        script: str,
        *,
        timeout: float | None = None,
        on_line: LineCallback | None = None,
        interrupted: str = "it may or may not have completed — call list_sessions to see the current state",
        stdin: bytes = b"",
    ) -> str:
        timeout = timeout or self.config.command_timeout
        run = self.runner.run(script, timeout=timeout, on_line=on_line, stdin=stdin) if stdin else None
        command = asyncio.ensure_future(run or self.runner.run(script, timeout=timeout, on_line=on_line))
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({command, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not command.done():
            command.add_done_callback(lambda done: done.cancelled() or done.exception())  # ends with the runner
            raise ShuttingDown("rc_mcp is restarting; try again in a few seconds")
        try:
            result = command.result()
        except CommandInterrupted as exc:
            raise RemoteError(
                f"Lost the connection to the dev server while the command ran ({exc}); {interrupted}."
            ) from exc
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
        prompt: str | None = None,
        interactive: bool = False,
        *,
        session_id: str | None = None,
        resume: Launch | None = None,
    ) -> SessionStarted:
        name = validate_name(name)
        path = validate_project_path(path)
        config = self.config
        if permission_mode is not None:
            PERMISSION_MODE.check(permission_mode)
        stdin, removed = b"", 0
        if prompt is not None:
            cleaned, removed = clean_prompt(prompt)
            stdin = cleaned.encode()
        if resume is not None:
            launch = resume
        elif prompt is not None or interactive:
            launch = Launch(conversation_uuid=str(uuid.uuid4()), prompt=prompt is not None)
        else:
            launch = Launch()
        session_id = session_id or f"{name}-{secrets.token_hex(3)}"
        nonce = secrets.token_hex(8)
        script = build_start_script(
            launch=launch,
            base_dir=config.projects_base_dir,
            path=path,
            session_id=session_id,
            name=name,
            claude_bin=config.claude_bin,
            spawn=spawn_mode(config.spawn_worktree if worktree is None else worktree),
            timeout=config.start_timeout,
            nonce=nonce,
            permission_mode=permission_mode or config.permission_mode,
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

        try:
            output = await self._run(
                script,
                timeout=config.start_timeout + config.command_timeout,
                on_line=on_line,
                interrupted=f"the session in {path} may still be starting there: call list_sessions in a minute",
                stdin=stdin,
            )
        except ShuttingDown:
            return still_starting(
                self.public(session_id),
                name,
                path,
                f"rc_mcp is restarting (a deploy or restart of the connector), so it stopped waiting for session "
                f"{self.public(session_id)} in {path}. The session keeps starting on the dev server: call "
                "list_sessions in a minute for its URL.",
            )
        events = parse_script_output(output, nonce)
        started = interpret_start(
            events, session_id=self.public(session_id), name=name, path=path, config=config, launch=launch,
            id_prefix=self.prefix,
        )  # fmt: skip
        started.host = self.host
        if removed:
            started.message += f" {removed} control character(s) were removed from the prompt before it was sent."
        return started

    async def list_all(self) -> list[SessionInfo]:
        """The sessions, from a remote run that concurrent calls share (SharedRun)."""

        async def run() -> list[SessionInfo]:
            nonce = secrets.token_hex(8)
            found = interpret_list(parse_script_output(await self._run(build_list_script(nonce)), nonce))
            for session in found:
                session.id, session.host = self.public(session.id), self.host
            return found

        return await self._list(run)

    async def stop(self, session_id: str, forget: bool = False) -> SessionStopped:
        events = parse_script_output(await self._run(build_stop_script(validate_session_id(session_id), forget)))
        session_id = self.public(session_id)
        stopped = first_fields(events, "stopped") is not None
        recorded = first_fields(events, "record") is not None
        if forget and recorded:
            after = "what resume_session would need is removed (claude's own transcript stays)."
        elif recorded:
            after = f"resume_session('{session_id}') can bring it back."
        else:
            after = ""
        if stopped:
            message = f"Stopped session {session_id}; {after}" if after else f"Stopped session {session_id}."
        elif recorded:
            message = f"Session {session_id} was not running; {after}"
        else:
            message = f"No session {session_id!r} is running (nothing was stopped). Call list_sessions for the ids."
        return SessionStopped(
            id=session_id, host=self.host, stopped=stopped, forgotten=forget and recorded, message=message
        )

    async def turn(
        self,
        session_id: str,
        action: TurnAction,
        *,
        wait: float = 0,
        prompt: str | None = None,
        on_progress: Callable[[str], Awaitable[None]] | None = None,
        expect_size: int = -1,
    ) -> tuple[TurnResult, int]:
        """One turn script: the result for the model, and the transcript size it read up to."""
        session_id = validate_session_id(session_id)
        if not 0 <= wait <= MAX_WAIT:
            raise ValueError(f"wait_seconds must be between 0 and {MAX_WAIT} (Claude.ai gives a tool 300 s)")
        stdin, removed = b"", 0
        if prompt is not None:
            cleaned, removed = clean_prompt(prompt)
            stdin = cleaned.encode()
        turn_log = TurnLog(cleaned if prompt is not None else None)
        events: list[Event] = []
        script = build_turn_script(session_id=session_id, action=action, wait=wait, expect_size=expect_size)

        async def on_line(line: str) -> None:
            if line.startswith("@@t\t"):
                progress = turn_log.feed(line[4:])
            elif line.startswith("@@"):
                key, _, rest = line[2:].partition(" " if not line.startswith("@@registry") else "\t")
                events.append((key, rest.split("\t") if rest else []))
                if key == "skipped":
                    turn_log.skip()
                progress = {"sent": "prompt typed into the session", "interrupting": "pressed Esc"}.get(key)
                if key == "registry" and rest:
                    state = parse_registry(rest)
                    if state.get("status") == "waiting":
                        progress = f"claude waits for {state.get('waitingFor') or 'a person'}"
            else:
                return
            if progress and on_progress is not None:
                try:
                    await on_progress(progress)
                except Exception as exc:  # a client that went away must not break the turn
                    log.info("progress notification failed: %s", exc)

        await self._run(
            script,
            timeout=wait + self.config.command_timeout,
            on_line=on_line,
            stdin=stdin,
            interrupted="the turn goes on by itself: call get_reply for its answer",
        )
        result = interpret_turn(
            self.public(session_id), turn_log, events, allow_approvals=self.config.allow_chat_approvals, removed=removed
        )
        result.host = self.host
        size = first_field(events, "size")
        return result, int(size) if size.isdigit() else -1

    async def send(self, session_id: str, prompt: str, wait: float, on_progress: Any = None) -> TurnResult:
        return (await self.turn(session_id, "send", wait=wait, prompt=prompt, on_progress=on_progress))[0]

    async def reply(self, session_id: str, wait: float, on_progress: Any = None) -> TurnResult:
        return (await self.turn(session_id, "reply", wait=wait, on_progress=on_progress))[0]

    async def interrupt(self, session_id: str) -> TurnResult:
        result, _ = await self.turn(session_id, "interrupt")
        if result.status in ("running", "waiting"):
            raise ToolFailure(
                f"Pressed Esc, but session {result.id} is still {result.status} after 5 s; open its link: "
                f"{result.url or '(no link yet)'}"
            )
        result.interrupted = result.status in ("done", "interrupted")
        if result.interrupted:
            result.message = f"Session {result.id} is idle again. " + result.message
        return result

    async def answer(self, session_id: str, decision: Literal["allow_once", "deny"], prompt_id: str) -> TurnResult:
        if not self.config.allow_chat_approvals:
            raise ToolFailure(
                "Answering claude's permission prompts from the chat is off on this server (ALLOW_CHAT_APPROVALS): "
                "approve or deny at the session's link. Only the server's owner can turn it on."
            )
        if decision not in ("allow_once", "deny"):
            raise ValueError("decision must be 'allow_once' or 'deny'")
        current, size = await self.turn(session_id, "reply")
        if (
            current.permission is None
            or not current.permission.prompt_id
            or not hmac.compare_digest(current.permission.prompt_id, prompt_id)
        ):
            raise ToolFailure(REFUSALS["stale"].format(id=current.id))
        action: TurnAction = "allow" if decision == "allow_once" else "deny"
        result, _ = await self.turn(session_id, action, wait=DEFAULT_WAIT, expect_size=size)
        result.answered = True
        what = "Allowed" if action == "allow" else "Denied"
        result.message = (
            f"{what} {current.permission.tool} {current.permission.detail}. ".replace(" .", ".") + result.message
        )
        return result

    async def resume(self, session_id: str, on_state: Callable[[str], Awaitable[None]] | None = None) -> SessionStarted:
        session_id = validate_session_id(session_id)
        output = await self._run(build_record_script(session_id))
        record = interpret_record(parse_script_output(output), self.public(session_id), time.time())
        launch = Launch(conversation_uuid=record.get("uuid"), resume=True)
        started = await self.start(
            record["name"],
            record["path"],
            on_state=on_state,
            permission_mode=record.get("permission") or None,
            session_id=session_id,
            resume=launch,
        )
        if record.get("permission"):
            started.message += f" Its permission mode is {record['permission']}, as when it was started."
        return started

    async def projects(self) -> list[str]:
        """The projects, from a remote run that concurrent calls share (SharedRun)."""

        async def run() -> list[str]:
            output = await self._run(build_projects_script(self.config.projects_base_dir))
            return interpret_projects(output, self.config.projects_base_dir, self.config.setting("PROJECTS_BASE_DIR"))

        return await self._projects(run)


# ── Dev servers ───────────────────────────────────────────────────────────────────────────────
# Several dev servers (DEV_SERVERS): each has its own connection and Sessions, and nothing one
# of them does — a bad host key, a timeout — reaches another. Calls that span them run at once.


@dataclass
class CheckLine:
    ok: bool
    what: str
    detail: str

    def __str__(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.what}: {self.detail}"


async def check_host(config: Config, runner: Runner) -> list[CheckLine]:
    """Whether one dev server is ready: reachable, tmux, claude, its login, the projects base."""
    lines = []
    try:
        reached = await runner.connect()
        if reached:
            what, _, detail = reached.partition(" ")
            lines.append(CheckLine(True, what, detail))
        script = build_check_script(config.projects_base_dir, config.claude_bin)
        result = await runner.run(script, timeout=config.command_timeout)
    except RemoteError as exc:
        lines.append(CheckLine(False, "dev server", str(exc)))
        return lines
    values = {key: (fields[0] if fields else "") for key, fields in parse_script_output(result.stdout)}
    tmux = values.get("tmux", "")
    lines.append(CheckLine(bool(tmux), "tmux", tmux or "not found — install tmux on the dev server"))
    claude_path = values.get("claude_path", "")
    if claude_path:
        lines.append(CheckLine(True, "claude", f"{claude_path} ({values.get('claude_version') or 'version unknown'})"))
    elif values.get("claude_login_path"):
        found = values["claude_login_path"]
        lines.append(
            CheckLine(
                False,
                "claude",
                f"{config.claude_bin} not found on the SSH PATH — "
                + (
                    f"set claude_bin = {found!r} in [{config.host_name}]"
                    if config.in_hosts_file
                    else f"set CLAUDE_BIN={found}"
                ),
            )
        )
    else:
        fix = f"install Claude Code, or set {config.setting('CLAUDE_BIN')} to its absolute path"
        lines.append(CheckLine(False, "claude", f"{config.claude_bin} not found — {fix}"))
    try:
        auth = json.loads(values.get("claude_auth") or "{}")
    except ValueError:
        auth = {}
    logged_in = bool(auth.get("loggedIn")) and auth.get("authMethod") in ("claude.ai", None)
    login = (
        f"logged in ({auth.get('authMethod')})"
        if logged_in
        else "not logged in with a claude.ai account — run `claude auth login` on the dev server"
    )
    lines.append(CheckLine(logged_in, "claude login", login))
    base_ok = values.get("base") == "ok"
    base = " is readable" if base_ok else f" is missing or unreadable — fix {config.setting('PROJECTS_BASE_DIR')}"
    lines.append(CheckLine(base_ok, "projects base", config.projects_base_dir + base))
    return lines


HOST_STATUS_TTL = 300  # seconds list_hosts reuses a host's check


class HostInfo(BaseModel):
    name: str
    reaches: str = Field(description="How the dev server is reached")
    reachable: bool
    claude_version: str | None = None
    logged_in: bool | None = None
    error: str | None = Field(default=None, description="Why it cannot be reached")
    problems: list[str] = Field(default_factory=list, description="What `check` found wrong, with the fix")
    checked: str = Field(description="ISO 8601, UTC: when this was checked")


class HostList(BaseModel):
    hosts: list[HostInfo]


class Hosts:
    """The dev servers by name, the first one the default. An id returned with several of them
    carries its host (`home.my-app-a1b2c3`), so it cannot be taken for another host's."""

    def __init__(self, sessions: list[Sessions]):
        self.by_name = {s.host: s for s in sessions}
        self.first = sessions[0]
        self._status: dict[str, HostInfo] = {}

    @property
    def multiple(self) -> bool:
        return len(self.by_name) > 1

    def pick(self, host: str | None, session_id: str | None = None) -> tuple[Sessions, str | None]:
        """The Sessions of `host` (or of the id's host, or the first), and the id without its host."""
        if session_id is not None and "." in session_id:
            prefix, _, session_id = session_id.partition(".")
            if host is not None and host != prefix:
                raise ValueError(f"id {prefix}.{session_id} is on host {prefix!r}, not {host!r}: leave host out")
            host = prefix
        if host is None:
            if session_id is not None and self.multiple:
                examples = " or ".join(f"{h}.{session_id}" for h in list(self.by_name)[:2])
                raise ValueError(
                    f"with several dev servers an id names its host (e.g. {examples}): pass the id as "
                    "list_sessions returned it, or give host"
                )
            return self.first, session_id
        if host not in self.by_name:
            raise ValueError(f"no dev server {host!r}: the hosts are {', '.join(self.by_name)} (see list_hosts)")
        return self.by_name[host], session_id

    async def each(self, work: Callable[[Sessions], Awaitable[Any]], host: str | None) -> list[tuple[str, Any]]:
        """`work` on one host (when named) or on every host at once: (host, result or exception)."""
        chosen = [self.pick(host)[0]] if host is not None else list(self.by_name.values())
        results = await asyncio.gather(*(work(s) for s in chosen), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
        return [(s.host, r) for s, r in zip(chosen, results, strict=True)]

    async def list_all(self, host: str | None = None) -> tuple[list[SessionInfo], list[HostError]]:
        """Every host's sessions; a host that fails is an error beside the others' sessions."""
        found: list[SessionInfo] = []
        errors: list[HostError] = []
        for name, result in await self.each(lambda s: s.list_all(), host):
            if isinstance(result, Exception):
                if host is not None or not self.multiple:
                    raise result
                errors.append(HostError(host=name, error=describe_error(result)))
            else:
                found += result
        return found, errors

    async def projects(self, host: str | None = None) -> list[tuple[str, Any]]:
        return await self.each(lambda s: s.projects(), host)

    async def status(self, refresh: bool = False, now: float | None = None) -> list[HostInfo]:
        """Each host's reachability, claude version and login, from a check at most HOST_STATUS_TTL old."""
        now = time.time() if now is None else now

        async def one(sessions: Sessions) -> HostInfo:
            cached = self._status.get(sessions.host)
            if cached is not None and not refresh:
                age = now - datetime.datetime.fromisoformat(cached.checked).timestamp()
                if age < HOST_STATUS_TTL:
                    return cached
            lines = await check_host(sessions.config, sessions.runner)
            by_what = {line.what: line for line in lines}
            claude = by_what.get("claude")
            version = claude.detail.partition(" (")[2].removesuffix(")") if claude is not None and claude.ok else ""
            info = HostInfo(
                name=sessions.host,
                reaches=sessions.config.mode,
                reachable="dev server" not in by_what,
                error=by_what["dev server"].detail if "dev server" in by_what else None,
                claude_version=version or None,
                logged_in=by_what["claude login"].ok if "claude login" in by_what else None,
                problems=[f"{line.what}: {line.detail}" for line in lines if not line.ok],
                checked=datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(),
            )
            self._status[sessions.host] = info
            return info

        return list(await asyncio.gather(*(one(s) for s in self.by_name.values())))


# ═════════════════════════════════════════════════════════════════════════════════════════════
# OAuth: this server is the authorization server of its own MCP endpoint.
# ═════════════════════════════════════════════════════════════════════════════════════════════

# ── Store records ─────────────────────────────────────────────────────────────────────────────
# What the token store holds, and what makes a file of it valid.

STORE_VERSION = 1
STORE_KINDS = ("codes", "access", "refresh", "clients", "grants")
DEFAULT_SCOPE = "mcp:tools"  # what the original server advertised; Claude.ai also sends "mcp"
ACCEPTED_SCOPES = frozenset({"mcp:tools", "mcp", "offline_access"})
# The fields every record of a kind must have, with their types; anything else is a damaged file.
NUMBER = (int, float)
RECORD_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "codes": {"client_id": str, "grant_id": str, "expires_at": NUMBER},
    "access": {"client_id": str, "grant_id": str, "scope": str, "resource": str, "expires_at": NUMBER},
    "refresh": {"client_id": str, "grant_id": str, "scope": str, "resource": str, "expires_at": NUMBER},
    "clients": {"client_name": str, "redirect_uris": list, "created_at": NUMBER, "expires_at": NUMBER},
    "grants": {"client_id": str, "client_name": str, "created_at": NUMBER, "last_used": NUMBER, "expires_at": NUMBER},
}
STORE_RECHECK = 0.5  # seconds between looks at whether another process changed the file


def hash_secret(value: str) -> str:
    """Codes and tokens are stored only as this hash: a leaked store file grants nothing."""
    return hashlib.sha256(value.encode()).hexdigest()


def secret_equal(given: str | None, expected: str) -> bool:
    """Constant-time comparison that also works for non-ASCII input."""
    return hmac.compare_digest((given or "").encode(), expected.encode())


def parse_store(raw: bytes) -> Any:
    """JSON without NaN or Infinity (an endless expiry is no expiry)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not a number this store uses")

    return json.loads(raw, parse_constant=refuse)


# Fields some records have, with the type they must have when present.
OPTIONAL_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "codes": {"used_at": NUMBER, "redirect_uri": str, "code_challenge": str, "resource": str, "scope": str},
    "refresh": {"rotated_at": NUMBER, "successor": str, "grace_used": bool},
    "clients": {"approved": bool},
}


def store_problem(data: Any) -> str | None:
    """What is wrong with a parsed store file, or None."""
    if not isinstance(data, dict) or data.get("version") != STORE_VERSION:
        return "not an rc_mcp token store"
    for kind, fields in RECORD_FIELDS.items():
        records = data.get(kind, {})
        if not isinstance(records, dict):
            return f"{kind!r} is not an object"
        for key, record in records.items():
            if not isinstance(record, dict):
                return f"{kind} record {key[:12]}… is not an object"
            for field, kind_of in fields.items():
                value = record.get(field)
                if not isinstance(value, kind_of) or isinstance(value, bool):
                    return f"{kind} record {key[:12]}… has no valid {field!r}"
            for field, kind_of in OPTIONAL_FIELDS.get(kind, {}).items():
                value = record.get(field)
                if field in record and (
                    not isinstance(value, kind_of) or (kind_of is not bool and isinstance(value, bool))
                ):
                    return f"{kind} record {key[:12]}… has an invalid {field!r}"
            if (
                kind == "codes"
                and "used_at" not in record
                and not all(f in record for f in OPTIONAL_FIELDS["codes"] if f != "used_at")
            ):
                return f"codes record {key[:12]}… is incomplete"
            if kind == "clients" and not all(isinstance(u, str) for u in record["redirect_uris"]):
                return f"clients record {key[:12]}… has an invalid 'redirect_uris'"
    if not isinstance(data.get("secret", ""), str):
        return "'secret' is not a string"
    owner = data.get("owner", {})
    if not isinstance(owner, dict) or not all(
        isinstance(owner.get(k, 0), int) and not isinstance(owner.get(k, 0), bool)
        for k in ("code_failures", "last_step")
    ):
        return "'owner' is not an object of counters"
    return None


def import_legacy_store(
    old: Mapping[str, Any], now: float, *, client_id: str, resource: str, access_ttl: int, refresh_ttl: int
) -> dict[str, Any]:
    """Convert the Node.js server's token file: `{"tokens": {<plaintext token>: {clientId, scopes,
    expiresAt (ms), type?: "refresh"}}, "codes": {…}}`. Tokens of the fixed client are hashed and
    kept with their expiry (refresh tokens had none: they get a fresh lifetime); codes are dropped
    (they carried the client secret and live minutes anyway). Each token becomes a grant of its own."""
    data: dict[str, Any] = {"version": STORE_VERSION, **{kind: {} for kind in STORE_KINDS}}
    for token, record in (old.get("tokens") or {}).items():
        if not isinstance(token, str) or not isinstance(record, dict) or record.get("clientId") != client_id:
            continue
        scopes = record["scopes"] if isinstance(record.get("scopes"), list) else []
        scope = " ".join(str(s) for s in scopes if str(s) in ACCEPTED_SCOPES) or DEFAULT_SCOPE
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


# ── Token store ───────────────────────────────────────────────────────────────────────────────
# One JSON file of hashed records, shared by the server and the `grants` command: writers take a
# file lock, and each process re-reads the file when another one changed it.


def new_grant(client_id: str, client_name: str, now: float, idle_ttl: float) -> dict[str, Any]:
    """The record of one approval; it ends when unused for idle_ttl (see Grants.touch)."""
    return {
        "client_id": client_id,
        "client_name": client_name,
        "created_at": now,
        "last_used": now,
        "expires_at": now + idle_ttl,
    }


class TokenStore:
    """OAuth state in one JSON file holding only SHA-256 hashes of codes and tokens.

    The file is 0600 in a 0700 directory, written atomically under a file lock (the `grants`
    command writes it too), and expired records are pruned on every write. A process that finds
    the file changed by another re-reads it before it answers or writes. A file that cannot be
    read is moved aside, loudly, never overwritten. The older Node.js server's file is imported
    (tokens hashed) after a 0600 backup of the original.
    """

    def __init__(
        self,
        path: Path,
        clock: Callable[[], float] = time.time,
        import_legacy: Callable[[Mapping[str, Any], float], dict[str, Any]] | None = None,
        *,
        idle_ttl: float = 7 * 86400,
    ):
        self.path = path
        self.clock = clock
        self.idle_ttl = idle_ttl  # what a grant record found without one is given (older files)
        self.lock_path = path.with_name(f"{path.name}.lock")
        self._lock = threading.Lock()  # the in-memory data
        self._write_lock = threading.Lock()  # one read-modify-write-persist at a time in this process
        self._written: str | None = None  # what the file holds, as last written here
        self._seen: tuple[int, int, int] | None = None  # the file's (inode, size, mtime) as last read
        self._checked = 0.0  # monotonic time of the last look at the file
        self._warned = False
        self._data: dict[str, Any] = self._empty()
        with contextlib.suppress(FileNotFoundError):
            with self._file_lock():
                self._remove_orphans()
        self._load(import_legacy)

    @staticmethod
    def _empty() -> dict[str, Any]:
        return {"version": STORE_VERSION, **{kind: {} for kind in STORE_KINDS}}

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Exclusive across processes (the server and `grants`); needs the directory to exist."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _remove_orphans(self) -> None:
        """Temp files of writes that were killed before their rename."""
        for orphan in self.path.parent.glob(f".{glob.escape(self.path.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                orphan.unlink()
                log.info("removed %s, left by an interrupted write", orphan)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_size, info.st_mtime_ns

    def _read(self) -> tuple[bytes, tuple[int, int, int]] | None:
        """The file's bytes and the (inode, size, mtime) of that very file: stat and read one handle,
        so a write in between cannot pass for having been read."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            return handle.read(), (info.st_ino, info.st_size, info.st_mtime_ns)

    def _load(self, import_legacy: Callable[[Mapping[str, Any], float], dict[str, Any]] | None) -> None:
        read = self._read()
        if read is None:
            return
        raw, seen = read
        try:
            data = parse_store(raw)
            if is_legacy_store(data) and import_legacy is not None:
                self._import(raw, import_legacy(data, self.clock()))
                return
            problem = store_problem(data)
            if problem:
                raise ValueError(problem)
        except (ValueError, RecursionError) as exc:
            self._quarantine(str(exc))
            return
        self._adopt(data, seen)

    def _adopt(self, data: dict[str, Any], seen: tuple[int, int, int] | None) -> None:
        """Take a valid file's data as the current state (tokens of older files get their grant)."""
        data = {**self._empty(), **data}
        now = self.clock()
        for kind in ("access", "refresh"):
            for record in data[kind].values():
                if record["grant_id"] not in data["grants"]:
                    data["grants"][record["grant_id"]] = new_grant(record["client_id"], "", now, self.idle_ttl)
        with self._lock:
            self._data = data
            self._seen = seen

    def _import(self, original: bytes, data: dict[str, Any]) -> None:
        backup = self.path.with_name(f"{self.path.name}.nodejs-backup-{utc_stamp()}")
        write_private_file(backup, original, "new")  # the original held plaintext tokens
        self._adopt(data, None)
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

    def _quarantine(self, reason: str, *, running: bool = False) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{utc_stamp()}")
        os.replace(self.path, aside)
        log.error(
            "TOKEN STORE UNREADABLE (%s): moved %s to %s and %s. Inspect the moved file; nothing was overwritten.",
            reason,
            self.path,
            aside,
            "went on with what this server held before"
            if running
            else "started empty — connectors must authorize again",
        )

    def _reload_if_changed(self, always: bool = False) -> None:
        """Another process (`grants revoke`) wrote the file: take its data. (`always` under the file
        lock, before a write: the file is the truth, whatever a stat said.)"""
        if not always and self._stat() == self._seen:
            return
        read = self._read()
        if read is None:
            return
        raw, seen = read
        if seen == self._seen and not always:
            return
        try:
            data = parse_store(raw)
            problem = store_problem(data)
        except (ValueError, RecursionError) as exc:
            problem = str(exc)
        if problem:
            # Moved aside, like a damaged file at start-up: this process's next write does not
            # silently undo whatever the other one meant.
            self._quarantine(f"changed by another process: {problem}", running=True)
            self._seen = None
            return
        self._adopt(data, seen)
        self._written = None

    def _recheck(self) -> None:
        """At most every STORE_RECHECK seconds: has another process changed the file?"""
        now = time.monotonic()
        if now - self._checked >= STORE_RECHECK and self._write_lock.acquire(blocking=False):
            try:  # (a write in progress re-reads the file itself: never wait for its fsync)
                self._checked = now
                self._reload_if_changed()
            finally:
                self._write_lock.release()

    def _prune(self, now: float) -> None:
        for kind in STORE_KINDS:
            records = self._data[kind]
            for key in [k for k, rec in records.items() if rec.get("expires_at", 0) <= now]:
                del records[key]
        grants = self._data["grants"]
        for kind in ("access", "refresh"):  # tokens of a grant that ended
            records = self._data[kind]
            for key in [k for k, rec in records.items() if rec["grant_id"] not in grants]:
                del records[key]

    def _save(self) -> None:
        """Persist the current data. Callers hold the write lock, not the data lock: /mcp requests
        read tokens while the file is written and fsynced."""
        with self._lock:
            self._prune(self.clock())
            snapshot = json.dumps(self._data, separators=(",", ":"))
        if snapshot == self._written:
            return  # nothing changed: no disk write for requests that changed nothing
        write_private_file(self.path, snapshot.encode(), "replace")
        self._written = snapshot
        self._seen = self._stat()  # under the file lock: nobody else wrote in between

    def _ensure_directory(self) -> None:
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
        elif directory.stat().st_mode & 0o077 and directory.stat().st_uid == os.getuid() and not self._warned:
            self._warned = True  # once: a volume mounted 0755 would say it on every write
            log.warning(
                "%s is accessible to other users: `chmod 700 %s`, or put TOKEN_STORE_PATH in a subdirectory "
                "(rc_mcp creates it 0700)",
                directory,
                directory,
            )

    def ensure_writable(self) -> None:
        """Create the directory and file now, so a bad TOKEN_STORE_PATH fails at start-up."""
        self._ensure_directory()
        with self._write_lock, self._file_lock():
            self._reload_if_changed(always=True)
            self._written = None
            self._save()

    def lookup(self, kind: Literal["codes", "access", "refresh"], secret: str) -> dict[str, Any] | None:
        """The unexpired record of a code or token (no I/O beyond a stat: used on every /mcp request)."""
        self._recheck()
        return self._unexpired(kind, hash_secret(secret))

    def registered_client(self, client_id: str) -> dict[str, Any] | None:
        self._recheck()
        return self._unexpired("clients", client_id)

    def grant(self, grant_id: str) -> dict[str, Any] | None:
        self._recheck()
        return self._unexpired("grants", grant_id)

    def owner(self) -> dict[str, Any]:
        """The consent page's counters (no copy of everything else)."""
        self._recheck()
        with self._lock:
            return dict(self._data.get("owner") or {})

    def snapshot(self) -> dict[str, Any]:
        """A copy of everything, as the file now holds it."""
        self._recheck()
        with self._lock:
            return copy.deepcopy(self._data)

    def grants(self) -> dict[str, dict[str, Any]]:
        """Every live grant by id (for `grants`)."""
        self._recheck()
        now = self.clock()
        with self._lock:
            return {k: dict(v) for k, v in self._data["grants"].items() if v["expires_at"] > now}

    def _unexpired(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._data[kind].get(key)
            if record is None or record["expires_at"] <= self.clock():
                return None
            return dict(record)

    def transact(
        self, change: Callable[[dict[str, Any], float], Any], keep_on: tuple[type[BaseException], ...] = ()
    ) -> Any:
        """Run `change(data, now)` atomically and persist what it changed; one writer at a time,
        across processes, always on the file's current data.

        If `change` raises one of `keep_on`, its changes so far (e.g. a revocation) are saved and
        the exception re-raised; if it raises anything else, or the save fails, the data is
        exactly as before the call.
        """
        self._ensure_directory()
        with self._write_lock, self._file_lock():
            self._reload_if_changed(always=True)
            with self._lock:
                before = copy.deepcopy(self._data)
                kept: BaseException | None = None
                try:
                    result = change(self._data, self.clock())
                except keep_on as exc:
                    kept = exc
                except BaseException:
                    self._data = before
                    raise
            try:
                self._save()
            except BaseException:
                with self._lock:
                    self._data = before
                raise
        if kept is not None:
            raise kept
        return result

    def count(self, kind: str) -> int:
        with self._lock:
            return len(self._data[kind])


# ── Clients ───────────────────────────────────────────────────────────────────────────────────
# Who may ask for a code: the fixed client (its id and secret derived from MCP_SECRET), public
# clients registered at /register, and clients named by a metadata document URL. Every client but
# the fixed one needs the owner's approval on the consent page.

FIXED_CLIENT_REDIRECT_URIS = (
    "https://claude.ai/api/mcp/auth_callback",
    "https://claude.com/api/mcp/auth_callback",
)
MAX_REGISTERED_CLIENTS = 64
UNUSED_CLIENT_TTL = 24 * 3600  # a registered client never approved on the consent page expires
MAX_CLIENT_NAME = 80
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
FETCH_FAILED = "the client metadata document could not be fetched"


def store_fingerprint(mcp_secret: str) -> str:
    """Written into the token store: which MCP_SECRET its links belong to (not the secret)."""
    return hmac.new(mcp_secret.encode(), b"rc_mcp token store", hashlib.sha256).hexdigest()[:32]


def derive_client_credentials(mcp_secret: str) -> tuple[str, str]:
    """The fixed client's id and secret, exactly as the original server derived them."""
    client_id = hashlib.sha256(f"{mcp_secret}:client_id".encode()).hexdigest()[:36]
    client_secret = hashlib.sha256(f"{mcp_secret}:client_secret".encode()).hexdigest()
    return client_id, client_secret


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
    if not isinstance(uri, str) or not uri or len(uri) > 2000 or re.search(f"[{CONTROL_CHARS} ]", uri):
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
    if parts.hostname and not is_host_name(parts.hostname):
        raise ValueError(f"redirect URI {uri[:100]!r} has no valid host name")
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


def clean_client_name(name: str) -> str:
    """A name fit for the consent page: no control, format (bidi overrides, zero-width) or
    line-separator characters, which could make one name read as another."""
    kept = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"))
    return kept.strip()[:MAX_CLIENT_NAME] or "unnamed client"


HOST_NAME_RE = re.compile(
    r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def is_host_name(host: str) -> bool:
    """A DNS name of letters, digits and inner hyphens, or an IP address."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return True
    return HOST_NAME_RE.fullmatch(host) is not None


# ── Metadata documents ────────────────────────────────────────────────────────────────────────
# A client id that is an https URL names its own metadata document (draft-ietf-oauth-client-id-
# metadata-document); fetching one is an SSRF risk, so it is fenced in.


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
    return OAuthClient(
        url, "metadata_document", clean_client_name(name or url), tuple(validate_redirect_uri(u) for u in uris)
    )


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

    async def _fetch(self, parts: Any) -> Any:  # a SplitResult
        host, port = parts.hostname, parts.port or 443
        try:
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            raise ValueError(FETCH_FAILED) from None
        addresses = [str(info[4][0]) for info in infos]
        # SSRF: an attacker-chosen client_id must not make this server reach internal services.
        if not addresses or not all(self._allow_address(a) for a in addresses):
            # (said as for a name that does not resolve: the answer must not map internal names)
            raise ValueError(FETCH_FAILED)
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
            raise ValueError(FETCH_FAILED) from None
        try:
            return json.loads(body)
        except ValueError:
            raise ValueError("the client metadata document is not JSON") from None


# ── Client registry ───────────────────────────────────────────────────────────────────────────


def is_list_of_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


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


ClientPurpose = Literal["authorize", "token", "bearer"]
GUESS_WINDOW = 900  # seconds failed identifications are remembered
GUESS_FREE = 5  # failures in that window before attempts are slowed down
GUESS_MAX_DELAY = 4.0  # seconds per attempt, at most: then at most 900 guesses an hour, from anywhere
GUESS_MAX_WAITING = 32  # attempts queued at once; more are refused at once


class GuessThrottle:
    """Failed identifications, counted globally (a guess from anywhere is a guess): after a few,
    every attempt waits its turn, one at a time, with a delay that doubles per failure. The
    fixed client's id is derived from MCP_SECRET, so an answer to "is this the client id?" is
    an answer to "is this MCP_SECRET?": nobody gets to ask quickly. Right and wrong guesses wait
    alike, so timing tells nothing either."""

    def __init__(self, clock: Callable[[], float] = time.time, sleep: Callable[[float], Awaitable[None]] = anyio.sleep):
        self._clock = clock
        self.sleep = sleep
        self._failures: collections.deque[float] = collections.deque(maxlen=10_000)
        self._turn: asyncio.Lock | None = None
        self._waiting = 0

    def delay(self) -> float:
        now = self._clock()
        while self._failures and self._failures[0] <= now - GUESS_WINDOW:
            self._failures.popleft()
        over = len(self._failures) - GUESS_FREE
        return 0.0 if over < 0 else min(0.05 * 2.0**over, GUESS_MAX_DELAY)

    async def admit(self) -> None:
        if not self.delay():
            return
        if self._waiting >= GUESS_MAX_WAITING:
            raise OAuthError(429, "temporarily_unavailable", "too many failed sign-in attempts; try again in a minute")
        self._turn = self._turn or asyncio.Lock()
        self._waiting += 1
        try:
            async with self._turn:
                await self.sleep(self.delay())
        finally:
            self._waiting -= 1

    def fail(self) -> None:
        self._failures.append(self._clock())


class ClientRegistry:
    """Every client this server knows, found the same way for /authorize, /token and /mcp."""

    def __init__(self, config: Config, store: TokenStore, fetcher: ClientMetadataFetcher | None = None):
        self.store = store
        self.fetcher = fetcher or ClientMetadataFetcher(store.clock)
        self.lifetime = config.refresh_token_ttl
        client_id, self._fixed_secret = derive_client_credentials(config.mcp_secret)
        self.fixed = OAuthClient(client_id, "fixed", "Claude (connector credentials)", FIXED_CLIENT_REDIRECT_URIS)
        self.guesses = GuessThrottle(store.clock)
        self.mcp_secret = config.mcp_secret

    async def resolve(self, client_id: str, purpose: ClientPurpose) -> OAuthClient | None:
        """The client with this id, or None. Only /authorize fetches a metadata document: codes are
        bound to the client it described, so later a metadata-document id stands for itself.

        An id that could be the fixed client's is compared only after the guess throttle admits
        it (bearer checks excepted: their ids come from this server's own records)."""
        registered = None if is_metadata_document_url(client_id) else self.store.registered_client(client_id)
        if registered is not None:
            return OAuthClient(client_id, "registered", registered["client_name"], tuple(registered["redirect_uris"]))
        if not is_metadata_document_url(client_id):
            if purpose != "bearer":
                await self.guesses.admit()
            if secret_equal(client_id, self.fixed.client_id):
                return self.fixed
            if purpose != "bearer":
                self.guesses.fail()
            return None
        if purpose != "authorize":
            return OAuthClient(client_id, "metadata_document", client_id)
        try:
            return await self.fetcher.get(client_id)
        except Exception as exc:  # any failure to fetch or validate: the client is unknown
            log.info("client metadata document %s refused: %s", client_id[:200], exc)
            raise OAuthError(400, "invalid_client", f"cannot use the client metadata document: {exc}") from None

    async def authenticate(self, authorization: str | None, form: Mapping[str, str]) -> OAuthClient:
        """RFC 6749 §2.3.1: client_secret_basic or client_secret_post for the fixed client, never
        both; public clients send only their client_id (`none`)."""
        basic = parse_basic_auth(authorization) if authorization else None
        client_id: str | None
        client_secret: str | None
        challenge = {"WWW-Authenticate": 'Basic realm="rc_mcp"'} if authorization else {}
        if authorization and basic is None:
            raise OAuthError(401, "invalid_client", "malformed Authorization header", challenge)
        if basic is not None:
            if "client_secret" in form or form.get("client_id", basic[0]) != basic[0]:
                raise OAuthError(400, "invalid_request", "use one client authentication method, not two")
            client_id, client_secret = basic
        else:
            client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if not client_id:
            raise OAuthError(401, "invalid_client", "client authentication is required", challenge)
        # One answer for an unknown client and for a wrong secret: neither may tell which it was.
        # (Claude.ai registers again when it sees it.)
        refused = OAuthError(401, "invalid_client", "unknown client or wrong client secret", challenge)
        if not is_metadata_document_url(client_id) and self.store.registered_client(client_id) is None:
            # The fixed client, or a guess. Id and secret are checked together, both in constant
            # time: a right id with a wrong secret tells nothing, so only failures need the guess
            # throttle — and the owner's connector never waits behind guessers.
            if secret_equal(client_id, self.fixed.client_id) & secret_equal(client_secret, self._fixed_secret):
                return self.fixed
            await self.guesses.admit()
            self.guesses.fail()
            raise refused
        client = await self.resolve(client_id, "token")
        if client is None:
            raise refused
        if client_secret is not None:
            raise OAuthError(401, "invalid_client", "this is a public client: send only its client_id", challenge)
        return client

    def register(self, metadata: Any, keep: Iterable[str] = ()) -> dict[str, Any]:
        """RFC 7591: registers a public client. Never reveals a secret: the client still needs the
        owner's approval on the consent page before it gets a code. When the registry is full,
        the oldest client nobody approved goes — never one in `keep` (its consent page is open)."""
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
        if not is_list_of_strings(grant_types) or not set(grant_types) <= {"authorization_code", "refresh_token"}:
            raise OAuthError(
                400, "invalid_client_metadata", "grant_types may only be authorization_code and refresh_token"
            )
        response_types = metadata.get("response_types", ["code"])
        if not is_list_of_strings(response_types) or set(response_types) != {"code"}:
            raise OAuthError(400, "invalid_client_metadata", 'response_types must be ["code"]')
        name = metadata.get("client_name")
        client_name = clean_client_name(name if isinstance(name, str) else "")
        client_id = "rcc_" + secrets.token_urlsafe(18)

        def add_client(data: dict[str, Any], now: float) -> float:
            clients = data["clients"]
            if len(clients) >= MAX_REGISTERED_CLIENTS:
                # Unauthenticated callers must not fill the disk: drop the oldest never-approved one.
                unused = sorted(
                    (rec["created_at"], cid)
                    for cid, rec in clients.items()
                    if not rec.get("approved") and cid not in keep
                )
                if not unused:
                    raise OAuthError(400, "invalid_client_metadata", "too many registered clients; try again later")
                del clients[unused[0][1]]
            clients[client_id] = {
                "client_name": client_name,
                "redirect_uris": redirect_uris,
                "created_at": now,
                "expires_at": now + UNUSED_CLIENT_TTL,
            }
            return now

        now = self.store.transact(add_client, (OAuthError,))
        log.info("register: public client %s (%s)", client_id[:12], client_name)
        return {
            "client_id": client_id,
            "client_id_issued_at": int(now),
            "client_name": client_name,
            "redirect_uris": redirect_uris,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",  # even when client_secret_post was asked for
            "scope": DEFAULT_SCOPE,
        }

    def trusted(self, client: OAuthClient) -> bool:
        """May this server send the browser back to the client? The fixed client, Claude's own
        metadata-document clients, and registered clients the owner approved before."""
        if client.kind == "registered":
            return bool((self.store.registered_client(client.client_id) or {}).get("approved"))
        return client.kind == "fixed" or client.client_id in KNOWN_CLIENT_METADATA

    def extend(self, data: dict[str, Any], client_id: str, now: float, approved: bool = False) -> None:
        """Inside a transaction: a registered client the owner approved, or that is in use, lives
        as long as its tokens."""
        registered = data["clients"].get(client_id)
        if registered is not None:
            registered["approved"] = registered.get("approved", False) or approved
            registered["expires_at"] = max(registered["expires_at"], now + self.lifetime)


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


# ── Grants ────────────────────────────────────────────────────────────────────────────────────
# A grant is what one approval produced: a code, then a chain of access and refresh tokens that
# share its grant_id, so that a replayed code or a reused refresh token ends all of them at once.

CODE_TTL = 600  # OAuth 2.1 §4.1.2: authorization codes live at most 10 minutes
REFRESH_GRACE = 30  # seconds the previous refresh token still works once (concurrent refreshes)
PKCE_CHALLENGE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # BASE64URL(SHA256(verifier)), unpadded
PKCE_VERIFIER_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 §4.1


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_pkce(verifier: str, challenge: str) -> bool:
    if not PKCE_VERIFIER_RE.fullmatch(verifier):
        return False
    return hmac.compare_digest(pkce_challenge(verifier), challenge)


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


def check_resource(requested: str | None, expected: str) -> str:
    """RFC 8707: tokens are only for this server's MCP endpoint; an absent resource means it."""
    if requested and canonical_resource(requested) != canonical_resource(expected):
        raise OAuthError(400, "invalid_target", f"resource must be {expected}")
    return expected


def parse_scope(requested: str | None, granted: str | None = None) -> str:
    """The scope to grant: what was asked for, never wider than what was granted before."""
    if requested is None or not requested.strip():
        return granted or DEFAULT_SCOPE
    wanted = list(dict.fromkeys(requested.split()))
    allowed = set(granted.split()) if granted is not None else ACCEPTED_SCOPES
    unknown = [s for s in wanted if s not in allowed]
    if unknown:
        raise OAuthError(400, "invalid_scope", f"scope {' '.join(unknown)!r} is not available; use {DEFAULT_SCOPE!r}")
    return " ".join(wanted)


def token_response(access: str, refresh: str, expires_in: float, scope: str) -> dict[str, Any]:
    """RFC 6749 §5.1."""
    return {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": int(expires_in),
        "refresh_token": refresh,
        "scope": scope,
    }


def required_param(params: Mapping[str, str], name: str, hint: str = "") -> str:
    value = params.get(name)
    if not value:
        raise OAuthError(400, "invalid_request", f"{name} is required{hint}")
    return value


def revoke_grant(data: dict[str, Any], grant_id: str) -> int:
    """Inside a transaction: a grant and every token of it are gone."""
    revoked = 0
    for kind in ("access", "refresh"):
        records = data[kind]
        for key in [k for k, rec in records.items() if rec.get("grant_id") == grant_id]:
            del records[key]
            revoked += 1
    data["grants"].pop(grant_id, None)
    return revoked


# ── Grant store ───────────────────────────────────────────────────────────────────────────────
# The Grants: codes, the tokens they turn into, the grants holding both, and their last use.


TOUCH_INTERVAL = 60  # a grant's last use is written at most this often (and at shutdown)


class Grants:
    """Codes for approved requests, the tokens they turn into, and the grants that hold them."""

    def __init__(self, config: Config, store: TokenStore, clients: ClientRegistry):
        self.store = store
        self.clients = clients
        self.access_ttl = config.access_token_ttl
        self.refresh_ttl = config.refresh_token_ttl
        self.idle_ttl = config.idle_ttl
        self._rotation_key = hmac.new(config.mcp_secret.encode(), b"rc_mcp refresh rotation", hashlib.sha256).digest()
        self._seal_key = hmac.new(config.mcp_secret.encode(), b"rc_mcp sealed codes", hashlib.sha256).digest()
        self._touched: dict[str, float] = {}  # grant id → last use not yet written

    async def _transact(self, change: Callable[[dict[str, Any], float], Any]) -> Any:
        """A store transaction off the event loop; an OAuthError keeps what `change` did before it."""
        return await anyio.to_thread.run_sync(self.store.transact, change, (OAuthError,))

    @staticmethod
    def _live(data: dict[str, Any], kind: str, secret: str, client: OAuthClient, now: float) -> dict[str, Any] | None:
        """The record of a code or token of this client that has not expired. A record of another
        client is treated as if it did not exist."""
        record = data[kind].get(hash_secret(secret))
        if record is None or record["expires_at"] <= now or not secret_equal(client.client_id, record["client_id"]):
            return None
        return typing.cast(dict[str, Any], record)

    def _grant_record(
        self, data: dict[str, Any], kind: str, secret: str, client: OAuthClient, now: float, invalid: str
    ) -> dict[str, Any]:
        """As _live, but a missing record is the invalid_grant error `invalid`."""
        record = self._live(data, kind, secret, client, now)
        if record is None:
            raise OAuthError(400, "invalid_grant", invalid)
        return record

    # Codes --------------------------------------------------------------------------------

    def _seal(self, record: Mapping[str, Any]) -> str:
        """A fixed-client code that carries its own record, signed: /authorize, which anyone may
        call with the (visible) client id, stores nothing; /token, after the client secret,
        checks the seal and keeps only a used-marker, so a replay is still caught."""
        body = base64.urlsafe_b64encode(json.dumps(record, separators=(",", ":")).encode()).rstrip(b"=")
        mac = base64.urlsafe_b64encode(hmac.new(self._seal_key, body, hashlib.sha256).digest()).rstrip(b"=")
        return f"rcsc_{body.decode()}.{mac.decode()}"

    def _unseal(self, code: str, client: OAuthClient) -> dict[str, Any] | None:
        body, _, mac = code.removeprefix("rcsc_").partition(".")
        expected = base64.urlsafe_b64encode(hmac.new(self._seal_key, body.encode(), hashlib.sha256).digest())
        if not code.startswith("rcsc_") or not hmac.compare_digest(mac.encode(), expected.rstrip(b"=")):
            return None
        record = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return typing.cast(dict[str, Any], record) if secret_equal(record.get("client_id"), client.client_id) else None

    async def issue_code(
        self, client: OAuthClient, *, redirect_uri: str, challenge: str, resource: str, scope: str
    ) -> str:
        now = self.store.clock()
        record = {
            "client_id": client.client_id,
            "redirect_uri": redirect_uri,
            "code_challenge": challenge,
            "resource": resource,
            "scope": scope,
            "grant_id": secrets.token_hex(16),
            "expires_at": now + CODE_TTL,
        }
        if not client.public:
            return self._seal(record)
        code = "rcac_" + secrets.token_urlsafe(32)

        def store_code(data: dict[str, Any], now: float) -> None:
            data["codes"][hash_secret(code)] = record
            self.clients.extend(data, client.client_id, now, approved=True)

        await self._transact(store_code)
        return code

    async def exchange_code(self, client: OAuthClient, form: Mapping[str, str]) -> dict[str, Any]:
        """RFC 6749 §4.1.3, in its order: code of this client → not used → same redirect_uri → PKCE."""
        code, verifier = required_param(form, "code"), required_param(form, "code_verifier", " (PKCE)")
        redirect_uri, resource = form.get("redirect_uri"), form.get("resource")
        invalid = "the authorization code is invalid or expired"
        sealed = None if client.public else self._unseal(code, client)
        if not client.public and sealed is None:
            raise OAuthError(400, "invalid_grant", invalid)

        def exchange(data: dict[str, Any], now: float) -> dict[str, Any]:
            if sealed is None:
                record = self._grant_record(data, "codes", code, client, now, invalid)
            elif sealed["expires_at"] <= now:
                raise OAuthError(400, "invalid_grant", invalid)
            else:
                record = data["codes"].get(hash_secret(code)) or dict(sealed)
            if record.get("used_at"):
                # OAuth 2.1 §4.1.3: a replayed code may have been stolen; revoke what it produced.
                revoke_grant(data, record["grant_id"])
                log.warning("authorization code replayed for %s: its tokens were revoked", client.name)
                raise OAuthError(
                    400, "invalid_grant", "the authorization code was already used; its tokens are revoked"
                )
            if redirect_uri != record["redirect_uri"]:
                raise OAuthError(400, "invalid_grant", "redirect_uri does not match the authorization request")
            if not verify_pkce(verifier, record["code_challenge"]):
                raise OAuthError(400, "invalid_grant", "code_verifier does not match the code_challenge")
            check_resource(resource, record["resource"])
            if sealed is None:
                record["used_at"] = now
            else:  # a used-marker, kept until the code would have expired
                marker = {k: record[k] for k in ("client_id", "grant_id", "expires_at")}
                data["codes"][hash_secret(code)] = {**marker, "used_at": now}
            data["grants"][record["grant_id"]] = new_grant(client.client_id, client.name, now, self.idle_ttl)
            return self._issue_tokens(data, now, record)

        return typing.cast(dict[str, Any], await self._transact(exchange))

    # Tokens -------------------------------------------------------------------------------

    async def refresh(self, client: OAuthClient, form: Mapping[str, str]) -> dict[str, Any]:
        """RFC 6749 §6 with rotation (OAuth 2.1 §4.3.1); a racing twin within the grace window
        gets the very same answer."""
        refresh_token = required_param(form, "refresh_token")
        scope, resource = form.get("scope"), form.get("resource")

        def rotate(data: dict[str, Any], now: float) -> dict[str, Any]:
            invalid = "the refresh token is invalid, expired or revoked"
            record = self._grant_record(data, "refresh", refresh_token, client, now, invalid)
            grant = data["grants"].get(record["grant_id"])
            if grant is None or grant["expires_at"] <= now:
                raise OAuthError(400, "invalid_grant", "this link was revoked or unused for too long; sign in again")
            rotated = record.get("rotated_at") is not None
            if rotated:
                successor = data["refresh"].get(record.get("successor", ""))
                in_grace = now - record["rotated_at"] <= REFRESH_GRACE and not record.get("grace_used")
                if not (in_grace and successor is not None and successor.get("rotated_at") is None):
                    # OAuth 2.1 §4.3.1: reuse of a rotated refresh token means it leaked.
                    revoke_grant(data, record["grant_id"])
                    log.warning("rotated refresh token reused by %s: the grant was revoked", client.name)
                    raise OAuthError(400, "invalid_grant", "the refresh token was already used; sign in again")
            granted_scope = parse_scope(scope, granted=record["scope"])
            check_resource(resource, record["resource"])
            access, refresh = self._successor_tokens(refresh_token)
            if rotated:
                # The racing twin of the refresh that rotated this token (within the grace window,
                # once): it gets the very same answer, so the grant stays one chain.
                record["grace_used"] = True
                issued = data["access"].get(hash_secret(access))
                if issued is None or issued["expires_at"] <= now:
                    raise OAuthError(400, "invalid_grant", "the refresh token was already used; sign in again")
                return token_response(access, refresh, issued["expires_at"] - now, issued["scope"])
            grant.update(last_used=now, expires_at=max(grant["expires_at"], now + self.idle_ttl))
            payload = self._issue_tokens(data, now, {**record, "scope": granted_scope}, (access, refresh))
            record["rotated_at"] = now  # kept (until it expires) to detect reuse
            record["successor"] = hash_secret(refresh)
            return payload

        return typing.cast(dict[str, Any], await self._transact(rotate))

    async def revoke(self, client: OAuthClient, token: str) -> None:
        """RFC 7009: the client's own token; a refresh token takes its grant along."""

        def revoke(data: dict[str, Any], now: float) -> None:
            for kind in ("refresh", "access"):
                record = self._live(data, kind, token, client, now)
                if record is not None:
                    if kind == "refresh":
                        revoke_grant(data, record["grant_id"])
                    data[kind].pop(hash_secret(token), None)

        await self._transact(revoke)

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
        access, refresh = tokens or ("rcat_" + secrets.token_urlsafe(32), "rcrt_" + secrets.token_urlsafe(32))
        record = {k: grant[k] for k in ("client_id", "scope", "resource", "grant_id")}
        data["access"][hash_secret(access)] = {**record, "expires_at": now + self.access_ttl}
        data["refresh"][hash_secret(refresh)] = {**record, "expires_at": now + self.refresh_ttl}
        self.clients.extend(data, grant["client_id"], now)  # a client in use does not expire
        return token_response(access, refresh, self.access_ttl, grant["scope"])

    # Grants -------------------------------------------------------------------------------

    def live_grant(self, token_record: Mapping[str, Any]) -> dict[str, Any] | None:
        """The grant of a valid access token, or None when it was revoked or unused too long."""
        return self.store.grant(token_record["grant_id"])

    def touch(self, grant_id: str, grant: Mapping[str, Any]) -> bool:
        """Note a use of a grant (in memory); True when it is time to write the uses down."""
        now = self.store.clock()
        self._touched[grant_id] = now
        return now - grant["last_used"] >= TOUCH_INTERVAL

    async def flush_uses(self) -> None:
        """Write the noted uses: one store write for all of them, and one more for the uses noted
        while it was under way (a use then starts no write of its own)."""
        while self._touched:
            touched, self._touched = self._touched, {}

            def record_uses(data: dict[str, Any], now: float, touched: dict[str, float] = touched) -> None:
                for grant_id, when in touched.items():
                    grant = data["grants"].get(grant_id)
                    if grant is not None and when > grant["last_used"]:
                        grant.update(last_used=when, expires_at=max(grant["expires_at"], when + self.idle_ttl))

            try:
                await self._transact(record_uses)
            except OSError as exc:
                self._touched = {**touched, **self._touched}  # tried again at the next use
                log.error("cannot record when links were last used in %s: %s", self.store.path, exc)
                return

    def revoke_grants(self, grant_ids: Iterable[str] | None) -> list[str]:
        """End these grants (None: all of them) at once; the ones ended."""

        def revoke(data: dict[str, Any], now: float) -> list[str]:
            chosen = list(data["grants"]) if grant_ids is None else [g for g in grant_ids if g in data["grants"]]
            for grant_id in chosen:
                revoke_grant(data, grant_id)
            return chosen

        return typing.cast(list[str], self.store.transact(revoke))


# ── HTTP messages ─────────────────────────────────────────────────────────────────────────────
# Requests and responses of the hand-rolled endpoints, and the parsing every one of them shares.

MAX_FORM_BYTES = 64 * 1024  # /token, /authorize, /register, /revoke bodies; /mcp has the SDK's 4 MiB cap
NO_STORE = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]


def parse_headers(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-case names; a repeated header keeps its first value (for every route and /mcp)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw_headers:
        headers.setdefault(raw_name.decode("latin-1").lower(), raw_value.decode("latin-1"))
    return headers


def media_type(headers: Mapping[str, str]) -> str:
    """The Content-Type without its parameters, lower-case."""
    return headers.get("content-type", "").split(";")[0].strip().lower()


def bearer_token(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


@dataclass
class Request:
    method: str
    query: str
    headers: dict[str, str]  # see parse_headers
    body: bytes
    client_address: str = ""  # the client's address, as far as trusted proxies tell (see client_address)


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


def json_response(
    status: int, payload: Any, headers: Iterable[tuple[str, str]] = (), no_store: bool = True
) -> Response:
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


def require_form(request: Request) -> dict[str, str]:
    if media_type(request.headers) != "application/x-www-form-urlencoded":
        raise OAuthError(400, "invalid_request", "send the parameters as application/x-www-form-urlencoded")
    return parse_params(request.body)


# ── Consent page ──────────────────────────────────────────────────────────────────────────────
# The owner approves every client but the fixed one by typing MCP_SECRET; wrong passwords are
# throttled. The pages have no scripts, load nothing and cannot be framed.

CONSENT_MAX_FAILURES = 5  # wrong consent passwords from one address…
CONSENT_FAILURE_WINDOW = 900  # …within this many seconds → 429
CONSENT_GLOBAL_FAILURES = 50  # wrong ones from everyone in that window: then one per address
TOTP_STEP = 30
TOTP_DIGITS = 6
TOTP_MAX_FAILURES = 10  # wrong codes from everyone…
TOTP_FAILURE_WINDOW = 3600  # …in this many seconds pause codes (MCP_SECRET still works)
TOTP_BUDGET = 100  # wrong codes in all before codes pause until the next approval with MCP_SECRET
CONSENT_TABLE_SIZE = 10_000  # addresses with recent failures kept
AUTHORIZE_PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "code_challenge",
    "code_challenge_method",
    "state",
    "scope",
    "resource",
)


def throttle_key(address: str, ipv6_prefix: int = 64) -> str:
    """The unit a throttle counts: one IPv4 address, or one IPv6 /64 (what one host is given; a
    /48, what one site or tunnel account is given, when strangers fail from everywhere)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/{ipv6_prefix}", strict=False))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


class ConsentThrottle:
    """Wrong consent answers per address (IPv6: per /64): after CONSENT_MAX_FAILURES in the
    window, that address is answered 429 for a while — a stranger can only lock out their own
    address. Once many addresses fail (a distributed attack), each IPv6 /48 counts as one address
    and is allowed one failure. An address with recent failures is never forgotten early: when
    the table is full of them, new addresses count as locked until room comes free."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._failures: dict[str, list[float]] = {}
        self._all: collections.deque[float] = collections.deque(maxlen=100_000)

    def _recent(self, key: str, now: float) -> list[float]:
        return [t for t in self._failures.get(key, []) if t > now - CONSENT_FAILURE_WINDOW]

    def _distributed(self, now: float) -> bool:
        while self._all and self._all[0] <= now - CONSENT_FAILURE_WINDOW:
            self._all.popleft()
        return len(self._all) >= CONSENT_GLOBAL_FAILURES

    def _keys(self, address: str, now: float) -> list[str]:
        keys = [throttle_key(address)]
        if self._distributed(now):
            keys.append(throttle_key(address, 48))
        return keys

    def retry_after(self, address: str) -> int:
        now = self._clock()
        allowed = 1 if self._distributed(now) else CONSENT_MAX_FAILURES
        waits = [0]
        for key in self._keys(address, now):
            if key not in self._failures and len(self._failures) >= CONSENT_TABLE_SIZE and not self._make_room(now):
                waits.append(CONSENT_FAILURE_WINDOW)
                continue
            recent = self._recent(key, now)
            if len(recent) >= allowed:
                waits.append(int(recent[-allowed] + CONSENT_FAILURE_WINDOW - now) + 1)
        return max(waits)

    def _make_room(self, now: float) -> bool:
        """Forget the addresses whose failures are all old; False if none is."""
        for key in [k for k in self._failures if not self._recent(k, now)]:
            del self._failures[key]
        return len(self._failures) < CONSENT_TABLE_SIZE

    def fail(self, address: str) -> None:
        now = self._clock()
        for key in self._keys(address, now):
            if key in self._failures or len(self._failures) < CONSENT_TABLE_SIZE or self._make_room(now):
                self._failures[key] = [*self._recent(key, now), now]
        self._all.append(now)


def hotp(key: bytes, counter: int, digits: int = TOTP_DIGITS, digest: str = "sha1") -> str:
    """RFC 4226 §5.3."""
    mac = hmac.new(key, counter.to_bytes(8, "big"), digest).digest()
    offset = mac[-1] & 0x0F
    number = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def totp(key: bytes, at: float, digits: int = TOTP_DIGITS, digest: str = "sha1") -> str:
    """RFC 6238: the HOTP of the current 30-second step."""
    return hotp(key, int(at // TOTP_STEP), digits, digest)


def consent_totp_key(mcp_secret: str) -> bytes:
    """The authenticator app's secret, derived from MCP_SECRET (a new MCP_SECRET, a new app entry)."""
    return hmac.new(mcp_secret.encode(), b"rc_mcp consent code", hashlib.sha256).digest()[:20]


def totp_uri(key: bytes, server_url: str) -> str:
    """What an authenticator app scans (Key Uri Format): SHA-1, 6 digits, 30 s — what every app supports."""
    label = f"rc_mcp:{urlsplit(server_url).hostname or 'owner'}"
    secret = base64.b32encode(key).decode().rstrip("=")
    query = urlencode({"secret": secret, "issuer": "rc_mcp", "algorithm": "SHA1", "digits": TOTP_DIGITS})
    return f"otpauth://totp/{quote(label)}?{query}&period={TOTP_STEP}"


class OwnerCheck:
    """Who may approve a client on the consent page: whoever types MCP_SECRET, or the current code
    of the authenticator app set up with `python rc_mcp.py credentials` (easy on a phone).

    Both count against the address's ConsentThrottle. A six-digit code can be guessed, so wrong
    codes from everyone also share budgets: TOTP_MAX_FAILURES an hour, and TOTP_BUDGET in all
    until the next approval with MCP_SECRET (kept in the token store, so a restart refills
    nothing). When one is spent, codes pause and only MCP_SECRET is accepted — which cannot be
    guessed, so the owner is never locked out. A code is accepted once (the last step used is
    stored too), within one step of the server's clock."""

    def __init__(self, mcp_secret: str, store: TokenStore):
        self._secret = mcp_secret
        self._key = consent_totp_key(mcp_secret)
        self._store = store
        self._clock = store.clock
        self.throttle = ConsentThrottle(store.clock)
        self._code_failures: collections.deque[float] = collections.deque(maxlen=1000)

    def _owner_state(self) -> dict[str, Any]:
        return self._store.owner()

    def codes_paused(self) -> bool:
        now = self._clock()
        while self._code_failures and self._code_failures[0] <= now - TOTP_FAILURE_WINDOW:
            self._code_failures.popleft()
        if len(self._code_failures) >= TOTP_MAX_FAILURES:
            return True
        return int(self._owner_state().get("code_failures", 0)) >= TOTP_BUDGET

    def _record(self, **changes: Any) -> None:
        def update(data: dict[str, Any], now: float) -> None:
            owner = data.setdefault("owner", {})
            for key, value in changes.items():
                owner[key] = owner.get(key, 0) + 1 if value == "+1" else value

        self._store.transact(update)

    def verify(self, given: str, address: str) -> Literal["approved", "wrong", "codes paused"]:
        """Runs store writes: call it off the event loop."""
        given = given.strip()
        code = given.replace(" ", "")
        if re.fullmatch(r"[0-9]{6}", code):
            if self.codes_paused():
                return "codes paused"
            now = self._clock()
            last_step = int(self._owner_state().get("last_step", 0))
            for step in (int(now // TOTP_STEP) + d for d in (0, -1, 1)):
                if step > last_step and hmac.compare_digest(hotp(self._key, step), code):
                    self._record(last_step=step)
                    return "approved"
            self._code_failures.append(now)
            self._record(code_failures="+1")
        elif secret_equal(given, self._secret):
            self._record(code_failures=0)  # the owner is here: codes get their budget back
            return "approved"
        self.throttle.fail(address)
        return "wrong"


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
input[type=password]{{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem;
border:1px solid #aaa;border-radius:8px}}
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
<label for="password">Code from your authenticator app, or the server's MCP_SECRET</label>
<input id="password" name="password" type="password" autocomplete="one-time-code" autofocus>
<div class="buttons">
<button type="submit" name="action" value="deny">Deny</button>
<button type="submit" name="action" value="approve">Approve</button>
</div>
</form>
</main></body></html>
"""


def render_consent_page(
    client: OAuthClient,
    redirect_uri: str,
    params: Mapping[str, str],
    dev_server: str,
    status: int = 200,
    retry_after: int = 0,
) -> Response:
    """The approval form; the authorize parameters ride along as hidden fields."""
    hidden = "\n".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in params.items()
        if k in AUTHORIZE_PARAMETERS
    )
    error = ""
    if status == 403:
        error = '<p class="error" role="alert">Wrong code or password. Try again.</p>'
    elif status == 409:
        error = (
            '<p class="error" role="alert">Codes are paused after too many wrong ones from somewhere: '
            "type the server's MCP_SECRET this time.</p>"
        )
    elif status == 429:
        error = f'<p class="error" role="alert">Too many wrong passwords. Try again in {retry_after} seconds.</p>'
    target = urlsplit(redirect_uri)
    page = CONSENT_PAGE.format(
        client=html.escape(client.name),
        dev_server=html.escape(dev_server),
        redirect_host=html.escape(target.netloc),
        error=error,
        hidden=hidden,
    )
    headers = html_headers(f"{target.scheme}://{target.netloc}")
    if retry_after:
        headers.append(("Retry-After", str(retry_after)))
    return Response(status, page.encode(), headers)


def render_denied_page() -> Response:
    page = ERROR_PAGE.format(error="access_denied", description="you denied this request; you can close this page")
    return Response(200, page.encode(), html_headers())


def render_error_page(error: OAuthError) -> Response:
    page = ERROR_PAGE.format(error=html.escape(error.error), description=html.escape(error.description))
    return Response(400, page.encode(), html_headers())


# ── Endpoints ─────────────────────────────────────────────────────────────────────────────────
# Thin handlers: parse the request, call the clients, grants and consent page above, and return
# a Response or raise an OAuthError (rendered by the router).


AWAITING_CONSENT_KEPT = 8  # registered clients with an open consent page that a flood cannot evict


class OAuthEndpoints:
    """/authorize, /token, /revoke, /register, the two metadata documents, and the bearer check of /mcp."""

    def __init__(self, config: Config, store: TokenStore, fetcher: ClientMetadataFetcher | None = None):
        self.issuer = config.server_url  # one string, byte-identical everywhere
        self.resource = config.resource
        self.resource_metadata_url = f"{self.issuer}/.well-known/oauth-protected-resource/mcp"
        self.dev_server = config.ssh_host or "this server"
        self.store = store
        self.clients = ClientRegistry(config, store, fetcher)
        self.grants = Grants(config, store, self.clients)
        self.owner = OwnerCheck(config.mcp_secret, store)
        # Clients whose consent page is open: a registration flood must not evict them.
        self._awaiting_consent: dict[str, float] = {}
        self._flush: asyncio.Task[None] | None = None

    def end_links_of_another_secret(self) -> int:
        """A new MCP_SECRET ends every link made under the old one — the owner's approvals and
        metadata-document clients too, not only the fixed client's. (A store without a
        fingerprint predates it: nothing to compare; it gets one.)"""
        fingerprint = store_fingerprint(self.clients.mcp_secret)

        def adopt(data: dict[str, Any], now: float) -> int:
            previous = data.get("secret")
            ended = 0
            if previous is not None and not secret_equal(previous, fingerprint):
                ended = len(data["grants"])
                for kind in ("codes", "access", "refresh", "grants", "clients"):
                    data[kind].clear()
            data["secret"] = fingerprint
            return ended

        ended = typing.cast(int, self.store.transact(adopt))
        if ended:
            log.warning("MCP_SECRET changed: ended all %d links made with the old one; add the connector again", ended)
        return ended

    def _note_awaiting_consent(self, client_id: str) -> None:
        """Protect the newest few registered clients whose consent page is open from eviction
        (a stranger reopening pages can hold at most these few)."""
        now = self.store.clock()
        awaiting = {c: t for c, t in self._awaiting_consent.items() if t > now - CODE_TTL and c != client_id}
        awaiting[client_id] = now
        self._awaiting_consent = dict(sorted(awaiting.items(), key=lambda item: item[1])[-AWAITING_CONSENT_KEPT:])

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
            "scopes_supported": [DEFAULT_SCOPE],
            "authorization_response_iss_parameter_supported": True,  # RFC 9207
            "client_id_metadata_document_supported": True,
        }

    def protected_resource_metadata(self) -> dict[str, Any]:
        """RFC 9728."""
        return {
            "resource": self.resource,
            "authorization_servers": [self.issuer],
            "scopes_supported": [DEFAULT_SCOPE],
            "bearer_methods_supported": ["header"],
            "resource_name": "rc_mcp — Claude Code sessions on your dev server",
        }

    # Registration -------------------------------------------------------------------------

    async def register(self, request: Request) -> Response:
        if media_type(request.headers) != "application/json":
            raise OAuthError(400, "invalid_client_metadata", "send the registration as application/json")
        try:
            metadata = json.loads(request.body)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            raise OAuthError(400, "invalid_client_metadata", "the body is not JSON (or nested too deeply)") from None
        keep = set(self._awaiting_consent)
        return json_response(201, await anyio.to_thread.run_sync(self.clients.register, metadata, keep))

    # Authorization ------------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        params = parse_params(request.query) if request.method == "GET" else require_form(request)
        client_id = params.get("client_id")
        redirect_uri = params.get("redirect_uri")
        # RFC 6749 §4.1.2.1: a bad client or redirect URI is answered here, never redirected to.
        client = await self.clients.resolve(client_id, "authorize") if client_id else None
        if client is None:
            raise OAuthError(400, "invalid_client", "unknown client_id")
        if not redirect_uri or not client.accepts_redirect(redirect_uri):
            raise OAuthError(400, "invalid_request", "redirect_uri is not registered for this client")
        state = params.get("state")

        def redirect_back(**values: str) -> Response:
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
            resource = check_resource(params.get("resource"), self.resource)
            scope = parse_scope(params.get("scope"))
        except OAuthError as exc:
            log.info("authorize refused for client %s: %s", client.client_id[:12], exc)
            if client.public:
                # Redirecting a stranger's client to its own URI would make this an open redirect.
                return render_error_page(exc)
            return redirect_back(error=exc.error, error_description=exc.description)

        if client.public:
            # Everyone but the fixed client needs the owner's approval on a page.
            action = params.get("action") if request.method == "POST" else None
            if action == "deny":
                log.info("authorize: the owner denied %s", client.name)
                if self.clients.trusted(client):
                    return redirect_back(error="access_denied", error_description="the owner denied access")
                # A stranger's client is not sent anywhere: that would make this an open redirect.
                return render_denied_page()
            if action != "approve":
                if client.kind == "registered":
                    self._note_awaiting_consent(client.client_id)
                return render_consent_page(client, redirect_uri, params, self.dev_server)
            address = request.client_address
            wait = self.owner.throttle.retry_after(address)
            if wait:
                return render_consent_page(client, redirect_uri, params, self.dev_server, 429, wait)
            verdict = await anyio.to_thread.run_sync(self.owner.verify, params.get("password", ""), address)
            if verdict != "approved":
                log.warning("authorize: %s consent answer from %s for %s", verdict, address, client.name)
                status = 409 if verdict == "codes paused" else 403
                return render_consent_page(client, redirect_uri, params, self.dev_server, status)

        code = await self.grants.issue_code(
            client, redirect_uri=redirect_uri, challenge=challenge, resource=resource, scope=scope
        )
        log.info("authorize: code issued to %s for %s", client.name, urlsplit(redirect_uri).netloc)
        return redirect_back(code=code)

    # Tokens -------------------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        # RFC 6749 order: authenticate the client, then the grant.
        form = require_form(request)
        client = await self.clients.authenticate(request.headers.get("authorization"), form)
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            payload = await self.grants.exchange_code(client, form)
        elif grant_type == "refresh_token":
            payload = await self.grants.refresh(client, form)
        elif not grant_type:
            raise OAuthError(400, "invalid_request", "grant_type is required")
        else:
            raise OAuthError(400, "unsupported_grant_type", "use authorization_code or refresh_token")
        log.info("token: %s grant for %s", grant_type, client.name)
        return json_response(200, payload)

    async def revoke(self, request: Request) -> Response:
        """RFC 7009: revoke the client's own token (a refresh token takes its grant along)."""
        form = require_form(request)
        client = await self.clients.authenticate(request.headers.get("authorization"), form)
        await self.grants.revoke(client, required_param(form, "token"))
        return json_response(200, {})  # also for unknown tokens (RFC 7009 §2.2)

    # Resource server ----------------------------------------------------------------------

    async def authenticate_bearer(self, token: str | None) -> dict[str, Any]:
        """The access token record for a /mcp request, or a 401 that points at the metadata."""
        if token is None:
            raise self._unauthorized("a bearer token is required")
        record = self.store.lookup("access", token)
        if record is None:
            raise self._unauthorized("the access token is invalid, expired or revoked")
        if canonical_resource(record["resource"]) != canonical_resource(self.resource):  # RFC 8707 audience
            raise self._unauthorized("the access token was issued for another resource")
        # A new MCP_SECRET (a new fixed client) or an expired registration ends its tokens at once.
        if await self.clients.resolve(record["client_id"], "bearer") is None:
            raise self._unauthorized("the access token's client no longer exists")
        grant = self.grants.live_grant(record)
        if grant is None:
            raise self._unauthorized("this link was revoked or unused for too long; connect again")
        if self.grants.touch(record["grant_id"], grant) and (self._flush is None or self._flush.done()):
            self._flush = asyncio.get_running_loop().create_task(self.grants.flush_uses())
        return record

    def _unauthorized(self, description: str) -> OAuthError:
        challenge = (
            f'Bearer error="invalid_token", error_description="{description}", '
            f'resource_metadata="{self.resource_metadata_url}", scope="{DEFAULT_SCOPE}"'
        )
        return OAuthError(401, "invalid_token", description, {"WWW-Authenticate": challenge})


# ═════════════════════════════════════════════════════════════════════════════════════════════
# Serving: the MCP tools, HTTP routing, and the command line.
# ═════════════════════════════════════════════════════════════════════════════════════════════

# ── MCP ───────────────────────────────────────────────────────────────────────────────────────

INSTRUCTIONS = """\
Starts and drives Claude Code sessions on the user's dev server. Call list_projects if you do not
know the exact path. start_session without a prompt starts a Remote Control server: give the user
the URL it returns (it opens at claude.ai/code or in the Claude app). With a prompt (a task, or a
slash command) it starts a conversation: get_reply returns claude's answer, send_prompt follows up,
interrupt_session stops a turn, resume_session brings back one that ended. When a turn waits for a
permission, tell the user what claude wants to do and give them the link; never approve actions on
your own. list_sessions shows every session and its state; stop_session ends one by its id. When
the user has several dev servers, list_hosts names them and every tool takes a host."""

WaitSeconds = Annotated[
    float,
    Field(ge=0, le=MAX_WAIT, description=f"Seconds to wait for the turn to end (0 only looks; at most {MAX_WAIT})"),
]
START_PROGRESS = {
    "launched": (1, "claude launched in tmux"),
    "registered": (2, "claude is up"),
    "consent": (1.5, "answered claude's 'Enable Remote Control?' prompt with y"),
    "connecting": (2, "claude is connecting to claude.ai"),
}


def tool_result(model: BaseModel, text: str) -> CallToolResult:
    """Structured content for clients, plus a text rendering written for the model."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=model.model_dump(mode="json")
    )


async def run_tool(tool: str, work: Awaitable[Any]) -> Any:
    """A tool's work, with one audit line (tool, outcome, duration — never its arguments)."""
    started = time.monotonic()
    outcome = "failed"
    try:
        result = await work
        outcome = "ok"
        return result
    except (ValueError, ToolFailure, RemoteError) as exc:
        outcome = f"refused: {type(exc).__name__}"
        raise ToolError(str(exc)) from exc
    finally:
        log.info("tool %s: %s in %.2f s", tool, outcome, time.monotonic() - started)


def render_sessions(sessions: list[SessionInfo], errors: Iterable[HostError] = (), multiple: bool = False) -> str:
    failed = [f"- dev server {e.host} could not be asked: {e.error}" for e in errors]
    if not sessions:
        return "\n".join(["No Claude Code sessions are running. Start one with start_session.", *failed])
    lines = [f"{len(sessions)} session(s):"]
    for s in sessions:
        where = (f"{s.host}:" if multiple else "") + (s.path or "?")
        url = s.url or ("exited" if s.status == "exited" else "no URL yet" if s.status != "stopped" else "ended")
        state = f" ({s.state})" if s.state else ""
        kind = "conversation" if s.mode == "conversation" else "server"
        reason = f" — {s.reason}" if s.reason else ""
        resumable = " · resume_session can bring it back" if s.status in ("stopped", "exited") and s.resumable else ""
        lines.append(f"- {s.id} · {kind} · {s.status}{state} · {where} · {url}{reason}{resumable}")
    return "\n".join([*lines, *failed])


def render_projects(listed: ProjectList, multiple: bool) -> str:
    if not multiple:
        if not listed.projects:
            return "No projects (directories with .git or .claude) found in the projects base directory."
        return f"{len(listed.projects)} project(s): " + ", ".join(listed.projects)
    lines = []
    for entry in listed.hosts:
        if entry.error is not None:
            lines.append(f"- {entry.host}: could not be asked — {entry.error}")
        else:
            lines.append(f"- {entry.host}: " + (", ".join(entry.projects) or "no projects"))
    return "Projects by dev server (pass host to start_session):\n" + "\n".join(lines)


def input_rules(tool: Callable[..., Any]) -> dict[str, tuple[InputRule, bool]]:
    """The InputRule of each argument of a tool function that has one, and whether it is required."""
    hints = typing.get_type_hints(tool, include_extras=True)
    parameters = inspect.signature(tool).parameters
    rules: dict[str, tuple[InputRule, bool]] = {}
    for name, hint in hints.items():
        for extra in getattr(hint, "__metadata__", ()):
            if isinstance(extra, InputRule):
                rules[name] = (extra, parameters[name].default is inspect.Parameter.empty)
    return rules


class CheckInputs:
    """Checks tool arguments against their InputRule before the SDK validates them, so a violation
    is answered with the rule's text for the model instead of pydantic's report."""

    def __init__(self, rules: Mapping[str, Mapping[str, tuple[InputRule, bool]]]):
        self.rules = rules

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/call" and ctx.params is not None:
            tool = ctx.params.get("name")
            arguments = ctx.params.get("arguments") or {}
            rules = self.rules.get(tool, {}) if isinstance(tool, str) else {}
            for argument, (rule, required) in rules.items():
                value = arguments.get(argument) if isinstance(arguments, Mapping) else None
                try:
                    if value is not None or required:
                        rule.check(value)
                except ValueError as exc:
                    message = str(exc) if value is not None else f"{argument} is required: {rule.description}"
                    log.info("tool %s: refused its %s", tool, argument)
                    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)
        return await call_next(ctx)


def tool_annotations(
    title: str,
    *,
    read_only: bool = False,
    destructive: bool = False,
    idempotent: bool = False,
    open_world: bool = False,
) -> ToolAnnotations:
    """MCP tool hints; a read-only tool is idempotent and destroys nothing by definition."""
    return ToolAnnotations(
        title=title,
        read_only_hint=read_only,
        destructive_hint=None if read_only else destructive,
        idempotent_hint=idempotent or read_only,
        open_world_hint=open_world,
    )


def build_mcp_server(hosts: Hosts) -> MCPServer:
    mcp: MCPServer = MCPServer("rc_mcp", title="Claude Code Remote Control", version=VERSION, instructions=INSTRUCTIONS)

    @mcp.tool(annotations=tool_annotations("Start a Claude Code session", open_world=True))
    async def start_session(
        name: SessionName,
        path: ProjectPath,
        ctx: Context,
        worktree: Annotated[
            bool | None,
            Field(description="Give each on-demand session its own git worktree (default: server setting)"),
        ] = None,
        permission_mode: PermissionModeInput = None,
        prompt: Annotated[
            str | None,
            Field(
                description="Start a conversation with this first prompt: a task, or a slash command such as "
                "/security-review (get_reply returns the answer)"
            ),
        ] = None,
        interactive: Annotated[
            bool, Field(description="Start a conversation without a first prompt (send_prompt gives it one)")
        ] = False,
        host: HostName = None,
    ) -> Annotated[CallToolResult, SessionStarted]:
        """Start Claude Code in a project on the dev server. Without prompt/interactive: a Remote Control
        server, whose URL opens at claude.ai/code. With them: a conversation this chat can drive. Waits
        until the session is up (usually a few seconds)."""

        async def on_state(state: str) -> None:
            if state in START_PROGRESS:
                step, message = START_PROGRESS[state]
                await ctx.report_progress(step, 3, message)

        await ctx.report_progress(0, 3, "connecting to the dev server")
        started = await run_tool(
            "start_session",
            on(host, None, lambda s, _: s.start(name, path, worktree, on_state, permission_mode, prompt, interactive)),
        )
        await ctx.report_progress(3, 3, f"session {started.id}: {started.status}")
        return tool_result(started, started.message)

    @mcp.tool(annotations=tool_annotations("List Claude Code sessions", read_only=True))
    async def list_sessions(host: HostName = None) -> Annotated[CallToolResult, SessionList]:
        """List the Claude Code sessions on the dev server(s): running ones with their URLs and state, and
        ended ones that resume_session can bring back."""
        found, errors = await run_tool("list_sessions", hosts.list_all(host))
        listed = SessionList(sessions=found, errors=errors)
        return tool_result(listed, render_sessions(found, errors, hosts.multiple))

    @mcp.tool(annotations=tool_annotations("Stop a Claude Code session", destructive=True, idempotent=True))
    async def stop_session(
        id: SessionId,
        forget: Annotated[
            bool, Field(description="Also remove what resume_session would need (claude's transcript stays)")
        ] = False,
        host: HostName = None,
    ) -> Annotated[CallToolResult, SessionStopped]:
        """Stop a Claude Code session (its tmux session and claude process) by its exact id."""
        stopped = await run_tool("stop_session", on(host, id, lambda s, i: s.stop(i, forget)))
        return tool_result(stopped, stopped.message)

    async def on(host: str | None, session_id: str | None, work: Callable[[Sessions, str], Awaitable[Any]]) -> Any:
        """`work` on the host named, or the id's host, with the id as that host knows it."""
        sessions, bare = hosts.pick(host, session_id)
        return await work(sessions, bare or "")

    def progress_reporter(ctx: Context) -> Callable[[str], Awaitable[None]]:
        steps = 0

        async def report(message: str) -> None:
            nonlocal steps
            steps += 1
            await ctx.report_progress(steps, None, message)

        return report

    def turn_text(result: TurnResult) -> str:
        lines = [result.message]
        if result.actions and result.status != "waiting":
            lines.append("Actions: " + "; ".join(f"{a.tool} {a.detail}".strip() for a in result.actions))
        if result.url and result.url not in result.message:
            lines.append(f"Link: {result.url}")
        return "\n".join(lines)

    @mcp.tool(annotations=tool_annotations("Send a prompt to a conversation", open_world=True))
    async def send_prompt(
        id: SessionId,
        prompt: Annotated[
            str, Field(description="What to tell claude: text (several lines are fine) or a slash command")
        ],
        ctx: Context,
        wait_seconds: WaitSeconds = DEFAULT_WAIT,
        host: HostName = None,
    ) -> Annotated[CallToolResult, TurnResult]:
        """Type a follow-up prompt into an idle conversation (never into a busy one or a dialog), then wait
        up to wait_seconds for claude's answer, reporting progress as the turn advances."""
        report = progress_reporter(ctx)
        result = await run_tool("send_prompt", on(host, id, lambda s, i: s.send(i, prompt, wait_seconds, report)))
        return tool_result(result, turn_text(result))

    @mcp.tool(annotations=tool_annotations("Get a conversation's answer", read_only=True))
    async def get_reply(
        id: SessionId, ctx: Context, wait_seconds: WaitSeconds = DEFAULT_WAIT, host: HostName = None
    ) -> Annotated[CallToolResult, TurnResult]:
        """The answer to a conversation's last prompt (the first one included): waits up to wait_seconds
        for the turn to end; 0 only looks."""
        report = progress_reporter(ctx)
        result = await run_tool("get_reply", on(host, id, lambda s, i: s.reply(i, wait_seconds, report)))
        return tool_result(result, turn_text(result))

    @mcp.tool(annotations=tool_annotations("Interrupt a conversation's turn", destructive=True))
    async def interrupt_session(id: SessionId, host: HostName = None) -> Annotated[CallToolResult, TurnResult]:
        """Stop the current turn of a conversation (Esc), and confirm it is idle again."""
        result = await run_tool("interrupt_session", on(host, id, lambda s, i: s.interrupt(i)))
        return tool_result(result, turn_text(result))

    @mcp.tool(annotations=tool_annotations("Resume a Claude Code session", open_world=True))
    async def resume_session(
        id: SessionId, ctx: Context, host: HostName = None
    ) -> Annotated[CallToolResult, SessionStarted]:
        """Bring back a conversation that exited or was stopped (same id, directory and transcript), or a
        Remote Control server within claude's own window of about 4 hours."""

        async def on_state(state: str) -> None:
            if state in START_PROGRESS:
                step, message = START_PROGRESS[state]
                await ctx.report_progress(step, 3, message)

        started = await run_tool("resume_session", on(host, id, lambda s, i: s.resume(i, on_state)))
        return tool_result(started, started.message)

    @mcp.tool(annotations=tool_annotations("Answer claude's permission prompt", destructive=True))
    async def answer_permission(
        id: SessionId,
        decision: Annotated[Literal["allow_once", "deny"], Field(description="allow_once or deny")],
        prompt_id: Annotated[
            str,
            Field(
                pattern=r"^[A-Za-z0-9_-]{1,128}$",
                description="The permission.prompt_id that get_reply or send_prompt reported",
            ),
        ],
        host: HostName = None,
    ) -> Annotated[CallToolResult, TurnResult]:
        """Allow once or deny the permission prompt a conversation waits at — only when the server's owner
        enabled it (ALLOW_CHAT_APPROVALS), and only the exact prompt that was reported. Ask the user first."""
        result = await run_tool("answer_permission", on(host, id, lambda s, i: s.answer(i, decision, prompt_id)))
        return tool_result(result, turn_text(result))

    @mcp.tool(annotations=tool_annotations("List projects", read_only=True))
    async def list_projects(host: HostName = None) -> Annotated[CallToolResult, ProjectList]:
        """List project directories (containing .git or .claude, up to two levels deep) that start_session
        accepts as path, on each dev server."""
        found = await run_tool("list_projects", hosts.projects(host))
        listed = ProjectList(projects=[], hosts=[])
        for name, result in found:
            if isinstance(result, Exception):
                if not hosts.multiple or host is not None:
                    raise ToolError(str(result))
                listed.hosts.append(HostProjects(host=name, error=describe_error(result)))
            else:
                listed.hosts.append(HostProjects(host=name, projects=result))
                listed.projects = listed.projects or result  # the first host's: start_session's default
        return tool_result(listed, render_projects(listed, hosts.multiple))

    @mcp.tool(annotations=tool_annotations("List dev servers", read_only=True))
    async def list_hosts(
        refresh: Annotated[bool, Field(description="Check again now instead of using a check up to 5 min old")] = False,
    ) -> Annotated[CallToolResult, HostList]:
        """The dev servers this connector reaches, whether each is reachable, its claude version and login."""
        found = await run_tool("list_hosts", hosts.status(refresh))
        lines = [
            f"- {h.name}: "
            + (
                f"reachable, claude {h.claude_version or '?'}, {'logged in' if h.logged_in else 'NOT logged in'}"
                if h.reachable
                else "unreachable"
            )
            + (f" — {'; '.join(h.problems)}" if h.problems else "")
            for h in found
        ]
        return tool_result(HostList(hosts=found), f"{len(found)} dev server(s):\n" + "\n".join(lines))

    tools = (
        start_session, stop_session, send_prompt, get_reply, interrupt_session, resume_session, answer_permission,
        list_sessions, list_projects,
    )  # fmt: skip
    mcp.middleware.append(CheckInputs({tool.__name__: input_rules(tool) for tool in tools}))
    return mcp


# ── HTTP & ASGI ───────────────────────────────────────────────────────────────────────────────

ASGIScope = dict[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
CORS = [("Access-Control-Allow-Origin", "*")]  # browser-based MCP clients read metadata and call /token


def allowed_hosts(server_url: str) -> list[str]:
    """Host header values accepted on /mcp (DNS-rebinding protection): SERVER_URL's host, and
    loopback names so health checks and local clients work."""
    parts = urlsplit(server_url)
    host = parts.hostname or "localhost"
    names = {host, *LOOPBACK_HOSTS}
    hosts = set()
    for name in names:
        name = f"[{name}]" if ":" in name else name
        hosts |= {name, f"{name}:*"}
    if parts.port:
        hosts.add(f"{f'[{host}]' if ':' in host else host}:{parts.port}")
    return sorted(hosts)


# Where a platform's own proxy connects from: private networks (Fly.io: 172.16.0.0/12 and its
# fdaa::/16 6PN) and loopback. Not "any address that is not public": 6to4, Teredo or NAT64
# sources are no proxies of ours.
PROXY_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "127.0.0.0/8", "::1/128")
)


def is_proxy_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in PROXY_NETWORKS if network.version == ip.version)


def client_address(scope: ASGIScope, headers: Mapping[str, str], platform_header: str | None) -> str:
    """The client's address, for throttles and logs. It is the connecting peer — which uvicorn
    has already replaced by X-Forwarded-For's when the peer is one of FORWARDED_ALLOW_IPS — or
    the platform header (Fly-Client-IP) when the peer is the platform's proxy (a private
    address). Anything that is not an IP address counts as one and the same unknown client, so
    no made-up value buys a fresh throttle."""
    peer = str((scope.get("client") or ("",))[0])
    claimed = headers.get(platform_header.lower(), "").strip() if platform_header else ""
    for candidate in ([claimed] if claimed and is_proxy_address(peer) else []) + [peer]:
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_address(candidate))
    return "unknown"


async def read_request(scope: ASGIScope, receive: Receive, platform_header: str | None = None) -> Request:
    headers = parse_headers(scope.get("headers", []))
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
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        body=bytes(body),
        client_address=client_address(scope, headers, platform_header),
    )


# Tools that answer within a round trip or two. The MCP SDK's own OAuth client holds a lock from
# sending a request until its response headers arrive: a JSON answer comes with its headers, so a
# JSON answer to a call that waits (start_session, the conversation tools) would hold every other
# call of that client back. Those answer on an SSE stream, whose headers go out at once.
QUICK_TOOLS = frozenset({"list_sessions", "list_projects", "stop_session"})


def wants_stream(body: bytes) -> bool:
    """Whether a JSON-RPC request's answer goes on an SSE stream: when it asked for progress
    (`params._meta.progressToken`) or calls a tool that may wait. Anything unreadable: as before."""
    try:
        message = json.loads(body)
    except ValueError:
        return True
    if not isinstance(message, dict):
        return True
    params = message.get("params")
    params = params if isinstance(params, dict) else {}
    meta = params.get("_meta")
    if isinstance(meta, dict) and meta.get("progressToken") is not None:
        return True
    return message.get("method") == "tools/call" and params.get("name") not in QUICK_TOOLS


async def buffered_body(receive: Receive, limit: int) -> tuple[bytes, Receive]:
    """The request body (read up to just past `limit` bytes), and a receive that hands the same
    messages out again, at once, before the connection's own."""
    messages: collections.deque[MutableMapping[str, Any]] = collections.deque()
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if size > limit or not message.get("more_body"):
            break
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")

    async def replay() -> MutableMapping[str, Any]:
        return messages.popleft() if messages else await receive()

    return body, replay


# ── Connections and logs ──────────────────────────────────────────────────────────────────────
# What reaches the app at all (slow clients, connection caps), and how it is logged.


MAX_CONNECTIONS = 1000  # open at once; the server raises its file limit to hold them
MAX_CONNECTIONS_PER_ADDRESS = 64  # from one address, IPv6 /64 (proxies and loopback are not capped)
ADDRESS_CAPS = (MAX_CONNECTIONS_PER_ADDRESS, 4 * MAX_CONNECTIONS_PER_ADDRESS)  # per address, per IPv6 /48


def guarded_http_protocol(request_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, guarded against slow clients: a request that has not fully arrived
    within request_timeout (a connection that sends nothing, half a header or half a body) is
    closed; one address (IPv6: /64, and /48 together) cannot hold more than its share of
    connections; and when MAX_CONNECTIONS are open, the oldest one still sending its request makes
    room, so a flood of slow connections cannot keep a real client out. Responses (SSE streams)
    are not limited: the clock stops once the request is in."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    per_address: collections.Counter[str] = collections.Counter()
    waiting: dict[asyncio.Protocol, None] = {}  # connections whose request is still arriving, oldest first

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _addresses: tuple[str, ...] = ()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            peer = self.client[0] if self.client else ""
            if not is_proxy_address(peer):  # proxies and loopback carry many clients
                self._addresses = (throttle_key(peer), throttle_key(peer, 48))
                per_address.update(self._addresses)
            if any(per_address[a] > cap for a, cap in zip(self._addresses, ADDRESS_CAPS, strict=False)):
                log.warning("refused a connection from %s: too many open connections from there", peer)
                self.transport.close()
                return
            if len(self.connections) > MAX_CONNECTIONS:
                oldest = next(iter(waiting), None)
                if oldest is None:
                    log.warning("refused a connection from %s: %d connections are open", peer, MAX_CONNECTIONS)
                    self.transport.close()
                    return
                typing.cast(GuardedH11Protocol, oldest)._too_slow()
            self._start_clock()

        def _start_clock(self) -> None:
            self._deadline = self.loop.call_later(request_timeout, self._too_slow)
            waiting[self] = None

        def _stop_clock(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            waiting.pop(self, None)

        def _too_slow(self) -> None:
            self._stop_clock()
            peer = self.client[0] if self.client else "?"
            log.debug("closed a connection from %s: no whole request within %g s", peer, request_timeout)
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and self.conn.their_state is h11.IDLE:
                self._start_clock()  # the next request on a kept-alive connection
            super().data_received(data)
            if self._deadline is not None and self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
                self._stop_clock()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_clock()
            for address in self._addresses:
                per_address[address] -= 1
                if per_address[address] <= 0:
                    del per_address[address]
            self._addresses = ()
            super().connection_lost(exc)

    return GuardedH11Protocol


NON_PRINTABLE_RE = re.compile(r"[^\S ]|[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


class OneLineFormatter(logging.Formatter):
    """Log lines that no logged value can break: control, line-separator and other invisible
    characters in a message (a client name, a header, claude's output) are written escaped, and
    each line of a traceback is marked, so none can pass for a log line of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        return NON_PRINTABLE_RE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)

    def formatException(self, ei: Any) -> str:
        return "\n".join("  | " + line for line in super().formatException(ei).splitlines())


class HideQueryStrings(logging.Filter):
    """The access log shows paths without their query strings: a client that puts a token in the
    URL must not leave it in the log (/authorize's parameters are not the log's business either)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].partition("?")[0], *args[3:])
        return True


def configure_logging(level: str) -> None:
    """Our one handler on the root logger (uvicorn's loggers propagate to it), unless the host
    process already set logging up."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, HideQueryStrings) for f in access.filters):
        access.addFilter(HideQueryStrings())
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    # The SDK says "Terminating session: None" after every stateless request.
    logging.getLogger("mcp.server.streamable_http").setLevel(logging.WARNING)


# ── Routes ────────────────────────────────────────────────────────────────────────────────────
# One table of paths; the ASGI application around it.


@dataclass(frozen=True)
class Route:
    """One path: a hand-rolled endpoint (`handler`), or an ASGI app of its own (`asgi`, which
    answers every method itself)."""

    methods: tuple[str, ...] = ()
    handler: Callable[[Request], Awaitable[Response]] | None = None
    asgi: Callable[[ASGIScope, Receive, Send], Awaitable[None]] | None = None
    cors: bool = True  # answer CORS preflights and allow any origin


class App:
    """The ASGI application: one route table; OAuth errors rendered in one place."""

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
        self.runner = runner or make_runner(config)  # the first dev server's
        self.oauth = OAuthEndpoints(config, self.store, fetcher)
        several = len(config.all_hosts) > 1
        self.hosts = Hosts(
            [
                Sessions(host, self.runner if n == 0 else make_runner(host), host_in_ids=several)
                for n, host in enumerate(config.all_hosts)
            ]
        )
        self.sessions = self.hosts.first
        self.mcp = build_mcp_server(self.hosts)
        self.mcp.streamable_http_app(
            stateless_http=True,  # nothing to lose on restart; every request carries its token
            json_response=False,  # set per request in _mcp: SSE only where a stream is needed
            transport_security=TransportSecuritySettings(
                allowed_hosts=allowed_hosts(config.server_url),
                allowed_origins=[config.server_url],
            ),
        )
        self.session_manager = self.mcp.session_manager
        self._tasks: list[asyncio.Task[None]] = []
        self._open_requests: dict[anyio.CancelScope, str] = {}
        oauth = self.oauth
        mcp = Route(asgi=self._mcp, cors=False)  # both paths answered, no redirect
        self.routes: dict[str, Route] = {
            "/health": Route(("GET",), self._health),
            "/.well-known/oauth-authorization-server": Route(("GET",), self._as_metadata),
            "/.well-known/openid-configuration": Route(("GET",), self._as_metadata),  # some clients look here
            "/.well-known/oauth-protected-resource": Route(("GET",), self._pr_metadata),
            "/.well-known/oauth-protected-resource/mcp": Route(("GET",), self._pr_metadata),
            "/register": Route(("POST",), oauth.register),
            "/authorize": Route(("GET", "POST"), oauth.authorize, cors=False),  # a page for people, not scripts
            "/token": Route(("POST",), oauth.token),
            "/revoke": Route(("POST",), oauth.revoke),
            "/mcp": mcp,
            "/mcp/": mcp,
        }

    async def _health(self, request: Request) -> Response:
        return json_response(200, {"ok": True, "version": VERSION, "mode": "local" if self.config.local else "ssh"})

    async def _as_metadata(self, request: Request) -> Response:
        return json_response(200, self.oauth.authorization_server_metadata(), CORS, no_store=False)

    async def _pr_metadata(self, request: Request) -> Response:
        return json_response(200, self.oauth.protected_resource_metadata(), CORS, no_store=False)

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            route = self.routes.get(scope["path"])
            if route is not None and route.asgi is not None:
                await route.asgi(scope, receive, send)
            else:
                await self._endpoint(route, scope, receive, send)

    async def _endpoint(self, route: Route | None, scope: ASGIScope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        cors = CORS if route is None or route.cors else []
        try:
            if route is None or route.handler is None:
                raise OAuthError(404, "not_found", f"no endpoint {path}; the MCP endpoint is /mcp")
            if method == "OPTIONS" and route.cors:
                preflight = [
                    *cors,
                    ("Access-Control-Allow-Methods", ", ".join(route.methods)),
                    ("Access-Control-Allow-Headers", "Authorization, Content-Type, MCP-Protocol-Version"),
                    ("Access-Control-Max-Age", "86400"),
                ]
                await Response(204, b"", preflight).send(send)
                return
            if method not in route.methods:
                allow = ", ".join(route.methods)
                raise OAuthError(405, "invalid_request", f"use {' or '.join(route.methods)}", {"Allow": allow})
            response = await route.handler(await read_request(scope, receive, self.config.client_ip_header))
        except OAuthError as exc:
            response = error_response(exc)
        except OSError as exc:  # the token store cannot be written (full disk, read-only volume)
            log.error(
                "cannot save OAuth state (%s %s): %s — every token keeps working; fix the disk", method, path, exc
            )
            unavailable = "this server cannot save its state right now; try again in a minute"
            response = error_response(OAuthError(503, "temporarily_unavailable", unavailable, {"Retry-After": "60"}))
        except Exception:
            log.exception("unhandled error on %s %s", method, path)
            response = error_response(OAuthError(500, "server_error", "internal error; see the server log"))
        response.headers.extend(cors)
        await response.send(send)

    async def _mcp(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        token = bearer_token(parse_headers(scope.get("headers", [])))
        try:
            record = await self.oauth.authenticate_bearer(token)
        except OAuthError as exc:
            await error_response(exc).send(send)
            return
        scopes = record["scope"].split()
        user = AuthenticatedUser(
            AccessToken(
                token=hash_secret(token or ""),  # never the token itself
                client_id=record["client_id"],
                scopes=scopes,
                expires_at=int(record["expires_at"]),
                resource=record["resource"],
            )
        )
        reset = auth_context_var.set(user)
        with anyio.CancelScope() as request_scope:
            self._open_requests[request_scope] = token or ""  # ended if its link is revoked
            try:
                inner = {**scope, "path": "/mcp", "raw_path": b"/mcp", "user": user, "auth": AuthCredentials(scopes)}
                manager, plain = self.session_manager, False
                if scope["method"] == "POST":
                    # Plain JSON where no stream is needed: a JSON answer is read to its end, so
                    # the client keeps its connection (after an SSE answer it opens a new one).
                    # The manager reads the flag when it makes this request's transport, before
                    # its first await: the body is replayed without one.
                    body, receive = await buffered_body(receive, manager.max_request_body_size)
                    plain = not wants_stream(body)
                manager.json_response = plain
                await manager.handle_request(inner, receive, send)
            finally:
                del self._open_requests[request_scope]
                auth_context_var.reset(reset)

    async def _end_revoked_requests(self) -> None:
        """Open /mcp requests (streams, long tool calls) whose link was revoked — here, or by the
        `grants` command — are ended within a second."""
        while True:
            await asyncio.sleep(STORE_RECHECK * 2)
            for request_scope, token in list(self._open_requests.items()):
                record = self.store.lookup("access", token)
                if record is None or self.oauth.grants.live_grant(record) is None:
                    request_scope.cancel()

    def begin_shutdown(self) -> None:
        """The server stops taking requests: answer the calls still waiting for the dev server."""
        for sessions in self.hosts.by_name.values():
            sessions.stopping.set()

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
                try:
                    await anyio.to_thread.run_sync(self.oauth.end_links_of_another_secret)
                except OSError as exc:
                    await send({"type": "lifespan.startup.failed", "message": f"token store: {exc}"})
                    return
                self._tasks = [asyncio.create_task(self._warm_up()), asyncio.create_task(self._end_revoked_requests())]
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.begin_shutdown()
                for task in self._tasks:
                    task.cancel()
                await self.oauth.grants.flush_uses()
                await stack.aclose()
                await asyncio.gather(*(s.runner.close() for s in self.hosts.by_name.values()))
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _warm_up(self) -> None:
        """Connect at start-up so the first tool call is fast and a bad host key shows in the log."""

        async def connect(sessions: Sessions) -> None:
            try:
                await sessions.runner.connect()
            except RemoteError as exc:
                name = f" {sessions.host}" if self.hosts.multiple else ""
                log.error("dev server%s not reachable yet: %s", name, exc)

        await asyncio.gather(*(connect(s) for s in self.hosts.by_name.values()))


def create_app(config: Config) -> App:
    return App(config)


# ── main ──────────────────────────────────────────────────────────────────────────────────────


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything says "serving" (a bad HOST fails here)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and without it a
    # kept connection's JSON answer waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def raise_file_limit() -> None:
    """Open connections are files: take the soft limit up to the hard one (often 1024 → 1M)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rate_secret_apart(secret: str) -> Callable[[], str | None]:
    """weak_secret_warning(secret), worked out in a forked child, so zxcvbn's word lists never
    load here (dropped after use, they still left 4 MiB of heap in the server's RSS); returns the
    call that waits for it. Called before any thread starts: a fork copies only the calling thread."""
    if threading.active_count() > 1 or not hasattr(os, "fork"):
        return lambda: weak_secret_warning(secret)
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return lambda: weak_secret_warning(secret)
    if pid == 0:  # the child: rate, write the answer, leave without running any exit handler
        status = 1
        try:
            os.close(read_end)
            os.write(write_end, b"rated\n" + (weak_secret_warning(secret) or "").encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)

    def wait() -> str | None:
        with os.fdopen(read_end, "rb") as answer:
            data = answer.read()
        os.waitpid(pid, 0)
        if not data.startswith(b"rated\n"):  # the child failed: rate here after all
            return weak_secret_warning(secret)
        return data[6:].decode() or None

    return wait


def warn_if_weak(rating: Callable[[], str | None]) -> None:
    warning = rating()
    if warning:
        log.warning("%s", warning)
    release_memory()


def release_memory() -> None:
    """Give back the heap that start-up left free (imports, configuration): a few MiB of RSS."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc; elsewhere nothing to do


def serve(config: Config) -> int:
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            app.begin_shutdown()  # first: calls waiting for the dev server get their answer now
            await super().shutdown(sockets)

    try:
        app = create_app(config)
        app.store.ensure_writable()
    except OSError as exc:
        print(
            f"rc_mcp: cannot use the token store {config.token_store_path}: {exc}. Fix TOKEN_STORE_PATH.",
            file=sys.stderr,
        )
        return 2
    try:
        sock = bind_socket(config.host, config.port)
    except OSError as exc:
        print(
            f"rc_mcp: cannot listen on {config.host}:{config.port}: {exc}. Fix HOST or PORT "
            "(or stop whatever already listens there).",
            file=sys.stderr,
        )
        return 2
    raise_file_limit()
    client_id, _ = derive_client_credentials(config.mcp_secret)
    log.info("rc_mcp %s serving %s/mcp (listening on %s:%d)", VERSION, config.server_url, config.host, config.port)
    log.info("mode: %s; projects in %s", config.mode, config.projects_base_dir)
    log.info("token store: %s", config.token_store_path)
    log.info("OAuth client_id: %s (the secret: `python rc_mcp.py credentials`)", client_id)
    if config.local and not Path(config.projects_base_dir).expanduser().is_dir():
        log.warning(
            "PROJECTS_BASE_DIR %s does not exist on this machine: create it or fix it", config.projects_base_dir
        )
    server_url = urlsplit(config.server_url)
    if server_url.scheme != "https" and server_url.hostname not in LOOPBACK_HOSTS:
        log.warning("SERVER_URL is not https: Claude.ai only connects to https URLs on port 443")
    threading.Thread(target=warn_if_weak, args=(rate_secret_apart(config.mcp_secret),), daemon=True).start()
    server = Server(
        uvicorn.Config(
            app,
            http=guarded_http_protocol(config.request_timeout),
            log_config=None,  # our handler, with its escaping and the access-log filter
            log_level=config.log_level.lower(),
            server_header=False,
            proxy_headers=True,
            forwarded_allow_ips=config.forwarded_allow_ips,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=5,
        )
    )
    server.run(sockets=[sock])
    return 0


def print_credentials(environ: Mapping[str, str]) -> int:
    try:
        secret = read_mcp_secret(environ)
    except ValueError as exc:
        print(f"rc_mcp: {exc}", file=sys.stderr)
        return 2
    client_id, client_secret = derive_client_credentials(secret)
    server_url = (environ.get("SERVER_URL") or "").strip() or "http://localhost"
    uri = totp_uri(consent_totp_key(secret), server_url)
    print(f"client_id:     {client_id}\nclient_secret: {client_secret}")
    print(
        "\nFor the consent page (clients other than Claude with these credentials), add rc_mcp to an "
        "authenticator app — scan this, or enter the URI — and type its current code instead of MCP_SECRET:"
    )
    print(uri)
    import segno  # only here

    segno.make(uri, error="m").terminal(compact=True)
    if warning := weak_secret_warning(secret):
        print(f"\nWARNING: {warning}", file=sys.stderr)
    return 0


def run_grants(config: Config, action: list[str]) -> int:
    """`grants`: the live links; `grants revoke ID…|--all`: end them (the server notices at once)."""
    if not config.token_store_path.is_file():
        print(f"no links yet: {config.token_store_path} does not exist")
        return 0
    store = TokenStore(config.token_store_path, idle_ttl=config.idle_ttl)
    recorded = store.snapshot().get("secret")
    if recorded is not None and not secret_equal(recorded, store_fingerprint(config.mcp_secret)):
        print(
            f"rc_mcp: {config.token_store_path} holds the links of another MCP_SECRET (the server ends them at its "
            "next start). Run this with the server's MCP_SECRET.",
            file=sys.stderr,
        )
        return 2
    grants = store.grants()
    if action and action[0] == "revoke":
        chosen = action[1:]
        if not chosen:
            print("rc_mcp: name the links to end (`grants revoke ID …`) or `grants revoke --all`", file=sys.stderr)
            return 2
        ids: list[str] | None = None
        if chosen != ["--all"]:
            ids = []
            for wanted in chosen:
                found = [g for g in grants if g.startswith(wanted)] if len(wanted) >= 6 else []
                if len(found) != 1:
                    print(f"rc_mcp: no single link has an id starting with {wanted!r}: see `grants`", file=sys.stderr)
                    return 2
                ids += found
        ended = Grants(config, store, ClientRegistry(config, store)).revoke_grants(ids)
        print(f"ended {len(ended)} link(s); their tokens stop working at once")
        return 0
    if action:
        print(f"rc_mcp: unknown grants action {action[0]!r}: use `grants` or `grants revoke ID|--all`", file=sys.stderr)
        return 2
    fixed_id, _ = derive_client_credentials(config.mcp_secret)
    if not grants:
        print("no live links")
    for grant_id, grant in sorted(grants.items(), key=lambda item: item[1]["created_at"]):
        kind = (
            "connector credentials"
            if secret_equal(grant["client_id"], fixed_id)
            else ("metadata document" if is_metadata_document_url(grant["client_id"]) else "registered client")
        )
        print(
            f"{grant_id[:12]}  {grant['client_name'] or grant['client_id'][:40]} ({kind})  "
            f"created {iso_time(grant['created_at'])}  last used {iso_time(grant['last_used'])}  "
            f"ends {iso_time(grant['expires_at'])} unless used"
        )
    return 0


def iso_time(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def check_token_store(path: Path) -> CheckLine:
    """Without writing anything (`check` often runs as root: no root-owned files left behind)."""
    directory = path.parent
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if path.exists():
        try:
            problem = store_problem(json.loads(path.read_bytes())) or None
        except (OSError, ValueError, RecursionError) as exc:
            problem = str(exc)
        if problem and not is_legacy_store_file(path):
            return CheckLine(False, "token store", f"{path} cannot be read ({problem}); the server will move it aside")
        if not os.access(path, os.W_OK) or not os.access(directory, os.W_OK):
            return CheckLine(False, "token store", f"{path} is not writable for this user — fix its owner or mode")
        return CheckLine(True, "token store", f"{path} is readable and writable")
    if not os.access(existing, os.W_OK):
        return CheckLine(
            False, "token store", f"cannot create {path} ({existing} is not writable) — fix TOKEN_STORE_PATH"
        )
    return CheckLine(True, "token store", f"{path} will be created (its directory mode 0700)")


def is_legacy_store_file(path: Path) -> bool:
    with contextlib.suppress(OSError, ValueError, RecursionError):
        return is_legacy_store(json.loads(path.read_bytes()))
    return False


async def run_checks(config: Config) -> list[CheckLine]:
    """`check`: one line per item, and it writes nothing — no token store, no recorded host key.
    Every dev server is checked at once; with several, each one's lines follow its name."""
    lines = [CheckLine(True, "configuration", config.mode if not config.hosts else f"{len(config.hosts)} dev servers")]
    warning = await anyio.to_thread.run_sync(weak_secret_warning, config.mcp_secret)
    lines.append(CheckLine(warning is None, "MCP_SECRET", warning or "strong enough"))
    lines.append(check_token_store(config.token_store_path))

    async def one(host: Config) -> list[CheckLine]:
        runner = LocalRunner() if host.local else SSHRunner(host, record_host_keys=False)
        try:
            return await check_host(host, runner)
        finally:
            await runner.close()

    blocks = await asyncio.gather(*(one(host) for host in config.all_hosts))
    for host, block in zip(config.all_hosts, blocks, strict=True):
        if config.hosts:
            lines.append(CheckLine(all(line.ok for line in block), f"[{host.host_name}]", host.mode))
        lines += block
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rc_mcp.py", description="MCP server that starts Claude Code Remote Control sessions on a dev server."
    )
    parser.add_argument("command", nargs="?", default="serve", choices=("serve", "credentials", "check", "grants"))
    parser.add_argument("action", nargs="*", help="grants: `revoke ID…` or `revoke --all`")
    parser.add_argument("--all", action="store_true", help="with `grants revoke`: end every link")
    args = parser.parse_args(argv)
    environ = read_environment()
    level = (environ.get("LOG_LEVEL") or "INFO").strip().upper()
    configure_logging(level if level in LOG_LEVELS else "INFO")  # a bad LOG_LEVEL is reported below
    if args.command == "credentials":
        return print_credentials(environ)
    try:
        config = load_config(environ)
    except ConfigError as exc:
        print(f"rc_mcp: the configuration has {len(exc.problems)} problem(s):\n{exc}", file=sys.stderr)
        return 2
    if args.command == "grants":
        return run_grants(config, args.action + (["--all"] if args.all else []))
    if args.command == "check":
        lines = asyncio.run(run_checks(config))
        for line in lines:
            print(line)
        return 0 if all(line.ok for line in lines) else 1
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
