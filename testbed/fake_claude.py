#!/usr/bin/env python3
"""A fake `claude` CLI for the test suite: `--version`, `auth status` and `remote-control`/`rc`.

It imitates the parts of Claude Code that rc_mcp.py drives: flag parsing and its error texts, the
first-run prompts (consent, spawn mode, workspace trust), one server per directory, the repainting
stdout status block with the environment URL, OSC-8 session links and signals. Behaviour knobs come
from `$HOME/.fake-claude/config.json`; every invocation appends one JSON line to
`$HOME/.fake-claude/trace.jsonl`, and a Remote Control server another to `ready.jsonl` when its URL
is first on the screen. See testbed/README.md. Standard library only.
"""

from __future__ import annotations

import codecs
import datetime
import fcntl
import json
import os
import re
import secrets
import select
import shlex
import signal
import socket
import subprocess
import sys
import termios
import time
import unicodedata
import uuid


# ── When this process started: read first, while everything since its exec has been CPU work ──
def process_start_times() -> tuple[float | None, float | None]:
    """(exec, fork) wall-clock times of this process; None where /proc cannot tell (not Linux).

    fork: /proc/self/stat's starttime (clock ticks since boot) on CLOCK_BOOTTIME, to a tick (10 ms).
    That is when the parent forked the process: for a tmux pane, the pane's shell, which may wait
    (rc_mcp's pane waits for a go signal) before it execs claude. exec: now minus the time the task
    has run or waited to run (/proc/self/schedstat, ns); from exec to here the interpreter only
    starts and imports, without sleeping, so that is the exec, early by the CPU time the process
    had before it (the pane's shell: a few ms) and late by any wait for the disk (cold cache)."""
    now = time.time()
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    fork = exec_ = None
    try:
        with open("/proc/self/schedstat", encoding="ascii") as fh:
            ran, waited = (int(field) for field in fh.read().split()[:2])
        with open("/proc/self/stat", encoding="ascii") as fh:
            stat = fh.read()
        if boottime is not None:
            ticks = int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22 (fields 3… follow the ')')
            fork = now - (time.clock_gettime(boottime) - ticks / os.sysconf("SC_CLK_TCK"))
        if ran > 0:
            exec_ = now - (ran + waited) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    if exec_ is not None and fork is not None:
        exec_ = max(exec_, fork)
    return exec_, fork


EXEC_TS, FORK_TS = process_start_times()

# ── Texts shared by every version profile ──
ESC = "\x1b"
BEL = "\x07"
RESET = ESC + "[0m"  # written right after every URL, like the real status block

CONSENT_TEXT = (
    "Remote Control\n"
    "Take this session with you and pick up right where you left off on any device.\n"
    "Sessions started here can be continued from https://claude.ai/code and the Claude app.\n"
)
CONSENT_PROMPT = "Enable Remote Control? (y/n) "
CONSENT_EOF_ERROR = (
    'Remote Control did not start: "Enable Remote Control?" got no answer. '
    "Run `claude remote-control` at a terminal and answer y once; it won't ask again."
)
SPAWN_PROMPT = (
    "Spawn mode for this project: [1] same-dir (sessions share this directory) "
    "[2] worktree (each session gets an isolated git worktree)\n"
    "Choose [1/2] (default: 1): "
)
TRUST_TEXT = (
    "Quick safety check: is this a project you created or one you trust? (Like your own code, "
    "a well-known open source project, or work from your team.) If not, take a moment to review "
    "what's in this folder first.\n"
    "Claude Code will be able to read, edit, and execute files here.\n"
    "Security guide: https://code.claude.com/docs/en/security" + RESET + "\n"
)
TRUST_PROMPT = "Trust {dir}? [y/N] "
UNTRUSTED_ERROR = (
    "Error: Workspace not trusted. Please run `claude` in {dir} first to review and accept the workspace trust dialog."
)
HOME_UNTRUSTED_ERROR = (
    "Error: Workspace not trusted. {dir} is your home directory, and for security "
    "home-directory trust is never saved, so running `claude` here first won't help. "
    "Run `claude remote-control` from a project directory instead."
)
SETUP_TOKEN_ERROR = (
    "Error: Remote Control requires a full-scope login token. Long-lived tokens (from "
    "`claude setup-token` or CLAUDE_CODE_OAUTH_TOKEN) are limited to inference-only for "
    "security reasons. Run `claude auth login` to use Remote Control."
)
FEATURE_FLAG_ERROR = (
    "Remote Control requires feature-flag evaluation, which is disabled because {var} is set. "
    "Unset it (or run in a shell without it) to use Remote Control."
)
FEATURE_FLAG_UNAVAILABLE_ERROR = (
    "Remote Control requires feature-flag evaluation, which is unavailable in this environment."
)
NOT_ENABLED_ERROR = "Remote Control is not yet enabled for your account."  # < 2.1.154
ANOTHER_INSTANCE_ERROR = (
    "Error: Another `claude remote-control` instance (pid {pid}) is already running in this "
    "directory. Use that one, or stop it first."
)
SESSION_ELSEWHERE_ERROR = (
    "Error: Session {session} is already being served by another `claude remote-control` "
    "instance (pid {pid}) in {dir}. {fix}"
)
ENVIRONMENT_ELSEWHERE_ERROR = (  # >= 2.1.332
    "Error: Environment {env} is already being served by another `claude remote-control` "
    "instance (pid {pid}) in {dir}. Use that terminal, or stop it first."
)
REGISTRATION_ERROR = "Remote Control environments are not available for your account."
MULTI_SESSION_GATE_ERROR = "Error: Multi-session Remote Control is not enabled for your account yet."
UNSUPPORTED_AUTH_ERROR = (
    "Error: Remote Control is not supported with {what}.\n\n"
    "Remote Control is only available with claude.ai subscriptions. {fix}"
)
SANDBOX_ERROR = (
    "--sandbox is not supported by claude remote-control. The flag had no effect and was "
    "removed. To sandbox sessions, set sandbox.enabled to true in settings."
)
USAGE_HINT = "Run 'claude remote-control --help' for usage."
UNKNOWN_ARGUMENT_ERROR = "Unknown argument: {arg}\n" + USAGE_HINT
MISSING_VALUE_ERROR = "{flag} requires a value.\n" + USAGE_HINT
SPAWN_VALUE_ERROR = "--spawn requires one of: session, same-dir, worktree (got: {value})"
CAPACITY_VALUE_ERROR = "--capacity requires a positive integer (got: {value})"
CAPACITY_SESSION_ERROR = "--capacity cannot be used with --spawn=session (single-session mode has fixed capacity 1)."
PERMISSION_MODE_ERROR = "--permission-mode requires one of: {choices} (got: {value})"
CONTINUE_CONFLICT_ERROR = "--continue and --session-id cannot be used together."
RESUME_SPAWN_CONFLICT_ERROR = "{flag} cannot be combined with --spawn or --capacity."
SESSION_ID_VALUE_ERROR = "--session-id requires a session ID like session_... (got: {value})"
PREVIEW_PORT_ERROR = "--preview-port is not available in this build."
# Parser errors new or changed in 2.1.332.
NO_SANDBOX_ERROR_332 = (
    "--no-sandbox is not supported by claude remote-control. The flag had no effect and was removed. "
    "Remove it from the command."
)
SETTINGS_JSON_ERROR_332 = "--settings takes the path of a JSON settings file, not a JSON string."
ONCE_ERROR_332 = "{flag} may only be specified once"
SESSION_ID_EMPTY_ERROR_332 = "--session-id requires a value"
CONTINUE_CONFLICT_ERROR_332 = "--session-id and --continue cannot be used together."
RESUME_SPAWN_CONFLICT_ERROR_332 = (
    "--session-id and --continue cannot be used with --spawn, --capacity, or --create-session-in-dir."
)
UNATTENDED_CONFLICT_ERROR_332 = (
    "--allow-unattended-tool-calls cannot be used with --spawn=session, --session-id, or --continue."
)
PREVIEW_ERROR_332 = "--enable-live-preview and --preview-port are not available in this build."
UNATTENDED_TTY_ERROR = "--allow-unattended-tool-calls requires an interactive terminal (stdin and stdout)."
PRINT_MODE_ERROR = "Error: Input must be provided either through stdin or as a prompt argument when using --print"
DAEMON_ERROR = "Service install is disabled in this version"
DIE_LATER_MESSAGE = "Error: Lost connection to the Remote Control server. Giving up."
GOODBYE_TEXT = (
    "Remote Control stopped. Sessions stay resumable for about 4 hours with `claude remote-control --continue`."
)
DECOY_LINES = (
    "Claude Code Remote Control · https://claude.com/claude-code" + RESET,
    "Sessions are listed at https://claude.ai/code"
    + RESET
    + " · security: https://code.claude.com/docs/en/security"
    + RESET,
)
SPAWN_MODE_TEXT = {
    "same-dir": "New sessions will be created in the current directory",
    "worktree": "New sessions will be created in an isolated worktree",
    "session": "Single session · exits when complete",
}
SPINNER_FRAMES = ("|", "/", "-", "\\")
READY_GLYPH = "✔︎"
ADJECTIVES = ("amber", "brisk", "calm", "deft", "eager", "fuzzy", "lucid", "quiet", "swift")
NOUNS = ("otter", "falcon", "maple", "comet", "harbor", "lantern", "pebble", "willow")
PERMISSION_MODES = ("acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "plan")
# 2.1.332's main CLI (and, by the fake's choice, its server mode): `manual` added, `default` still accepted.
PERMISSION_MODES_332 = ("acceptEdits", "auto", "bypassPermissions", "manual", "dontAsk", "plan")
SPAWN_MODES = ("session", "same-dir", "worktree")
DEFAULT_CAPACITY = 32

# Variables recorded by name (never by value) in the trace.
TRACKED_ENV = (
    "DISABLE_TELEMETRY",
    "DO_NOT_TRACK",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_GROWTHBOOK",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CONFIG_DIR",
    "CLAUDE_REMOTE_CONTROL_SESSION_NAME_PREFIX",
    "CI",
    "TMUX",
    "XDG_STATE_HOME",
)
FEATURE_FLAG_VARS = (
    "DISABLE_TELEMETRY",
    "DO_NOT_TRACK",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    "DISABLE_GROWTHBOOK",
)
THIRD_PARTY_PROVIDERS = (
    ("CLAUDE_CODE_USE_BEDROCK", "bedrock", "Amazon Bedrock"),
    ("CLAUDE_CODE_USE_VERTEX", "vertex", "Google Vertex AI"),
    ("CLAUDE_CODE_USE_FOUNDRY", "foundry", "Microsoft Foundry"),
)

# ── Version profiles (reference: claude-remote-control.md §5) ──
PROFILES: dict[str, dict[str, object]] = {
    "2.1.84": {
        "env_url": "https://claude.ai/code?bridge={env}",
        "session_url": "https://claude.ai/code/{session}?bridge={env}",
        "idle_text": "Code everywhere with the Claude app or",
        "attached_text": "Continue coding in the Claude app or",
        "login_fix": "Please use `/login` to sign in with your claude.ai account.",
        "rejects_sandbox": False,
        "one_server_per_dir": False,
        "consent_eof_fails": False,  # waits forever on EOF
        "projects_line": False,
        "parser_332": False,  # 2.1.332's server-mode parser errors (§9 item 5)
        "elsewhere_fix": "Use that one, or stop it first.",
        "auth_json_default": False,  # `auth status` prints JSON unless --text (2.1.332)
    },
    "2.1.197": {
        "env_url": "https://claude.ai/code?environment={env}",
        "session_url": "https://claude.ai/code/{session}",
        "idle_text": "Code anywhere with the Claude mobile app or",
        "attached_text": "Continue coding in the Claude mobile app or",
        "login_fix": "Run `claude auth login` to sign in with your claude.ai account.",
        "rejects_sandbox": True,
        "one_server_per_dir": False,
        "consent_eof_fails": False,
        "projects_line": True,
        "parser_332": False,
        "elsewhere_fix": "Use that one, or stop it first.",
        "auth_json_default": False,
    },
    "2.1.330": {
        "env_url": "https://claude.ai/code?environment={env}",
        "session_url": "https://claude.ai/code/{session}?from=cli",
        "idle_text": "Code anywhere with the Claude mobile app or",
        "attached_text": "Continue coding in the Claude mobile app or",
        "login_fix": "Run `claude auth login` to sign in with your claude.ai account.",
        "rejects_sandbox": True,
        "one_server_per_dir": True,
        "consent_eof_fails": True,
        "projects_line": True,
        "parser_332": False,
        "elsewhere_fix": "Use that one, or stop it first.",
        "auth_json_default": False,
    },
}
# 2.1.332: 2.1.330 with the newer parser errors and wording, and `auth status` in JSON by default.
PROFILES["2.1.332"] = {
    **PROFILES["2.1.330"],
    "parser_332": True,
    "elsewhere_fix": "Use that terminal, or stop it first.",
    "auth_json_default": True,
}
SIGNED_OUT_ERROR = (
    "Error: You must be logged in to use Remote Control.\n\n"
    "Remote Control is only available with claude.ai subscriptions. {fix}"
)
PROJECTS_LINE = "Or ask Claude to work in this folder from your projects on claude.ai"
KEYS_LINE = "space to show QR code · w to toggle spawn mode"

# ── Knobs: $HOME/.fake-claude/config.json, top level plus "names": {"<--name>": {...}} ──
DEFAULTS: dict[str, object] = {
    "version": "2.1.330",  # printed by --version; picks the nearest profile at or below it
    "logged_in": True,
    "email": "dev@example.com",
    "subscription": "max",
    "fail": None,  # error key (see FAIL_TEXTS) or literal text: print, exit fail_exit
    "fail_exit": 1,
    "connect_delay": 0.3,  # seconds in the Connecting phase
    "never_ready": False,  # stay in Connecting forever (no URL)
    "attach_delay": None,  # seconds after Ready until a device attaches (None: never)
    "hyperlinks": "osc8",  # "osc8" or "plain": session line style
    "list_precreated": True,  # list the pre-created session (title + link) in the Ready block
    "exit_after": None,  # seconds after the server phase begins: exit by itself
    "exit_code": 1,
    "exit_message": None,  # stderr text when dying with exit_code != 0 (None: default text)
    "shutdown_delay": 0.0,  # seconds between a signal and the exit (lock still held)
    "env_id": None,  # fixed environment ID (None: random env_…)
    "session_id": None,  # fixed session ID (None: random session_…)
    "decoys": True,  # print decoy URLs before the status block
    "spinner_interval": 0.15,
    # conversational mode (claude [--rc NAME] ["prompt"])
    "startup_delay": 0.3,  # seconds from launch until the TUI reads keys (typed keys wait in the pty)
    "turn_delay": 0.3,  # seconds the model works before the first output of each turn
    "tool_delay": 0.2,  # seconds each tool runs (and between the chunks of a `long` answer)
}
# Keys accepted by the "fail" knob; any other string is printed as it is.
FAIL_KEYS = (
    "signed_out",
    "setup_token",
    "feature_flag",
    "feature_flag_unavailable",
    "not_enabled",
    "untrusted",
    "home",
    "another_instance",
    "session_elsewhere",
    "registration",
    "multi_session_gate",
    "api_key",
)
# Also accepted by "fail" (2.1.332 texts), kept out of FAIL_KEYS whose transcripts are 2.1.330's.
FAIL_KEYS_332 = ("environment_elsewhere",)


HELD_LOCKS: list = []


class ConfigError(Exception):
    pass


class Stop(Exception):
    """Raised by the signal handler: shut down gracefully, exit 0."""


# ── Small helpers ──
def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def profile_for(version: str) -> dict[str, object]:
    known = sorted(PROFILES, key=version_tuple)
    chosen = known[0]
    for name in known:
        if version_tuple(name) <= version_tuple(version):
            chosen = name
    return PROFILES[chosen]


def home_dir() -> str:
    return os.environ.get("HOME") or os.path.expanduser("~")


def state_dir() -> str:
    return os.path.join(home_dir(), ".fake-claude")


def write_fd(fd: int, text: str) -> None:
    data = text.encode("utf-8")
    while data:
        try:
            written = os.write(fd, data)
        except InterruptedError:
            continue
        except OSError:  # the pty went away (SIGHUP) or the pipe closed
            return
        data = data[written:]


def out(text: str) -> None:
    write_fd(1, text)


def err(text: str) -> None:
    write_fd(2, text if text.endswith("\n") else text + "\n")


def isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def read_line() -> str | None:
    """One line from stdin; None on EOF."""
    line = sys.stdin.readline()
    return None if line == "" else line.strip()


def load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_json_atomic(path: str, data: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def update_claude_json(update) -> None:
    """Read-modify-write ~/.claude.json like the real CLI does (atomic rename)."""
    path = os.path.join(home_dir(), ".claude.json")
    data = load_json(path)
    update(data)
    try:
        save_json_atomic(path, data)
    except OSError:
        pass


def scan_name(argv: list[str]) -> str | None:
    """The --name value, found leniently (before strict parsing) to pick per-name knobs. Outside server
    mode also `-n NAME`, else the value of `--rc NAME` / `--remote-control NAME`."""
    for i, arg in enumerate(argv):
        if arg == "--name" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--name="):
            return arg.split("=", 1)[1]
    if argv and argv[0] in ("remote-control", "rc"):
        return None
    for i, arg in enumerate(argv):
        if arg == "-n" and i + 1 < len(argv):
            return argv[i + 1]
    for i, arg in enumerate(argv):
        if arg in ("--rc", "--remote-control") and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            return argv[i + 1]
        if arg.startswith(("--rc=", "--remote-control=")):
            return arg.split("=", 1)[1]
    return None


def load_config(name: str | None) -> dict[str, object]:
    path = os.path.join(state_dir(), "config.json")
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        raw = {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"fake claude: cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"fake claude: {path} must hold a JSON object")
    names = raw.pop("names", {}) or {}
    config = dict(DEFAULTS)
    layers = [raw]
    if name is not None and isinstance(names, dict) and isinstance(names.get(name), dict):
        layers.append(names[name])
    for layer in layers:
        for key, value in layer.items():
            if key not in DEFAULTS:
                raise ConfigError(f"fake claude: unknown key {key!r} in {path}")
            config[key] = value
    if config["hyperlinks"] not in ("osc8", "plain"):
        raise ConfigError(f"fake claude: hyperlinks must be 'osc8' or 'plain' in {path}")
    return config


def write_trace(argv: list[str], name: str | None, version: str) -> None:
    record = {
        "ts": round(time.time(), 3),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "argv": argv,
        "name": name,
        "cwd": os.getcwd(),
        "PATH": os.environ.get("PATH", ""),
        "HOME": home_dir(),
        "TERM": os.environ.get("TERM"),
        "stdin_isatty": isatty(0),
        "stdout_isatty": isatty(1),
        "env_present": [var for var in TRACKED_ENV if var in os.environ],
        "version": version,
        "exec_ts": None if EXEC_TS is None else round(EXEC_TS, 4),
        "fork_ts": None if FORK_TS is None else round(FORK_TS, 4),
    }
    append_record("trace.jsonl", record)


def append_record(filename: str, record: dict) -> None:
    """One JSON line appended to ~/.fake-claude/FILENAME (one write: an atomic append)."""
    try:
        os.makedirs(state_dir(), exist_ok=True)
        fd = os.open(os.path.join(state_dir(), filename), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        finally:
            os.close(fd)
    except OSError:
        pass


def git_info(cwd: str) -> tuple[str, str | None]:
    """(repo name, branch) read from .git/HEAD without running git; (basename, None) outside git."""
    path = cwd
    while True:
        dot_git = os.path.join(path, ".git")
        if os.path.exists(dot_git):
            git_dir = dot_git
            if os.path.isfile(dot_git):  # worktree: "gitdir: <path>"
                with open(dot_git, encoding="utf-8") as fh:
                    ref = fh.read().strip()
                if ref.startswith("gitdir:"):
                    git_dir = os.path.join(path, ref.split(":", 1)[1].strip())
            try:
                with open(os.path.join(git_dir, "HEAD"), encoding="utf-8") as fh:
                    head = fh.read().strip()
            except OSError:
                head = ""
            if head.startswith("ref: refs/heads/"):
                branch = head[len("ref: refs/heads/") :]
            else:
                branch = head[:7] or "HEAD"
            return os.path.basename(path) or path, branch
        parent = os.path.dirname(path)
        if parent == path:
            return os.path.basename(cwd) or cwd, None
        path = parent


def is_trusted(cwd: str, claude_json: dict) -> bool:
    """hasTrustDialogAccepted on cwd or any parent; $HOME's own entry never counts."""
    projects = claude_json.get("projects")
    if not isinstance(projects, dict):
        return False
    home = os.path.normpath(home_dir())
    path = os.path.normpath(cwd)
    while True:
        entry = projects.get(path)
        if path != home and isinstance(entry, dict) and entry.get("hasTrustDialogAccepted") is True:
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


# ── auth / version ──
def auth_state(config: dict) -> dict[str, object]:
    env = os.environ
    state: dict[str, object] = {
        "loggedIn": bool(config["logged_in"]),
        "authMethod": "claude.ai" if config["logged_in"] else "none",
        "apiProvider": "firstParty",
        "apiKeySource": None,
        "configDirectory": env.get("CLAUDE_CONFIG_DIR") or os.path.join(home_dir(), ".claude"),
    }
    for var, provider, _label in THIRD_PARTY_PROVIDERS:
        if env.get(var):
            state.update(loggedIn=True, authMethod="third_party", apiProvider=provider)
    if env.get("ANTHROPIC_API_KEY"):
        state.update(loggedIn=True, authMethod="api_key", apiKeySource="ANTHROPIC_API_KEY")
    elif env.get("CLAUDE_CODE_OAUTH_TOKEN"):
        state.update(loggedIn=True, authMethod="oauth_token")
    if state["authMethod"] == "claude.ai":
        state.update(email=config["email"], orgName="Example Org", subscriptionType=config["subscription"])
    return state


def auth_state_332(config: dict) -> dict[str, object]:
    """2.1.332's `auth status` JSON: the signed-out keys 2.1.332 prints (in that order),
    plus the account fields when signed in and apiKeySource when a key is used."""
    old = auth_state(config)
    config_dir = str(old["configDirectory"])
    state: dict[str, object] = {
        "loggedIn": old["loggedIn"],
        "authMethod": old["authMethod"],
        "apiProvider": old["apiProvider"],
        "analyticsDisabled": any(var in os.environ for var in FEATURE_FLAG_VARS),
        "projectsDirectory": os.path.join(config_dir, "projects"),
        "configDirectory": config_dir,
        "loginExpiresAt": None,
        "consoleProfileSignInOffered": False,
    }
    if old["apiKeySource"]:
        state["apiKeySource"] = old["apiKeySource"]
    if old["authMethod"] == "claude.ai":
        state["loginExpiresAt"] = "2027-01-01T00:00:00.000Z"
        for key in ("email", "orgName", "subscriptionType"):
            state[key] = old[key]
    return state


def cmd_auth(args: list[str], config: dict, profile: dict | None = None) -> int:
    if not args or args[0] != "status":
        err("fake claude: only `claude auth status [--json | --text]` is implemented")
        return 1
    new = bool(profile and profile["auth_json_default"])
    state = auth_state_332(config) if new else auth_state(config)
    as_json = "--json" in args[1:] or (new and "--text" not in args[1:])
    if as_json:
        out(json.dumps(state, indent=2) + "\n")
    elif state["loggedIn"]:
        out(f"Logged in ({state['authMethod']}).\n")
    elif new:
        out("Not logged in. Run claude auth login to authenticate.\n")
    else:
        out("Not logged in. Run `claude auth login` to sign in.\n")
    return 0 if state["loggedIn"] else 1


# ── remote-control: argument parsing ──
class UsageError(Exception):
    pass


VALUE_FLAGS = {
    "--name",
    "--remote-control-session-name-prefix",
    "--spawn",
    "--capacity",
    "--permission-mode",
    "--settings",
    "--session-id",
    "--debug-file",
    "--preview-port",
}
BOOL_FLAGS = {
    "--create-session-in-dir",
    "--no-create-session-in-dir",
    "-c",
    "--continue",
    "-v",
    "--verbose",
    "--chrome",
    "--no-chrome",
    "-d",
    "--debug",
    "--allow-unattended-tool-calls",
    "--enable-live-preview",
    "-h",
    "--help",
}


def flag_value(argv: list[str], i: int, has_eq: str, inline: str, missing: str) -> tuple[str, int]:
    """The value of the flag at argv[i] (`--flag=value` or `--flag value`) and where parsing goes on."""
    if has_eq:
        return inline, i
    if i + 1 < len(argv):
        return argv[i + 1], i + 1
    raise UsageError(missing)


def parse_rc_args(argv: list[str], profile: dict, version: str) -> dict[str, object]:
    opts: dict[str, object] = {"create_session_in_dir": True}
    new_parser = bool(profile["parser_332"])
    seen: set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, has_eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if flag in ("--sandbox", "--no-sandbox") and not has_eq:
            if profile["rejects_sandbox"]:
                raise UsageError(NO_SANDBOX_ERROR_332 if new_parser and flag == "--no-sandbox" else SANDBOX_ERROR)
            i += 1
            continue
        if new_parser and flag in ("--enable-live-preview", "--preview-port"):
            raise UsageError(PREVIEW_ERROR_332)
        if new_parser and flag in ("--spawn", "--capacity"):
            if flag in seen:
                raise UsageError(ONCE_ERROR_332.format(flag=flag))
        if new_parser and flag in ("--create-session-in-dir", "--no-create-session-in-dir"):
            opts["create_session_in_dir_given"] = True
        seen.add(flag)
        if flag in VALUE_FLAGS:
            value, i = flag_value(argv, i, has_eq, inline, MISSING_VALUE_ERROR.format(flag=flag))
            if flag == "--spawn" and value not in SPAWN_MODES:
                raise UsageError(SPAWN_VALUE_ERROR.format(value=value))
            if flag == "--capacity" and not (value.isdigit() and int(value) > 0):
                raise UsageError(CAPACITY_VALUE_ERROR.format(value=value))
            if flag == "--permission-mode":
                choices = PERMISSION_MODES_332 if new_parser else PERMISSION_MODES
                if value not in choices and value != "default":
                    raise UsageError(PERMISSION_MODE_ERROR.format(choices=", ".join(choices), value=value))
            if new_parser and flag == "--session-id" and not value:
                raise UsageError(SESSION_ID_EMPTY_ERROR_332)
            if new_parser and flag == "--settings" and value.lstrip().startswith(("{", "[")):
                raise UsageError(SETTINGS_JSON_ERROR_332)
            if flag == "--preview-port":
                raise UsageError(PREVIEW_PORT_ERROR)
            opts[flag.lstrip("-").replace("-", "_")] = value
        elif flag in BOOL_FLAGS and (not has_eq or flag == "--debug"):
            key = {"-c": "continue", "-v": "verbose", "-d": "debug", "-h": "help"}.get(flag, flag)
            key = key.lstrip("-").replace("-", "_")
            if key == "no_create_session_in_dir":
                opts["create_session_in_dir"] = False
            elif key == "no_chrome":
                opts["chrome"] = False
            else:
                opts[key] = inline if has_eq else True
        else:
            raise UsageError(UNKNOWN_ARGUMENT_ERROR.format(arg=arg))
        i += 1
    if opts.get("spawn") == "session" and "capacity" in opts:
        raise UsageError(CAPACITY_SESSION_ERROR)
    if new_parser:
        resuming = bool(opts.get("continue")) or "session_id" in opts
        if opts.get("continue") and "session_id" in opts:
            raise UsageError(CONTINUE_CONFLICT_ERROR_332)
        if resuming and any(k in opts for k in ("spawn", "capacity", "create_session_in_dir_given")):
            raise UsageError(RESUME_SPAWN_CONFLICT_ERROR_332)
        if opts.get("allow_unattended_tool_calls") and (resuming or opts.get("spawn") == "session"):
            raise UsageError(UNATTENDED_CONFLICT_ERROR_332)
    if "session_id" in opts and not str(opts["session_id"]).startswith(("session_", "cse_")):
        raise UsageError(SESSION_ID_VALUE_ERROR.format(value=opts["session_id"]))
    if version_tuple(version) >= (2, 1, 200) and not new_parser:
        if opts.get("continue") and "session_id" in opts:
            raise UsageError(CONTINUE_CONFLICT_ERROR)
        for resume_flag, key in (("--continue", "continue"), ("--session-id", "session_id")):
            if opts.get(key) and any(k in opts for k in ("spawn", "capacity")):
                raise UsageError(RESUME_SPAWN_CONFLICT_ERROR.format(flag=resume_flag))
    if opts.get("allow_unattended_tool_calls") and not (isatty(0) and isatty(1)):
        raise UsageError(UNATTENDED_TTY_ERROR)
    return opts


RC_HELP = """Usage: claude remote-control [options]

Serve Claude Code sessions from this machine to claude.ai and the Claude app.

Options:
  --name <name>                               title of the session created at start
  --remote-control-session-name-prefix <p>    prefix of generated session names (default: hostname)
  --spawn <mode>                              same-dir | worktree | session (default: same-dir)
  --capacity <N>                              maximum concurrent sessions (default: 32)
  --[no-]create-session-in-dir                pre-create a session in this directory (default: on)
  --permission-mode <mode>                    acceptEdits | auto | bypassPermissions | default |
                                              dontAsk | plan
  --settings <file>                           settings file for new sessions
  -c, --continue                              resume the most recent session
  --session-id <id>                           resume a session by ID
  --[no-]chrome                               Claude in Chrome integration
  -d, --debug[=filter]                        debug output
  --debug-file <path>                         write debug output to a file
  -v, --verbose                               verbose output
  -h, --help                                  display help
"""


# ── remote-control: the server ──
def fail_text(key: str, profile: dict, cwd: str) -> str:
    """The stderr text for a "fail" knob value (a FAIL_KEYS entry or literal text)."""
    texts = {
        "signed_out": lambda: SIGNED_OUT_ERROR.format(fix=profile["login_fix"]),
        "setup_token": lambda: SETUP_TOKEN_ERROR,
        "feature_flag": lambda: FEATURE_FLAG_ERROR.format(var="DISABLE_TELEMETRY"),
        "feature_flag_unavailable": lambda: FEATURE_FLAG_UNAVAILABLE_ERROR,
        "not_enabled": lambda: NOT_ENABLED_ERROR,
        "untrusted": lambda: UNTRUSTED_ERROR.format(dir=cwd),
        "home": lambda: HOME_UNTRUSTED_ERROR.format(dir=home_dir()),
        "another_instance": lambda: ANOTHER_INSTANCE_ERROR.format(pid=os.getppid()),
        "session_elsewhere": lambda: SESSION_ELSEWHERE_ERROR.format(
            session="session_" + secrets.token_hex(8), pid=os.getppid(), dir=cwd, fix=profile["elsewhere_fix"]
        ),
        "environment_elsewhere": lambda: ENVIRONMENT_ELSEWHERE_ERROR.format(
            env="env_" + secrets.token_hex(8), pid=os.getppid(), dir=cwd
        ),
        "registration": lambda: REGISTRATION_ERROR,
        "multi_session_gate": lambda: MULTI_SESSION_GATE_ERROR,
        "api_key": lambda: UNSUPPORTED_AUTH_ERROR.format(
            what="API key authentication (ANTHROPIC_API_KEY is set)",
            fix="Unset ANTHROPIC_API_KEY and run `claude auth login` to sign in with your claude.ai account.",
        ),
    }
    return texts[key]() if key in texts else key


def auth_error(config: dict, profile: dict, version: str) -> str | None:
    """Errors decided before argument parsing: they beat every usage error."""
    env = os.environ
    if env.get("CLAUDE_CODE_OAUTH_TOKEN"):
        return SETUP_TOKEN_ERROR
    if env.get("ANTHROPIC_API_KEY"):
        return fail_text("api_key", profile, "")
    for var, _provider, label in THIRD_PARTY_PROVIDERS:
        if env.get(var):
            return UNSUPPORTED_AUTH_ERROR.format(what=label, fix=f"Unset {var} and run `claude auth login`.")
    base_url = env.get("ANTHROPIC_BASE_URL", "")
    if base_url and version_tuple(version) >= (2, 1, 196) and not base_url.rstrip("/").endswith("api.anthropic.com"):
        return UNSUPPORTED_AUTH_ERROR.format(
            what=f"a custom API endpoint (ANTHROPIC_BASE_URL={base_url})",
            fix="Unset ANTHROPIC_BASE_URL and run `claude auth login`.",
        )
    if not config["logged_in"]:
        return SIGNED_OUT_ERROR.format(fix=profile["login_fix"])
    return None


def feature_flag_error(version: str) -> str | None:
    for var in FEATURE_FLAG_VARS:
        if var in os.environ:  # any value counts, DISABLE_TELEMETRY=0 included
            if version_tuple(version) < (2, 1, 154):
                return NOT_ENABLED_ERROR
            return FEATURE_FLAG_ERROR.format(var=var)
    return None


def sleep_forever() -> None:
    while True:
        time.sleep(3600)


def check_trust(cwd: str) -> int | None:
    """None when trusted (or accepted now); an exit code otherwise."""
    if "CI" in os.environ:
        return None
    claude_json = load_json(os.path.join(home_dir(), ".claude.json"))
    if is_trusted(cwd, claude_json):
        return None
    is_home = os.path.normpath(cwd) == os.path.normpath(home_dir())
    if not (isatty(0) and isatty(1)):
        err(HOME_UNTRUSTED_ERROR.format(dir=cwd) if is_home else UNTRUSTED_ERROR.format(dir=cwd))
        return 1
    out(TRUST_TEXT + TRUST_PROMPT.format(dir=cwd))
    answer = read_line()
    if answer is None or answer.lower() not in ("y", "yes"):
        return 1
    if not is_home:  # home-directory trust is never saved

        def accept(data: dict) -> None:
            projects = data.setdefault("projects", {})
            projects.setdefault(cwd, {})["hasTrustDialogAccepted"] = True

        update_claude_json(accept)
    return None


def acquire_dir_lock(cwd: str):
    """One server per directory: an flock'ed pid file under ~/.fake-claude/locks (kept open)."""
    lock_dir = os.path.join(state_dir(), "locks")
    os.makedirs(lock_dir, exist_ok=True)
    key = "".join(ch if ch.isalnum() else "_" for ch in cwd).strip("_")[-120:] or "root"
    path = os.path.join(lock_dir, key + ".pid")
    fh = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = None
        for _ in range(50):  # the holder may not have written its pid yet
            fh.seek(0)
            text = fh.read().split()
            if text and text[0].isdigit() and pid_alive(int(text[0])):
                pid = int(text[0])
                break
            time.sleep(0.01)
        fh.close()
        return ANOTHER_INSTANCE_ERROR.format(pid=pid if pid is not None else "unknown")
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()} {cwd}\n")
    fh.flush()
    return fh


def consent(profile: dict) -> int | None:
    path = os.path.join(home_dir(), ".claude.json")
    if load_json(path).get("remoteDialogSeen") is True:
        return None
    out(CONSENT_TEXT + CONSENT_PROMPT)
    answer = read_line()
    if answer is None:
        if profile["consent_eof_fails"]:
            out("\n")
            err(CONSENT_EOF_ERROR)
            return 1
        sleep_forever()
    if answer.lower() not in ("y", "yes"):
        return 0
    update_claude_json(lambda data: data.__setitem__("remoteDialogSeen", True))
    return None


def saved_spawn_mode(cwd: str) -> str | None:
    projects = load_json(os.path.join(home_dir(), ".claude.json")).get("projects")
    if isinstance(projects, dict) and isinstance(projects.get(cwd), dict):
        return projects[cwd].get("remoteControlSpawnMode")
    return None


class StatusBlock:
    """The repainting stdout block: ESC[<n>A ESC[J before each repaint, TTY or not."""

    def __init__(self) -> None:
        self.lines = 0

    def paint(self, text: str) -> None:
        prefix = f"{ESC}[{self.lines}A{ESC}[J" if self.lines else ""
        out(prefix + text)
        self.lines = text.count("\n")


def session_line(title: str, url: str, style: str) -> str:
    if style == "osc8":
        return f"{ESC}]8;;{url}{BEL}{title}{ESC}]8;;{BEL}"
    return f"{title} ({ESC}[36m{url}{RESET})"


def render(phase: str, frame: int, ctx: dict) -> str:
    profile, config = ctx["profile"], ctx["config"]
    place = f" · {ctx['repo']}" + (f" · {ctx['branch']}" if ctx["branch"] else "")
    if phase == "connecting":
        glyph = SPINNER_FRAMES[frame % len(SPINNER_FRAMES)]
        return f"{ESC}[33m·{glyph}·{ESC}[39m {ESC}[1mConnecting{ESC}[22m{ESC}[2m{place}{ESC}[22m\n"
    label = "Connected" if phase == "connected" else "Ready"
    used = 1 if phase == "connected" else 0
    lines = [
        f"{ESC}[32m·{READY_GLYPH}·{ESC}[39m {ESC}[1m{label}{ESC}[22m{ESC}[2m{place}{ESC}[22m",
        f"    {ESC}[2mCapacity: {used}/{ctx['capacity']} · {SPAWN_MODE_TEXT[ctx['spawn']]}{ESC}[22m",
    ]
    if ctx["precreated"] and (config["list_precreated"] or phase == "connected"):
        lines.append("    " + session_line(ctx["title"], ctx["session_url"], config["hyperlinks"]))
    lines.append("")
    env_link = f"{ESC}[36m{ctx['env_url']}{RESET}"
    if phase == "connected":
        target = ctx["session_url"] if ctx["spawn"] == "session" else ctx["env_url"]
        lines.append(f"{profile['attached_text']} {ESC}[36m{target}{RESET}")
    else:
        lines.append(f"{profile['idle_text']} {env_link}")
    if profile["projects_line"]:
        lines.append(f"{ESC}[2m{PROJECTS_LINE}{ESC}[22m")
    lines.append(f"{ESC}[2m{KEYS_LINE}{ESC}[22m")
    return "\n".join(lines) + "\n"


def serve(opts: dict, config: dict, profile: dict, version: str, cwd: str) -> int:
    spawn = str(opts.get("spawn") or saved_spawn_mode(cwd) or "same-dir")
    capacity = 1 if spawn == "session" else int(opts.get("capacity") or DEFAULT_CAPACITY)
    env_id = config["env_id"] or "env_" + secrets.token_urlsafe(18)
    session_id = config["session_id"] or str(opts.get("session_id") or "") or ("session_" + secrets.token_urlsafe(18))
    session_id = "session_" + session_id[4:] if session_id.startswith("cse_") else session_id
    prefix = (
        opts.get("remote_control_session_name_prefix")
        or os.environ.get("CLAUDE_REMOTE_CONTROL_SESSION_NAME_PREFIX")
        or socket.gethostname().split(".")[0]
    )
    title = opts.get("name") or f"{prefix}-{secrets.choice(ADJECTIVES)}-{secrets.choice(NOUNS)}"
    repo, branch = git_info(cwd)
    ctx = {
        "profile": profile,
        "config": config,
        "repo": repo,
        "branch": branch,
        "spawn": spawn,
        "capacity": capacity,
        "title": title,
        "precreated": bool(opts["create_session_in_dir"]) or spawn == "session",
        "env_url": str(profile["env_url"]).format(env=env_id),
        "session_url": str(profile["session_url"]).format(session=session_id, env=env_id),
    }
    if opts.get("debug_file"):
        try:
            with open(str(opts["debug_file"]), "a", encoding="utf-8") as fh:
                fh.write(f"[DEBUG] remote-control {version} starting in {cwd} ({env_id})\n")
        except OSError:
            pass
    if opts.get("verbose"):
        out(
            f"Remote Control v{version}\nSpawn mode: {spawn}\n"
            f"Max concurrent sessions: {capacity}\nEnvironment ID: {env_id}\n\n"
        )
    if config["decoys"]:
        out("\n".join(DECOY_LINES) + "\n\n")

    block = StatusBlock()
    interval = float(config["spinner_interval"])
    started = time.monotonic()
    ready_at: float | None = None
    phase, frame, painted, shown = "connecting", 0, None, False
    while True:
        now = time.monotonic()
        if config["exit_after"] is not None and now - started >= float(config["exit_after"]):
            code = int(config["exit_code"])
            if code == 0:
                out(f"[{datetime.datetime.now():%H:%M:%S}] Session completed\n")
            else:
                message = config["exit_message"]
                message = DIE_LATER_MESSAGE if message is None else message
                if message:
                    err(str(message))
            return code
        if phase == "connecting" and not config["never_ready"] and now - started >= float(config["connect_delay"]):
            phase, ready_at = "ready", now
        if (
            phase == "ready"
            and config["attach_delay"] is not None
            and ready_at is not None
            and now - ready_at >= float(config["attach_delay"])
        ):
            phase = "connected"
        text = render(phase, frame, ctx)
        if text != painted:
            block.paint(text)
            painted = text
            if phase != "connecting" and not shown:  # the URL is on the screen: when, for bench/run.py
                shown = True
                record = {"ts": round(time.time(), 4), "pid": os.getpid(), "name": opts.get("name"), "phase": phase}
                append_record("ready.jsonl", record)
        frame += 1
        time.sleep(interval)


def on_signal(signum, _frame) -> None:
    raise Stop(signum)


def cmd_remote_control(argv: list[str], config: dict, version: str) -> int:
    profile = profile_for(version)
    cwd = os.getcwd()
    if "-h" in argv or "--help" in argv:
        out(RC_HELP)
        return 0
    if config["fail"]:
        err(fail_text(str(config["fail"]), profile, cwd))
        return int(config["fail_exit"])
    problem = auth_error(config, profile, version)
    if problem:
        err(problem)
        return 1
    try:
        opts = parse_rc_args(argv, profile, version)
    except UsageError as exc:
        err(str(exc))
        return 1
    problem = feature_flag_error(version)
    if problem:
        err(problem)
        return 1
    code = check_trust(cwd)
    if code is not None:
        return code
    if profile["one_server_per_dir"]:
        lock = acquire_dir_lock(cwd)
        if isinstance(lock, str):
            err(lock)
            return 1
        HELD_LOCKS.append(lock)  # held until the process exits, graceful shutdown included
    code = consent(profile)
    if code is not None:
        return code
    # Reattaching (--continue / --session-id) serves the recorded session: no spawn mode to choose.
    resuming = bool(opts.get("continue")) or "session_id" in opts
    if (
        not opts.get("spawn")
        and not resuming
        and saved_spawn_mode(cwd) is None
        and isatty(0)
        and git_info(cwd)[1] is not None
    ):
        out(SPAWN_PROMPT)
        sleep_forever()  # under tmux this never returns (anthropics/claude-code#86327)
    return serve(opts, config, profile, version, cwd)


# ══ Conversational mode: `claude [--rc NAME] ["prompt"]` ══
# The interactive TUI (a pty on stdout) or print mode (no pty, or -p). A scripted model answers.
CONV_MODEL = "claude-opus-5-5"
SIGNED_OUT_ANSWER = "Not logged in · Please run /login"
SIGNED_OUT_STATUS = "Not logged in · run /login"
INVALID_SESSION_ID_ERROR = "Error: Invalid session ID. Must be a valid UUID."
SESSION_ID_IN_USE_ERROR = "Error: Session ID {id} is already in use."
SESSION_ID_RESUME_ERROR = (
    "Error: --session-id can only be used with --continue or --resume if --fork-session is also specified."
)
NO_CONVERSATION_ERROR = "No conversation found with session ID: {id}"
NO_CONTINUE_ERROR = "No conversation found to continue"
PICKER_ERROR = "fake claude: the --resume picker is not emulated; pass a session ID"
OUTPUT_FORMAT_ERROR = "fake claude: only --output-format text is emulated"
MAIN_CHOICE_ERROR = "error: option '{flag}' argument '{value}' is invalid. Allowed choices are {choices}."
MAIN_UNKNOWN_OPTION_ERROR = "error: unknown option '{arg}'"
MAIN_MISSING_VALUE_ERROR = "error: option '{flag}' argument missing"
MAIN_EXCESS_ERROR = "error: too many arguments. Expected 1 argument but got {n}."
OFFLINE_ERROR = (
    "Unable to connect to Anthropic services\n\n"
    "Failed to connect to api.anthropic.com: EAI_AGAIN\n\n"
    "Please check your internet connection and network settings.\n\n"
    "Note: Claude Code might not be available in your country. "
    "Check supported countries at https://anthropic.com/supported-countries"
)
TRUST_DIALOG_TEXT = (
    "Quick safety check: Is this a project you created or one you trust? (Like your own code, a well-known "
    "open source project, or work from your team). If not, take a moment to review what's in this folder first."
)
TRUST_DIALOG_WARNING = "Claude Code'll be able to read, edit, and execute files here."
TRUST_OPTIONS = ("No, exit", "Yes, I trust this folder")
AUTO_MODE_NOTICE = "Auto mode is now Claude Code's default permission mode."
REMOTE_CONTROL_SIGNED_OUT = (
    "Remote Control requires a claude.ai subscription. Run claude auth login to sign in with your claude.ai account."
)
INTERRUPTED_TEXT = "[Request interrupted by user]"
INTERRUPTED_TOOL_TEXT = "[Request interrupted by user for tool use]"
INTERRUPTED_TOOL_RESULT = (
    "The user doesn't want to take this action right now. STOP what you are doing and wait for the user to tell "
    "you how to proceed."
)
REJECTED_TOOL_TEXT = (
    "The user doesn't want to proceed with this tool use. The tool use was rejected (eg. if it was a file edit, "
    "the new_string was NOT written to the file). STOP what you are doing and wait for the user to tell you how "
    "to proceed."
)
SECURITY_REVIEW_NO_ORIGIN = (
    "Error: git diff --name-only origin/HEAD... failed: fatal: ambiguous argument 'origin/HEAD...': "
    "unknown revision or path not in the working tree."
)
API_ERRORS = {  # status → (SDK error kind, API error type, message)
    "429": ("rate_limit", "rate_limit_error", "Rate limited"),
    "500": ("server_error", "api_error", "Internal server error"),
    "529": ("server_error", "overloaded_error", "Overloaded"),
}
MODE_FOOTERS = {
    "auto": "⏵⏵ auto mode on (shift+tab to cycle)",
    "acceptEdits": "⏵⏵ accept edits on (shift+tab to cycle)",
    "plan": "⏸ plan mode on (shift+tab to cycle)",
    "bypassPermissions": "⏵⏵ bypass permissions on (shift+tab to cycle)",
    "dontAsk": "⏵⏵ don't ask mode on (shift+tab to cycle)",
}
MODE_CYCLE = ("auto", "acceptEdits", "plan", "manual")
PEER_FEATURES = ["notify_idle", "reply_across_default_dirs", "artifact_yield"]
SLASH_COMMANDS = {  # name → description (the completion list)
    "exit": "Exit the REPL",
    "quit": "Exit the REPL",
    "remote-control": "Connect this session to claude.ai and the Claude app",
    "security-review": "Complete a security review of the pending changes on the current branch",
}
UUID_RE = re.compile(
    r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    r"|00000000-0000-0000-0000-000000000000|ffffffff-ffff-ffff-ffff-ffffffffffff)$",
    re.IGNORECASE,
)
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"
TUI_MODES_ON = "\x1b[?2004h\x1b[?1004h\x1b[?2031h\x1b[?25l"
TUI_MODES_OFF = "\x1b[?2004l\x1b[?1004l\x1b[?2031l\x1b[?25h"
PASTE_COLLAPSE_LINES = 10  # longer pastes show as [Pasted text #N +M lines] in the box
PASTE_COLLAPSE_CHARS = 1000
LONG_CHUNK_LINES = 10  # a `long N` answer: one assistant line per chunk of this many lines


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def now_ms() -> int:
    return int(time.time() * 1000)


def config_dir() -> str:
    return os.environ.get("CLAUDE_CONFIG_DIR") or os.path.join(home_dir(), ".claude")


def java_hash(text: str) -> int:
    """A 32-bit string hash over UTF-16 code units ((h << 5) - h + c); the real CLI's own hash is not known."""
    h = 0
    data = text.encode("utf-16-le")
    for i in range(0, len(data), 2):
        h = (h * 31 + (data[i] | data[i + 1] << 8)) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def to_base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        n, r = divmod(n, 36)
        text = digits[r] + text
        if n == 0:
            return text


def project_slug(cwd: str) -> str:
    """realpath(cwd) with every non-alphanumeric character turned into '-'; over 200 characters: the first
    200 + '-' + base36(|hash|). CLAUDE_CODE_PROJECT_DIR_NAME (^[A-Za-z0-9_-]{1,64}$) overrides it."""
    override = os.environ.get("CLAUDE_CODE_PROJECT_DIR_NAME", "")
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", override):
        return override
    path = os.path.realpath(cwd)
    slug = re.sub(r"[^a-zA-Z0-9]", "-", path)
    if len(slug) > 200:
        slug = slug[:200] + "-" + to_base36(abs(java_hash(path)))
    return slug


def transcript_path(cwd: str, session_id: str) -> str:
    return os.path.join(config_dir(), "projects", project_slug(cwd), session_id + ".jsonl")


def find_transcript(cwd: str, session_id: str) -> str | None:
    """The transcript of session_id: this directory's project first, then any project."""
    own = transcript_path(cwd, session_id)
    if os.path.isfile(own):
        return own
    root = os.path.join(config_dir(), "projects")
    try:
        slugs = sorted(os.listdir(root))
    except OSError:
        return None
    for slug in slugs:
        path = os.path.join(root, slug, session_id + ".jsonl")
        if os.path.isfile(path):
            return path
    return None


def latest_transcript(cwd: str) -> str | None:
    folder = os.path.dirname(transcript_path(cwd, "x"))
    try:
        names = [n for n in os.listdir(folder) if n.endswith(".jsonl")]
    except OSError:
        return None
    paths = [os.path.join(folder, n) for n in names]
    return max(paths, key=os.path.getmtime) if paths else None


def has_origin_remote(cwd: str) -> bool:
    path = cwd
    while True:
        config_path = os.path.join(path, ".git", "config")
        if os.path.exists(os.path.join(path, ".git")):
            try:
                with open(config_path, encoding="utf-8") as fh:
                    return '[remote "origin"]' in fh.read()
            except OSError:
                return False
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


# ── Main CLI arguments ──
MAIN_VALUE_FLAGS = {
    "--session-id": "session_id",
    "-n": "name",
    "--name": "name",
    "--permission-mode": "permission_mode",
    "--model": "model",
    "--output-format": "output_format",
    "--input-format": "input_format",
    "--settings": "settings",
    "--add-dir": "add_dir",
    "--append-system-prompt": "append_system_prompt",
}
MAIN_OPTIONAL_VALUE_FLAGS = {"--rc": "rc", "--remote-control": "rc", "-r": "resume", "--resume": "resume"}
MAIN_BOOL_FLAGS = {
    "-p": "print",
    "--print": "print",
    "-c": "continue",
    "--continue": "continue",
    "--fork-session": "fork_session",
    "--verbose": "verbose",
    "-d": "debug",
    "--debug": "debug",
    "--dangerously-skip-permissions": "skip_permissions",
}


def parse_main_args(argv: list[str]) -> dict[str, object]:
    """Commander-like: options anywhere, one positional prompt; `--rc`/`--resume` take an optional value
    (the next argument unless it starts with '-')."""
    opts: dict[str, object] = {}
    positionals: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, has_eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if arg == "--":
            positionals.extend(argv[i + 1 :])
            break
        if flag in MAIN_VALUE_FLAGS:
            value, i = flag_value(argv, i, has_eq, inline, MAIN_MISSING_VALUE_ERROR.format(flag=flag))
            if flag == "--permission-mode" and value not in PERMISSION_MODES_332 + ("default",):
                raise UsageError(
                    MAIN_CHOICE_ERROR.format(
                        flag="--permission-mode <mode>", value=value, choices=", ".join(PERMISSION_MODES_332)
                    )
                )
            opts[MAIN_VALUE_FLAGS[flag]] = value
        elif flag in MAIN_OPTIONAL_VALUE_FLAGS:
            key = MAIN_OPTIONAL_VALUE_FLAGS[flag]
            if has_eq:
                opts[key] = inline
            elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                i += 1
                opts[key] = argv[i]
            else:
                opts[key] = True
        elif flag in MAIN_BOOL_FLAGS and not has_eq:
            opts[MAIN_BOOL_FLAGS[flag]] = True
        elif arg.startswith("-") and arg != "-":
            raise UsageError(MAIN_UNKNOWN_OPTION_ERROR.format(arg=flag))
        else:
            positionals.append(arg)
        i += 1
    if len(positionals) > 1:
        raise UsageError(MAIN_EXCESS_ERROR.format(n=len(positionals)))
    if positionals:
        opts["prompt"] = positionals[0]
    if opts.get("skip_permissions") and "permission_mode" not in opts:
        opts["permission_mode"] = "bypassPermissions"
    return opts


# ── The transcript ──
class Transcript:
    """<config dir>/projects/<slug>/<session-id>.jsonl: one JSON object per line, appended, created lazily."""

    def __init__(self, path: str, session_id: str, cwd: str, version: str, interactive: bool) -> None:
        self.path, self.session_id, self.cwd, self.version = path, session_id, cwd, version
        self.interactive = interactive
        self.branch = git_info(cwd)[1] or ""
        self.last_uuid: str | None = None
        self.prompts = 0  # prompts sent to the model so far (across --resume)
        self.started = False
        for entry in read_jsonl(path):
            if entry.get("uuid") and not entry.get("isSidechain"):
                self.last_uuid = str(entry["uuid"])
            position = entry.get("turnPosition")
            if entry.get("type") == "user" and isinstance(position, dict):
                self.prompts = max(self.prompts, int(position.get("promptIndex") or 0))
        self.started = os.path.exists(path)

    def write_raw(self, entry: dict) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def common(self) -> dict[str, object]:
        return {
            "userType": "external",
            "entrypoint": "cli" if self.interactive else "sdk-cli",
            "cwd": self.cwd,
            "sessionId": self.session_id,
            "version": self.version,
            "gitBranch": self.branch,
        }

    def chain(self, entry_type: str, fields: dict, sidechain_file: str | None = None, parent: str | None = None):
        """Append an entry of the parentUuid chain (user, assistant, system, attachment); returns it."""
        entry: dict[str, object] = {"parentUuid": self.last_uuid if sidechain_file is None else parent}
        entry["isSidechain"] = sidechain_file is not None
        entry.update(fields)
        entry["type"] = entry_type
        entry.update(self.common())
        entry["uuid"] = str(uuid.uuid4())
        entry["timestamp"] = now_iso()
        if sidechain_file is None:
            self.last_uuid = str(entry["uuid"])
            self.write_raw(entry)
        else:
            os.makedirs(os.path.dirname(sidechain_file), exist_ok=True)
            with open(sidechain_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")
        return entry


def read_jsonl(path: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            entries.append(value)
    return entries


def usage_block(output_tokens: int = 0) -> dict[str, object]:
    return {
        "input_tokens": 0 if not output_tokens else 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def assistant_message(msg_id: str, model: str, content: list, stop_reason: str | None) -> dict[str, object]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage_block(0 if model == "<synthetic>" else 25),
    }


# ── The scripted model ──
DIRECTIVE_RE = re.compile(
    r"^(think|bash|edit|ask|agent|fail|long|hang)\b[ \t]*([^:\n]*?)[ \t]*(?::[ \t]*|$)", re.IGNORECASE
)


def parse_directives(prompt: str) -> tuple[list[tuple[str, str]], str]:
    """Leading `word [arg]:` directives (see testbed/README.md) and the rest of the prompt."""
    directives: list[tuple[str, str]] = []
    rest = prompt
    while True:
        rest = rest.lstrip()
        match = DIRECTIVE_RE.match(rest)
        if not match:
            break
        word, arg = match.group(1).lower(), match.group(2)
        if word in ("think", "fail", "long", "hang") and not re.fullmatch(r"(\d+(\.\d+)?)?", arg):
            break  # "think about it: …" is a prompt, not a directive
        if word == "hang" and arg:
            break
        if word in ("bash", "edit", "ask", "agent") and not arg:  # `bash: CMD`: the argument follows the colon
            line_end = rest.find("\n", match.end())
            arg = rest[match.end() : line_end if line_end >= 0 else len(rest)].strip()
            rest = rest[line_end + 1 :] if line_end >= 0 else ""
        else:
            rest = rest[match.end() :]
        directives.append((word, arg))
        if word in ("fail", "hang", "long"):
            break
    return directives, rest.strip()


class Turn:
    """One model turn as a generator of waits: ("sleep", seconds) or ("permission", request) → answer."""

    def __init__(self, session: Session, prompt: str, index: int) -> None:
        self.session, self.prompt, self.index = session, prompt, index
        self.notes: list[str] = []
        self.waiting_tool: str | None = None  # tool_use id while a permission prompt is up
        self.pending_tool: str | None = None  # tool_use id of a running tool (no tool_result yet)

    def assistant(self, msg_id: str, content: list, stop_reason: str | None, model: str | None = None, **extra):
        fields = {"message": assistant_message(msg_id, model or self.session.model, content, stop_reason)}
        fields["requestId"] = "req_" + secrets.token_hex(12)
        fields.update(extra)
        return self.session.transcript.chain("assistant", fields)

    def tool_result(self, tool_id: str, content: object, is_error: bool, result: object) -> None:
        block = {"tool_use_id": tool_id, "type": "tool_result", "content": content, "is_error": is_error}
        self.session.transcript.chain(
            "user",
            {
                "message": {"role": "user", "content": [block]},
                "toolUseResult": result,
                "promptId": self.session.prompt_id,
            },
        )

    def run(self):
        s = self.session
        yield ("sleep", float(s.config["turn_delay"]))
        if not s.config["logged_in"]:
            self.assistant(
                str(uuid.uuid4()),
                [{"type": "text", "text": SIGNED_OUT_ANSWER}],
                "stop_sequence",
                model="<synthetic>",
                error="authentication_failed",
                isApiErrorMessage=True,
            )
            s.show_result(SIGNED_OUT_ANSWER)
            return
        directives, rest = parse_directives(self.prompt)
        for word, arg in directives:
            if word == "think":
                seconds = float(arg) if re.fullmatch(r"\d+(\.\d+)?", arg) else 1.0
                s.activity = "Thinking…"
                yield ("sleep", seconds)
                thinking = f"Thinking for {arg or '1'} s about turn {self.index}."
                msg_id = "msg_" + secrets.token_hex(12)
                block = {"type": "thinking", "thinking": thinking, "signature": secrets.token_hex(16)}
                self.assistant(msg_id, [block], None)
                s.show(f"✻ Thought for {arg or '1'}s")
            elif word in ("bash", "ask"):
                yield from self.bash(arg, ask=word == "ask")
            elif word == "edit":
                yield from self.edit(arg)
            elif word == "agent":
                yield from self.agent(arg)
            elif word == "fail":
                code = arg if arg in API_ERRORS else "500"
                kind, api_type, message = API_ERRORS[code]
                text = f'API Error: {code} {{"type":"error","error":{{"type":"{api_type}","message":"{message}"}}}}'
                self.assistant(
                    str(uuid.uuid4()),
                    [{"type": "text", "text": text}],
                    "stop_sequence",
                    model="<synthetic>",
                    error=kind,
                    isApiErrorMessage=True,
                )
                s.show_result(text)
                return
            elif word == "hang":
                s.activity = "Working…"
                while True:
                    yield ("sleep", 3600.0)
            elif word == "long":
                count = int(arg) if arg.isdigit() and int(arg) > 0 else 30
                lines = [f"turn {self.index}: line 1 of {count}"] + [
                    f"line {n} of {count}" for n in range(2, count + 1)
                ]
                msg_id = "msg_" + secrets.token_hex(12)
                chunks = [lines[n : n + LONG_CHUNK_LINES] for n in range(0, count, LONG_CHUNK_LINES)]
                for n, chunk in enumerate(chunks):
                    last = n == len(chunks) - 1
                    text = "\n".join(chunk) + ("" if last else "\n")
                    self.assistant(msg_id, [{"type": "text", "text": text}], "end_turn" if last else None)
                    s.show_answer(text.rstrip("\n"), first=n == 0)
                    if not last:
                        yield ("sleep", float(s.config["tool_delay"]))
                return
        answer = f"turn {self.index}: " + "; ".join(self.notes + ([rest] if rest or not self.notes else []))
        self.assistant("msg_" + secrets.token_hex(12), [{"type": "text", "text": answer}], "end_turn")
        s.show_answer(answer)

    def bash(self, command: str, ask: bool):
        s = self.session
        tool_id = "toolu_" + secrets.token_hex(12)
        tool_input = {"command": command, "description": f"Run {command}"}
        self.assistant(
            "msg_" + secrets.token_hex(12),
            [{"type": "tool_use", "id": tool_id, "name": "Bash", "input": tool_input}],
            "tool_use",
        )
        s.show(f"⏺ Bash({command})")
        allowed = True
        prefix = command.split()[0] if command.split() else command
        if ask and s.permission_mode != "bypassPermissions" and prefix not in s.always_allowed:
            if s.permission_mode == "dontAsk":
                allowed = False
            else:
                self.waiting_tool = tool_id
                answer = yield ("permission", {"tool": "Bash", "command": command, "prefix": prefix})
                self.waiting_tool = None
                allowed = answer in ("yes", "always")
                if answer == "always":
                    s.always_allowed.add(prefix)
        if not allowed:
            self.tool_result(tool_id, REJECTED_TOOL_TEXT, True, "User rejected tool use")
            s.show_result("User rejected the command")
            self.notes.append(f"I did not run `{command}` (permission denied)")
            return
        s.activity = "Running…"
        self.pending_tool = tool_id
        yield ("sleep", float(s.config["tool_delay"]))
        self.pending_tool = None
        output = f"fake output of: {command}"
        result = {"stdout": output, "stderr": "", "interrupted": False, "isImage": False}
        self.tool_result(tool_id, output, False, result)
        s.show_result(output)
        self.notes.append(f"ran `{command}`")

    def edit(self, path: str):
        s = self.session
        tool_id = "toolu_" + secrets.token_hex(12)
        tool_input = {"file_path": os.path.join(s.cwd, path), "old_string": "old", "new_string": "new"}
        self.assistant(
            "msg_" + secrets.token_hex(12),
            [{"type": "tool_use", "id": tool_id, "name": "Edit", "input": tool_input}],
            "tool_use",
        )
        s.show(f"⏺ Update({path})")
        self.pending_tool = tool_id
        yield ("sleep", float(s.config["tool_delay"]))
        self.pending_tool = None
        text = f"The file {tool_input['file_path']} has been updated."
        result = {"filePath": tool_input["file_path"], "oldString": "old", "newString": "new", "userModified": False}
        self.tool_result(tool_id, text, False, result)
        s.show_result(f"Updated {path} with 1 addition and 1 removal")
        self.notes.append(f"edited {path}")

    def agent(self, task: str):
        s = self.session
        tool_id = "toolu_" + secrets.token_hex(12)
        tool_input = {"description": task[:40], "prompt": task, "subagent_type": "general-purpose"}
        self.assistant(
            "msg_" + secrets.token_hex(12),
            [{"type": "tool_use", "id": tool_id, "name": "Task", "input": tool_input}],
            "tool_use",
        )
        s.show(f"⏺ Task({task[:40]})")
        agent_id = secrets.token_hex(8)
        side = os.path.join(os.path.dirname(s.transcript.path), s.session_id, "subagents", f"agent-{agent_id}.jsonl")
        t = s.transcript
        first = t.chain(
            "user", {"message": {"role": "user", "content": task}, "agentId": agent_id}, sidechain_file=side
        )
        msg_id = "msg_" + secrets.token_hex(12)
        bash_id = "toolu_" + secrets.token_hex(12)
        bash_input = {"command": "ls", "description": "List files"}
        step = t.chain(
            "assistant",
            {
                "message": assistant_message(
                    msg_id, s.model, [{"type": "tool_use", "id": bash_id, "name": "Bash", "input": bash_input}], None
                ),
                "agentId": agent_id,
            },
            sidechain_file=side,
            parent=str(first["uuid"]),
        )
        s.activity = "Running agent…"
        self.pending_tool = tool_id
        yield ("sleep", float(s.config["tool_delay"]))
        self.pending_tool = None
        block = {"tool_use_id": bash_id, "type": "tool_result", "content": "fake output of: ls", "is_error": False}
        step = t.chain(
            "user",
            {"message": {"role": "user", "content": [block]}, "agentId": agent_id},
            sidechain_file=side,
            parent=str(step["uuid"]),
        )
        report = f"agent report: {task}"
        t.chain(
            "assistant",
            {
                "message": assistant_message(
                    "msg_" + secrets.token_hex(12), s.model, [{"type": "text", "text": report}], "end_turn"
                ),
                "agentId": agent_id,
            },
            sidechain_file=side,
            parent=str(step["uuid"]),
        )
        result = {"status": "completed", "agentId": agent_id, "content": [{"type": "text", "text": report}]}
        self.tool_result(tool_id, [{"type": "text", "text": report}], False, result)
        s.show_result(report)
        self.notes.append(f"the agent reported: {report}")


# ── The session (shared by the TUI and print mode) ──
class Session:
    def __init__(self, opts: dict, config: dict, version: str, cwd: str, interactive: bool) -> None:
        self.opts, self.config, self.version, self.cwd = opts, config, version, cwd
        self.interactive = interactive
        self.model = str(opts.get("model") or CONV_MODEL)
        self.permission_mode = str(opts.get("permission_mode") or ("auto" if interactive else "default"))
        self.always_allowed: set[str] = set()
        self.activity = "Thinking…"
        self.prompt_id = ""
        self.session_id = ""
        self.transcript: Transcript = None  # type: ignore[assignment]

    def open(self) -> str | None:
        """Pick the session id and transcript; an error text when that is impossible."""
        opts, cwd = self.opts, self.cwd
        sid = opts.get("session_id")
        resume = opts.get("resume")
        if sid is not None and not UUID_RE.match(str(sid)):
            return INVALID_SESSION_ID_ERROR
        if sid is not None and (resume or opts.get("continue")) and not opts.get("fork_session"):
            return SESSION_ID_RESUME_ERROR
        path = None
        if resume is True:
            return PICKER_ERROR
        if resume:
            path = find_transcript(cwd, str(resume))
            if path is None:
                return NO_CONVERSATION_ERROR.format(id=resume)
        elif opts.get("continue"):
            path = latest_transcript(cwd)
            if path is None:
                return NO_CONTINUE_ERROR
        if path is not None and not opts.get("fork_session"):
            self.session_id = os.path.basename(path)[: -len(".jsonl")]
        else:
            self.session_id = str(sid or uuid.uuid4())
            if sid is not None and find_transcript(cwd, self.session_id) is not None:
                return SESSION_ID_IN_USE_ERROR.format(id=sid)
            path = transcript_path(cwd, self.session_id)
        self.transcript = Transcript(path, self.session_id, cwd, self.version, self.interactive)
        return None

    def begin_file(self) -> None:
        if not self.transcript.started:
            self.transcript.started = True
            self.transcript.write_raw(
                {"type": "permission-mode", "permissionMode": self.permission_mode, "sessionId": self.session_id}
            )

    def user_prompt(self, text: str) -> int:
        """Write the user entry of a prompt for the model (with the entries around it); its prompt index."""
        self.begin_file()
        t = self.transcript
        t.prompts += 1
        self.prompt_id = str(uuid.uuid4())
        fields: dict[str, object] = {
            "promptId": self.prompt_id,
            "message": {"role": "user", "content": text},
            "permissionMode": self.permission_mode,
        }
        if self.interactive:
            fields.update(origin={"kind": "human"}, promptSource="typed", turnOrigin="human")
        else:
            fields["promptSource"] = "sdk"
        fields["turnPosition"] = {"promptIndex": t.prompts, "turnIndex": t.prompts}
        entry = t.chain("user", fields)
        t.write_raw(
            {
                "type": "file-history-snapshot",
                "messageId": entry["uuid"],
                "snapshot": {"messageId": entry["uuid"], "trackedFileBackups": {}, "timestamp": now_iso()},
                "isSnapshotUpdate": False,
            }
        )
        t.chain("attachment", {"attachment": {"type": "date", "date": datetime.date.today().isoformat()}})
        return t.prompts

    def end_turn(self, started: float, prompt: str) -> None:
        t = self.transcript
        t.chain(
            "system",
            {"subtype": "turn_duration", "durationMs": int((time.monotonic() - started) * 1000), "isMeta": True},
        )
        t.write_raw({"type": "last-prompt", "lastPrompt": prompt, "sessionId": self.session_id})

    def slash_entries(self, name: str, args: str, stdout: str | None, stderr: str | None) -> None:
        self.begin_file()
        t = self.transcript
        content = (
            f"<command-name>/{name}</command-name>\n<command-message>{name}</command-message>\n"
            f"<command-args>{args}</command-args>"
        )
        t.chain("user", {"message": {"role": "user", "content": content}, "permissionMode": self.permission_mode})
        for tag, text in (("stdout", stdout), ("stderr", stderr)):
            if text is not None:
                t.chain(
                    "system",
                    {
                        "subtype": "local_command",
                        "content": f"<local-command-{tag}>{text}</local-command-{tag}>",
                        "level": "info" if tag == "stdout" else "error",
                        "isMeta": False,
                    },
                )

    # The screen side; print mode keeps only the final text.
    def show(self, text: str, gap: bool = True) -> None:
        pass

    def show_result(self, text: str) -> None:
        self.show("  ⎿  " + text.replace("\n", "\n     "), gap=False)

    def show_answer(self, text: str, first: bool = True) -> None:
        self.show(("⏺ " if first else "  ") + text.replace("\n", "\n  "), gap=first)


class PrintSession(Session):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.final = ""

    def show_result(self, text: str) -> None:
        self.final = text

    def show_answer(self, text: str, first: bool = True) -> None:
        self.final = text if first else self.final + "\n" + text


def run_print(opts: dict, config: dict, version: str, cwd: str) -> int:
    prompt = opts.get("prompt")
    if prompt is None and not isatty(0):
        prompt = sys.stdin.read()
    if not prompt or not str(prompt).strip():
        err(PRINT_MODE_ERROR)
        return 1
    prompt = str(prompt)
    if opts.get("output_format") not in (None, "text"):
        err(OUTPUT_FORMAT_ERROR)
        return 2
    session = PrintSession(opts, config, version, cwd, False)
    problem = session.open()
    if problem:
        err(problem)
        return 1
    session.begin_file()
    for operation in ("enqueue", "dequeue"):
        entry = {
            "type": "queue-operation",
            "operation": operation,
            "timestamp": now_iso(),
            "sessionId": session.session_id,
        }
        if operation == "enqueue":
            entry["content"] = prompt
        session.transcript.write_raw(entry)
    started = time.monotonic()
    index = session.user_prompt(prompt)
    turn = Turn(session, prompt, index).run()
    failed = False
    try:
        request = next(turn)
        while True:
            kind, value = request
            if kind == "sleep":
                if value >= 3600:
                    sleep_forever()
                time.sleep(value)
                request = turn.send(None)
            else:
                request = turn.send("no")  # print mode cannot ask: the tool is denied
    except StopIteration:
        pass
    last = [e for e in read_jsonl(session.transcript.path) if e.get("type") == "assistant"][-1:]
    failed = bool(last and last[0].get("isApiErrorMessage"))
    session.end_turn(started, prompt)
    out(session.final + "\n")
    return 1 if failed else 0


# ── The interactive TUI ──
def char_width(ch: str) -> int:
    if unicodedata.combining(ch) or ch in "\ufe0e\ufe0f\u200d":
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def wrap_row(line: str, cols: int) -> list[str]:
    """Hard-wrap one line of plain text into rows narrower than the pane (so each row is one screen line)."""
    limit = max(cols - 1, 10)
    rows, row, width = [], "", 0
    for ch in line:
        w = char_width(ch)
        if width + w > limit:
            rows.append(row)
            row, width = "", 0
        row += ch
        width += w
    rows.append(row)
    return rows


class TuiExit(Exception):
    """Raised by the SIGHUP/SIGTERM handler: leave the TUI, cleaning up the registry."""


class Tui(Session):
    def __init__(self, opts: dict, config: dict, version: str, cwd: str) -> None:
        super().__init__(opts, config, version, cwd, True)
        self.segments: list[list] = []  # the input box: ["text", s] or ["paste", s, number]
        self.pastes = 0
        self.kill_buffer: list[list] = []
        self.queue: list[str] = []
        self.gen = None
        self.turn: Turn | None = None
        self.wake: float | None = None
        self.turn_started = 0.0
        self.current_prompt = ""
        self.dialog: str | None = None  # "trust" | "permission"
        self.focus = 0
        self.request: dict = {}
        self.hint = ""
        self.ctrl_c_at = 0.0
        self.exit_code: int | None = None
        self.goodbye = ""
        self.inbuf = ""
        self.in_paste = False
        self.paste_buf = ""
        self.esc_deadline: float | None = None
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.live_rows = 0
        self.painted = ""
        self.registry_files: list[str] = []
        self.registry: dict[str, object] = {}
        self.status = "idle"

    # screen
    def size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(1)
            return size.columns, size.lines
        except OSError:
            return 80, 24

    def box_text(self) -> str:
        return "".join(seg[1] for seg in self.segments)

    def box_display(self) -> str:
        parts = []
        for seg in self.segments:
            if seg[0] == "paste" and (seg[1].count("\n") >= PASTE_COLLAPSE_LINES or len(seg[1]) > PASTE_COLLAPSE_CHARS):
                parts.append(f"[Pasted text #{seg[2]} +{seg[1].count(chr(10))} lines]")
            else:
                parts.append(seg[1])
        return "".join(parts)

    def live_lines(self, cols: int) -> list[str]:
        rule = "─" * max(cols - 1, 10)
        if self.dialog == "trust":
            lines = [rule, " Accessing workspace:", "", " " + self.cwd, "", " " + TRUST_DIALOG_TEXT, ""]
            lines += [" " + TRUST_DIALOG_WARNING, "", " Security guide", ""]
            lines += [(" ❯ " if n == self.focus else "   ") + text for n, text in enumerate(TRUST_OPTIONS)]
            return lines + ["", " Enter to confirm · Esc to cancel"]
        if self.dialog == "permission":
            command, prefix = self.request["command"], self.request["prefix"]
            options = ("Yes", f"Yes, and don't ask again for {prefix} commands in {self.cwd}")
            options += ("No, and tell Claude what to do differently (esc)",)
            lines = [rule, " Bash command", "", "   " + command, "   Run " + command, "", " Do you want to proceed?"]
            lines += [(" ❯ " if n == self.focus else "   ") + f"{n + 1}. {text}" for n, text in enumerate(options)]
            return lines + ["", " Esc to cancel"]
        lines = []
        if self.gen is not None:
            lines += [f"✻ {self.activity} (esc to interrupt)", ""]
        for queued in self.queue:
            lines.append("  ❯ " + queued.split("\n", 1)[0] + " (queued)")
        box = self.box_display().split("\n")
        lines.append(rule)
        lines += [("❯ " if n == 0 else "  ") + text for n, text in enumerate(box)]
        lines.append(rule)
        text = self.box_text()
        if text.startswith("/") and not any(ch.isspace() for ch in text):
            matches = [name for name in SLASH_COMMANDS if name.startswith(text[1:])]
            for n, name in enumerate(matches):
                lines.append(("❯ " if n == 0 else "  ") + f"/{name}  {SLASH_COMMANDS[name]}")
        left = "  " + (self.hint or MODE_FOOTERS.get(self.permission_mode, "? for shortcuts"))
        right = "" if self.config["logged_in"] else SIGNED_OUT_STATUS
        gap = cols - 2 - len(left) - len(right)
        lines.append(left + " " * gap + right if right and gap >= 2 else left)
        if right and gap < 2:
            lines.append("  " + right)
        return lines

    def repaint(self, static: str = "") -> None:
        cols, height = self.size()
        rows = [row for line in self.live_lines(cols) for row in wrap_row(line, cols)]
        rows = rows[-max(height - 1, 1) :]
        text = "".join(row + "\n" for row in rows)
        if not static and text == self.painted:
            return
        buf = f"\r{ESC}[{self.live_rows}A{ESC}[J" if self.live_rows else f"\r{ESC}[J"
        out(buf + static + text)
        self.live_rows, self.painted = len(rows), text

    def show(self, text: str, gap: bool = True) -> None:
        self.repaint(("\n" if gap else "") + text + "\n")

    def show_result(self, text: str) -> None:
        self.repaint("  ⎿  " + text.replace("\n", "\n     ") + "\n")

    def clear_live(self, final: str = "") -> None:
        out((f"\r{ESC}[{self.live_rows}A{ESC}[J" if self.live_rows else "\r") + final)
        self.live_rows, self.painted = 0, ""

    # registry: <config dir>/sessions/<pid>.json + <pid>.<hash>.key
    def register(self) -> None:
        folder = os.path.join(config_dir(), "sessions")
        os.makedirs(folder, exist_ok=True)
        pid = os.getpid()
        key_path = os.path.join(folder, f"{pid}.{secrets.token_hex(8)}.key")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode())
        finally:
            os.close(fd)
        self.registry_files = [os.path.join(folder, f"{pid}.json"), key_path]
        sockets = os.path.join(os.environ.get("XDG_RUNTIME_DIR") or "/tmp", "cc-socks")
        name = self.opts.get("name")
        derived = f"{os.path.basename(self.cwd) or 'root'}-{self.session_id.replace('-', '')[-2:]}"
        started = now_ms()
        self.registry = {
            "pid": pid,
            "sessionId": self.session_id,
            "cwd": self.cwd,
            "startedAt": started,
            "version": self.version,
            "peerProtocol": 1,
            "peerFeatures": PEER_FEATURES,
            "kind": "interactive",
            "entrypoint": "cli",
        }
        pane = tmux_location()
        if pane:
            self.registry["tmux"] = pane
        self.registry.update(
            messagingSocketPath=os.path.join(sockets, f"{pid}.sock"),
            name=str(name) if name else derived,
            nameSource="user" if name else "derived",
        )
        if self.opts.get("rc") and self.config["logged_in"]:
            self.registry["bridgeSessionId"] = str(self.config["session_id"] or "session_" + secrets.token_urlsafe(18))
        self.registry.update(status="idle", updatedAt=started, statusUpdatedAt=started)
        self.write_registry()

    def write_registry(self) -> None:
        if self.registry_files:
            try:
                save_json_atomic(self.registry_files[0], self.registry)
            except OSError:
                pass

    def set_status(self, status: str, waiting_for: str | None = None) -> None:
        stamp = now_ms()
        if status != self.registry.get("status") or waiting_for != self.registry.get("waitingFor"):
            self.registry["statusUpdatedAt"] = stamp
        self.registry.pop("waitingFor", None)
        self.registry["status"] = status
        if waiting_for:
            self.registry["waitingFor"] = waiting_for
        self.registry["updatedAt"] = stamp
        self.status = status
        self.write_registry()

    def unregister(self) -> None:
        for path in self.registry_files:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.registry_files = []

    # turns
    def start_turn(self, prompt: str, entry_text: str | None = None) -> None:
        self.show("❯ " + (entry_text or prompt).replace("\n", "\n  "))
        self.turn_started, self.current_prompt = time.monotonic(), entry_text or prompt
        index = self.user_prompt(entry_text or prompt)
        self.turn = Turn(self, prompt, index)
        self.gen = self.turn.run()
        self.activity = "Thinking…"
        self.set_status("busy")
        self.advance(None)

    def advance(self, value: object) -> None:
        try:
            kind, arg = self.gen.send(value)
        except StopIteration:
            self.finish_turn()
            return
        if kind == "sleep":
            self.wake = time.monotonic() + float(arg)
        else:
            self.wake, self.dialog, self.focus, self.request = None, "permission", 0, arg
            self.set_status("waiting", "permission prompt")
        self.repaint()

    def finish_turn(self) -> None:
        self.end_turn(self.turn_started, self.current_prompt)
        self.gen, self.turn, self.wake = None, None, None
        self.next_queued()

    def next_queued(self) -> None:
        if self.queue:
            prompt = self.queue.pop(0)
            self.transcript.write_raw(
                {
                    "type": "queue-operation",
                    "operation": "dequeue",
                    "timestamp": now_iso(),
                    "sessionId": self.session_id,
                }
            )
            self.submit(prompt)
        if self.gen is None:
            self.set_status("idle")
        self.repaint()

    def interrupt(self) -> None:
        turn = self.turn
        self.gen.close()
        if turn is not None and turn.pending_tool:
            turn.tool_result(turn.pending_tool, INTERRUPTED_TOOL_RESULT, True, "Error: " + INTERRUPTED_TOOL_TEXT)
        message = INTERRUPTED_TOOL_TEXT if turn is not None and turn.pending_tool else INTERRUPTED_TEXT
        self.transcript.chain("user", {"message": {"role": "user", "content": [{"type": "text", "text": message}]}})
        self.show_result("Interrupted · What should Claude do instead?")
        self.gen, self.turn, self.wake = None, None, None
        if self.queue:  # queued prompts go back into the box
            self.segments = [["text", "\n".join(self.queue)]]
            self.queue = []
        self.set_status("idle")
        self.repaint()

    def submit(self, text: str) -> None:
        if text.startswith("/"):
            self.slash(text)
        elif self.gen is not None:
            self.queue.append(text)
            self.transcript.write_raw(
                {
                    "type": "queue-operation",
                    "operation": "enqueue",
                    "timestamp": now_iso(),
                    "sessionId": self.session_id,
                    "content": text,
                }
            )
            self.repaint()
        else:
            self.start_turn(text)

    def resume_hint(self) -> str:
        rc = self.opts.get("rc")
        flag = "--rc " if rc is True else f"--rc {shlex.quote(str(rc))} " if rc else ""
        return f"Resume this session with:\nclaude {flag}--resume {self.session_id}\n"

    def slash(self, text: str) -> None:
        text = text.strip()
        word, args = (text[1:].split(None, 1) + [""])[:2]
        name = word
        if word not in SLASH_COMMANDS and not any(ch.isspace() for ch in text):
            matches = [n for n in SLASH_COMMANDS if n.startswith(word)]
            name = matches[0] if word and matches else word  # Enter takes the highlighted entry
        if name in ("exit", "quit"):
            self.show("❯ /" + name)
            self.slash_entries(name, args, "Goodbye!", None)
            self.show_result("Goodbye!")
            self.exit_code, self.goodbye = 0, "\n" + self.resume_hint()
        elif name == "remote-control":
            self.show("❯ /" + name)
            message = REMOTE_CONTROL_SIGNED_OUT if not self.config["logged_in"] else "Remote Control is active"
            self.slash_entries(name, args, message, None)
            self.show_result(message)
        elif name == "security-review":
            if self.gen is not None:
                self.queue.append(text)
                self.repaint()
            elif has_origin_remote(self.cwd):
                entry = f"<command-name>/{name}</command-name>\n<command-message>{name}</command-message>\n"
                self.start_turn(
                    "security review of the pending changes: no issues found", entry + "<command-args></command-args>"
                )
            else:
                self.show("❯ /" + name)
                self.slash_entries(name, args, None, SECURITY_REVIEW_NO_ORIGIN)
                self.show_result(SECURITY_REVIEW_NO_ORIGIN)
        else:
            self.show("❯ " + text)
            self.slash_entries(word, args, f"Unknown slash command: {word}", None)
            self.show_result(f"Unknown slash command: {word}")

    # keys
    def on_paste(self, text: str) -> None:
        text = text.replace("\r\n", "\n").replace("\r", "\n")  # tmux paste-buffer turns LF into CR
        if self.dialog is not None or not text:
            return  # the dialogs ignore stray text
        self.pastes += 1
        self.segments.append(["paste", text, self.pastes])
        self.hint = ""
        self.repaint()

    def on_key(self, key: str) -> None:
        if self.dialog == "trust":
            if key in ("up", "down"):
                self.focus = 1 - self.focus
            elif key == "enter":
                self.trust_answer(self.focus == 1)
            elif key == "esc":
                self.trust_answer(False)
            self.repaint()
            return
        if self.dialog == "permission":
            choice = None
            if key in ("up", "down"):
                self.focus = (self.focus + (1 if key == "down" else -1)) % 3
            elif key in ("1", "2", "3"):
                choice = int(key) - 1
            elif key == "enter":
                choice = self.focus
            elif key == "esc":
                choice = 2
            if choice is not None:
                self.dialog = None
                self.set_status("busy")
                self.advance(("yes", "always", "no")[choice])
            self.repaint()
            return
        hint, self.hint = self.hint, ""
        if key == "enter":
            text = self.box_text()
            if text.strip():
                self.segments = []
                self.submit(text)
        elif key == "esc":
            if self.gen is not None:
                self.interrupt()
        elif key == "ctrl-u":
            if self.segments:
                self.kill_buffer, self.segments = self.segments, []
                self.hint = "ctrl+y to paste deleted text"
        elif key == "ctrl-y":
            self.segments += [list(seg) for seg in self.kill_buffer]
        elif key == "backspace":
            if self.segments:
                seg = self.segments[-1]
                if seg[0] == "paste" or len(seg[1]) <= 1:
                    self.segments.pop()
                else:
                    seg[1] = seg[1][:-1]
        elif key in ("ctrl-c", "ctrl-d"):
            if self.segments and key == "ctrl-c":
                self.segments = []
            elif hint.startswith("Press") and time.monotonic() - self.ctrl_c_at < 2:
                self.exit_code, self.goodbye = 0, "\n" + self.resume_hint()
            else:
                self.ctrl_c_at = time.monotonic()
                self.hint = "Press Ctrl-C again to exit" if key == "ctrl-c" else "Press Ctrl-D again to exit"
        elif key == "shift-tab":
            self.permission_mode = (
                MODE_CYCLE[(MODE_CYCLE.index(self.permission_mode) + 1) % len(MODE_CYCLE)]
                if self.permission_mode in MODE_CYCLE
                else "auto"
            )
            if self.transcript.started:
                self.transcript.write_raw(
                    {"type": "permission-mode", "permissionMode": self.permission_mode, "sessionId": self.session_id}
                )
        elif len(key) == 1:
            if self.segments and self.segments[-1][0] == "text":
                self.segments[-1][1] += key
            else:
                self.segments.append(["text", key])
        self.repaint()

    def trust_answer(self, trusted: bool) -> None:
        self.dialog = None
        if not trusted:
            self.exit_code = 1
            return
        if os.path.normpath(self.cwd) != os.path.normpath(home_dir()):  # home-directory trust is never saved

            def accept(data: dict) -> None:
                data.setdefault("projects", {}).setdefault(self.cwd, {})["hasTrustDialogAccepted"] = True

            update_claude_json(accept)

    def feed(self, final: bool) -> None:
        s, i = self.inbuf, 0
        keys = {"\r": "enter", "\n": "enter", "\x15": "ctrl-u", "\x19": "ctrl-y", "\x7f": "backspace"}
        keys.update({"\x08": "backspace", "\x03": "ctrl-c", "\x04": "ctrl-d"})
        csi_keys = {"A": "up", "B": "down", "Z": "shift-tab"}
        while i < len(s) and self.exit_code is None:
            if self.in_paste:
                j = s.find(PASTE_END, i)
                if j < 0:
                    keep = next((k for k in range(len(PASTE_END) - 1, 0, -1) if s.endswith(PASTE_END[:k])), 0)
                    self.paste_buf += s[i : len(s) - keep]
                    i = len(s) - keep
                    break
                self.paste_buf += s[i:j]
                i = j + len(PASTE_END)
                self.in_paste = False
                text, self.paste_buf = self.paste_buf, ""
                self.on_paste(text)
                continue
            ch = s[i]
            if ch == ESC:
                if i + 1 >= len(s):
                    if not final:
                        break
                    self.on_key("esc")
                    i += 1
                    continue
                if s[i + 1] in "[O":
                    j = i + 2
                    while j < len(s) and 0x30 <= ord(s[j]) <= 0x3F:
                        j += 1
                    while j < len(s) and 0x20 <= ord(s[j]) <= 0x2F:
                        j += 1
                    if j >= len(s):
                        if not final:
                            break
                        i = len(s)
                        continue
                    seq, i = s[i : j + 1], j + 1
                    if seq == PASTE_START:
                        self.in_paste = True
                    elif seq[-1] in csi_keys and len(seq) == 3:
                        self.on_key(csi_keys[seq[-1]])
                    continue  # focus events (ESC[I / ESC[O) and other sequences are ignored
                self.on_key("esc")
                i += 1
                continue
            i += 1
            if ch in keys:
                self.on_key(keys[ch])
            elif ch >= " ":
                self.on_key(ch)
        self.inbuf = s[i:] if self.exit_code is None else ""

    def pump(self, timeout: float | None) -> None:
        """Wait for input or the next timer, then handle what came."""
        deadlines = [d for d in (self.wake, self.esc_deadline) if d is not None]
        if deadlines:
            wait = max(0.0, min(deadlines) - time.monotonic())
            timeout = wait if timeout is None else min(timeout, wait)
        try:
            ready = select.select([0], [], [], timeout)[0]
        except InterruptedError:
            ready = []
        if ready:
            try:
                data = os.read(0, 65536)
            except OSError:
                data = b""
            if not data:
                raise TuiExit()
            self.inbuf += self.decoder.decode(data)
            self.esc_deadline = None
            self.feed(final=False)
            if self.inbuf:
                self.esc_deadline = time.monotonic() + 0.05  # a lone ESC is the Esc key unless more follows
        elif self.inbuf and self.esc_deadline is not None and time.monotonic() >= self.esc_deadline:
            self.esc_deadline = None
            self.feed(final=True)
        if self.gen is not None and self.wake is not None and time.monotonic() >= self.wake:
            self.wake = None
            self.advance(None)

    def run(self) -> int:
        saved = None
        try:
            saved = termios.tcgetattr(0)
            raw = termios.tcgetattr(0)
            raw[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON)
            raw[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
            raw[6][termios.VMIN], raw[6][termios.VTIME] = 1, 0
            termios.tcsetattr(0, termios.TCSANOW, raw)  # like libuv's raw mode: output keeps ONLCR
        except (termios.error, OSError):
            saved = None
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, tui_signal)
        try:
            return self.main()
        except TuiExit:
            return 0 if self.exit_code is None else self.exit_code
        finally:
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)
            self.unregister()
            out(TUI_MODES_OFF)
            if saved is not None:
                try:
                    termios.tcsetattr(0, termios.TCSANOW, saved)
                except (termios.error, OSError):
                    pass

    def main(self) -> int:
        out(TUI_MODES_ON)
        out(f"{ESC}[38;5;174m ✻{RESET} Welcome to {ESC}[1mClaude Code{ESC}[22m v{self.version}\n")
        if not load_json(os.path.join(home_dir(), ".claude.json")).get("hasCompletedOnboarding"):
            time.sleep(0.1)  # the splash, then the connectivity check fails (offline)
            out("\n" + OFFLINE_ERROR + "\n")
            return 1
        out(f"   {ESC}[2mcwd: {self.cwd}{ESC}[22m\n")
        time.sleep(float(self.config["startup_delay"]))  # keys typed meanwhile wait in the pty
        if "CI" not in os.environ and not is_trusted(self.cwd, load_json(os.path.join(home_dir(), ".claude.json"))):
            self.dialog, self.focus = "trust", 0
            self.repaint()
            while self.dialog == "trust" and self.exit_code is None:
                self.pump(None)
            if self.exit_code is not None:
                self.clear_live()
                return self.exit_code
        self.register()
        if self.permission_mode == "auto":
            self.show(f"{ESC}[2m※ {AUTO_MODE_NOTICE}{ESC}[22m", gap=False)
        self.repaint()
        if self.opts.get("prompt"):
            self.submit(str(self.opts["prompt"]))
        while self.exit_code is None:
            self.pump(None)
        self.clear_live(self.goodbye)
        return self.exit_code


def tui_signal(_signum, _frame) -> None:
    raise TuiExit()


def tmux_location() -> str | None:
    """<session>:@<window>.%<pane> of this pane, as the registry's "tmux" field."""
    pane = os.environ.get("TMUX_PANE")
    if not pane or not os.environ.get("TMUX"):
        return None
    try:
        result = subprocess.run(
            ["tmux", "display-message", "-p", "-t", pane, "#{session_name}:#{window_id}.#{pane_id}"],
            capture_output=True,
            text=True,
            timeout=3,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


MAIN_SUBCOMMANDS_NOT_EMULATED = (
    "mcp",
    "config",
    "doctor",
    "update",
    "install",
    "agents",
    "logs",
    "attach",
    "stop",
    "setup-token",
    "plugin",
    "migrate-installer",
    "daemon",
)


def cmd_conversation(argv: list[str], config: dict, version: str) -> int:
    """`claude [options] [prompt]`: the TUI on a terminal, print mode otherwise."""
    try:
        opts = parse_main_args(argv)
    except UsageError as exc:
        err(str(exc))
        return 1
    cwd = os.path.realpath(os.getcwd())
    if opts.get("print") or not isatty(1):
        return run_print(opts, config, version, cwd)
    tui = Tui(opts, config, version, cwd)
    problem = tui.open()
    if problem:
        err(problem)
        return 1
    return tui.run()


def main(argv: list[str]) -> int:
    name = scan_name(argv)
    try:
        config = load_config(name)
    except ConfigError as exc:
        err(str(exc))
        return 2
    version = str(config["version"])
    write_trace(argv, name, version)
    if argv and argv[0] in ("--version", "-v", "-V"):
        out(f"{version} (Claude Code)\n")
        return 0
    if argv and argv[0] == "auth":
        return cmd_auth(argv[1:], config, profile_for(version))
    if argv and argv[0] in ("remote-control", "rc"):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, on_signal)
        try:
            return cmd_remote_control(argv[1:], config, version)
        except Stop:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            out("\n" + GOODBYE_TEXT + "\n")
            time.sleep(float(config["shutdown_delay"]))
            return 0
    if argv[:2] == ["daemon", "remote-control"]:
        err(DAEMON_ERROR)
        return 1
    if argv and argv[0] in MAIN_SUBCOMMANDS_NOT_EMULATED:
        err("fake claude: only --version, auth status, remote-control and the conversation are implemented")
        return 2
    return cmd_conversation(argv, config, version)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
