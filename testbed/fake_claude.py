#!/usr/bin/env python3
"""A fake `claude` CLI for the test suite: `--version`, `auth status` and `remote-control`/`rc`.

It imitates the parts of Claude Code that rc_mcp.py drives: flag parsing and its error texts, the
first-run prompts (consent, spawn mode, workspace trust), one server per directory, the repainting
stdout status block with the environment URL, OSC-8 session links and signals. Behaviour knobs come
from `$HOME/.fake-claude/config.json`; every invocation appends one JSON line to
`$HOME/.fake-claude/trace.jsonl`. See testbed/README.md. Standard library only.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import secrets
import signal
import socket
import sys
import time

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
    "instance (pid {pid}) in {dir}. Use that one, or stop it first."
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
PERMISSION_MODE_ERROR = (
    "--permission-mode requires one of: acceptEdits, auto, bypassPermissions, default, dontAsk, plan (got: {value})"
)
CONTINUE_CONFLICT_ERROR = "--continue and --session-id cannot be used together."
RESUME_SPAWN_CONFLICT_ERROR = "{flag} cannot be combined with --spawn or --capacity."
SESSION_ID_VALUE_ERROR = "--session-id requires a session ID like session_... (got: {value})"
PREVIEW_PORT_ERROR = "--preview-port is not available in this build."
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
    },
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
    """The --name value, found leniently (before strict parsing) to pick per-name knobs."""
    for i, arg in enumerate(argv):
        if arg == "--name" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--name="):
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
    }
    try:
        os.makedirs(state_dir(), exist_ok=True)
        fd = os.open(os.path.join(state_dir(), "trace.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))  # one write: atomic append
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


def cmd_auth(args: list[str], config: dict) -> int:
    if not args or args[0] != "status":
        err("fake claude: only `claude auth status [--json]` is implemented")
        return 1
    state = auth_state(config)
    if "--json" in args[1:]:
        out(json.dumps(state, indent=2) + "\n")
    elif state["loggedIn"]:
        out(f"Logged in ({state['authMethod']}).\n")
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


def parse_rc_args(argv: list[str], profile: dict, version: str) -> dict[str, object]:
    opts: dict[str, object] = {"create_session_in_dir": True}
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, has_eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if flag in ("--sandbox", "--no-sandbox") and not has_eq:
            if profile["rejects_sandbox"]:
                raise UsageError(SANDBOX_ERROR)
            i += 1
            continue
        if flag in VALUE_FLAGS:
            if has_eq:
                value = inline
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise UsageError(MISSING_VALUE_ERROR.format(flag=flag))
            if flag == "--spawn" and value not in SPAWN_MODES:
                raise UsageError(SPAWN_VALUE_ERROR.format(value=value))
            if flag == "--capacity" and not (value.isdigit() and int(value) > 0):
                raise UsageError(CAPACITY_VALUE_ERROR.format(value=value))
            if flag == "--permission-mode" and value not in PERMISSION_MODES:
                raise UsageError(PERMISSION_MODE_ERROR.format(value=value))
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
    if "session_id" in opts and not str(opts["session_id"]).startswith(("session_", "cse_")):
        raise UsageError(SESSION_ID_VALUE_ERROR.format(value=opts["session_id"]))
    if version_tuple(version) >= (2, 1, 200):
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
            session="session_" + secrets.token_hex(8), pid=os.getppid(), dir=cwd
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
    phase, frame, painted = "connecting", 0, None
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
    if not opts.get("spawn") and saved_spawn_mode(cwd) is None and isatty(0) and git_info(cwd)[1] is not None:
        out(SPAWN_PROMPT)
        sleep_forever()  # under tmux this never returns (anthropics/claude-code#86327)
    return serve(opts, config, profile, version, cwd)


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
        return cmd_auth(argv[1:], config)
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
    if "--remote-control" in argv or "--rc" in argv:
        if not (isatty(0) and isatty(1)):
            err(PRINT_MODE_ERROR)
            return 1
        out("(fake claude: the interactive UI is not emulated)\n")
        sleep_forever()
    err("fake claude: only --version, auth status and remote-control are implemented")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
