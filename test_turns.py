"""Tests for rc_mcp's conversations, from tables: the prompt rules, the transcript reader (TurnLog)
fed the recorded transcripts of testbed/transcripts, what the turn, list and record scripts' events
mean, and the scripts themselves (syntax, quoting, the prompt kept off the command line).

No sshd and no tmux: the scripts are checked with `sh -n`, and run by /bin/sh only up to where they
stop by themselves (a stub `tmux` on their PATH fails every call).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import rc_mcp
from test_rc_mcp import START_CONFIG, as_listed

ROOT = Path(__file__).resolve().parent
TRANSCRIPTS = ROOT / "testbed" / "transcripts"
SESSION = "alpha-a1b2c3"
UUID = "11111111-2222-4333-8444-555555555555"
UPPER_UUID = "ABCDEF01-2222-4333-8444-555555555555"  # claude writes them in lower case
NOW = 1_796_170_000  # about when the transcripts were recorded (2026-12-02T00:06:40Z)


def transcript(name: str) -> list[str]:
    """The lines of a recorded transcript, `2.1.332-conv-<name>.jsonl`."""
    return (TRANSCRIPTS / f"2.1.332-conv-{name}.jsonl").read_text(encoding="utf-8").splitlines()


def registry(name: str, **changes: Any) -> str:
    """A recorded registry entry, as the scripts print it (one line), with `changes` applied."""
    data = json.loads((TRANSCRIPTS / f"2.1.332-conv-{name}.registry.json").read_text(encoding="utf-8"))
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not None}, separators=(",", ":"))


def fed(lines: list[str], expected: str | None = None) -> rc_mcp.TurnLog:
    log = rc_mcp.TurnLog(expected)
    for line in lines:
        log.feed(line)
    return log


def user(content: Any, **extra: Any) -> str:
    return json.dumps({"type": "user", "isSidechain": False, "message": {"role": "user", "content": content}, **extra})


def assistant(blocks: list[dict[str, Any]], message_id: str = "msg_1", **extra: Any) -> str:
    message = {"id": message_id, "role": "assistant", "content": blocks}
    return json.dumps({"type": "assistant", "isSidechain": False, "message": message, **extra})


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(tool_id: str, name: str, **tool_input: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}


def tool_result(tool_id: str) -> str:
    return user([{"type": "tool_result", "tool_use_id": tool_id, "content": "ok", "is_error": False}])


TURN_END = json.dumps({"type": "system", "subtype": "turn_duration", "durationMs": 5, "isMeta": True})

# What the recordings hold (read from the files, see testbed/README.md "The scripted model").
SECOND_PROMPT = 'run the tests\nline two with $HOME and `backticks` and "quotes"'
LONG_ANSWER = "turn 1: " + "\n".join(f"line {i} of 25" for i in range(1, 26))
LONG_FIRST_CHUNK = "turn 1: " + "".join(f"line {i} of 25\n" for i in range(1, 11))
API_ERROR_529 = 'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
SIGNED_OUT = "Not logged in · Please run /login"
SECURITY_REVIEW_ERROR = (
    "Error: git diff --name-only origin/HEAD... failed: fatal: ambiguous argument 'origin/HEAD...': unknown "
    "revision or path not in the working tree."
)
PERMISSION_TOOL_ID = "toolu_0383454ded6a4581f32f1187"
BASH_RM = rc_mcp.Action(tool="Bash", detail="rm -rf build")
IDLE_URL = "https://claude.ai/code/session_qW7aPKpp_CcmQue9fT-PTdSD"
BUSY_URL = "https://claude.ai/code/session_K07wWMG1wIHI91thsTkKRdbR"
PERMISSION_URL = "https://claude.ai/code/session_yUO7HmJO030POK3tA5a4duWi"


def test_recordings_are_where_the_tables_say() -> None:
    """The line numbers used below: where each later prompt starts (the offset send_prompt records)."""
    assert json.loads(transcript("answer")[7])["message"]["content"] == SECOND_PROMPT
    assert json.loads(transcript("tools")[9])["message"]["content"] == "edit: src/app.py"
    assert json.loads(transcript("exit")[7])["message"]["content"].startswith("<command-name>/exit</command-name>")
    assert json.loads(transcript("slash-commands")[3])["message"]["content"].startswith(
        "<command-name>/frobnicate</command-name>"
    )
    assert json.loads(transcript("long-answer")[4])["message"]["stop_reason"] is None


# ── clean_prompt ──────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "prompt, cleaned, removed",
    [
        ("hello", "hello", 0),
        ("tab\there\nand a newline", "tab\there\nand a newline", 0),
        # A paste ends at ESC[201~: the ESC goes, the rest is text.
        ("before\x1b[201~after", "before[201~after", 1),
        ("\x1b[200~pasted\x1b[201~", "[200~pasted[201~", 2),
        ("a\x00b", "ab", 1),
        ("bell\x07 backspace\x08 vt\x0b ff\x0c us\x1f del\x7f", "bell backspace vt ff us del", 6),
        # C1 controls (CSI, NEL, APC…) too.
        ("c1\x80\x85\x9b\x9fend", "c1end", 4),
        # CRLF is a newline (nothing removed); a lone CR is removed and counted.
        ("one\r\ntwo\r\n", "one\ntwo\n", 0),
        ("one\rtwo", "onetwo", 1),
        ("one\r\r\ntwo", "one\ntwo", 1),
        # Characters a shell would read are the prompt's own, untouched.
        (
            "$(rm -rf ~) `id` 'single' \"double\" ; | & > < \\ !",
            "$(rm -rf ~) `id` 'single' \"double\" ; | & > < \\ !",
            0,
        ),
        ("/review", "/review", 0),
        ("-p --dangerously-skip-permissions", "-p --dangerously-skip-permissions", 0),
        ("é ü 日本 🚀", "é ü 日本 🚀", 0),
        (" leading and trailing spaces \n", " leading and trailing spaces \n", 0),
    ],
)
def test_clean_prompt(prompt: str, cleaned: str, removed: int) -> None:
    assert rc_mcp.clean_prompt(prompt) == (cleaned, removed)


def test_clean_prompt_takes_the_largest_prompt_that_fits() -> None:
    at_limit = "a" * rc_mcp.MAX_PROMPT_BYTES
    assert rc_mcp.clean_prompt(at_limit) == (at_limit, 0)
    two_byte = "é" * (rc_mcp.MAX_PROMPT_BYTES // 2)
    assert rc_mcp.clean_prompt(two_byte) == (two_byte, 0)
    # Counted after cleaning: removed controls do not count against the limit.
    assert rc_mcp.clean_prompt(at_limit + "\x00") == (at_limit, 1)


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("", "the prompt is empty"),
        ("   ", "the prompt is empty"),
        (" \n\t\n ", "the prompt is empty"),
        ("\r\n\r\n", "the prompt is empty"),
        ("\x00\x1b\x7f\x9b", "the prompt is empty"),
        ("\x1b \t", "the prompt is empty"),
        ("a" * (rc_mcp.MAX_PROMPT_BYTES + 1), "the prompt is 120,001 bytes; at most 120,000 are sent"),
        ("é" * (rc_mcp.MAX_PROMPT_BYTES // 2) + "e", "the prompt is 120,001 bytes; at most 120,000 are sent"),
        ("日" * 40_001, "the prompt is 120,003 bytes"),
        ("\ud800", "lone surrogate"),
        ("text then \udfff", "lone surrogate"),
        ("\ud83d alone high surrogate", "invalid Unicode"),
    ],
)
def test_clean_prompt_refuses(prompt: str, message: str) -> None:
    with pytest.raises(ValueError) as failure:
        rc_mcp.clean_prompt(prompt)
    assert message in str(failure.value)


def test_clean_prompt_says_what_to_do_with_a_long_prompt() -> None:
    with pytest.raises(ValueError) as failure:
        rc_mcp.clean_prompt("x" * 200_000)
    assert "Put long material in a file in the project and ask claude to read it" in str(failure.value)


def test_clean_prompt_refuses_what_is_not_a_string() -> None:
    with pytest.raises(ValueError, match="prompt must be a string"):
        rc_mcp.clean_prompt(b"bytes")  # type: ignore[arg-type]


# ── TurnLog: the recorded transcripts ─────────────────────────────────────────────────────────


@dataclass
class Expected:
    prompt: str | None
    reply: str | None = None
    actions: list[rc_mcp.Action] = field(default_factory=list)
    pending: dict[str, rc_mcp.Action] = field(default_factory=dict)
    api_error: str | None = None
    interrupted: bool = False
    ended: bool = False
    newer_prompts: int = 0
    exact: bool = True


# (recording, first line, end line, the prompt send_prompt sent) → what TurnLog makes of it.
TURN_LOGS: list[tuple[str, int, int | None, str | None, Expected]] = [
    ("answer", 0, 7, "hello", Expected("hello", "turn 1: hello", ended=True)),
    ("answer", 7, None, SECOND_PROMPT, Expected(SECOND_PROMPT, "turn 2: " + SECOND_PROMPT, ended=True)),
    # From an older offset, the newest prompt takes over (and says so).
    ("answer", 0, None, "hello", Expected(SECOND_PROMPT, "turn 2: " + SECOND_PROMPT, ended=True, newer_prompts=1)),
    ("answer", 0, None, None, Expected(SECOND_PROMPT, "turn 2: " + SECOND_PROMPT, ended=True, newer_prompts=1)),
    ("api-error", 0, None, "fail 529", Expected("fail 529", api_error=API_ERROR_529, ended=True)),
    ("signed-out", 0, None, "hello", Expected("hello", api_error=SIGNED_OUT, ended=True)),
    ("busy", 0, None, "think 30: take your time", Expected("think 30: take your time")),
    ("exit", 7, None, "/exit", Expected("/exit", "Goodbye!")),
    ("exit", 0, None, None, Expected("/exit", "Goodbye!", newer_prompts=1)),
    ("interrupted", 0, None, "hang", Expected("hang", interrupted=True)),
    ("long-answer", 0, None, "long 25", Expected("long 25", LONG_ANSWER, ended=True)),
    ("long-answer", 0, 5, "long 25", Expected("long 25", LONG_FIRST_CHUNK)),
    # Pasted without bracketed paste: the first line was submitted alone.
    (
        "paste-without-p",
        0,
        None,
        "first line\nsecond line",
        Expected("first line", "turn 1: first line", ended=True, exact=False),
    ),
    (
        "permission-denied",
        0,
        None,
        "ask: rm -rf build",
        Expected(
            "ask: rm -rf build", "turn 1: I did not run `rm -rf build` (permission denied)", [BASH_RM], ended=True
        ),
    ),
    (
        "permission",
        0,
        None,
        "ask: rm -rf build",
        Expected("ask: rm -rf build", None, [BASH_RM], {PERMISSION_TOOL_ID: BASH_RM}),
    ),
    (
        "sidechain",
        0,
        None,
        "agent: survey the repo",
        Expected(
            "agent: survey the repo",
            "turn 1: the agent reported: agent report: survey the repo",
            [rc_mcp.Action(tool="Task", detail="survey the repo")],
            ended=True,
        ),
    ),
    # A subagent's own transcript: every entry is on its side chain, none is a prompt or an answer.
    ("sidechain-subagent", 0, None, None, Expected(None)),
    ("slash-commands", 0, 3, "/security-review", Expected("/security-review", SECURITY_REVIEW_ERROR)),
    ("slash-commands", 3, None, "/frobnicate", Expected("/frobnicate", "Unknown slash command: frobnicate")),
    (
        "slash-commands",
        0,
        None,
        "/security-review",
        Expected("/frobnicate", "Unknown slash command: frobnicate", newer_prompts=1),
    ),
    (
        "tools",
        0,
        9,
        "bash: npm test",
        Expected(
            "bash: npm test", "turn 1: ran `npm test`", [rc_mcp.Action(tool="Bash", detail="npm test")], ended=True
        ),
    ),
    (
        "tools",
        9,
        None,
        "edit: src/app.py",
        Expected(
            "edit: src/app.py",
            "turn 2: edited src/app.py",
            [rc_mcp.Action(tool="Edit", detail="/home/dev/projects/alpha/src/app.py")],
            ended=True,
        ),
    ),
    # The newest prompt's actions only.
    (
        "tools",
        0,
        None,
        "bash: npm test",
        Expected(
            "edit: src/app.py",
            "turn 2: edited src/app.py",
            [rc_mcp.Action(tool="Edit", detail="/home/dev/projects/alpha/src/app.py")],
            ended=True,
            newer_prompts=1,
        ),
    ),
    # A different prompt than the one sent (typed at the link meanwhile).
    ("answer", 0, 7, "good morning", Expected("hello", "turn 1: hello", ended=True, exact=False)),
    # Surrounding whitespace does not count; a command matches a command (completion picks the name).
    ("answer", 0, 7, "  hello\n", Expected("hello", "turn 1: hello", ended=True)),
    ("slash-commands", 3, None, "/frob", Expected("/frobnicate", "Unknown slash command: frobnicate")),
    (
        "slash-commands",
        3,
        None,
        "frobnicate",
        Expected("/frobnicate", "Unknown slash command: frobnicate", exact=False),
    ),
]


@pytest.mark.parametrize(
    "name, start, end, sent, expected", TURN_LOGS, ids=[f"{t[0]}[{t[1]}:{t[2]}]-{t[3]!r}" for t in TURN_LOGS]
)
def test_turn_log_reads_recorded_transcripts(
    name: str, start: int, end: int | None, sent: str | None, expected: Expected
) -> None:
    log = fed(transcript(name)[start:end], sent)
    got = Expected(
        prompt=log.prompt,
        reply=log.reply,
        actions=log.actions,
        pending=log.pending,
        api_error=log.api_error,
        interrupted=log.interrupted,
        ended=log.ended,
        newer_prompts=log.newer_prompts,
        exact=log.exact,
    )
    assert got == expected
    assert log.dropped_actions == 0 and not log.skipped


def test_turn_log_progress_follows_the_recorded_turn() -> None:
    log = rc_mcp.TurnLog("bash: npm test")
    progress = [p for p in map(log.feed, transcript("tools")[:9]) if p]
    assert progress == ["claude has the prompt", "claude uses Bash: npm test", "claude is writing its answer"]
    log = rc_mcp.TurnLog("hang")
    assert [p for p in map(log.feed, transcript("interrupted")) if p] == [
        "claude has the prompt",
        "the turn was interrupted",
    ]
    log = rc_mcp.TurnLog("fail 529")
    assert [p for p in map(log.feed, transcript("api-error")) if p] == [
        "claude has the prompt",
        "claude's API answered with an error",
    ]


def test_thinking_is_progress_but_never_the_reply() -> None:
    log = fed([user("think 1: hi"), assistant([{"type": "thinking", "thinking": "hmm", "signature": "s"}], "m1")])
    assert log.reply is None
    assert log.feed(assistant([{"type": "thinking", "thinking": "more"}], "m1")) == "claude is thinking"
    log.feed(assistant([text("turn 1: hi")], "m2"))
    assert log.reply == "turn 1: hi"


@pytest.mark.parametrize("position", [5, 6, 9])  # before the tool's result, before the answer, after the turn
def test_side_chain_entries_never_become_the_reply(position: int) -> None:
    """The subagent's lines interleaved anywhere in the main chain: its report is never the answer."""
    lines = transcript("sidechain")
    lines[position:position] = transcript("sidechain-subagent")
    log = fed(lines, "agent: survey the repo")
    assert log.reply == "turn 1: the agent reported: agent report: survey the repo"
    assert log.actions == [rc_mcp.Action(tool="Task", detail="survey the repo")]
    assert log.newer_prompts == 0 and log.prompt == "agent: survey the repo"


def test_side_chain_answer_after_an_unanswered_main_chain_is_no_reply() -> None:
    lines = transcript("sidechain")[:5] + transcript("sidechain-subagent")
    log = fed(lines, "agent: survey the repo")
    assert log.reply is None
    assert list(log.pending.values()) == [rc_mcp.Action(tool="Task", detail="survey the repo")]


BAD_LINES = [
    "",
    "not json",
    "{",
    transcript("answer")[4][:80],  # a line cut short
    "[1, 2]",
    "null",
    '"a string"',
    "42",
    "NaN",
    '{"type": "assistant", "message": "not an object"}',
    '{"type": "user", "message": null}',
    '{"type": "user", "message": {"content": 7}}',
    '{"type": "assistant", "message": {"id": "m9", "content": [1, null, "text", {"type": "text", "text": ""}]}}',
    '{"type": "system", "subtype": "local_command", "content": null}',
    '{"type": "system", "subtype": "local_command", "content": "no tags here"}',
]


@pytest.mark.parametrize("bad", BAD_LINES)
def test_bad_lines_are_ignored(bad: str) -> None:
    lines = transcript("answer")[7:]
    for position in (0, 1, 4, len(lines)):
        log = fed([*lines[:position], bad, *lines[position:]], SECOND_PROMPT)
        assert (log.prompt, log.reply, log.newer_prompts, log.exact) == (
            SECOND_PROMPT,
            "turn 2: " + SECOND_PROMPT,
            0,
            True,
        )
        assert log.actions == [] and log.api_error is None and not log.interrupted


META_ENTRIES = [
    user(
        "<local-command-caveat>Caveat: the messages below were generated by the user</local-command-caveat>",
        isMeta=True,
    ),
    user([text("Base directory for this skill: /home/dev/.claude/skills/x")], isMeta=True),
    user("a meta entry that looks like a prompt", isMeta=True),
]


@pytest.mark.parametrize("meta", META_ENTRIES)
def test_meta_user_entries_are_no_prompts(meta: str) -> None:
    lines = transcript("answer")[7:]
    log = fed([lines[0], meta, *lines[1:]], SECOND_PROMPT)
    assert (log.prompt, log.newer_prompts, log.reply) == (SECOND_PROMPT, 0, "turn 2: " + SECOND_PROMPT)
    assert fed([meta]).prompt is None


def test_entries_before_the_first_prompt_are_not_the_turn() -> None:
    """A read that starts mid-turn (the prompt is older than the offset) has no prompt and no reply."""
    log = fed(transcript("tools")[4:8])
    assert (log.prompt, log.reply, log.actions, log.ended) == (None, None, [], False)


def test_reply_is_the_last_message_with_text() -> None:
    log = fed(
        [
            user("fix it"),
            assistant([text("Let me look."), tool_use("t1", "Read", file_path="/p/a.py")], "m1"),
            tool_result("t1"),
            assistant([text("Found it. "), text("Fixed.")], "m2"),
            assistant([tool_use("t2", "Bash", command="make test")], "m3"),
            tool_result("t2"),
            TURN_END,
        ],
        "fix it",
    )
    assert log.reply == "Found it. Fixed."
    assert [a.tool for a in log.actions] == ["Read", "Bash"] and log.pending == {}


def test_local_command_outputs_join_and_a_text_answer_wins() -> None:
    command = (
        "<command-name>/context</command-name>\n<command-message>context</command-message>\n"
        "<command-args></command-args>"
    )
    local = {"type": "system", "subtype": "local_command"}
    lines = [
        user(command),
        json.dumps({**local, "content": "<local-command-stdout>  first  </local-command-stdout>"}),
        json.dumps({**local, "content": "<local-command-stderr>second\nline</local-command-stderr>"}),
        json.dumps({**local, "content": "<local-command-stdout>   </local-command-stdout>"}),
    ]
    log = fed(lines, "/context")
    assert (log.prompt, log.reply, log.exact) == ("/context", "first\nsecond\nline", True)
    log.feed(assistant([text("the model's answer")]))
    assert log.reply == "the model's answer"


def test_interruption_during_a_tool() -> None:
    log = fed(
        [
            user("bash: sleep 100"),
            assistant([tool_use("t1", "Bash", command="sleep 100")]),
            tool_result("t1"),
            user([text("[Request interrupted by user for tool use]")]),
        ],
        "bash: sleep 100",
    )
    assert log.interrupted and log.pending == {} and log.reply is None


def test_an_interruption_before_any_prompt_is_not_this_turn() -> None:
    log = fed([user([text("[Request interrupted by user]")]), *transcript("answer")[7:]], SECOND_PROMPT)
    assert not log.interrupted and log.reply == "turn 2: " + SECOND_PROMPT


def test_a_new_prompt_clears_the_previous_turn() -> None:
    log = fed(transcript("permission") + transcript("api-error")[1:], "ask: rm -rf build")
    assert (log.prompt, log.newer_prompts, log.api_error) == ("fail 529", 1, API_ERROR_529)
    assert log.actions == [] and log.pending == {}
    log = fed(transcript("interrupted") + transcript("answer")[7:])
    assert not log.interrupted and log.reply == "turn 2: " + SECOND_PROMPT


def test_prompt_as_text_blocks() -> None:
    log = fed([user([text("look at "), {"type": "image", "source": {}}, text("this")])], "look at this")
    assert (log.prompt, log.exact) == ("look at this", True)


def test_a_prompt_starting_like_an_interruption_is_a_prompt() -> None:
    prompt = "[Request interrupted by user] was what you printed; go on from there"
    log = fed([user(prompt), assistant([text("turn 1: going on")]), TURN_END], prompt)
    assert (log.prompt, log.reply, log.interrupted) == (prompt, "turn 1: going on", False)


@pytest.mark.parametrize(
    "block, action",
    [
        (
            tool_use("t", "Bash", command="npm test", description="Run tests"),
            rc_mcp.Action(tool="Bash", detail="npm test"),
        ),
        (tool_use("t", "Read", file_path="/p/a.py"), rc_mcp.Action(tool="Read", detail="/p/a.py")),
        (tool_use("t", "Grep", pattern="TODO", path="src"), rc_mcp.Action(tool="Grep", detail="src")),
        (
            tool_use("t", "WebFetch", url="https://example.com", prompt="x"),
            rc_mcp.Action(tool="WebFetch", detail="https://example.com"),
        ),
        (tool_use("t", "WebSearch", query="rust async"), rc_mcp.Action(tool="WebSearch", detail="rust async")),
        (tool_use("t", "Skill", skill="pdf"), rc_mcp.Action(tool="Skill", detail="pdf")),
        (tool_use("t", "TodoWrite", todos=[{"content": "x"}]), rc_mcp.Action(tool="TodoWrite", detail="")),
        # A key that is not a string is skipped; whitespace is collapsed.
        (
            tool_use("t", "Bash", command=["ls"], description="list\n  the\tfiles "),
            rc_mcp.Action(tool="Bash", detail="list the files"),
        ),
        ({"type": "tool_use", "id": "t", "input": "not a dict"}, rc_mcp.Action(tool="?", detail="")),
        (tool_use("t", "N" * 100), rc_mcp.Action(tool="N" * 60, detail="")),
        (tool_use("t", "Bash", command="x" * 250), rc_mcp.Action(tool="Bash", detail="x" * 199 + "…")),
        (tool_use("t", "Bash", command="x" * 200), rc_mcp.Action(tool="Bash", detail="x" * 200)),
    ],
)
def test_describe_action(block: dict[str, Any], action: rc_mcp.Action) -> None:
    assert rc_mcp.describe_action(block) == action


def test_actions_beyond_the_limit_are_counted() -> None:
    lines = [user("many")] + [assistant([tool_use(f"t{i}", "Bash", command=f"step {i}")], f"m{i}") for i in range(55)]
    log = fed(lines, "many")
    assert len(log.actions) == rc_mcp.MAX_ACTIONS == 50
    assert log.actions[-1] == rc_mcp.Action(tool="Bash", detail="step 49")
    assert log.dropped_actions == 5 and len(log.pending) == 55


@pytest.mark.parametrize(
    "lines, state, permission",
    [
        (
            transcript("permission"),
            registry("permission"),
            rc_mcp.PermissionRequest(tool="Bash", detail="rm -rf build", prompt_id=PERMISSION_TOOL_ID),
        ),
        (transcript("permission"), registry("busy"), None),  # not waiting for a permission
        (transcript("permission"), registry("permission", waitingFor="worktree choice"), None),
        (transcript("permission-denied"), registry("permission"), None),  # no tool call without its result
        # Two calls without results: the newest one asks.
        (
            [user("two"), assistant([tool_use("a", "Read", file_path="/x"), tool_use("b", "Bash", command="make")])],
            registry("permission"),
            # two calls open: which one the dialog shows is not known, so no prompt_id to answer with
            rc_mcp.PermissionRequest(tool="Bash", detail="one of several tool calls; see the link", prompt_id=""),
        ),
        (
            [
                user("two"),
                assistant([tool_use("a", "Bash", command="make"), tool_use("b", "Read", file_path="/x")]),
                tool_result("b"),
            ],
            registry("permission"),
            rc_mcp.PermissionRequest(tool="Bash", detail="make", prompt_id="a"),
        ),
    ],
)
def test_permission_request(lines: list[str], state: str, permission: rc_mcp.PermissionRequest | None) -> None:
    assert fed(lines).permission(json.loads(state)) == permission


# ── interpret_turn ────────────────────────────────────────────────────────────────────────────


def turn_events(
    status: str, state: str | None = None, *, sent: bool = False, extra: list[rc_mcp.Event] | None = None
) -> list[rc_mcp.Event]:
    events: list[rc_mcp.Event] = [("sent", ["1234"])] if sent else []
    events += [("registry", [state])] if state else []
    return [*events, *(extra or []), ("size", ["5678"]), ("status", [status])]


def test_done_with_the_recorded_answer() -> None:
    log = fed(transcript("answer")[7:], SECOND_PROMPT)
    result = rc_mcp.interpret_turn(SESSION, log, turn_events("done", registry("idle"), sent=True))
    assert result.status == "done"
    assert result.reply == "turn 2: " + SECOND_PROMPT
    assert result.url == IDLE_URL
    assert result.message == f"claude answered in session {SESSION}:\nturn 2: {SECOND_PROMPT}"
    assert result.actions == [] and result.permission is None and result.waiting_for is None


def test_done_with_the_long_answer_whole() -> None:
    result = rc_mcp.interpret_turn(
        SESSION, fed(transcript("long-answer"), "long 25"), turn_events("done", registry("idle"))
    )
    assert result.reply == LONG_ANSWER and result.message.endswith(LONG_ANSWER)


def test_done_after_tools_lists_them() -> None:
    result = rc_mcp.interpret_turn(
        SESSION, fed(transcript("tools")[:9], "bash: npm test"), turn_events("done", registry("idle"))
    )
    assert result.status == "done" and result.reply == "turn 1: ran `npm test`"
    assert result.actions == [rc_mcp.Action(tool="Bash", detail="npm test")]


def test_done_without_text() -> None:
    log = fed([user("bash: true"), assistant([tool_use("t1", "Bash", command="true")]), tool_result("t1"), TURN_END])
    result = rc_mcp.interpret_turn(SESSION, log, turn_events("done", registry("idle")))
    assert result.status == "done" and result.reply is None
    assert result.message == f"claude finished the turn in session {SESSION} without a text answer. It did: Bash true."


def test_done_with_a_slash_command_output() -> None:
    log = fed(transcript("slash-commands")[3:], "/frobnicate")
    result = rc_mcp.interpret_turn(SESSION, log, turn_events("done", registry("idle")))
    assert (result.status, result.reply) == ("done", "Unknown slash command: frobnicate")


def test_running() -> None:
    log = fed(transcript("busy"), "think 30: take your time")
    result = rc_mcp.interpret_turn(SESSION, log, turn_events("running", registry("busy"), sent=True))
    assert (result.status, result.reply, result.url) == ("running", None, BUSY_URL)
    assert result.message == (
        f"claude is still working in session {SESSION}. Call get_reply('{SESSION}') to wait for the answer."
    )


def test_running_with_actions_says_what_it_did() -> None:
    log = fed(transcript("tools")[:5], "bash: npm test")
    result = rc_mcp.interpret_turn(SESSION, log, turn_events("running", registry("busy")))
    assert result.status == "running" and " It did: Bash npm test. " in result.message


def test_running_before_claude_took_the_prompt() -> None:
    result = rc_mcp.interpret_turn(
        SESSION, rc_mcp.TurnLog("hello"), turn_events("running", registry("busy"), sent=True)
    )
    assert result.status == "running"
    assert "has not taken the prompt up yet" in result.message
    assert result.message.endswith(f"get_reply('{SESSION}') in a moment, or look at {BUSY_URL}.")
    no_link = rc_mcp.interpret_turn(SESSION, rc_mcp.TurnLog("hello"), turn_events("running"))
    assert no_link.url is None and no_link.message.endswith("in a moment.")


@pytest.mark.parametrize("allow_approvals", [False, True])
def test_waiting_for_permission(allow_approvals: bool) -> None:
    log = fed(transcript("permission"), "ask: rm -rf build")
    result = rc_mcp.interpret_turn(
        SESSION, log, turn_events("waiting", registry("permission"), sent=True), allow_approvals=allow_approvals
    )
    assert result.status == "waiting" and result.waiting_for == "permission prompt"
    assert result.permission == rc_mcp.PermissionRequest(
        tool="Bash", detail="rm -rf build", prompt_id=PERMISSION_TOOL_ID
    )
    assert result.url == PERMISSION_URL and result.reply is None
    assert result.message.startswith(
        f"session {SESSION} waits for permission to use Bash (rm -rf build): approve or deny it at the session's link"
    )
    hint = f"(or answer_permission(id='{SESSION}', decision=…, prompt_id='{PERMISSION_TOOL_ID}'))"
    assert (hint in result.message) is allow_approvals
    assert ("answer_permission" in result.message) is allow_approvals
    assert result.message.endswith(f". It did: Bash rm -rf build. Link: {PERMISSION_URL}")


@pytest.mark.parametrize("allow_approvals", [False, True])
def test_waiting_for_a_dialog_has_no_permission(allow_approvals: bool) -> None:
    log = fed(transcript("busy"), "think 30: take your time")
    state = registry("permission", waitingFor="worktree choice")
    result = rc_mcp.interpret_turn(SESSION, log, turn_events("waiting", state), allow_approvals=allow_approvals)
    assert (result.status, result.waiting_for, result.permission) == ("waiting", "worktree choice", None)
    assert result.message.startswith(f"session {SESSION} waits for a person (worktree choice)")
    assert "answer_permission" not in result.message


def test_waiting_without_waiting_for() -> None:
    result = rc_mcp.interpret_turn(
        SESSION, fed(transcript("busy")), turn_events("waiting", registry("busy", status="waiting"))
    )
    assert result.waiting_for is None and "waits for a person (a dialog)" in result.message


def test_exited_after_a_slash_exit() -> None:
    log = fed(transcript("exit")[7:], "/exit")
    result = rc_mcp.interpret_turn(SESSION, log, turn_events("exited", registry("idle")))
    assert (result.status, result.reply) == ("exited", "Goodbye!")
    assert result.message == (
        f"claude in session {SESSION} has exited; resume_session('{SESSION}') brings it back. "
        "Its last answer:\nGoodbye!"
    )


def test_exited_after_a_finished_turn() -> None:
    result = rc_mcp.interpret_turn(SESSION, fed(transcript("answer")[:7], "hello"), turn_events("exited"))
    assert (result.status, result.reply) == ("exited", "turn 1: hello")


def test_exited_while_a_tool_waited() -> None:
    log = fed(transcript("permission"), "ask: rm -rf build")
    result = rc_mcp.interpret_turn(SESSION, log, turn_events("exited", registry("permission")))
    assert (result.status, result.reply, result.permission) == ("exited", None, None)
    assert "Its last answer" not in result.message and f"resume_session('{SESSION}')" in result.message


def test_exited_after_text_then_a_tool_call_is_no_answer() -> None:
    log = fed([user("do it"), assistant([text("I'll run it."), tool_use("t1", "Bash", command="make")])], "do it")
    result = rc_mcp.interpret_turn(SESSION, log, turn_events("exited"))
    assert result.reply is None


def test_exited_mid_answer_returns_no_truncated_reply() -> None:
    log = fed(transcript("long-answer")[:5], "long 25")
    assert log.reply == LONG_FIRST_CHUNK
    result = rc_mcp.interpret_turn(SESSION, log, turn_events("exited"))
    assert result.reply is None


def test_interrupted() -> None:
    log = fed(transcript("interrupted"), "hang")
    result = rc_mcp.interpret_turn(SESSION, log, turn_events("done", registry("idle")))
    assert (result.status, result.reply) == ("interrupted", None)
    assert result.message == f"The turn in session {SESSION} was interrupted."


def test_waiting_wins_over_an_interruption() -> None:
    """Esc answers a permission prompt with No; a later prompt may ask again."""
    log = fed(transcript("interrupted"), "hang")
    result = rc_mcp.interpret_turn(SESSION, log, turn_events("waiting", registry("permission")))
    assert result.status == "waiting"


def test_idle_without_any_prompt() -> None:
    events = [("noprompt", []), ("registry", [registry("idle")]), ("size", ["0"]), ("status", ["running"])]
    result = rc_mcp.interpret_turn(SESSION, rc_mcp.TurnLog(), events)
    assert (result.status, result.url) == ("idle", IDLE_URL)
    assert result.message == f"Session {SESSION} has no prompt yet: send one with send_prompt."


def test_noprompt_but_a_prompt_typed_at_the_link() -> None:
    events = [("noprompt", []), ("registry", [registry("idle")]), ("status", ["done"])]
    result = rc_mcp.interpret_turn(SESSION, fed(transcript("answer")[:7]), events)
    assert (result.status, result.reply) == ("done", "turn 1: hello")


@pytest.mark.parametrize(
    "recording, status, message",
    [
        ("api-error", "done", API_ERROR_529),
        ("api-error", "exited", API_ERROR_529),
        ("signed-out", "done", SIGNED_OUT),
    ],
)
def test_api_errors_are_failures_carrying_claudes_message(recording: str, status: str, message: str) -> None:
    log = fed(transcript(recording), "x")
    with pytest.raises(rc_mcp.ToolFailure) as failure:
        rc_mcp.interpret_turn(SESSION, log, turn_events(status, registry("idle")))
    assert str(failure.value) == (
        f"claude's turn in session {SESSION} ended with an error from its API, not an answer: {message} "
        f"Link: {IDLE_URL}"
    )


def test_api_error_while_running_is_no_reply() -> None:
    result = rc_mcp.interpret_turn(SESSION, fed(transcript("api-error")), turn_events("running", registry("busy")))
    assert result.status == "running" and result.reply is None
    assert "API Error" not in result.message


def test_api_error_entry_without_text_names_the_error() -> None:
    log = fed([user("hi"), assistant([], "m1", isApiErrorMessage=True, error="rate_limit")])
    with pytest.raises(rc_mcp.ToolFailure, match="not an answer: rate_limit$"):
        rc_mcp.interpret_turn(SESSION, log, turn_events("done"))


REFUSAL_FIXES = [
    ("busy", [f"session {SESSION} is busy", f"get_reply('{SESSION}')", f"interrupt_session('{SESSION}')"]),
    ("exited", [f"resume_session('{SESSION}')"]),
    ("sending", ["another prompt is being sent", "try again"]),
    ("none", ["has not registered itself yet", "list_sessions"]),
    ("unknown", ["a state this server does not know", "open the session's link"]),
    ("tmux", ["tmux could not type into session", "list_sessions"]),
    ("state", ["state directory on the dev server is not writable", "permissions and free space"]),
    ("stale", ["nothing was pressed", f"get_reply('{SESSION}', wait_seconds=0)"]),
    ("something-new", ["a state this server does not know"]),
]


@pytest.mark.parametrize("refused, fixes", REFUSAL_FIXES)
@pytest.mark.parametrize("state, link", [(None, None), ("busy", BUSY_URL)])
def test_refusals_are_failures_with_the_fix(
    refused: str, fixes: list[str], state: str | None, link: str | None
) -> None:
    events = turn_events("running", registry(state) if state else None, extra=[("refused", [refused])])
    log = fed(transcript("answer")[:7], "something else")
    with pytest.raises(rc_mcp.ToolFailure) as failure:
        rc_mcp.interpret_turn(SESSION, log, events, allow_approvals=True)
    message = str(failure.value)
    assert message.startswith("Not done: ")
    for fix in fixes:
        assert fix in message
    assert message.endswith(f" Link: {link}") if link else "Link:" not in message
    assert "turn 1: hello" not in message  # never the previous answer


@pytest.mark.parametrize("allow_approvals", [False, True])
def test_refused_while_waiting_for_permission(allow_approvals: bool) -> None:
    log = fed(transcript("permission"))
    events = turn_events("waiting", registry("permission"), extra=[("refused", ["waiting"])])
    with pytest.raises(rc_mcp.ToolFailure) as failure:
        rc_mcp.interpret_turn(SESSION, log, events, allow_approvals=allow_approvals)
    message = str(failure.value)
    assert message.startswith(
        f"Not done: session {SESSION} waits for permission to use Bash (rm -rf build): approve or deny it at the "
        "session's link"
    )
    assert (f"answer_permission(prompt_id='{PERMISSION_TOOL_ID}')" in message) is allow_approvals
    assert message.endswith(f". Link: {PERMISSION_URL}")


def test_refused_while_waiting_for_a_dialog() -> None:
    events = turn_events(
        "waiting", registry("permission", waitingFor="worktree choice"), extra=[("refused", ["waiting"])]
    )
    with pytest.raises(rc_mcp.ToolFailure, match=r"waits for a person \(worktree choice\)") as failure:
        rc_mcp.interpret_turn(SESSION, fed(transcript("busy")), events, allow_approvals=True)
    assert "answer_permission" not in str(failure.value)


@pytest.mark.parametrize(
    "error, text",
    [
        ("server", "is a Remote Control server: it takes prompts at its link"),
        ("server", "start_session(..., prompt=…)"),
        ("unknown", f"no conversation {SESSION!r} on the dev server: call list_sessions for the ids."),
        ("anything", "call list_sessions"),
    ],
)
def test_script_errors_are_failures(error: str, text: str) -> None:
    with pytest.raises(rc_mcp.ToolFailure) as failure:
        rc_mcp.interpret_turn(SESSION, fed(transcript("answer")), [("error", [error])])
    assert text in str(failure.value)


@pytest.mark.parametrize(
    "removed, sent, skipped, extra_actions, note",
    [
        (3, SECOND_PROMPT, False, 0, "3 control character(s) were removed from the prompt before it was sent."),
        (
            0,
            "not what claude got",
            False,
            0,
            "claude's transcript holds the prompt in a different form than it was sent.",
        ),
        (0, None, True, 0, "The turn's transcript was too long to read whole: its oldest actions are left out."),
        (0, None, False, 52, "2 more action(s) are not listed."),
    ],
)
def test_notes(removed: int, sent: str | None, skipped: bool, extra_actions: int, note: str) -> None:
    lines = transcript("answer")[7:]
    lines[1:1] = [assistant([tool_use(f"t{i}", "Bash", command="ls")], f"m{i}") for i in range(extra_actions)]
    log = fed(lines, sent)
    log.skipped = skipped
    result = rc_mcp.interpret_turn(SESSION, log, turn_events("done", registry("idle")), removed=removed)
    assert result.message == f"claude answered in session {SESSION}:\nturn 2: {SECOND_PROMPT} {note}"


def test_note_for_a_newer_prompt() -> None:
    result = rc_mcp.interpret_turn(SESSION, fed(transcript("answer"), "hello"), turn_events("done", registry("idle")))
    assert result.reply == "turn 2: " + SECOND_PROMPT
    assert result.message.endswith(
        " Another prompt followed (typed at the session's link): this is the state of the newest one."
    )


def test_the_newest_registry_entry_counts() -> None:
    events: list[rc_mcp.Event] = [
        ("registry", [registry("busy")]),
        ("registry", [registry("permission")]),
        ("registry", []),  # the entry went away (claude exited): the last one known stays
        ("registry", ["{not json"]),
        ("status", ["waiting"]),
    ]
    result = rc_mcp.interpret_turn(SESSION, fed(transcript("permission")), events)
    assert (result.url, result.waiting_for) == (PERMISSION_URL, "permission prompt")


@pytest.mark.parametrize(
    "bridge, url",
    [
        ("session_qW7aPKpp_CcmQue9fT-PTdSD", IDLE_URL),
        ("cse_01ABCdef", "https://claude.ai/code/cse_01ABCdef"),
        ("session_" + "a" * 128, "https://claude.ai/code/session_" + "a" * 128),
        ("session_" + "a" * 129, None),
        ("session_", None),
        ("env_01ABCdef", None),
        ("Session_abc", None),
        ("session_abc/../../evil", None),
        ("session_abc?x=1", None),
        ("session_abc def", None),
        ("session_abc\n", None),
        (" session_abc", None),
        ("https://evil.example/session_abc", None),
        ("session_ä", None),
        (42, None),
        (None, None),
        (["session_abc"], None),
    ],
)
def test_registry_url(bridge: Any, url: str | None) -> None:
    assert rc_mcp.registry_url({"bridgeSessionId": bridge}) == url
    state = json.dumps({"status": "idle", "bridgeSessionId": bridge})
    result = rc_mcp.interpret_turn(
        SESSION, fed(transcript("answer")[:7]), [("registry", [state]), ("status", ["done"])]
    )
    assert result.url == url


def test_registry_url_without_the_key() -> None:
    assert rc_mcp.registry_url({}) is None


# ── interpret_list ────────────────────────────────────────────────────────────────────────────


def meta(**values: str) -> list[rc_mcp.Event]:
    return [("meta", [key, value]) for key, value in values.items()]


CONV_META = meta(
    name="alpha", path="alpha", dir="/home/dev/projects/alpha", started="1796169990", mode="conversation", uuid=UUID
)
TRUST_DIALOG_TAIL = (TRANSCRIPTS / "2.1.332-conv-trust-dialog.log").read_text(encoding="utf-8", errors="replace")


def live_conversation(state: str | None, tail: str = "⏵⏵ auto mode on (shift+tab to cycle)") -> list[rc_mcp.Event]:
    return [
        ("session", [f"rc-{SESSION}", "0", "1796169990", ""]),
        *CONV_META,
        *([("registry", [state])] if state else []),
        ("tail", [tail]),
    ]


@pytest.mark.parametrize(
    "state, expected",
    [
        (
            registry("idle"),
            {
                "state": "idle",
                "waiting_for": None,
                "status": "ready",
                "reason": None,
                "url": IDLE_URL,
                "last_activity": "2026-12-02T00:06:31.137000+00:00",
            },
        ),
        (
            registry("busy"),
            {
                "state": "busy",
                "waiting_for": None,
                "status": "ready",
                "reason": None,
                "url": BUSY_URL,
                "last_activity": "2026-12-02T00:06:37.235000+00:00",
            },
        ),
        (
            registry("permission"),
            {
                "state": "waiting",
                "waiting_for": "permission prompt",
                "status": "ready",
                "reason": "waits for permission prompt: answer it at the session's link",
                "url": PERMISSION_URL,
                "last_activity": "2026-12-02T00:06:39.521000+00:00",
            },
        ),
        # waitingFor only counts while waiting; the newer of the two stamps is the last activity.
        (
            registry("idle", waitingFor="permission prompt", updatedAt=1796169999000),
            {
                "state": "idle",
                "waiting_for": None,
                "status": "ready",
                "reason": None,
                "url": IDLE_URL,
                "last_activity": "2026-12-02T00:06:39+00:00",
            },
        ),
        (
            registry("permission", waitingFor=None),
            {
                "state": "waiting",
                "waiting_for": None,
                "status": "ready",
                "reason": "waits for a person: answer it at the session's link",
                "url": PERMISSION_URL,
                "last_activity": "2026-12-02T00:06:39.521000+00:00",
            },
        ),
        (
            registry("idle", status="compacting", bridgeSessionId="env_x", updatedAt="soon", statusUpdatedAt=None),
            {"state": None, "waiting_for": None, "status": "ready", "reason": None, "url": None, "last_activity": None},
        ),
        # No registry entry yet: still starting.
        (
            None,
            {
                "state": None,
                "waiting_for": None,
                "status": "starting",
                "reason": None,
                "url": None,
                "last_activity": None,
            },
        ),
    ],
)
def test_list_live_conversation(state: str | None, expected: dict[str, Any]) -> None:
    (info,) = rc_mcp.interpret_list(as_listed(live_conversation(state)), now=NOW)
    got = info.model_dump()
    assert {k: got[k] for k in expected} == expected
    assert info.session_url == info.url
    assert (info.id, info.name, info.path, info.mode, info.resumable) == (
        SESSION,
        "alpha",
        "alpha",
        "conversation",
        True,
    )
    assert info.started == "2026-12-02T00:06:30+00:00"


def test_list_conversation_at_the_trust_dialog_needs_attention() -> None:
    (info,) = rc_mcp.interpret_list(as_listed(live_conversation(None, TRUST_DIALOG_TAIL)), now=NOW)
    assert info.status == "needs attention" and info.reason


def test_list_exited_conversation() -> None:
    events: list[rc_mcp.Event] = [
        ("session", [f"rc-{SESSION}", "1", "1796169990", "1"]),
        *CONV_META,
        ("tail", ["Goodbye!"]),
    ]
    (info,) = rc_mcp.interpret_list(as_listed(events), now=NOW)
    assert (info.status, info.exit_code, info.mode, info.resumable, info.state) == (
        "exited",
        1,
        "conversation",
        True,
        None,
    )


RECORDS: list[tuple[str, str, list[rc_mcp.Event], dict[str, Any] | None]] = [
    # A conversation: always resumable (claude keeps its transcript), however long ago.
    (
        "conv",
        str(NOW - 20 * 86400),
        meta(name="beta", path="org/beta", mode="conversation", uuid=UUID, permission="plan"),
        {
            "id": "beta-b1b2c3",
            "name": "beta",
            "path": "org/beta",
            "mode": "conversation",
            "last_activity": "2026-11-12T00:06:40+00:00",
        },
    ),
    (
        "conv",
        "",
        meta(name="beta", path="org/beta"),
        {"id": "beta-b1b2c3", "mode": "conversation", "last_activity": None},
    ),
    # A server: only within the window claude remote-control --continue has.
    (
        "srv",
        str(NOW - 3600),
        meta(name="beta", path="beta"),
        {"id": "beta-b1b2c3", "mode": "server", "path": "beta", "last_activity": "2026-12-01T23:06:40+00:00"},
    ),
    ("srv", str(NOW - rc_mcp.SERVER_RESUME_WINDOW), meta(name="beta"), {"id": "beta-b1b2c3", "mode": "server"}),
    ("srv", str(NOW - rc_mcp.SERVER_RESUME_WINDOW - 1), meta(name="beta"), None),
    ("srv", str(NOW - 30 * 86400), meta(name="beta"), None),
    ("srv", "", meta(name="beta"), None),
    ("srv", "not-a-time", meta(name="beta"), None),
    # Damaged fields are left out, the record stays.
    ("conv", str(NOW), meta(name="-bad name", path="../outside"), {"id": "beta-b1b2c3", "name": None, "path": None}),
    ("conv", str(NOW), meta(name="beta", path="/abs/path"), {"name": "beta", "path": None}),
    ("conv", str(NOW), meta(name="beta", path="a//b/"), {"path": "a/b"}),
]


@pytest.mark.parametrize("kind, ended, fields, expected", RECORDS)
def test_list_records(kind: str, ended: str, fields: list[rc_mcp.Event], expected: dict[str, Any] | None) -> None:
    events: list[rc_mcp.Event] = [("record", ["rc-beta-b1b2c3", kind, ended]), *fields, ("end", [])]
    sessions = rc_mcp.interpret_list(events, now=NOW)
    if expected is None:
        assert sessions == []
        return
    (info,) = sessions
    got = info.model_dump()
    assert {k: got[k] for k in expected} == expected
    assert (info.status, info.resumable, info.state, info.url) == ("stopped", True, None, None)


def test_list_orders_running_first_and_skips_what_is_not_ours() -> None:
    events: list[rc_mcp.Event] = [
        ("session", ["main", "0", "1796100000", ""]),  # someone else's tmux session
        ("meta", ["name", "stray"]),
        *live_conversation(registry("idle")),
        ("session", [f"rc-{SESSION}", "0", "1796169990", ""]),  # its second pane
        ("record", ["rc-zeta-f1f2f3", "conv", str(NOW - 60)]),
        *meta(name="zeta", path="zeta", mode="conversation", uuid=UUID),
        ("record", ["rc-../../etc-a1b2c3", "conv", str(NOW)]),  # not an id of ours
        ("meta", ["name", "evil"]),
        ("record", ["rc-old-a1b2c3", "srv", str(NOW - 5 * 3600)]),  # too old: its meta lines are not someone else's
        ("meta", ["name", "old"]),
        ("record", ["rc-beta-b1b2c3", "srv", str(NOW - 60)]),
        *meta(name="beta", path="beta"),
        ("end", []),
    ]
    sessions = rc_mcp.interpret_list(as_listed(events), now=NOW)
    assert [(s.id, s.name, s.status, s.mode) for s in sessions] == [
        (SESSION, "alpha", "ready", "conversation"),
        ("beta-b1b2c3", "beta", "stopped", "server"),
        ("zeta-f1f2f3", "zeta", "stopped", "conversation"),
    ]


def test_list_from_script_output() -> None:
    """The list script's lines as parse_script_output reads them: the registry is one tab-free field."""
    nonce = "0123456789abcdef"
    output = (
        f"@@session\trc-{SESSION}\t0\t1796169990\t\n"
        "@@meta\tname\talpha\n@@meta\tpath\talpha\n@@meta\tmode\tconversation\n"
        f"@@registry\t{registry('permission')}\n"
        "@@tailed\n"
        f"@@session\trc-gamma-c1c2c3\t0\t1796169991\t\n@@meta\tname\tgamma\n@@tailed\n"
        f"@@record\trc-beta-b1b2c3\tsrv\t{NOW - 60}\n@@meta\tname\tbeta\n@@meta\tpath\tbeta\n"
        # The ends of both logs; the first one's quotes control lines and an end line of another nonce.
        f"@@tails\n⏵⏵ auto mode on\n@@session\trc-evil-e1e2e3\t0\t1\t\n@@end-ffff\n@@end-{nonce}\n"
        f"Remote Control active\nhttps://claude.ai/code?environment=env_01Gamma\n@@end-{nonce}\n"
        "@@end\n"
    )
    sessions = rc_mcp.interpret_list(rc_mcp.parse_script_output(output, nonce), now=NOW)
    assert [(s.id, s.status, s.state, s.waiting_for, s.url) for s in sessions] == [
        (SESSION, "ready", "waiting", "permission prompt", PERMISSION_URL),
        ("gamma-c1c2c3", "ready", None, None, "https://claude.ai/code?environment=env_01Gamma"),
        ("beta-b1b2c3", "stopped", None, None, None),
    ]


# ── interpret_record ──────────────────────────────────────────────────────────────────────────


def record_events(kind: str, ended: str, **values: str) -> list[rc_mcp.Event]:
    return [("record", ["rc-beta-b1b2c3", kind, ended]), *meta(**values)]


GOOD_CONV = {
    "name": "beta",
    "path": "org/beta",
    "dir": "/home/dev/projects/org/beta",
    "mode": "conversation",
    "uuid": UUID,
}


@pytest.mark.parametrize(
    "events, record",
    [
        (
            record_events("conv", str(NOW - 25 * 86400), **GOOD_CONV, permission="plan"),
            {**GOOD_CONV, "permission": "plan"},
        ),
        (record_events("conv", "", **GOOD_CONV), GOOD_CONV),
        # An unknown permission mode is dropped, not passed to claude.
        (record_events("conv", str(NOW), **GOOD_CONV, permission="yolo"), {**GOOD_CONV, "permission": ""}),
        (record_events("conv", str(NOW), **{**GOOD_CONV, "path": "org//beta/"}), GOOD_CONV),
        (
            record_events("srv", str(NOW - 3600), name="beta", path="beta", permission="acceptEdits"),
            {"name": "beta", "path": "beta", "permission": "acceptEdits"},
        ),
        (
            record_events("srv", str(NOW - rc_mcp.SERVER_RESUME_WINDOW), name="beta", path="beta"),
            {"name": "beta", "path": "beta"},
        ),
        # A server record never carries a conversation id on.
        (record_events("srv", str(NOW), name="beta", path="beta", uuid=UUID), {"name": "beta", "path": "beta"}),
    ],
)
def test_interpret_record(events: list[rc_mcp.Event], record: dict[str, str]) -> None:
    assert rc_mcp.interpret_record(events, "beta-b1b2c3", NOW) == record


@pytest.mark.parametrize(
    "events, message",
    [
        (
            [("running", []), *record_events("conv", str(NOW), **GOOD_CONV)],
            "Session beta-b1b2c3 is still running: nothing to resume",
        ),
        ([], "Nothing to resume for 'beta-b1b2c3': no record of it on the dev server"),
        (meta(**GOOD_CONV), "no record of it on the dev server"),
        ([("record", ["rc-beta-b1b2c3", "conv"])], "no record of it"),
        (
            record_events("conv", str(NOW), **{**GOOD_CONV, "name": "bad name!"}),
            "The record of beta-b1b2c3 on the dev server is damaged (invalid name",
        ),
        (record_events("conv", str(NOW), path="beta", uuid=UUID), "is damaged (invalid name ''"),
        (record_events("conv", str(NOW), **{**GOOD_CONV, "path": "../etc"}), "is damaged (invalid path '../etc'"),
        (record_events("conv", str(NOW), **{**GOOD_CONV, "path": "/etc"}), "is damaged (invalid path"),
        (record_events("conv", str(NOW), name="beta"), "is damaged (invalid path ''"),
        (record_events("conv", str(NOW), **{**GOOD_CONV, "uuid": ""}), "is damaged (no conversation id)"),
        (record_events("conv", str(NOW), **{**GOOD_CONV, "uuid": UPPER_UUID}), "no conversation id"),
        (record_events("conv", str(NOW), **{**GOOD_CONV, "uuid": UUID + "0"}), "no conversation id"),
        (record_events("conv", str(NOW), **{**GOOD_CONV, "uuid": "--resume"}), "no conversation id"),
        (record_events("conv", str(NOW), name="beta", path="beta"), "no conversation id"),
        (
            record_events("srv", str(NOW - rc_mcp.SERVER_RESUME_WINDOW - 1), name="beta", path="beta"),
            "Session beta-b1b2c3 ended 4.0 h ago; claude remote-control resumes only what it recorded within about 4 h",
        ),
        (record_events("srv", str(NOW - 26 * 3600), name="beta", path="beta"), "ended 26.0 h ago"),
        (
            record_events("srv", "", name="beta", path="beta"),
            "within about 4 h. Start a new session with start_session.",
        ),
    ],
)
def test_interpret_record_refuses(events: list[rc_mcp.Event], message: str) -> None:
    with pytest.raises(rc_mcp.ToolFailure) as failure:
        rc_mcp.interpret_record(events, "beta-b1b2c3", NOW)
    assert message in str(failure.value)


# ── The scripts ───────────────────────────────────────────────────────────────────────────────

HOSTILE_PATH = 'it\'s a "dir" $(touch PWNED) `touch PWNED`; touch PWNED & | > #{pane_pid} ~'
HOSTILE_BASE = "/srv/it's $(touch PWNED)/`touch PWNED`"
HOSTILE_BIN = "/opt/$(touch PWNED)/cl'aude;x"


def start_script(launch: rc_mcp.Launch, **overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "base_dir": "~/projects",
        "path": "org/alpha",
        "session_id": SESSION,
        "name": "alpha",
        "claude_bin": "claude",
        "spawn": "same-dir",
        "timeout": 45,
        "nonce": "0123456789abcdef",
        "permission_mode": None,
        "launch": launch,
    }
    return rc_mcp.build_start_script(**{**arguments, **overrides})


LAUNCHES = {
    "server": rc_mcp.Launch(),
    "server-resume": rc_mcp.Launch(resume=True),
    "conversation": rc_mcp.Launch(conversation_uuid=UUID),
    "conversation-prompt": rc_mcp.Launch(conversation_uuid=UUID, prompt=True),
    "conversation-resume": rc_mcp.Launch(conversation_uuid=UUID, resume=True),
}
TURN_ACTIONS: list[rc_mcp.TurnAction] = ["reply", "send", "interrupt", "allow", "deny"]


def sh_syntax_ok(script: str) -> None:
    subprocess.run(["/bin/sh", "-n", "-c", script], check=True, timeout=10)


SCRIPTS: dict[str, Callable[[], str]] = {
    **{f"start-{k}": partial(start_script, v) for k, v in LAUNCHES.items()},
    **{
        f"start-{k}-hostile": partial(
            start_script, v, base_dir=HOSTILE_BASE, path=HOSTILE_PATH, claude_bin=HOSTILE_BIN, permission_mode="plan"
        )
        for k, v in LAUNCHES.items()
    },
    **{f"turn-{a}": partial(rc_mcp.build_turn_script, session_id=SESSION, action=a, wait=90) for a in TURN_ACTIONS},
    **{
        f"turn-{a}-odd-numbers": partial(
            rc_mcp.build_turn_script, session_id=SESSION, action=a, wait=0.7, expect_size=-1, read_max=10
        )
        for a in TURN_ACTIONS
    },
    "stop": partial(rc_mcp.build_stop_script, SESSION),
    "stop-forget": partial(rc_mcp.build_stop_script, SESSION, forget=True),
    "record": partial(rc_mcp.build_record_script, SESSION),
    "list": partial(rc_mcp.build_list_script, "0123456789abcdef"),
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_scripts_are_valid_sh(name: str) -> None:
    script = SCRIPTS[name]()
    assert script.startswith(rc_mcp.REMOTE_PATH_PREFIX + "\n") and script.endswith("\n")
    sh_syntax_ok(script)


@pytest.mark.parametrize("launch", LAUNCHES.values(), ids=list(LAUNCHES))
def test_start_script_quotes_every_hostile_value(launch: rc_mcp.Launch) -> None:
    """Each hostile value appears only as its sh-quoted word: with those removed, nothing of it is left."""
    script = start_script(launch, base_dir=HOSTILE_BASE, path=HOSTILE_PATH, claude_bin=HOSTILE_BIN)
    assert f"base={shlex.quote(HOSTILE_BASE)}; rel={shlex.quote(HOSTILE_PATH)};" in script
    assert f"claude={shlex.quote(HOSTILE_BIN)};" in script
    rest = script.replace(shlex.quote(HOSTILE_BASE), "").replace(shlex.quote(HOSTILE_PATH), "")
    rest = rest.replace(shlex.quote(HOSTILE_BIN), "")
    assert "PWNED" not in rest and "cl'aude" not in rest


@pytest.mark.parametrize("launch", LAUNCHES.values(), ids=list(LAUNCHES))
def test_start_script_claude_arguments(launch: rc_mcp.Launch) -> None:
    script = start_script(launch, permission_mode="acceptEdits", spawn="worktree")
    if launch.conversation_uuid is None:
        expected = "remote-control --name alpha " + ("--continue" if launch.resume else "--spawn worktree")
    else:
        expected = f"--rc alpha {'--resume' if launch.resume else '--session-id'} {UUID}"
    assert f'"$claude" {expected} --permission-mode acceptEdits \\; ' in script
    assert ('cat > "$prompt_file"' in script) is launch.prompt
    assert ('"$prompt_file" "$claude"' in script) is launch.prompt  # the pane's $2: the file, never the text
    assert ("auth status" in script) is (launch.conversation_uuid is not None)  # signed out: refused before launch


def test_the_conversation_pane_passes_the_prompt_after_double_dash() -> None:
    """The pane reads the prompt from its file and passes it as claude's last argument, after `--`."""
    assert rc_mcp.CONVERSATION_PRELUDE.endswith('p=$(cat -- "$f") || exit 1; rm -f -- "$f"; exec "$@" -- "$p"')


@pytest.mark.parametrize("action", TURN_ACTIONS)
def test_turn_script_numbers_are_integers(action: rc_mcp.TurnAction) -> None:
    script = rc_mcp.build_turn_script(session_id=SESSION, action=action, wait=12.9, expect_size=345, read_max=1000)
    assert f"session=rc-{SESSION}; wait=12\n" in script
    assert "left=1000" in script
    assert ('[ "$size" = 345 ]' in script) is (action in ("allow", "deny"))


@pytest.mark.parametrize("action, key", [("allow", "1"), ("deny", "Escape")])
def test_turn_script_permission_keys(action: rc_mcp.TurnAction, key: str) -> None:
    script = rc_mcp.build_turn_script(session_id=SESSION, action=action, wait=0, expect_size=10)
    assert f"tmux send-keys -t \"=$session:\" {key}; echo '@@answered'" in script
    assert "paste-buffer" not in script and "refuse stale" in script


def test_turn_script_pastes_the_prompt_from_its_file() -> None:
    script = rc_mcp.build_turn_script(session_id=SESSION, action="send", wait=0)
    assert 'cat > "$prompt_file"' in script
    assert 'tmux load-buffer -b "$session-prompt" "$prompt_file"' in script
    assert "paste-buffer -p -d" in script  # bracketed: the prompt's newlines are text, not Enter


@pytest.mark.parametrize("forget", [False, True])
def test_stop_script(forget: bool) -> None:
    script = rc_mcp.build_stop_script(SESSION, forget)
    records = " ".join(f'"$state/$session{suffix}"' for suffix in (".conv", ".turn", ".srv"))
    assert f"session=rc-{SESSION}\n" in script
    assert (f"rm -f -- {records}" in script) is forget
    assert (f'for f in {records}; do [ -f "$f" ] && touch -- "$f"; done' in script) is not forget
    assert 'tmux kill-session -t "=$session"' in script  # exact target: never a prefix of another id


def test_no_builder_takes_prompt_text() -> None:
    """The prompt goes on the script's stdin; the builders cannot even be given its text."""
    for builder in (rc_mcp.build_start_script, rc_mcp.build_turn_script, rc_mcp.build_stop_script):
        assert "prompt" not in inspect.signature(builder).parameters
    assert isinstance(rc_mcp.Launch(prompt=True).prompt, bool)


@pytest.mark.parametrize(
    "line, outcome",
    [(line, True) for line in (transcript("answer")[4], transcript("answer")[5], transcript("exit")[8])]
    + [(transcript("interrupted")[4], True), (transcript("long-answer")[4], True)]
    + [(line, False) for line in (transcript("answer")[1], transcript("answer")[7], transcript("tools")[5])]
    + [(user('"type":"assistant" "subtype":"turn_duration" "subtype":"local_command"'), False)],
)
def test_turn_outcome_lines(line: str, outcome: bool) -> None:
    found = subprocess.run(["grep", "-q", "-E", rc_mcp.TURN_OUTCOME_ERE], input=line, text=True).returncode == 0
    assert found is outcome


def test_a_prompt_cannot_fake_an_outcome_line() -> None:
    line = user("why did you print [Request interrupted by user] earlier?")
    assert subprocess.run(["grep", "-q", "-E", rc_mcp.TURN_OUTCOME_ERE], input=line, text=True).returncode != 0


# ── The prompt travels on stdin ───────────────────────────────────────────────────────────────


class RecordingRunner:
    """A runner that records each script and its stdin, and answers with canned output lines."""

    def __init__(self, output: list[str]):
        self.output = output
        self.calls: list[tuple[str, bytes]] = []

    async def connect(self) -> str | None:
        return None

    async def run(
        self, script: str, *, timeout: float, on_line: rc_mcp.LineCallback | None = None, stdin: bytes = b""
    ) -> rc_mcp.CommandResult:
        self.calls.append((script, stdin))
        for line in self.output:
            if on_line is not None:
                await on_line(line)
        return rc_mcp.CommandResult(0, "".join(line + "\n" for line in self.output), "")

    async def close(self) -> None:
        return None


def config(allow_chat_approvals: bool = False) -> rc_mcp.Config:
    return dataclasses.replace(START_CONFIG, allow_chat_approvals=allow_chat_approvals)


HOSTILE_PROMPTS = [
    SECOND_PROMPT,
    "'; touch PWNED; echo '",
    '"; $(touch PWNED) `touch PWNED` \\',
    "-p --dangerously-skip-permissions",
    "line one\nEOF\n'EOF'\n@@status done\n@@t\t{}",
    "\x1b[201~\x03 escape the paste\r\n",
]


@pytest.mark.parametrize("prompt", HOSTILE_PROMPTS)
def test_send_prompt_puts_the_prompt_on_stdin_only(prompt: str) -> None:
    lines = transcript("answer")[7:]
    cleaned, removed = rc_mcp.clean_prompt(prompt)
    output = [
        "@@sent 1234",
        *(f"@@t\t{line}" for line in lines),
        f"@@registry\t{registry('idle')}",
        "@@size 9999",
        "@@status done",
    ]
    runner = RecordingRunner(output)
    result = asyncio.run(rc_mcp.Sessions(config(), runner).send(SESSION, prompt, wait=5))
    ((script, stdin),) = runner.calls
    assert stdin == cleaned.encode()
    for piece in {prompt, cleaned, *(p for p in cleaned.splitlines() if len(p) > 3)}:
        assert piece not in script
    # The canned transcript holds another prompt than the one sent: said so, never hidden.
    assert (result.status, result.reply, result.url) == ("done", "turn 2: " + SECOND_PROMPT, IDLE_URL)
    assert ("different form" in result.message) is (cleaned != SECOND_PROMPT)
    assert (f"{removed} control character(s) were removed" in result.message) is (removed > 0)


@pytest.mark.parametrize("prompt", HOSTILE_PROMPTS)
def test_start_with_a_prompt_puts_it_on_stdin_only(prompt: str) -> None:
    cleaned, _ = rc_mcp.clean_prompt(prompt)
    runner = RecordingRunner(["@@error no-tmux"])
    with pytest.raises(rc_mcp.ToolFailure, match="tmux is not installed"):
        asyncio.run(rc_mcp.Sessions(config(), runner).start("alpha", "org/alpha", prompt=prompt))
    ((script, stdin),) = runner.calls
    assert stdin == cleaned.encode()
    for piece in {prompt, cleaned, *(p for p in cleaned.splitlines() if len(p) > 3)}:
        assert piece not in script
    assert "--rc alpha --session-id " in script


def test_a_refused_prompt_never_reaches_the_runner() -> None:
    runner = RecordingRunner([])
    with pytest.raises(ValueError, match="the prompt is empty"):
        asyncio.run(rc_mcp.Sessions(config(), runner).send(SESSION, "\x1b\r\n \t", wait=5))
    assert runner.calls == []


def test_answer_permission_needs_the_current_prompt_id() -> None:
    output = [*(f"@@t\t{line}" for line in transcript("permission")), f"@@registry\t{registry('permission')}"]
    runner = RecordingRunner([*output, "@@size 4321", "@@status waiting"])
    sessions = rc_mcp.Sessions(config(allow_chat_approvals=True), runner)
    with pytest.raises(rc_mcp.ToolFailure, match="nothing was pressed"):
        asyncio.run(sessions.answer(SESSION, "allow_once", "toolu_someotherprompt"))
    assert len(runner.calls) == 1  # only the look: no key was sent
    asyncio.run(sessions.answer(SESSION, "deny", PERMISSION_TOOL_ID))
    assert len(runner.calls) == 3
    answer_script = runner.calls[2][0]
    assert (
        '[ "$size" = 4321 ]' in answer_script
        and "send-keys -t \"=$session:\" Escape; echo '@@answered'" in answer_script
    )


# ── The scripts, run until they stop by themselves ────────────────────────────────────────────


@pytest.fixture
def remote_home(tmp_path: Path) -> dict[str, str]:
    """A home for the scripts: a `tmux` that fails every call (no tmux server is ever reached)."""
    home = tmp_path / "home"
    bin_dir = home / ".local" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "tmux").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "tmux").chmod(0o755)
    return {"HOME": str(home), "PATH": "/usr/bin:/bin", "LC_ALL": "C"}


def run_sh(script: str, env: dict[str, str], stdin: bytes = b"") -> str:
    done = subprocess.run(["/bin/sh", "-c", script], input=stdin, env=env, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


@pytest.mark.parametrize("launch", LAUNCHES.values(), ids=list(LAUNCHES))
def test_start_script_never_runs_hostile_values(
    launch: rc_mcp.Launch, remote_home: dict[str, str], tmp_path: Path
) -> None:
    base = tmp_path / "it's $(touch PWNED) `touch PWNED`"
    base.mkdir()
    script = start_script(launch, base_dir=str(base), path=HOSTILE_PATH, claude_bin=HOSTILE_BIN)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = subprocess.run(
        ["/bin/sh", "-c", script], input=b"$(touch PWNED)", env=remote_home, cwd=cwd, capture_output=True, timeout=30
    )
    assert done.stdout.decode().splitlines() == ["@@error no-dir"]
    assert not list(tmp_path.rglob("PWNED")) and not list(Path(remote_home["HOME"]).rglob("PWNED"))


def test_turn_script_streams_the_transcript_from_the_last_prompt(remote_home: dict[str, str]) -> None:
    """A conversation whose claude has gone: the reply script prints the lines after `.turn`'s offset and
    reports `exited`; what it prints reads back as the recorded answer."""
    home = Path(remote_home["HOME"])
    state = home / ".local" / "state" / "rc-mcp"
    state.mkdir(parents=True)
    (state / f"rc-{SESSION}.conv").write_text(f"name\talpha\npath\talpha\nmode\tconversation\nuuid\t{UUID}\n")
    lines = transcript("answer")
    offset = len("".join(line + "\n" for line in lines[:7]).encode())
    (state / f"rc-{SESSION}.turn").write_text(f"{offset}\n")
    project = home / ".claude" / "projects" / "-home-dev-projects-alpha"
    project.mkdir(parents=True)
    (project / f"{UUID}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    output = run_sh(rc_mcp.build_turn_script(session_id=SESSION, action="reply", wait=0), remote_home)
    log = rc_mcp.TurnLog()
    events: list[rc_mcp.Event] = []
    for line in output.splitlines():
        if line.startswith("@@t\t"):
            log.feed(line[4:])
        else:
            events.extend(rc_mcp.parse_script_output(line + "\n"))
    size = len("".join(line + "\n" for line in lines).encode())
    assert events == [("size", [str(size)]), ("status", ["exited"])]  # no registry entry: none printed
    result = rc_mcp.interpret_turn(SESSION, log, events)
    assert (result.status, result.reply, log.newer_prompts) == ("exited", "turn 2: " + SECOND_PROMPT, 0)


@pytest.mark.parametrize(
    "files, error",
    [
        ({}, "unknown"),
        ({".meta": "name\talpha\n"}, "server"),
        ({".srv": "name\talpha\n"}, "server"),
        ({".conv": "uuid\t../../x\n"}, "unknown"),
        ({".conv": "name\talpha\n"}, "unknown"),
    ],
)
@pytest.mark.parametrize("action", TURN_ACTIONS)
def test_turn_script_refuses_what_is_no_conversation(
    files: dict[str, str], error: str, action: rc_mcp.TurnAction, remote_home: dict[str, str]
) -> None:
    state = Path(remote_home["HOME"]) / ".local" / "state" / "rc-mcp"
    state.mkdir(parents=True)
    for suffix, content in files.items():
        (state / f"rc-{SESSION}{suffix}").write_text(content)
    output = run_sh(rc_mcp.build_turn_script(session_id=SESSION, action=action, wait=0), remote_home, b"a prompt")
    assert output == f"@@error {error}\n"
    with pytest.raises(rc_mcp.ToolFailure):
        rc_mcp.interpret_turn(SESSION, rc_mcp.TurnLog(), rc_mcp.parse_script_output(output))


def test_a_turn_longer_than_the_read_limit_is_still_answered() -> None:
    """The script left the oldest lines out (`@@skipped`), the prompt's own among them."""
    log = rc_mcp.TurnLog("read the logs")
    log.skip()
    for line in (
        '{"type":"assistant","isSidechain":false,"message":{"id":"m2","content":[{"type":"text","text":"3 errors."}],'
        '"stop_reason":"end_turn"}}',
        '{"type":"system","subtype":"turn_duration","isSidechain":false}',
    ):
        log.feed(line)
    assert (log.reply, log.complete, log.skipped, log.newer_prompts) == ("3 errors.", True, True, 0)


@pytest.mark.parametrize(
    ("blocks", "answerable"),
    [
        ([("t1", "Bash")], True),
        ([("t1", "WebFetch"), ("t2", "Bash")], False),  # claude asks about them in turn: which one is shown?
        ([("t1", "Task")], False),  # a subagent's own call is asking
    ],
)
def test_only_a_single_main_chain_call_can_be_answered_from_the_chat(
    blocks: list[tuple[str, str]], answerable: bool
) -> None:
    log = rc_mcp.TurnLog()
    log.feed('{"type":"user","message":{"role":"user","content":"go"}}')
    content = [{"type": "tool_use", "id": i, "name": n, "input": {"command": "rm -rf ~"}} for i, n in blocks]
    log.feed(json.dumps({"type": "assistant", "message": {"id": "m1", "content": content, "stop_reason": "tool_use"}}))
    permission = log.permission({"status": "waiting", "waitingFor": "permission prompt"})
    assert permission is not None and bool(permission.prompt_id) == answerable
