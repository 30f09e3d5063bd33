"""Record the fake claude's raw pane output for each version and state into testbed/transcripts/.

The test suite parses these files (URL extraction, status, failure explanations). Each one is what
`tmux pipe-pane` captured from `claude remote-control` running in a 200-column pane, exactly as
rc_mcp's start script captures it. Re-record after changing the fake:

    python testbed/record_transcripts.py [NAME ...]   # all scenarios, or only the named ones
"""

from __future__ import annotations

import json
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


def main(names: list[str]) -> None:
    """Record the named scenarios (all of them when none is named)."""
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(sorted(unknown))}; known: {', '.join(SCENARIOS)}")
    target = HERE / "transcripts"
    target.mkdir(exist_ok=True)
    for name, (knobs, claude_json, until) in SCENARIOS.items():
        if names and name not in names:
            continue
        record(name, knobs, claude_json, until, target / f"{name}.log")
        print(f"recorded {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
