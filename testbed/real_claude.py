"""The real `claude` CLI for tests, kept off the network.

    from testbed.real_claude import find_real_claude, offline_problem, OfflineClaude

    binary = find_real_claude()             # None when it is not installed
    with OfflineClaude(binary, root, projects) as claude:
        claude.bin                          # CLAUDE_BIN: runs the real CLI in an empty network namespace
        claude.env()                        # os.environ + a throwaway HOME and a private TMUX_TMPDIR
        claude.calls()                      # the argument lists it was run with, oldest first

The CLI is installed by .ci/run (npm package @anthropic-ai/claude-code, its native binary from the
matching optional dependency) in .ci/claude; RC_MCP_REAL_CLAUDE names that folder or the binary.
Every run goes through a wrapper that execs it under `unshare -n` (root) or `unshare -c -n`: a
network namespace with only a loopback interface, so it can reach nothing. The test process itself
keeps its own network. No pytest dependency.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from testbed.lab import run_text, short_tmpdir

ROOT = Path(__file__).resolve().parent.parent
VERSION = "2.1.332"  # the version .ci/run installs
DEFAULT_INSTALL = ROOT / ".ci" / "claude"
# Set in the test process, they would reach the CLI and change what `auth status` reports; the
# dev server's own claude never sees the test process's environment.
CLAUDE_ENV = (
    "ANTHROPIC_API_KEY ANTHROPIC_AUTH_TOKEN ANTHROPIC_BASE_URL CLAUDE_CODE_OAUTH_TOKEN CLAUDE_CONFIG_DIR "
    "CLAUDE_CODE_USE_BEDROCK CLAUDE_CODE_USE_VERTEX CLAUDE_CODE_USE_FOUNDRY TMUX TMUX_PANE XDG_STATE_HOME".split()
)


def find_real_claude(environ: dict[str, str] | None = None) -> Path | None:
    """The installed CLI: $RC_MCP_REAL_CLAUDE (an install folder or the binary), else .ci/claude."""
    environ = dict(os.environ) if environ is None else environ
    given = environ.get("RC_MCP_REAL_CLAUDE", "").strip()
    place = Path(given) if given else DEFAULT_INSTALL
    binary = place / "node_modules" / ".bin" / "claude" if place.is_dir() else place
    return binary.resolve() if binary.is_file() and os.access(binary, os.X_OK) else None


def unshare_command() -> list[str]:
    """A new network namespace for one command: root needs no user namespace for it."""
    return ["unshare", "-n", "--"] if os.geteuid() == 0 else ["unshare", "-c", "-n", "--"]


def offline_problem() -> str | None:
    """Why the CLI cannot be run without network here, or None. The namespace must hold nothing
    but the loopback interface (/proc/net/dev lists one line per interface after two headers)."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = "tail -n +3 /proc/net/dev | grep -v -q '^ *lo:' && echo more-than-loopback; true"
    try:
        done = subprocess.run([*unshare_command(), "/bin/sh", "-c", probe], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`{shlex.join(unshare_command())} sh` cannot run: {exc}"
    if done.returncode != 0:
        return f"`{shlex.join(unshare_command())} sh` failed: {(done.stderr or done.stdout).strip()}"
    if "more-than-loopback" in done.stdout:
        return "a new network namespace here has interfaces besides loopback"
    return None


class OfflineClaude:
    """A throwaway home where the real CLI would start its TUI without questions (onboarding done,
    `projects` and each of `trusted` trusted), no login, and a wrapper that runs the CLI offline and
    records its arguments (one JSON list a line). 2.1.332 still shows its trust dialog in a
    subdirectory of a trusted folder: a project that must get past it needs its own entry."""

    def __init__(self, binary: Path, root: Path, projects: Path, trusted: tuple[Path, ...] = ()) -> None:
        self.binary = binary
        self.root = Path(root)
        self.home = self.root / "home"
        self.projects = Path(projects)
        self.calls_file = self.root / "claude-calls.jsonl"
        self.bin = self.root / "bin" / "claude"
        self.tmux_tmpdir = short_tmpdir("rcr-")
        self.home.mkdir(parents=True, exist_ok=True)
        claude_json = {
            "hasCompletedOnboarding": True,
            "projects": {str(d): {"hasTrustDialogAccepted": True} for d in (self.projects, *trusted)},
        }
        (self.home / ".claude.json").write_text(json.dumps(claude_json, indent=2) + "\n")
        self.bin.parent.mkdir(parents=True, exist_ok=True)
        record = shlex.join([sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"])
        self.bin.write_text(
            "#!/bin/sh\n"
            "# The real claude CLI in a network namespace of its own (loopback only).\n"
            f'{record} "$@" >> {shlex.quote(str(self.calls_file))}\n'
            f'exec {shlex.join([*unshare_command(), str(self.binary)])} "$@"\n'
        )
        self.bin.chmod(0o755)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """os.environ with this HOME and tmux dir, without what would change claude's login."""
        env = {k: v for k, v in os.environ.items() if k not in CLAUDE_ENV}
        env["HOME"] = str(self.home)
        env["TMUX_TMPDIR"] = str(self.tmux_tmpdir)
        env.update(extra or {})
        return env

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The CLI through the wrapper, in the projects folder."""
        return run_text([str(self.bin), *args], self.projects, timeout, self.env())

    def calls(self) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines() if line]

    def tmux_sessions(self) -> list[str]:
        """The sessions on this home's private tmux server (none when it is not running)."""
        done = run_text(["tmux", "list-sessions", "-F", "#{session_name}"], self.root, 10, self.env())
        return done.stdout.split() if done.returncode == 0 else []

    def close(self) -> None:
        """Stop this home's private tmux server, if one was started, and remove its socket dir."""
        run_text(["tmux", "kill-server"], self.root, 10, self.env())
        shutil.rmtree(self.tmux_tmpdir, ignore_errors=True)

    def __enter__(self) -> OfflineClaude:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
