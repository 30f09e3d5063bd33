"""rc_mcp against the real `claude` CLI (the version .ci/run installs), signed out and offline.

The rest of the suite runs a fake claude (testbed/fake_claude.py); these tests check the few
answers of the real one that rc_mcp depends on without a claude.ai account: `--version`, `auth
status`, and that a conversational start refuses with the login fix instead of a session that
could never answer. The CLI runs in an empty network namespace (testbed/real_claude.py), in local
mode with a private tmux server; nothing here needs sshd.

Skipped when the CLI is not installed (.ci/claude, or RC_MCP_REAL_CLAUDE); in CI (CI=true or
RC_MCP_REQUIRE_E2E=1) a missing CLI or namespace is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

import rc_mcp
from testbed.real_claude import CLAUDE_ENV, VERSION, OfflineClaude, find_real_claude, offline_problem

ROOT = Path(__file__).resolve().parent
STRONG_SECRET = "9c2f4e1ab8d7035f6e2c9a41b7d8e05f3a6c2e9d1b4f7a08c5e3d2b1a9f6e4c7"  # openssl rand -hex 32
REQUIRE_E2E = os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("RC_MCP_REQUIRE_E2E") == "1"

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def unavailable(reason: str) -> NoReturn:
    if REQUIRE_E2E:
        pytest.fail(f"the real claude CLI cannot run here: {reason}")
    pytest.skip(reason)


@pytest.fixture
def claude(tmp_path: Path) -> Iterator[OfflineClaude]:
    binary = find_real_claude()
    if binary is None:
        unavailable(
            f"the real claude CLI is not installed: .ci/run installs @anthropic-ai/claude-code@{VERSION} in "
            ".ci/claude (or set RC_MCP_REAL_CLAUDE to an install folder or the binary)"
        )
    problem = offline_problem()
    if problem is not None:
        unavailable(f"it must run without network, and {problem}")
    if shutil.which("tmux") is None:
        unavailable("tmux is not installed")
    projects = tmp_path / "projects"
    (projects / "alpha" / ".git").mkdir(parents=True)
    with OfflineClaude(binary, tmp_path, projects, trusted=(projects / "alpha",)) as offline:
        yield offline


def local_env(claude: OfflineClaude, **extra: str) -> dict[str, str]:
    """rc_mcp's environment in local mode (no SSH_HOST) with the real CLI as CLAUDE_BIN."""
    return {
        "MCP_SECRET": STRONG_SECRET,
        "PROJECTS_BASE_DIR": str(claude.projects),
        "TOKEN_STORE_PATH": str(claude.root / "store" / "tokens.json"),
        "CLAUDE_BIN": str(claude.bin),
        **extra,
    }


def test_real_claude_version_and_signed_out_auth_status(claude: OfflineClaude) -> None:
    """What the start and check scripts parse: the version line, and `auth status` as JSON by
    default (no --json), `loggedIn` false, in a home with no credentials."""
    version = claude.run("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.splitlines()[0] == f"{VERSION} (Claude Code)"
    status = claude.run("auth", "status")
    assert status.returncode == 1, status.stderr  # signed out
    auth = json.loads(status.stdout)
    assert auth["loggedIn"] is False and auth["authMethod"] == "none"
    assert '"loggedIn":false' in status.stdout.replace("\n", "").replace(" ", "")  # the start script's match
    assert claude.calls() == [["--version"], ["auth", "status"]]


@pytest.mark.parametrize("interactive", [False, True], ids=["prompt", "interactive"])
async def test_real_claude_conversation_start_signed_out_is_refused(
    claude: OfflineClaude, monkeypatch: pytest.MonkeyPatch, interactive: bool
) -> None:
    """A conversational start, signed out: the `auth status` preflight refuses with the login
    fix, and nothing is launched — no tmux session, no state, claude run for `auth status` only."""
    for name in CLAUDE_ENV:
        monkeypatch.delenv(name, raising=False)
    for key, value in claude.env().items():
        monkeypatch.setenv(key, value)
    config = rc_mcp.load_config(local_env(claude, START_TIMEOUT="20"))
    assert config.local
    sessions = rc_mcp.Sessions(config, rc_mcp.LocalRunner())
    states: list[str] = []

    async def on_state(state: str) -> None:
        states.append(state)

    prompt = None if interactive else "run the tests"
    with pytest.raises(rc_mcp.ToolFailure) as failure:
        await sessions.start("alpha", "alpha", prompt=prompt, interactive=interactive, on_state=on_state)
    message = str(failure.value)
    assert message == "Not started: " + rc_mcp.START_ERRORS["signed-out"]
    assert "claude is not logged in" in message and "run `claude auth login`" in message
    assert states == []  # not even launched
    assert claude.calls() == [["auth", "status"]]  # JSON at the first try: no --json retry
    assert claude.tmux_sessions() == []
    assert not (claude.home / ".local" / "state" / "rc-mcp").exists()
    assert await sessions.list_all() == []


def test_real_claude_check_command_reports_the_missing_login(claude: OfflineClaude) -> None:
    """`rc_mcp.py check` in local mode: the real CLI's version, and the login as the one failure."""
    env = {k: v for k, v in claude.env(local_env(claude)).items() if k != "SSH_HOST"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "rc_mcp.py"), "check"],
        cwd=claude.root,  # no .env there
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"✓ claude: {claude.bin} ({VERSION} (Claude Code))" in lines
    assert "✗ claude login: not logged in with a claude.ai account — run `claude auth login` on the dev server" in lines
    assert [line for line in lines if line.startswith("✗")] == [line for line in lines if "claude login" in line]
    assert claude.calls() == [["--version"], ["auth", "status"]]
