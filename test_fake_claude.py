"""Tests of the fake claude's conversational mode (testbed/fake_claude.py), driven as rc_mcp drives it.

Each test runs the fake in a real tmux server of its own (private HOME and TMUX_TMPDIR under tmp_path),
starts it with `new-session … claude --rc NAME "prompt" --session-id UUID`, pastes prompts with
`load-buffer` + `paste-buffer -p -d` + `send-keys Enter`, and reads the transcript JSONL, the session
registry and the screen. Plain subprocesses (no terminal) cover print mode and argument errors.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed import fake_claude

ROOT = Path(__file__).resolve().parent
FAKE = ROOT / "testbed" / "fake_claude.py"
FAST = {"version": "2.1.332", "startup_delay": 0, "turn_delay": 0.05, "tool_delay": 0.05}
CHAIN_TYPES = {"user", "assistant", "system", "attachment"}

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def wait_for(what: str, predicate: Callable[[], object], timeout: float = 10.0) -> object:
    """Poll predicate until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Lab:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.proj = self.home / "work" / "proj"
        (self.proj / ".git").mkdir(parents=True)
        (self.proj / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        bin_dir = self.home / ".local" / "bin"
        bin_dir.mkdir(parents=True)
        source = FAKE.read_text().split("\n", 1)[1]
        (bin_dir / "claude").write_text(f"#!{sys.executable}\n{source}")
        (bin_dir / "claude").chmod(0o755)
        tmux_dir = root / "tmux"
        if len(str(tmux_dir)) > 60:  # unix socket paths are short
            tmux_dir = Path(tempfile.mkdtemp(prefix="fct-"))
            self.own_tmux_dir: Path | None = tmux_dir
        else:
            tmux_dir.mkdir()
            self.own_tmux_dir = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("TMUX", "CLAUDE", "GIT_"))}
        self.env.update(HOME=str(self.home), TMUX_TMPDIR=str(tmux_dir), PATH=f"{bin_dir}:{os.environ['PATH']}")
        self.env.pop("CI", None)
        self.write_claude_json(
            {"hasCompletedOnboarding": True, "projects": {str(self.proj): {"hasTrustDialogAccepted": True}}}
        )
        self.config()

    # setup
    def config(self, **knobs: object) -> None:
        (self.home / ".fake-claude").mkdir(exist_ok=True)
        (self.home / ".fake-claude" / "config.json").write_text(json.dumps({**FAST, **knobs}))

    def write_claude_json(self, data: dict) -> None:
        (self.home / ".claude.json").write_text(json.dumps(data))

    def claude_json(self) -> dict:
        return json.loads((self.home / ".claude.json").read_text())

    # tmux
    def tmux(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run(
            ["tmux", *args], env=self.env, input=input, capture_output=True, text=True, timeout=10, check=True
        )
        return result.stdout

    def start(
        self, name: str, *args: str, cwd: Path | None = None, exit_status: bool = False, log: Path | None = None
    ) -> None:
        """The pane runs `exec claude ARGS` (so the pane's pid is claude's). With exit_status it runs
        `claude ARGS 2>NAME.err; echo $? >NAME.rc` instead: tmux 3.3a may lose the exit status (and the
        last output) of a pane whose process exits quickly."""
        command = "exec " + shlex.join(["claude", *args])
        if exit_status:
            err, rc = (shlex.quote(str(self.root / f"{name}.{ext}")) for ext in ("err", "rc"))
            command = shlex.join(["claude", *args]) + f" 2>{err}; echo $? >{rc}"
        self.tmux(
            "new-session", "-d", "-s", name, "-x", "200", "-y", "50", "-c", str(cwd or self.proj), command,
            ";", "set-option", "-t", f"={name}:", "remain-on-exit", "on",
            *([";", "pipe-pane", "-o", "-t", f"={name}:", f"cat >> {shlex.quote(str(log))}"] if log else []),
        )  # fmt: skip

    def paste(self, name: str, text: str, bracketed: bool = True, enter: bool = True) -> None:
        self.tmux("load-buffer", "-b", "p", "-", input=text)
        self.tmux("paste-buffer", *(["-p"] if bracketed else []), "-d", "-b", "p", "-t", f"={name}:")
        if enter:
            self.keys(name, "Enter")

    def keys(self, name: str, *keys: str) -> None:
        self.tmux("send-keys", "-t", f"={name}:", *keys)

    def screen(self, name: str) -> str:
        return self.tmux("capture-pane", "-p", "-t", f"={name}:")

    def wait_screen(self, name: str, text: str, timeout: float = 10.0) -> str:
        return str(wait_for(f"{text!r} on screen", lambda: text in (s := self.screen(name)) and s, timeout))

    def wait_exit(self, name: str) -> tuple[int, str]:
        """(exit status, stderr) of a pane started with exit_status=True."""
        rc = self.root / f"{name}.rc"
        wait_for(f"{name} to exit", lambda: rc.exists() and rc.read_text().endswith("\n"))
        return int(rc.read_text()), (self.root / f"{name}.err").read_text()

    def close(self) -> None:
        subprocess.run(["tmux", "kill-server"], env=self.env, capture_output=True, timeout=10)
        if self.own_tmux_dir:
            shutil.rmtree(self.own_tmux_dir, ignore_errors=True)

    # files
    def transcript_path(self, sid: str, cwd: Path | None = None) -> Path:
        slug = fake_claude.project_slug(str(cwd or self.proj))
        return self.home / ".claude" / "projects" / slug / f"{sid}.jsonl"

    def entries(self, sid: str, cwd: Path | None = None) -> list[dict]:
        path = self.transcript_path(sid, cwd)
        if not path.exists():
            return []
        # complete lines only: the fake may be writing the last one (read it again on the next poll)
        text = path.read_text()
        return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]

    def chat(self, sid: str) -> list[dict]:
        return [e for e in self.entries(sid) if e["type"] in ("user", "assistant")]

    def answers(self, sid: str) -> list[str]:
        """Texts of the main-chain assistant entries, one per message.id (blocks concatenated)."""
        texts: dict[str, str] = {}
        for e in self.chat(sid):
            if e["type"] == "assistant" and not e["isSidechain"]:
                for block in e["message"]["content"]:
                    if block["type"] == "text":
                        texts[e["message"]["id"]] = texts.get(e["message"]["id"], "") + block["text"]
        return list(texts.values())

    def registry(self) -> list[dict]:
        folder = self.home / ".claude" / "sessions"
        found = []
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            try:
                found.append(json.loads(path.read_text()))
            except ValueError:  # mid-rename: retry on the next poll
                continue
        return found

    def wait_status(self, status: str, timeout: float = 10.0) -> dict:
        def check() -> dict | None:
            regs = self.registry()
            return regs[0] if regs and regs[0]["status"] == status else None

        return dict(wait_for(f"registry status {status}", check, timeout))  # type: ignore[arg-type]

    def wait_answers(self, sid: str, count: int, timeout: float = 10.0) -> list[str]:
        wait_for(f"{count} answers", lambda: len(self.answers(sid)) >= count, timeout)
        return self.answers(sid)

    def run(self, *args: str, cwd: Path | None = None, input: str = "") -> subprocess.CompletedProcess[str]:
        """claude without a terminal (print mode, argument errors)."""
        return subprocess.run(
            ["claude", *args],
            env=self.env,
            cwd=cwd or self.proj,
            input=input,
            capture_output=True,
            text=True,
            timeout=20,
        )


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def new_sid() -> str:
    return str(uuid.uuid4())


def chain_ok(entries: list[dict]) -> None:
    """Every main-chain entry points at the one before it; the first at null."""
    chain = [e for e in entries if e["type"] in CHAIN_TYPES]
    assert chain[0]["parentUuid"] is None
    for before, after in zip(chain, chain[1:], strict=False):
        assert after["parentUuid"] == before["uuid"]


# ── Start-up, first prompt, follow-ups ──
def test_first_prompt_paste_and_context(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-a", "--rc", "alpha", "hello", "--session-id", sid)
    assert lab.wait_answers(sid, 1) == ["turn 1: hello"]
    reg = lab.wait_status("idle")
    screen = lab.wait_screen("rc-a", "⏺ turn 1: hello")
    assert "❯ hello" in screen
    assert "⏵⏵ auto mode on (shift+tab to cycle)" in screen
    assert "Auto mode is now Claude Code's default permission mode." in screen
    assert "Not logged in" not in screen

    prompt = 'run the tests\nline two with $HOME and `backticks` and "quotes"'
    lab.paste("rc-a", prompt)
    assert lab.wait_answers(sid, 2)[1] == f"turn 2: {prompt}"
    lab.wait_status("idle")

    entries = lab.entries(sid)
    users = [e for e in entries if e["type"] == "user"]
    assert [u["message"]["content"] for u in users] == ["hello", prompt]
    first = users[0]
    assert first["parentUuid"] is None and first["isSidechain"] is False
    assert first["promptSource"] == "typed" and first["origin"] == {"kind": "human"}
    assert first["permissionMode"] == "auto" and first["entrypoint"] == "cli"
    assert first["turnPosition"] == {"promptIndex": 1, "turnIndex": 1}
    assert users[1]["turnPosition"]["promptIndex"] == 2
    assert first["cwd"] == str(lab.proj) and first["sessionId"] == sid
    assert first["version"] == "2.1.332" and first["gitBranch"] == "main"
    assert first["promptId"] and first["uuid"] and first["timestamp"].endswith("Z")
    answer = [e for e in entries if e["type"] == "assistant"][0]
    message = answer["message"]
    assert message["role"] == "assistant" and message["type"] == "message" and message["model"] == "claude-opus-5-5"
    assert message["id"].startswith("msg_") and message["stop_reason"] == "end_turn" and "usage" in message
    # entries a parser must skip are interleaved
    types = {e["type"] for e in entries}
    assert {"permission-mode", "file-history-snapshot", "attachment", "system", "last-prompt"} <= types
    assert any(e["type"] == "system" and e["subtype"] == "turn_duration" for e in entries)
    chain_ok(entries)

    assert reg["sessionId"] == sid and reg["cwd"] == str(lab.proj) and reg["kind"] == "interactive"
    assert reg["version"] == "2.1.332" and reg["entrypoint"] == "cli" and reg["peerProtocol"] == 1
    assert reg["tmux"].startswith("rc-a:@") and reg["name"].startswith("proj-") and reg["nameSource"] == "derived"
    assert reg["pid"] == int(lab.tmux("display-message", "-p", "-t", "=rc-a:", "#{pane_pid}"))
    assert reg["messagingSocketPath"].endswith(f"/{reg['pid']}.sock") and reg["bridgeSessionId"].startswith("session_")
    assert isinstance(reg["updatedAt"], int) and reg["statusUpdatedAt"] >= reg["startedAt"]
    [key] = (lab.home / ".claude" / "sessions").glob(f"{reg['pid']}.*.key")
    assert key.stat().st_mode & 0o777 == 0o600


def test_name_flag_sets_registry_name_and_trace(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-n", "--rc", "alpha", "-n", "my-task", "--session-id", sid)
    reg = lab.wait_status("idle")
    assert reg["name"] == "my-task" and reg["nameSource"] == "user"
    trace = [json.loads(line) for line in (lab.home / ".fake-claude" / "trace.jsonl").read_text().splitlines()]
    assert trace[-1]["argv"] == ["--rc", "alpha", "-n", "my-task", "--session-id", sid]
    assert trace[-1]["name"] == "my-task" and trace[-1]["stdout_isatty"] is True


def test_terminal_modes_in_the_pane_log(lab: Lab, tmp_path: Path) -> None:
    log = tmp_path / "pane.log"
    sid = new_sid()
    lab.start("rc-b", "--rc", "x", "hi", "--session-id", sid, log=log, exit_status=True)
    lab.wait_answers(sid, 1)
    lab.wait_status("idle")
    lab.paste("rc-b", "/exit")
    assert lab.wait_exit("rc-b") == (0, "")
    raw = wait_for("the log", lambda: b"--resume" in (data := log.read_bytes()) and data)
    assert isinstance(raw, bytes)
    on, off = raw.index(b"\x1b[?2004h"), raw.index(b"\x1b[?2004l")
    assert b"\x1b[?1004h" in raw and b"\x1b[?2031h" in raw and on < raw.index("⏺ turn 1: hi".encode()) < off
    assert raw.count(b"\r\n") > 5  # output keeps ONLCR in raw mode


def test_paste_without_p_submits_each_line(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-p", "--rc", "x", "--session-id", sid)
    lab.wait_status("idle")
    lab.paste("rc-p", "first line\nsecond line", bracketed=False, enter=False)
    assert lab.wait_answers(sid, 1) == ["turn 1: first line"]
    lab.wait_status("idle")
    screen = lab.wait_screen("rc-p", "❯ second line")
    assert [e["message"]["content"] for e in lab.chat(sid) if e["type"] == "user"] == ["first line"]
    assert screen.count("second line") == 1  # still in the box


def test_long_paste_placeholder_and_full_text(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-l", "--rc", "x", "--session-id", sid)
    lab.wait_status("idle")
    text = "\n".join(f"line {n} of forty" for n in range(1, 41))
    lab.paste("rc-l", text, enter=False)
    lab.wait_screen("rc-l", "❯ [Pasted text #1 +39 lines]")
    lab.keys("rc-l", "Enter")
    lab.wait_answers(sid, 1)
    assert [e["message"]["content"] for e in lab.chat(sid) if e["type"] == "user"] == [text]


def test_ctrl_u_clears_the_box(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-u", "--rc", "x", "--session-id", sid)
    lab.wait_status("idle")
    lab.paste("rc-u", "half-typed words", enter=False)
    lab.wait_screen("rc-u", "❯ half-typed words")
    lab.keys("rc-u", "C-u")
    screen = lab.wait_screen("rc-u", "ctrl+y to paste deleted text")
    assert "half-typed words" not in screen
    lab.paste("rc-u", "fresh")
    assert lab.wait_answers(sid, 1) == ["turn 1: fresh"]


def test_prompt_typed_before_the_tui_reads_is_kept(lab: Lab) -> None:
    lab.config(startup_delay=0.5)
    sid = new_sid()
    lab.start("rc-e", "--rc", "x", "--session-id", sid)
    lab.paste("rc-e", "early bird")  # at once: the TUI is still starting
    assert lab.wait_answers(sid, 1) == ["turn 1: early bird"]


# ── The scripted model ──
def test_think_is_busy_then_answers(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-t", "--rc", "x", "--session-id", sid)
    lab.wait_status("idle")
    lab.paste("rc-t", "think 0.6: what next")
    busy = lab.wait_status("busy")
    assert "waitingFor" not in busy
    lab.wait_screen("rc-t", "(esc to interrupt)")
    idle = lab.wait_status("idle")
    assert idle["statusUpdatedAt"] > busy["statusUpdatedAt"]
    assert lab.answers(sid) == ["turn 1: what next"]
    thinking = [b for e in lab.chat(sid) if e["type"] == "assistant" for b in e["message"]["content"]]
    assert thinking[0]["type"] == "thinking"


def test_prompt_while_busy_is_queued(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-q", "--rc", "x", "--session-id", sid)
    lab.wait_status("idle")
    lab.paste("rc-q", "think 0.5: one")
    lab.wait_status("busy")
    lab.paste("rc-q", "two")
    assert lab.wait_answers(sid, 2) == ["turn 1: one", "turn 2: two"]
    ops = [e["operation"] for e in lab.entries(sid) if e["type"] == "queue-operation"]
    assert ops == ["enqueue", "dequeue"]


def test_tools_bash_and_edit(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-tool", "--rc", "x", "bash: ls -la", "--session-id", sid)
    assert lab.wait_answers(sid, 1) == ["turn 1: ran `ls -la`"]
    lab.wait_status("idle")
    lab.paste("rc-tool", "edit: src/app.py")
    assert lab.wait_answers(sid, 2)[1] == "turn 2: edited src/app.py"
    chat = lab.chat(sid)
    uses = [b for e in chat if e["type"] == "assistant" for b in e["message"]["content"] if b["type"] == "tool_use"]
    assert [(u["name"], u["input"].get("command") or u["input"].get("file_path")) for u in uses] == [
        ("Bash", "ls -la"),
        ("Edit", str(lab.proj / "src" / "app.py")),
    ]
    results = [b for e in chat if e["type"] == "user" for b in e["message"]["content"] if isinstance(b, dict)]
    assert [r["tool_use_id"] for r in results] == [u["id"] for u in uses]
    assert results[0]["content"] == "fake output of: ls -la" and results[0]["is_error"] is False
    screen = lab.wait_screen("rc-tool", "⏺ Update(src/app.py)")
    assert "⏺ Bash(ls -la)" in screen and "⎿  fake output of: ls -la" in screen
    assert not (lab.proj / "src").exists()  # nothing is really run or edited
    chain_ok(lab.entries(sid))


def test_permission_prompt_allow_always_and_deny(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-perm", "--rc", "x", "--session-id", sid)
    lab.wait_status("idle")
    lab.paste("rc-perm", "ask: rm -rf build")
    reg = lab.wait_status("waiting")
    assert reg["waitingFor"] == "permission prompt"
    screen = lab.wait_screen("rc-perm", "Do you want to proceed?")
    assert "❯ 1. Yes" in screen
    assert f"2. Yes, and don't ask again for rm commands in {lab.proj}" in screen
    assert "3. No, and tell Claude what to do differently (esc)" in screen
    lab.paste("rc-perm", "stray text")  # a paste + Enter answers the prompt: Enter = the focused "Yes"
    assert lab.wait_answers(sid, 1) == ["turn 1: ran `rm -rf build`"]
    assert "waitingFor" not in lab.wait_status("idle")
    assert [e["message"]["content"] for e in lab.chat(sid) if e["type"] == "user"][0] == "ask: rm -rf build"
    assert all("stray" not in json.dumps(e) for e in lab.entries(sid))

    lab.paste("rc-perm", "ask: git push")
    lab.wait_status("waiting")
    lab.keys("rc-perm", "Escape")
    assert lab.wait_answers(sid, 2)[1] == "turn 2: I did not run `git push` (permission denied)"
    rejected = [e for e in lab.chat(sid) if e["type"] == "user" and isinstance(e["message"]["content"], list)][-1]
    assert rejected["message"]["content"][0]["is_error"] is True
    lab.wait_status("idle")

    lab.paste("rc-perm", "ask: make all")
    lab.wait_status("waiting")
    lab.keys("rc-perm", "2")  # "don't ask again" for make
    lab.wait_answers(sid, 3)
    lab.wait_status("idle")
    lab.paste("rc-perm", "ask: make clean")
    assert lab.wait_answers(sid, 4)[3] == "turn 4: ran `make clean`"
    lab.paste("rc-perm", "ask: rm x")
    lab.wait_status("waiting")
    lab.keys("rc-perm", "Down", "Down", "Enter")
    assert lab.wait_answers(sid, 5)[4] == "turn 5: I did not run `rm x` (permission denied)"


def test_bypass_permissions_never_asks(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-by", "--rc", "x", "--permission-mode", "bypassPermissions", "ask: rm -rf /tmp/x", "--session-id", sid)
    assert lab.wait_answers(sid, 1) == ["turn 1: ran `rm -rf /tmp/x`"]
    assert "⏵⏵ bypass permissions on (shift+tab to cycle)" in lab.screen("rc-by")


def test_api_error(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-f", "--rc", "x", "fail 529", "--session-id", sid)
    lab.wait_status("idle")
    [entry] = wait_for("the error", lambda: [e for e in lab.chat(sid) if e["type"] == "assistant"])  # type: ignore[misc]
    assert entry["isApiErrorMessage"] is True and entry["error"] == "server_error"
    assert entry["message"]["model"] == "<synthetic>"
    assert entry["message"]["content"][0]["text"].startswith("API Error: 529 ")
    lab.wait_screen("rc-f", "⎿  API Error: 529")


def test_sidechain_only_summary_on_main_chain(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-s", "--rc", "x", "agent: survey the repo", "--session-id", sid)
    assert lab.wait_answers(sid, 1) == ["turn 1: the agent reported: agent report: survey the repo"]
    main = lab.entries(sid)
    assert all(e.get("isSidechain") is False for e in main if e["type"] in CHAIN_TYPES)
    [side] = (lab.transcript_path(sid).parent / sid / "subagents").glob("agent-*.jsonl")
    side_entries = [json.loads(line) for line in side.read_text().splitlines()]
    assert len(side_entries) == 4 and all(e["isSidechain"] is True for e in side_entries)
    assert side_entries[0]["message"]["content"] == "survey the repo"
    assert side.name == f"agent-{side_entries[0]['agentId']}.jsonl"
    [use] = [b for e in main if e["type"] == "assistant" for b in e["message"]["content"] if b["type"] == "tool_use"]
    assert use["name"] == "Task"
    chain_ok(main)


def test_long_answer_spans_lines_with_one_message_id(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-long", "--rc", "x", "long 25", "--session-id", sid)
    lab.wait_status("idle")
    wait_for(
        "the last chunk", lambda: any(e.get("message", {}).get("stop_reason") == "end_turn" for e in lab.chat(sid))
    )
    parts = [e for e in lab.chat(sid) if e["type"] == "assistant"]
    assert len(parts) == 3 and len({p["message"]["id"] for p in parts}) == 1
    assert [p["message"]["stop_reason"] for p in parts] == [None, None, "end_turn"]
    expected = "\n".join(["turn 1: line 1 of 25"] + [f"line {n} of 25" for n in range(2, 26)])
    assert lab.answers(sid) == [expected]


def test_never_finishes_until_escape(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-h", "--rc", "x", "hang", "--session-id", sid)
    lab.wait_status("busy")
    lab.wait_screen("rc-h", "(esc to interrupt)")
    lab.keys("rc-h", "Escape")
    lab.wait_status("idle")
    screen = lab.wait_screen("rc-h", "Interrupted · What should Claude do instead?")
    assert "esc to interrupt" not in screen
    last = lab.chat(sid)[-1]
    assert last["type"] == "user" and last["message"]["content"] == [
        {"type": "text", "text": "[Request interrupted by user]"}
    ]
    lab.paste("rc-h", "are you there")
    assert lab.wait_answers(sid, 1) == ["turn 2: are you there"]
    chain_ok(lab.entries(sid))


def test_escape_during_a_tool(lab: Lab) -> None:
    lab.config(tool_delay=5)
    sid = new_sid()
    lab.start("rc-et", "--rc", "x", "bash: sleep 100", "--session-id", sid)
    lab.wait_screen("rc-et", "⏺ Bash(sleep 100)")
    lab.keys("rc-et", "Escape")
    lab.wait_status("idle")
    chat = lab.chat(sid)
    assert chat[-2]["message"]["content"][0]["is_error"] is True
    assert chat[-1]["message"]["content"][0]["text"] == "[Request interrupted by user for tool use]"


def test_signed_out_answers_every_prompt(lab: Lab) -> None:
    lab.config(logged_in=False)
    sid = new_sid()
    lab.start("rc-so", "--rc", "x", "bash: ls", "--session-id", sid)
    lab.wait_status("idle")
    screen = lab.wait_screen("rc-so", "⎿  Not logged in · Please run /login")
    assert "Not logged in · run /login" in screen
    [entry] = [e for e in lab.chat(sid) if e["type"] == "assistant"]
    assert entry["isApiErrorMessage"] is True and entry["error"] == "authentication_failed"
    assert entry["message"]["model"] == "<synthetic>" and entry["message"]["stop_reason"] == "stop_sequence"
    assert entry["message"]["content"] == [{"type": "text", "text": "Not logged in · Please run /login"}]
    assert "bridgeSessionId" not in lab.registry()[0]
    lab.paste("rc-so", "/remote-control")
    lab.wait_screen("rc-so", "⎿  Remote Control requires a claude.ai subscription. Run claude auth login")


# ── First-run dialogs ──
def test_trust_dialog_defaults_to_no(lab: Lab) -> None:
    lab.write_claude_json({"hasCompletedOnboarding": True})
    sid = new_sid()
    lab.start("rc-tr", "--rc", "x", "hello", "--session-id", sid, exit_status=True)
    screen = lab.wait_screen("rc-tr", "Enter to confirm · Esc to cancel")
    assert "Accessing workspace:" in screen and str(lab.proj) in screen
    assert "Quick safety check: Is this a project you created or one you trust?" in screen
    assert "❯ No, exit" in screen and "   Yes, I trust this folder" in screen
    assert lab.registry() == []
    lab.keys("rc-tr", "Enter")
    assert lab.wait_exit("rc-tr") == (1, "")
    assert lab.claude_json() == {"hasCompletedOnboarding": True}
    assert not lab.transcript_path(sid).exists() and lab.registry() == []


def test_trust_dialog_accepted(lab: Lab) -> None:
    lab.write_claude_json({"hasCompletedOnboarding": True})
    sid = new_sid()
    lab.start("rc-ta", "--rc", "x", "hello", "--session-id", sid)
    lab.wait_screen("rc-ta", "❯ No, exit")
    lab.keys("rc-ta", "Down")
    lab.wait_screen("rc-ta", "❯ Yes, I trust this folder")
    lab.keys("rc-ta", "Enter")
    assert lab.wait_answers(sid, 1) == ["turn 1: hello"]
    assert lab.claude_json()["projects"][str(lab.proj)] == {"hasTrustDialogAccepted": True}


def test_fresh_home_fails_offline(lab: Lab) -> None:
    (lab.home / ".claude.json").unlink()
    lab.start("rc-on", "--rc", "x", "hello", exit_status=True)
    assert lab.wait_exit("rc-on") == (1, "")
    screen = lab.screen("rc-on")
    assert "Unable to connect to Anthropic services" in screen
    assert "Failed to connect to api.anthropic.com: EAI_AGAIN" in screen
    assert lab.registry() == []


# ── Slash commands, /exit, --resume ──
def test_slash_commands_exit_and_resume(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-x", "--rc", "alpha", "/security-review", "--session-id", sid, exit_status=True)
    lab.wait_screen("rc-x", "⎿  Error: git diff --name-only origin/HEAD... failed")
    lab.paste("rc-x", "/frobnicate now")
    lab.wait_screen("rc-x", "Unknown slash command: frobnicate")
    lab.paste("rc-x", "hello")
    lab.wait_answers(sid, 1)
    lab.wait_status("idle")
    [pid] = [r["pid"] for r in lab.registry()]
    lab.paste("rc-x", "/exit")
    assert lab.wait_exit("rc-x") == (0, "")
    screen = lab.screen("rc-x")
    assert f"Resume this session with:\nclaude --rc alpha --resume {sid}\n" in screen
    assert list((lab.home / ".claude" / "sessions").iterdir()) == []

    entries = lab.entries(sid)
    users = [e["message"]["content"] for e in entries if e["type"] == "user"]
    assert users[0].startswith("<command-name>/security-review</command-name>")
    assert (
        users[1].startswith("<command-name>/frobnicate</command-name>")
        and "<command-args>now</command-args>" in users[1]
    )
    assert users[2] == "hello" and users[3].startswith("<command-name>/exit</command-name>")
    local = [e["content"] for e in entries if e["type"] == "system" and e["subtype"] == "local_command"]
    assert local[0].startswith("<local-command-stderr>Error: git diff --name-only origin/HEAD...")
    assert local[1] == "<local-command-stdout>Unknown slash command: frobnicate</local-command-stdout>"

    lab.start("rc-x2", "--rc", "alpha", "--resume", sid)
    lab.wait_status("idle")
    assert lab.registry()[0]["sessionId"] == sid and lab.registry()[0]["pid"] != pid
    lab.paste("rc-x2", "again")
    assert lab.wait_answers(sid, 2) == ["turn 1: hello", "turn 2: again"]
    assert len(list(lab.transcript_path(sid).parent.glob("*.jsonl"))) == 1
    chain_ok(lab.entries(sid))


def test_slash_completion_takes_the_highlighted_entry(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-c", "--rc", "x", "--session-id", sid, exit_status=True)
    lab.wait_status("idle")
    lab.paste("rc-c", "/security", enter=False)
    lab.wait_screen(
        "rc-c", "❯ /security-review  Complete a security review of the pending changes on the current branch"
    )
    lab.paste("rc-c", "/ex")  # the box now holds "/security/ex": no match, an unknown command
    lab.wait_screen("rc-c", "Unknown slash command: security/ex")
    lab.paste("rc-c", "/qu")
    assert lab.wait_exit("rc-c") == (0, "")


def test_kill_session_removes_the_registry(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-k", "--rc", "x", "hang", "--session-id", sid)
    lab.wait_status("busy")
    assert len(list((lab.home / ".claude" / "sessions").iterdir())) == 2
    lab.tmux("kill-session", "-t", "=rc-k")
    wait_for("the registry to go", lambda: not any((lab.home / ".claude" / "sessions").iterdir()))


def test_config_dir_moves_transcripts_and_registry(lab: Lab) -> None:
    sid = new_sid()
    conf = lab.home / "conf"
    lab.env["CLAUDE_CONFIG_DIR"] = str(conf)
    result = lab.run("-p", "hello", "--session-id", sid)
    assert result.returncode == 0
    assert (conf / "projects" / fake_claude.project_slug(str(lab.proj)) / f"{sid}.jsonl").exists()


# ── Print mode and argument errors (no terminal) ──
def test_print_mode(lab: Lab) -> None:
    sid = new_sid()
    result = lab.run("--rc", "x", "hello", "--session-id", sid)
    assert (result.returncode, result.stdout, result.stderr) == (0, "turn 1: hello\n", "")
    entries = lab.entries(sid)
    [user] = [e for e in entries if e["type"] == "user"]
    assert user["promptSource"] == "sdk" and user["entrypoint"] == "sdk-cli" and "origin" not in user
    assert [e["operation"] for e in entries if e["type"] == "queue-operation"] == ["enqueue", "dequeue"]
    assert not (lab.home / ".claude" / "sessions").exists()

    result = lab.run("--rc", "x")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        "Error: Input must be provided either through stdin or as a prompt argument when using --print\n"
    )
    assert lab.run("-p", input="from stdin").stdout == "turn 1: from stdin\n"

    lab.config(logged_in=False)
    result = lab.run("--rc", "x", "hello")
    assert (result.returncode, result.stdout) == (1, "Not logged in · Please run /login\n")


@pytest.mark.parametrize(
    "args, stderr",
    [
        (["--session-id", "not-a-uuid", "hi"], "Error: Invalid session ID. Must be a valid UUID.\n"),
        (["--resume", "11111111-2222-4333-8444-555555555555", "hi"], None),
        (
            ["--permission-mode", "bogus", "hi"],
            "error: option '--permission-mode <mode>' argument 'bogus' is invalid. Allowed choices are "
            "acceptEdits, auto, bypassPermissions, manual, dontAsk, plan.\n",
        ),
        (["--frobnicate", "hi"], "error: unknown option '--frobnicate'\n"),
        (["one", "two"], "error: too many arguments. Expected 1 argument but got 2.\n"),
        (
            ["--session-id", "11111111-2222-4333-8444-555555555555", "-r", "11111111-2222-4333-8444-555555555555", "x"],
            "Error: --session-id can only be used with --continue or --resume if --fork-session is also specified.\n",
        ),
    ],
)
def test_argument_errors(lab: Lab, args: list[str], stderr: str | None) -> None:
    result = lab.run(*args)
    assert result.returncode == 1 and result.stdout == ""
    expected = stderr or "No conversation found with session ID: 11111111-2222-4333-8444-555555555555\n"
    assert result.stderr == expected


def test_session_id_in_use_and_default_accepted(lab: Lab) -> None:
    sid = new_sid()
    assert lab.run("-p", "hi", "--session-id", sid, "--permission-mode", "default").returncode == 0
    result = lab.run("-p", "hi", "--session-id", sid)
    assert (result.returncode, result.stderr) == (1, f"Error: Session ID {sid} is already in use.\n")
    result = lab.run("-p", "more", "--resume", sid)
    assert result.stdout == "turn 2: more\n"


def test_argument_errors_in_the_tui(lab: Lab) -> None:
    lab.start("bad1", "--rc", "x", "--session-id", "nope", exit_status=True)
    assert lab.wait_exit("bad1") == (1, "Error: Invalid session ID. Must be a valid UUID.\n")
    lab.start("bad2", "--rc", "x", "--resume", "11111111-2222-4333-8444-555555555555", exit_status=True)
    missing = "No conversation found with session ID: 11111111-2222-4333-8444-555555555555\n"
    assert lab.wait_exit("bad2") == (1, missing)


def test_slug() -> None:
    assert fake_claude.project_slug("/nonexistent/projects/web app.v2_x") == "-nonexistent-projects-web-app-v2-x"
    long_path = "/nonexistent/" + "d" * 250
    slug = fake_claude.project_slug(long_path)
    assert slug.startswith("-nonexistent-ddd") and len(slug) > 201 and slug[200] == "-"
    assert slug == fake_claude.project_slug(long_path)  # deterministic
    assert set(slug[201:]) <= set("0123456789abcdefghijklmnopqrstuvwxyz")


def test_transcript_in_a_directory_with_odd_characters(lab: Lab) -> None:
    odd = lab.home / "work" / "web app.v2_x"
    odd.mkdir(parents=True)
    sid = new_sid()
    assert lab.run("-p", "hi", "--session-id", sid, cwd=odd).returncode == 0
    assert (lab.home / ".claude" / "projects" / (str(lab.home).replace("/", "-").replace(".", "-").replace("_", "-")
            + "-work-web-app-v2-x") / f"{sid}.jsonl").exists()  # fmt: skip


# ── 2.1.332 server mode and auth status; older profiles unchanged ──
@pytest.mark.parametrize(
    "args, stderr",
    [
        (["--no-sandbox"], fake_claude.NO_SANDBOX_ERROR_332),
        (["--settings", '{"a": 1}'], "--settings takes the path of a JSON settings file, not a JSON string."),
        (["--spawn", "same-dir", "--spawn", "worktree"], "--spawn may only be specified once"),
        (["--capacity", "2", "--capacity", "3"], "--capacity may only be specified once"),
        (["--session-id", ""], "--session-id requires a value"),
        (["--session-id", "session_1", "--continue"], "--session-id and --continue cannot be used together."),
        (
            ["--continue", "--spawn", "same-dir"],
            "--session-id and --continue cannot be used with --spawn, --capacity, or --create-session-in-dir.",
        ),
        (
            ["--session-id", "session_1", "--no-create-session-in-dir"],
            "--session-id and --continue cannot be used with --spawn, --capacity, or --create-session-in-dir.",
        ),
        (["--enable-live-preview"], "--enable-live-preview and --preview-port are not available in this build."),
        (
            ["--permission-mode", "bogus"],
            "--permission-mode requires one of: acceptEdits, auto, bypassPermissions, manual, dontAsk, plan "
            "(got: bogus)",
        ),
    ],
)
def test_server_mode_parser_2_1_332(lab: Lab, args: list[str], stderr: str) -> None:
    result = lab.run("remote-control", *args)
    assert (result.returncode, result.stderr) == (1, stderr + "\n")


def test_server_mode_fail_texts_2_1_332(lab: Lab) -> None:
    lab.config(fail="session_elsewhere")
    assert lab.run("remote-control").stderr.endswith("Use that terminal, or stop it first.\n")
    lab.config(fail="environment_elsewhere")
    stderr = lab.run("remote-control").stderr
    assert stderr.startswith("Error: Environment env_") and stderr.endswith("Use that terminal, or stop it first.\n")
    lab.config(fail="session_elsewhere", version="2.1.330")
    assert lab.run("remote-control").stderr.endswith("Use that one, or stop it first.\n")


def test_auth_status_and_version_2_1_332(lab: Lab) -> None:
    assert lab.run("--version").stdout == "2.1.332 (Claude Code)\n"
    lab.config(logged_in=False)
    result = lab.run("auth", "status")
    state = json.loads(result.stdout)
    assert result.returncode == 1 and list(state) == [
        "loggedIn", "authMethod", "apiProvider", "analyticsDisabled",
        "projectsDirectory", "configDirectory", "loginExpiresAt", "consoleProfileSignInOffered",
    ]  # fmt: skip
    assert state["projectsDirectory"] == str(lab.home / ".claude" / "projects")
    assert json.loads(lab.run("auth", "status", "--json").stdout) == state
    result = lab.run("auth", "status", "--text")
    assert (result.returncode, result.stdout) == (1, "Not logged in. Run claude auth login to authenticate.\n")
    lab.config()
    state = json.loads(lab.run("auth", "status").stdout)
    assert state["loggedIn"] is True and state["authMethod"] == "claude.ai" and state["email"] == "dev@example.com"


def test_older_profiles_keep_their_behaviour(lab: Lab) -> None:
    lab.config(version="2.1.330", logged_in=False)
    result = lab.run("auth", "status")
    assert (result.returncode, result.stdout) == (1, "Not logged in. Run `claude auth login` to sign in.\n")
    lab.config(version="2.1.330")
    result = lab.run("remote-control", "--session-id", "session_1", "--continue")
    assert result.stderr == "--continue and --session-id cannot be used together.\n"
    result = lab.run("remote-control", "--permission-mode", "manual")
    assert "acceptEdits, auto, bypassPermissions, default, dontAsk, plan (got: manual)" in result.stderr
    assert lab.run("remote-control", "--no-sandbox").stderr == fake_claude.SANDBOX_ERROR + "\n"


def test_prompt_grammar() -> None:
    parse = fake_claude.parse_directives
    assert parse("think 1:\nbash: make\nask: make install\ndone?") == (
        [("think", "1"), ("bash", "make"), ("ask", "make install")],
        "done?",
    )
    assert parse("run the tests") == ([], "run the tests")
    assert parse("think about it: yes") == ([], "think about it: yes")
    assert parse("hang on: x") == ([], "hang on: x")
    assert parse("fail 529") == ([("fail", "529")], "")


def test_directives_combine(lab: Lab) -> None:
    sid = new_sid()
    lab.start("rc-combo", "--rc", "x", "--session-id", sid)
    lab.wait_status("idle")
    lab.paste("rc-combo", "think 0.1:\nbash: make\nask: make install\ndone?")
    lab.wait_status("waiting")
    lab.keys("rc-combo", "1")
    assert lab.wait_answers(sid, 1) == ["turn 1: ran `make`; ran `make install`; done?"]
