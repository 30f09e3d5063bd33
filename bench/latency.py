"""Latency benchmark for rc_mcp against a real sshd + tmux on 127.0.0.1 (testbed.lab.DevServer).

Rows (warm-up calls, then N timed ones; median and p90 in ms, each also as a multiple of the
baseline measured in the same run):
  baseline             raw paramiko exec_command("true") on an open transport (TCP_NODELAY), to exit status
  mcp list_tools       SDK client -> HTTP -> rc_mcp and back, no SSH (the stack's own cost)
  ssh list (k)         SSHRunner.run(build_list_script(nonce)) with k sessions running: list_sessions' remote part
  mcp list_sessions(k) the tool through the SDK client (legacy mode, authorized) -> HTTP -> rc_mcp -> SSH -> tmux
  mcp start / stop     start_session end to end (the fake claude needs ~0.3 s to print its URL), stop_session
  fresh interpreters   `python -c pass`; `python -c "import rc_mcp"`, with and without interpreter teardown;
                       `python rc_mcp.py` (local mode) until GET /health answers 200

Run from the repository root (Linux with sshd, tmux and git; as root the lab creates a throw-away user, rcbench):
    python bench/latency.py [--repeat 30] [--warmup 3] [--cold-repeat 5] [--json FILE]
All traffic stays on 127.0.0.1, and everything started here is stopped before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import inspect
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paramiko

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from run import raw_transport  # noqa: E402  (bench/run.py, beside this script)

import rc_mcp  # noqa: E402
from testbed.harness import ClaudeAi, RunningServer, call, connect, ssh_env  # noqa: E402
from testbed.lab import DevServer, listening_socket  # noqa: E402

SECRET = "bench-secret-0123456789abcdef"
CLIENT_ID, CLIENT_SECRET = rc_mcp.derive_client_credentials(SECRET)
CALLBACK = rc_mcp.FIXED_CLIENT_REDIRECT_URIS[0]
BUSY = 10  # sessions running for the "busy" list rows
BUSY_DIRS = [f"bench/p{i}" for i in range(BUSY)]  # one claude per directory


# ── Timing ──
async def sample(fn, repeat: int, warmup: int, check=None) -> list[float]:
    """Milliseconds of `repeat` calls of fn (sync or async), after `warmup` untimed ones."""
    times = []
    for i in range(warmup + repeat):
        start = time.perf_counter()
        result = fn()
        if inspect.isawaitable(result):
            result = await result
        elapsed = (time.perf_counter() - start) * 1000
        if check is not None and not check(result):
            raise RuntimeError(f"unexpected result: {result!r:.300}")
        if i >= warmup:
            times.append(elapsed)
    return times


def summary(name: str, times: list[float]) -> dict:
    ordered = sorted(times)
    p90 = ordered[max(math.ceil(0.9 * len(ordered)) - 1, 0)]  # nearest rank
    return {"name": name, "n": len(times), "median_ms": statistics.median(times), "p90_ms": p90}


# ── Helpers ──
def exec_true(transport: paramiko.Transport) -> int:
    with transport.open_session(timeout=10) as channel:
        channel.exec_command("true")
        return channel.recv_exit_status()


# ── Fresh interpreters (local mode: no SSH) ──
def local_env(tmp: Path, port: int) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOST": "127.0.0.1",
        "MCP_SECRET": SECRET,
        "PROJECTS_BASE_DIR": str(tmp),
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        "SERVER_URL": f"http://127.0.0.1:{port}",
        "HOME": str(tmp),
        "TMUX_TMPDIR": str(tmp / "tmux"),
        "TOKEN_STORE_PATH": str(tmp / "state" / "tokens.json"),
    }


def interpreter_ms(tmp: Path, code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=local_env(tmp, 1), stdin=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - start) * 1000


def health_ok(port: int) -> bool:
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=2)) as conn:
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
    return False


def cold_start_ms(tmp: Path) -> float:
    with listening_socket() as sock:  # rc_mcp.py binds the port itself
        port = sock.getsockname()[1]
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "rc_mcp.py")],
        cwd=tmp,
        env=local_env(tmp, port),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if health_ok(port):
                return (time.perf_counter() - start) * 1000
            time.sleep(0.002)
        raise RuntimeError(f"rc_mcp.py never answered /health (exit status {proc.poll()})")
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        proc.kill()  # a no-op once it has exited
        proc.wait(timeout=10)


# ── The run ──
async def bench_ssh(dev: DevServer, rep: int, warm: int, rows: list[dict], meta: dict) -> None:
    dev.run("mkdir -p " + " ".join(f"projects/{d}" for d in BUSY_DIRS)).check_returncode()
    tmp = Path(tempfile.mkdtemp(prefix="rc-bench-"))  # the server's token store
    env = ssh_env(dev, tmp / "tokens.json", SECRET)
    server = RunningServer(env)
    runner, transport, script = rc_mcp.SSHRunner(server.config), raw_transport(dev), rc_mcp.build_list_script("bench")
    try:
        baseline = await sample(lambda: exec_true(transport), rep, warm, lambda status: status == 0)
        rows.append(summary("baseline: paramiko exec true", baseline))
        async with connect(server.url, ClaudeAi(SECRET)) as client:

            async def list_rows(k: int) -> None:
                ssh = lambda: runner.run(script, timeout=30)  # noqa: E731
                ssh_ok = lambda r: r.stdout.count("@@session\t") == k  # noqa: E731
                rows.append(summary(f"ssh list ({k} sessions)", await sample(ssh, rep, warm, ssh_ok)))
                mcp = lambda: call(client, "list_sessions")  # noqa: E731
                mcp_ok = lambda r: len(r["sessions"]) == k  # noqa: E731
                rows.append(summary(f"mcp list_sessions ({k})", await sample(mcp, rep, warm, mcp_ok)))

            rows.append(summary("mcp list_tools (no SSH)", await sample(client.list_tools, rep, warm)))
            await list_rows(0)
            starts, stops = [], []
            for i in range(warm + rep):  # rotate directories: a stopped claude frees its lock a moment later
                t0 = time.perf_counter()
                started = await call(client, "start_session", name=f"b{i}", path=BUSY_DIRS[i % BUSY])
                t1 = time.perf_counter()
                stopped = await call(client, "stop_session", id=started["id"])
                t2 = time.perf_counter()
                if started["status"] != "ready" or not stopped["stopped"]:
                    raise RuntimeError(f"start/stop failed: {started} {stopped}")
                if i >= warm:
                    starts.append((t1 - t0) * 1000)
                    stops.append((t2 - t1) * 1000)
            rows += [summary("mcp start_session", starts), summary("mcp stop_session", stops)]
            busy = [await call(client, "start_session", name=f"busy{i}", path=d) for i, d in enumerate(BUSY_DIRS)]
            await list_rows(BUSY)
            for started in busy:
                await call(client, "stop_session", id=started["id"])
        meta.update(server_ssh_connects=server.app.runner.connects, server_ssh_execs=server.app.runner.execs)
    finally:
        transport.close()
        await runner.close()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def bench_cold(rep: int, rows: list[dict]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="rc-bench-cold-"))
    runs = {
        "python -c pass": lambda: interpreter_ms(tmp, "pass"),
        "python -c 'import rc_mcp'": lambda: interpreter_ms(tmp, "import rc_mcp"),
        "  same, minus teardown": lambda: interpreter_ms(tmp, "import os, rc_mcp; os._exit(0)"),
        "cold start to /health 200": lambda: cold_start_ms(tmp),
    }
    try:
        for name, run in runs.items():  # one untimed run first (page cache)
            rows.append(summary(name, [run() for _ in range(rep + 1)][1:]))
    finally:
        subprocess.run(
            ["tmux", "kill-server"],
            env={**os.environ, "TMUX_TMPDIR": str(tmp / "tmux")},
            capture_output=True,
            timeout=10,
        )
        shutil.rmtree(tmp, ignore_errors=True)


def report(rows: list[dict]) -> None:
    base = rows[0]
    width = max(len(r["name"]) for r in rows)
    print(f"{'':{width}}  {'n':>3}  {'median ms':>9}  {'p90 ms':>8}  {'x base':>7}  {'x base p90':>10}")
    for r in rows:
        r["x_base_median"], r["x_base_p90"] = r["median_ms"] / base["median_ms"], r["p90_ms"] / base["p90_ms"]
        print(
            f"{r['name']:{width}}  {r['n']:>3}  {r['median_ms']:>9.2f}  {r['p90_ms']:>8.2f}  "
            f"{r['x_base_median']:>7.1f}  {r['x_base_p90']:>10.1f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description="rc_mcp latency against a local SSH dev server.")
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per row (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before each row (default 3)")
    parser.add_argument("--cold-repeat", type=int, default=5, help="fresh interpreters per cold row (default 5)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    if min(args.repeat, args.cold_repeat) < 1 or args.warmup < 0:
        parser.error("--repeat and --cold-repeat must be at least 1, --warmup at least 0")
    ok, why = DevServer.available()
    if not ok:
        print(f"cannot start the SSH dev server: {why}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)  # before the SDK's server asks for INFO: keep the output a table
    rows: list[dict] = []
    meta = {
        "repeat": args.repeat,
        "warmup": args.warmup,
        "cold_repeat": args.cold_repeat,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    dev = DevServer.start(user="rcbench")  # not the tests' user: both may run at once
    try:
        asyncio.run(bench_ssh(dev, args.repeat, args.warmup, rows, meta))
    finally:
        dev.stop()
    bench_cold(args.cold_repeat, rows)
    report(rows)
    print(f"rc_mcp's SSH connections: {meta['server_ssh_connects']}, commands run: {meta['server_ssh_execs']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
