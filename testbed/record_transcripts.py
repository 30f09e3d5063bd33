"""Record the fake claude's raw pane output for each version and state into testbed/transcripts/.

The test suite parses these files (URL extraction, status, failure explanations). Each one is what
`tmux pipe-pane` captured from `claude remote-control` running in a 200-column pane, exactly as
rc_mcp's start script captures it. The conversational scenarios (`2.1.332-conv-*`) run
`claude --rc alpha ["prompt"] --session-id <uuid>` instead, drive it with paste-buffer -p / send-keys,
and also keep the session's transcript (`.jsonl`, plus `-subagent.jsonl` for a sidechain) and, where
the state is worth seeing, its registry file (`.registry.json`). Re-record after changing the fake:

    python testbed/record_transcripts.py [NAME ...]   # all scenarios, or only the named ones
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from testbed.fake_claude import FAIL_KEYS  # noqa: E402
from testbed.lab import make_local_devhome  # noqa: E402

# name → (fake claude knobs, ~/.claude.json changes, text that ends the recording)
SCENARIOS: dict[str, tuple[dict, dict, str]] = {
    "2.1.330-ready": ({"env_id": "env_01Ready330"}, {}, "space to show QR code"),
    "2.1.330-connected": (
        {"env_id": "env_01Conn330", "session_id": "session_01Attached", "attach_delay": 0.2},
        {},
        "Continue coding",
    ),
    "2.1.330-connected-plain-links": (
        {"env_id": "env_01Plain", "session_id": "session_01Plain", "attach_delay": 0.2, "hyperlinks": "plain"},
        {},
        "Continue coding",
    ),
    "2.1.197-ready": ({"version": "2.1.197", "env_id": "env_01Ready197"}, {}, "space to show QR code"),
    "2.1.84-ready": ({"version": "2.1.84", "env_id": "env_01Ready84"}, {}, "space to show QR code"),
    "2.1.330-connecting": ({"never_ready": True, "connect_delay": 0.5}, {}, "Connecting"),
    "2.1.330-consent-prompt": ({}, {"remoteDialogSeen": False}, "Enable Remote Control? (y/n)"),
    "2.1.330-trust-prompt": ({}, {"projects": {}}, "[y/N]"),
    "2.1.330-signed-out": ({"logged_in": False}, {}, "claude auth login"),
    "2.1.84-signed-out": ({"version": "2.1.84", "logged_in": False}, {}, "/login"),
    "2.1.330-feature-flag": ({"fail": "feature_flag"}, {}, "feature-flag"),
}
# Every error the fake can be told to fail with (its "fail" knob), as the pane shows it.
SCENARIOS.update({f"2.1.330-fail-{key}": ({"fail": key}, {}, "\n") for key in FAIL_KEYS})

# Conversational mode: name → (knobs, ~/.claude.json changes, prompt argument or None, steps, keep registry).
# Steps: ("paste", text) = load-buffer + paste-buffer -p -d + Enter; ("paste_raw", text) = paste-buffer
# without -p and no Enter; ("keys", key) = send-keys; ("until", text) = wait for text in the pane log;
# ("status", s) = wait for the registry status. The recording ends after the last step.
CONV_SESSION_ID = "11111111-2222-4333-8444-555555555555"
CONV_KNOBS = {"version": "2.1.332", "startup_delay": 0, "turn_delay": 0.1, "tool_delay": 0.1}
ENDED = "\x1b[?2004l"  # the TUI turns bracketed paste off as it exits
CONV_SCENARIOS: dict[str, tuple[dict, dict, str | None, list[tuple[str, str]], bool]] = {
    "2.1.332-conv-idle": ({}, {}, None, [("until", "auto mode on"), ("status", "idle")], True),
    "2.1.332-conv-answer": (
        {},
        {},
        "hello",
        [
            ("until", "turn 1: hello"),
            ("status", "idle"),
            ("paste", 'run the tests\nline two with $HOME and `backticks` and "quotes"'),
            ("until", "turn 2:"),
            ("status", "idle"),
        ],
        False,
    ),
    "2.1.332-conv-paste-without-p": (
        {},
        {},
        None,
        [("status", "idle"), ("paste_raw", "first line\nsecond line"), ("until", "turn 1: first line")],
        False,
    ),
    "2.1.332-conv-signed-out": (
        {"logged_in": False},
        {},
        "hello",
        [("until", "Please run /login"), ("status", "idle")],
        False,
    ),
    "2.1.332-conv-trust-dialog": ({}, {"projects": {}}, "hello", [("until", "Enter to confirm")], False),
    "2.1.332-conv-trust-declined": (
        {},
        {"projects": {}},
        "hello",
        [("until", "Enter to confirm"), ("keys", "Enter"), ("until", ENDED)],
        False,
    ),
    "2.1.332-conv-onboarding-offline": ({}, {"hasCompletedOnboarding": None}, "hello", [("until", ENDED)], False),
    "2.1.332-conv-busy": (
        {},
        {},
        "think 30: take your time",
        [("until", "esc to interrupt"), ("status", "busy")],
        True,
    ),
    "2.1.332-conv-tools": (
        {},
        {},
        "bash: npm test",
        [("until", "turn 1:"), ("status", "idle"), ("paste", "edit: src/app.py"), ("until", "turn 2:")],
        False,
    ),
    "2.1.332-conv-permission": (
        {},
        {},
        "ask: rm -rf build",
        [("until", "Do you want to proceed?"), ("status", "waiting")],
        True,
    ),
    "2.1.332-conv-permission-denied": (
        {},
        {},
        "ask: rm -rf build",
        [("until", "Do you want to proceed?"), ("keys", "Escape"), ("until", "permission denied"), ("status", "idle")],
        False,
    ),
    "2.1.332-conv-api-error": ({}, {}, "fail 529", [("until", "API Error: 529"), ("status", "idle")], False),
    "2.1.332-conv-sidechain": (
        {},
        {},
        "agent: survey the repo",
        [("until", "the agent reported"), ("status", "idle")],
        False,
    ),
    "2.1.332-conv-long-answer": ({}, {}, "long 25", [("until", "line 25 of 25"), ("status", "idle")], False),
    "2.1.332-conv-interrupted": (
        {},
        {},
        "hang",
        [("until", "esc to interrupt"), ("keys", "Escape"), ("until", "Interrupted"), ("status", "idle")],
        False,
    ),
    "2.1.332-conv-slash-commands": (
        {},
        {},
        "/security-review",
        [("until", "origin/HEAD"), ("paste", "/frobnicate"), ("until", "Unknown slash command")],
        False,
    ),
    "2.1.332-conv-exit": (
        {},
        {},
        "hello",
        [("until", "turn 1: hello"), ("status", "idle"), ("paste", "/exit"), ("until", ENDED)],
        False,
    ),
}


def record(name: str, knobs: dict, claude_json: dict, until: str, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="rc-rec-") as root:
        home = make_local_devhome(Path(root))
        try:
            settings = home.claude_json()
            settings.update(claude_json)
            home.write_claude_json(settings)
            (home.home / ".fake-claude").mkdir(exist_ok=True)
            (home.home / ".fake-claude" / "config.json").write_text(json.dumps(knobs))
            log = Path(root) / "pane.log"
            env = home.env({"PATH": f"{home.claude_bin.parent}:/usr/local/bin:/usr/bin:/bin"})
            subprocess.run(
                [
                    "tmux",
                    "new-session",
                    "-d",
                    "-s",
                    "rec",
                    "-x",
                    "200",
                    "-y",
                    "50",
                    "-c",
                    str(home.projects / "alpha"),
                    "claude",
                    "remote-control",
                    "--name",
                    "alpha",
                    "--spawn",
                    "same-dir",
                    ";",
                    "pipe-pane",
                    "-o",
                    "-t",
                    "=rec:",
                    f"cat >> '{log}'",
                    ";",
                    "set-option",
                    "-t",
                    "=rec:",
                    "remain-on-exit",
                    "on",
                ],
                env=env,
                check=True,
            )
            deadline = time.monotonic() + 10
            while until.encode() not in (log.read_bytes() if log.exists() else b""):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}: {until!r} never appeared")
                time.sleep(0.05)
            time.sleep(0.4)  # a few repaints after it
            subprocess.run(["tmux", "kill-server"], env=env, capture_output=True)
            # The recording's temporary home reads as a typical one.
            out.write_bytes(log.read_bytes().replace(str(home.home).encode(), b"/home/dev"))
        finally:
            home.close()


def wait(what: str, predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} never happened")
        time.sleep(0.05)


def record_conversation(name: str, spec: tuple, target: Path) -> None:
    knobs, claude_json, prompt, steps, keep_registry = spec
    with tempfile.TemporaryDirectory(prefix="rc-rec-") as root:
        home = make_local_devhome(Path(root))
        try:
            settings = home.claude_json()
            settings.update(claude_json)
            home.write_claude_json({k: v for k, v in settings.items() if v is not None})
            (home.home / ".fake-claude").mkdir(exist_ok=True)
            (home.home / ".fake-claude" / "config.json").write_text(json.dumps({**CONV_KNOBS, **knobs}))
            log = Path(root) / "pane.log"
            env = home.env({"PATH": f"{home.claude_bin.parent}:/usr/local/bin:/usr/bin:/bin"})
            project = home.projects / "alpha"
            argv = ["claude", "--rc", "alpha", *([prompt] if prompt else []), "--session-id", CONV_SESSION_ID]

            def tmux(*args: str, text: str | None = None) -> None:
                subprocess.run(["tmux", *args], env=env, input=text, text=True, check=True, capture_output=True)

            tmux(
                "new-session", "-d", "-s", "rec", "-x", "200", "-y", "50", "-c", str(project), shlex.join(argv),
                ";", "pipe-pane", "-o", "-t", "=rec:", f"cat >> '{log}'",
                ";", "set-option", "-t", "=rec:", "remain-on-exit", "on",
            )  # fmt: skip
            sessions = home.home / ".claude" / "sessions"

            def status() -> str | None:
                for path in sessions.glob("*.json") if sessions.exists() else []:
                    try:
                        return json.loads(path.read_text())["status"]
                    except (OSError, ValueError, KeyError):
                        return None
                return None

            for kind, arg in steps:
                if kind == "until":
                    wait(repr(arg), lambda arg=arg: arg.encode() in (log.read_bytes() if log.exists() else b""))
                elif kind == "status":
                    wait(f"status {arg}", lambda arg=arg: status() == arg)
                elif kind in ("paste", "paste_raw"):
                    tmux("load-buffer", "-b", "p", "-", text=arg)
                    tmux("paste-buffer", *(["-p"] if kind == "paste" else []), "-d", "-b", "p", "-t", "=rec:")
                    if kind == "paste":
                        tmux("send-keys", "-t", "=rec:", "Enter")
                elif kind == "keys":
                    tmux("send-keys", "-t", "=rec:", arg)
            time.sleep(0.3)  # a few repaints after it

            def clean(data: bytes) -> bytes:  # the recording's temporary home reads as a typical one
                return data.replace(str(home.home).encode(), b"/home/dev")

            registry = [p for p in sessions.glob("*.json")] if sessions.exists() else []
            if keep_registry and registry:
                (target / f"{name}.registry.json").write_bytes(clean(registry[0].read_bytes()))
            subprocess.run(["tmux", "kill-server"], env=env, capture_output=True)
            (target / f"{name}.log").write_bytes(clean(log.read_bytes()))
            slug = "".join(ch if ch.isalnum() else "-" for ch in str(project.resolve()))
            transcript = home.home / ".claude" / "projects" / slug / f"{CONV_SESSION_ID}.jsonl"
            if transcript.exists():
                (target / f"{name}.jsonl").write_bytes(clean(transcript.read_bytes()))
            for side in sorted(transcript.parent.glob(f"{CONV_SESSION_ID}/subagents/agent-*.jsonl")):
                (target / f"{name}-subagent.jsonl").write_bytes(clean(side.read_bytes()))
        finally:
            home.close()


def main(names: list[str]) -> None:
    """Record the named scenarios (all of them when none is named)."""
    known = [*SCENARIOS, *CONV_SCENARIOS]
    unknown = set(names) - set(known)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    target = HERE / "transcripts"
    target.mkdir(exist_ok=True)
    for name, (knobs, claude_json, until) in SCENARIOS.items():
        if names and name not in names:
            continue
        record(name, knobs, claude_json, until, target / f"{name}.log")
        print(f"recorded {name}")
    for name, spec in CONV_SCENARIOS.items():
        if names and name not in names:
            continue
        for old in target.glob(f"{name}.*"):
            old.unlink()
        record_conversation(name, spec, target)
        print(f"recorded {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
