"""Several dev servers: what one connector carries (bench for DEV_SERVERS).

Runs a real sshd + tmux lab (testbed.lab.DevServer) and configures N hosts that all reach it, each
with its own SSH connection, plus one "frozen" host: a listener on 127.0.0.1 that accepts TCP
connections and never says a word (a dev server whose sshd hangs). It then times `list_sessions`
across all hosts (Hosts.list_all, the tool's work without HTTP) against the same call on one
host, with S sessions on the lab, and reports the ratios:

  one host                 list on a single host (the floor)
  N hosts                  every host at once, all reachable
  N hosts + 1 frozen       the same with the frozen one: bounded by its connect timeout
  N hosts after            all reachable again: unchanged once the frozen one has failed

Run from the repository root (Linux with sshd, tmux and git; as root the lab makes a throw-away
user, rchosts):  python bench/hosts.py [--hosts 20] [--sessions 10] [--repeat 10] [--timeout 2]
All traffic stays on 127.0.0.1; everything started here is stopped before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import rc_mcp  # noqa: E402
from testbed.lab import DevServer  # noqa: E402

SECRET = "bench-" + "9c2f4e1ab8d7035f6e2c9a41b7d8e05f"


@contextlib.contextmanager
def frozen_listener() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(sock.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


def host_table(name: str, lab: DevServer, port: int | None = None) -> str:
    values = {
        "ssh_host": lab.host,
        "port": port or lab.port,
        "user": lab.user,
        "key": str(lab.keys["ed25519"]),
        "projects_base_dir": str(lab.projects),
    }
    if port is None:
        values["known_hosts"] = str(lab.known_hosts)
    return f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


async def timed(work: rc_mcp.Hosts, repeat: int) -> tuple[float, int, int]:
    """Median ms of list_all over `repeat` calls, sessions and errors of the last."""
    times = []
    found: list[rc_mcp.SessionInfo] = []
    errors: list[rc_mcp.HostError] = []
    for _ in range(repeat):
        started = time.perf_counter()
        found, errors = await work.list_all()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), len(found), len(errors)


async def measure(lab: DevServer, args: argparse.Namespace, folder: Path) -> list[tuple[str, float, int, int]]:
    def hosts(tables: list[str]) -> rc_mcp.Hosts:
        path = folder / f"hosts-{len(tables)}.toml"
        path.write_text("\n".join(tables))
        env = {
            "MCP_SECRET": SECRET,
            "DEV_SERVERS": str(path),
            "TOKEN_STORE_PATH": str(folder / "tokens.json"),
            "SSH_CONNECT_TIMEOUT": str(args.timeout),
        }
        return rc_mcp.App(rc_mcp.load_config(env)).hosts

    one = hosts([host_table("h0", lab)])
    many = hosts([host_table(f"h{n}", lab) for n in range(args.hosts)])
    for n in range(args.sessions):  # sessions on the lab, seen by every host
        await one.first.start(f"s{n}", "alpha" if n == 0 else "beta", interactive=n > 0)
    rows = []
    try:
        await timed(one, 2)
        rows.append(("one host", *(await timed(one, args.repeat))))
        await timed(many, 2)
        rows.append((f"{args.hosts} hosts", *(await timed(many, args.repeat))))
        with frozen_listener() as port:
            frozen = hosts([host_table(f"h{n}", lab) for n in range(args.hosts)] + [host_table("frozen", lab, port)])
            await timed(frozen, 1)
            rows.append((f"{args.hosts} hosts + 1 frozen", *(await timed(frozen, max(2, args.repeat // 3)))))
            for sessions in frozen.by_name.values():
                await sessions.runner.close()
        await timed(many, 1)
        rows.append((f"{args.hosts} hosts after", *(await timed(many, args.repeat))))
    finally:
        for session in (await one.list_all())[0]:
            await one.first.stop(session.id, forget=True)
        for group in (one, many):
            for sessions in group.by_name.values():
                await sessions.runner.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=2.0, help="SSH_CONNECT_TIMEOUT for every host")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rc-hosts-") as tmp:
        lab = DevServer.start(Path(tmp) / "lab", user="rchosts")
        try:
            lab.fake_claude_config({"connect_delay": 0.05, "startup_delay": 0.05})
            rows = asyncio.run(measure(lab, args, Path(tmp)))
        finally:
            lab.stop()
    floor = rows[0][1]
    print(f"| list_sessions, {args.sessions} sessions per host | median | × one host | sessions | errors |")
    print("|---|---|---|---|---|")
    for name, ms, found, errors in rows:
        print(f"| {name} | {ms:.1f} ms | {ms / floor:.2f}× | {found} | {errors} |")
    print(f"\nSSH_CONNECT_TIMEOUT {args.timeout:g} s: the frozen host's row is bounded by it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
