"""rc_mcp's benchmark: one command, one Markdown table, every figure a median beside its floor.

    python bench/run.py            # loopback and a 50 ms round trip, about 5 minutes
    python bench/run.py --quick    # fewer samples, about 4 minutes
    python bench/run.py --rtt 0    # loopback only

Against the test lab (testbed/lab.py: a real sshd on 127.0.0.1 with a throw-away user `rcb…`,
real tmux, the fake claude). Each figure is measured twice, by a worker process of its own: on
loopback, and in a network namespace whose only way to the dev server is bench/delay_proxy.py
(every chunk delayed 25 ms each way: a 50 ms round trip between rc_mcp and sshd; the MCP client
talks to rc_mcp over the namespace's own loopback, undelayed). Floors are measured in the same run,
in the same worker, under the same network. Needs root (the lab's user; the namespace).
Round trips are counted in units of one SSH protocol round trip measured in the same run (a
`keepalive@openssh.com` global request), so the proxy's own few ms per crossing cancel out.

Traffic stays on 127.0.0.1 and in the namespace created here; everything started here is ended by
its pid, on success, on an exception and on Ctrl-C/SIGTERM; the namespace has no name and vanishes
with the last process in it; the lab deletes its user.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import http.client
import importlib.metadata
import importlib.util
import itertools
import json
import logging
import os
import pickle
import platform
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import httpx2
import paramiko

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import delay_proxy  # noqa: E402  (bench/ is this script's directory)
import footprint  # noqa: E402

import rc_mcp  # noqa: E402
from testbed.harness import ClaudeAi, ThreadedServer, call, connect, ssh_env  # noqa: E402
from testbed.lab import DevServer, listening_socket  # noqa: E402

SECRET = footprint.SECRET  # footprint.token_flow signs in with this secret's client
# Not the tests' user, and one per checkout: the suite, and benchmarks of two checkouts, may run at once.
USER = "rcb" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:6]
DIRS = [f"bench/p{i}" for i in range(10)]  # one claude per directory
MISSING_ID = "nosuch-000000"
START_DELAY = 0.5  # the fake claude's connect_delay: seconds from launch until it prints its URL
PENDING = 8  # starts waiting for claude while list_sessions is timed
SHORT_TOOLS = ("list_sessions", "list_projects", "stop_session")
CONCURRENT = 20  # calls at once in the concurrency rows
Result = dict[str, Any]


# ── Small helpers ──
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def with_pdeathsig(argv: list[str]) -> list[str]:
    """argv, ended with SIGTERM if this process dies first (util-linux setpriv, when there)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else argv


def end_process(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL, to this one process (by its pid), and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def raise_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


# ── SSH floors and counters ──
def raw_transport(dev: DevServer) -> paramiko.Transport:
    """A paramiko connection as rc_mcp opens it (TCP_NODELAY before connect), authenticated."""
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.connect((dev.host, dev.port))
    transport = paramiko.Transport(sock)
    transport.start_client(timeout=30)
    if transport.get_remote_server_key().get_base64() != dev.host_key_line[1]:
        raise RuntimeError("the lab's sshd offered an unexpected host key")
    transport.auth_publickey(dev.user, paramiko.Ed25519Key.from_private_key_file(str(dev.keys["ed25519"])))
    return transport


def raw_exec(transport: paramiko.Transport, script: str) -> tuple[int, str]:
    """The script as rc_mcp's runner sends it (`/bin/sh -c`), on a new channel: exit status, stdout."""
    with transport.open_session(timeout=60) as channel:
        channel.exec_command("/bin/sh -c " + shlex.quote(script))
        out = bytearray()
        while chunk := channel.recv(65536):
            out += chunk
        return channel.recv_exit_status(), out.decode(errors="replace")


def keepalive_ms(transport: paramiko.Transport) -> float:
    """One SSH protocol round trip and nothing else: a global request sshd has no handler for
    (`keepalive@openssh.com`, what OpenSSH's ServerAliveInterval sends), answered REQUEST_FAILURE."""
    start = time.perf_counter()
    transport.global_request("keepalive@openssh.com", wait=True)
    elapsed = ms_since(start)
    if not transport.is_active():
        raise RuntimeError("the floors' SSH connection closed")
    return elapsed


def fresh_ssh_ms(dev: DevServer) -> float:
    """A fresh OpenSSH connection running `true`: what a new connection per call costs at least."""
    start = time.perf_counter()
    argv = ["ssh", "-F", str(dev.ssh_config), "-n", dev.ssh_alias, "true"]
    subprocess.run(argv, check=True, timeout=60, stdin=subprocess.DEVNULL, capture_output=True)
    return ms_since(start)


class SSHCounts:
    """Channel opens and exec/shell requests by paramiko in this process, except on `excluded`
    transports (the floors' own connection, which also carries the keepalive round trips; those
    open no channel either): patched into paramiko by install()."""

    def __init__(self) -> None:
        self.opens = 0
        self.execs = 0
        self.shells = 0
        self.excluded: set[int] = set()

    def snapshot(self) -> tuple[int, int, int]:
        return self.opens, self.execs, self.shells

    def install(self) -> None:
        counts = self
        open_session = paramiko.Transport.open_session
        exec_command = paramiko.Channel.exec_command
        invoke_shell = paramiko.Channel.invoke_shell

        def counted_open(transport: paramiko.Transport, *args: Any, **kwargs: Any) -> paramiko.Channel:
            if id(transport) not in counts.excluded:
                counts.opens += 1
            return open_session(transport, *args, **kwargs)

        def counted_exec(channel: paramiko.Channel, command: str) -> None:
            if id(channel.get_transport()) not in counts.excluded:
                counts.execs += 1
            exec_command(channel, command)

        def counted_shell(channel: paramiko.Channel, *args: Any, **kwargs: Any) -> None:
            if id(channel.get_transport()) not in counts.excluded:
                counts.shells += 1
            invoke_shell(channel, *args, **kwargs)

        setattr(paramiko.Transport, "open_session", counted_open)  # noqa: B010  (mypy: no method assignment)
        setattr(paramiko.Channel, "exec_command", counted_exec)  # noqa: B010
        setattr(paramiko.Channel, "invoke_shell", counted_shell)  # noqa: B010


class CountingApp:
    """ASGI wrapper: HTTP requests to /mcp and the TCP connections they came on (client ports)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests = 0
        self.peers: set[tuple[Any, ...]] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/mcp"):
            self.requests += 1
            self.peers.add(tuple(scope.get("client") or ()))
        await self.app(scope, receive, send)


# ── Fresh processes: the SDK import, cold starts, RSS ──
WRITE_RSS = "sys.stdout.write([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"
IMPORT_SDK = "import mcp.server, sys; " + WRITE_RSS
IMPORT_LIBRARIES = "import mcp.server, paramiko, uvicorn, sys; " + WRITE_RSS  # the libraries rc_mcp runs on
# How the server is deployed (the Dockerfile's CMD): importing the module runs its byte-compiled
# .pyc. `python rc_mcp.py` compiles the 6,800-line module on every start instead.
SERVE_COMPILED = ("-c", "import sys, rc_mcp; sys.exit(rc_mcp.main())")
SERVE_SCRIPT = (str(ROOT / "rc_mcp.py"),)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def compile_module() -> None:
    """Byte-compile rc_mcp.py in the checkout (__pycache__), as the Dockerfile does at build time."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "rc_mcp.py"], cwd=ROOT, check=True, timeout=120)


def bytecode_current(source: Path) -> bool:
    """Whether the interpreter would load `source` from its cached .pyc (the header's mtime and size)."""
    try:
        header = Path(importlib.util.cache_from_source(str(source))).read_bytes()[:16]
    except OSError:
        return False
    stat = source.stat()
    return (
        header[:4] == importlib.util.MAGIC_NUMBER
        and int.from_bytes(header[4:8], "little") == 0  # timestamp-based
        and int.from_bytes(header[8:12], "little") == int(stat.st_mtime) & 0xFFFFFFFF
        and int.from_bytes(header[12:16], "little") == stat.st_size & 0xFFFFFFFF
    )


def cpu_ms(pid: int) -> float:
    """The user + system CPU time a process has used so far, in milliseconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def import_floor(env: dict[str, str], code: str = IMPORT_SDK) -> tuple[float, int]:
    """`python -c "import …"`: milliseconds (exit included) and its RSS in KiB."""
    start = time.perf_counter()
    done = subprocess.run(
        with_pdeathsig([sys.executable, "-c", code]),
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return ms_since(start), int(done.stdout)


def http_request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=30)) as conn:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()


def mcp_post(port: int, token: str, message: dict[str, Any]) -> tuple[int, bytes]:
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    return http_request(port, "POST", "/mcp", json.dumps(message).encode(), headers)


INITIALIZE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
}
TOOLS_LIST: dict[str, Any] = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}


def rpc_message(content_type: str, body: bytes) -> dict[str, Any]:
    """The JSON-RPC response in an HTTP answer: a JSON body, or the last `data:` event of an SSE stream."""
    if content_type.startswith("text/event-stream"):
        events = [line[5:].strip() for line in body.decode().splitlines() if line.startswith("data:")]
        return dict(json.loads(events[-1])) if events else {}
    return dict(json.loads(body))


class PlainClient:
    """MCP without the SDK client: JSON-RPC requests posted straight to /mcp with the SDK client's own
    access token, on a pool of kept connections (httpx2, the SDK's HTTP client, without the SDK's
    OAuth provider, whose lock sends one request at a time when the answers are plain JSON)."""

    def __init__(self, url: str, token: str, connections: int) -> None:
        self.http = httpx2.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"},
            limits=httpx2.Limits(max_connections=connections, max_keepalive_connections=connections),
            timeout=httpx2.Timeout(60),
        )
        self.ids = itertools.count(1)
        self.headers: dict[str, str] = {}

    async def post(self, message: dict[str, Any]) -> httpx2.Response:
        return await self.http.post("/mcp", json=message, headers=self.headers)

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        message = {"jsonrpc": "2.0", "id": next(self.ids), "method": method, "params": params or {}}
        response = await self.post(message)
        answer = rpc_message(response.headers.get("content-type", ""), response.content)
        if response.status_code != 200 or not isinstance(answer.get("result"), dict):
            raise RuntimeError(f"{method} answered {response.status_code}: {response.content[:300]!r}")
        return dict(answer["result"])

    async def initialize(self) -> None:
        """Once, first (the server is stateless: later requests need no session)."""
        result = await self.request("initialize", INITIALIZE["params"])
        self.headers = {"MCP-Protocol-Version": str(result["protocolVersion"])}
        response = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if response.status_code != 202:
            raise RuntimeError(f"notifications/initialized answered {response.status_code}")

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result = await self.request("tools/call", {"name": tool, "arguments": arguments})
        if result.get("isError") or not isinstance(result.get("structuredContent"), dict):
            raise RuntimeError(f"{tool} failed: {result!r:.300}")
        return dict(result["structuredContent"])

    async def close(self) -> None:
        await self.http.aclose()


class ServerProcess:
    """rc_mcp in SSH mode against the lab, on a fixed port (its tokens name the URL): started as the
    Dockerfile starts it (the module imported from the checkout, byte-compiled), or as a script."""

    def __init__(self, dev: DevServer, tmp: Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **ssh_env(dev, tmp / "state" / "tokens.json", SECRET),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "SERVER_URL": self.url,
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, token: str | None, argv: tuple[str, ...] = SERVE_COMPILED) -> tuple[float, float]:
        """Spawn `python ARGV…`; milliseconds until GET /health answers 200, and (with a token)
        until the first authenticated initialize + tools/list has answered."""
        began = time.perf_counter()
        self.proc = subprocess.Popen(
            with_pdeathsig([sys.executable, *argv]),
            cwd=self.tmp,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        health = tools = float("nan")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_request(self.port, "GET", "/health")[0] == 200:
                    health = ms_since(began)
                    break
            time.sleep(0.002)
        else:
            raise RuntimeError(f"rc_mcp never answered /health (exit status {self.proc.poll()})")
        if token is not None:
            for message in (INITIALIZE, TOOLS_LIST):
                status, body = mcp_post(self.port, token, message)
                if status != 200 or b'"result"' not in body:
                    raise RuntimeError(f"{message['method']} answered {status}: {body[:300]!r}")
            tools = ms_since(began)
        return health, tools

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc)
            self.proc = None


# ── The measurements (in a worker process: on loopback, or inside the namespace) ──
class Worker:
    def __init__(self, dev: DevServer, options: dict[str, Any]) -> None:
        self.dev = dev
        self.repeat: int = options["repeat"]
        self.warmup: int = options["warmup"]
        self.starts: int = options["starts"]
        self.cold: int = options["cold"]
        self.calls: int = options["calls"]
        self.pending_window: float = options["pending_window"]
        self.figures: dict[str, Result] = {}
        self.counts = SSHCounts()
        self.scripts: dict[str, str] = {}  # the last script each tool ran, as the server ran it

    def figure(self, key: str, values: list[float], floor: list[float] | float, **extra: Any) -> None:
        floors = floor if isinstance(floor, list) else [floor]
        self.figures[key] = {"median": median(values), "floor": median(floors), "n": len(values), **extra}

    async def timed(self, fn: Callable[[], Awaitable[Any]], check: Callable[[Any], bool] | None = None) -> float:
        start = time.perf_counter()
        result = await fn()
        elapsed = ms_since(start)
        if check is not None and not check(result):
            raise RuntimeError(f"unexpected result: {result!r:.300}")
        return elapsed

    async def run(self) -> dict[str, Result]:
        self.counts.install()
        tmp = Path(tempfile.mkdtemp(prefix="rc-bench-"))
        transport = raw_transport(self.dev)
        self.counts.excluded.add(id(transport))
        sock = listening_socket()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = rc_mcp.load_config({**ssh_env(self.dev, tmp / "tokens.json", SECRET), "SERVER_URL": url})
        app = rc_mcp.create_app(config)
        counting = CountingApp(app)
        self.capture_scripts(app)
        server = ThreadedServer(counting, sock, lifespan="on")
        claude = ClaudeAi(SECRET)
        try:
            async with connect(url, claude) as client:
                await self.warm_tools(client, app, counting, transport)
                await self.start_rows(client, app, counting, transport)
                await self.concurrent_rows(client)
                assert claude.storage.tokens is not None
                plain = PlainClient(url, claude.storage.tokens.access_token, CONCURRENT)
                try:
                    await self.plain_concurrent_rows(plain)
                finally:
                    await plain.close()
                await self.pending_rows(client)
        finally:
            transport.close()
            server.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        await self.process_rows()
        return self.figures

    def capture_scripts(self, app: Any) -> None:
        """Remember each script the server runs (the floors replay exactly that script)."""
        sessions = app.sessions
        original = sessions._run

        async def capturing(script: str, **kwargs: Any) -> Any:
            self.scripts["last"] = script
            return await original(script, **kwargs)

        sessions._run = capturing

    async def warm_tools(self, client: Any, app: Any, counting: CountingApp, transport: paramiko.Transport) -> None:
        log("warm tool calls, their raw exec floors, fresh `ssh host true`")
        calls = {
            "list_sessions": (lambda: call(client, "list_sessions"), lambda r: r["sessions"] == []),
            "list_projects": (lambda: call(client, "list_projects"), lambda r: len(r["projects"]) > 0),
            "stop_session": (lambda: call(client, "stop_session", id=MISSING_ID), lambda r: not r["stopped"]),
        }
        ssh_true = [fresh_ssh_ms(self.dev) for _ in range(max(self.repeat // 3, 5))]
        true_floor, keepalive = [], []
        for _ in range(self.warmup):
            keepalive_ms(transport)
        for _ in range(self.repeat):  # interleaved
            true_floor.append(await self.raw_timed(transport, "true"))
            keepalive.append(keepalive_ms(transport))
        self.figures["ssh_true"] = {"median": median(ssh_true), "n": len(ssh_true)}
        self.figures["keepalive"] = {"median": median(keepalive), "n": len(keepalive)}
        self.figure("raw.true", true_floor, true_floor)
        for name, (fn, check) in calls.items():
            for _ in range(self.warmup):
                await fn()
            script = self.scripts["last"]
            for _ in range(self.warmup):
                raw_exec(transport, script)
            before = self.counters(app, counting)
            tool, raw = [], []
            for _ in range(self.repeat):  # interleaved: drift hits both alike
                tool.append(await self.timed(fn, check))
                raw.append(await self.raw_timed(transport, script))
            self.per_call(name, before, self.counters(app, counting), self.repeat)
            self.figure(f"tool.{name}", tool, raw, ssh_true=median(ssh_true))
            self.figure(f"raw.{name}", raw, true_floor)

    async def raw_timed(self, transport: paramiko.Transport, script: str) -> float:
        start = time.perf_counter()
        status, _ = raw_exec(transport, script)
        elapsed = ms_since(start)
        if status != 0:
            raise RuntimeError(f"the raw exec failed with status {status}")
        return elapsed

    def counters(self, app: Any, counting: CountingApp) -> dict[str, int]:
        opens, execs, shells = self.counts.snapshot()
        runner = app.runner
        return {
            "opens": opens,
            "execs": execs,
            "shells": shells,
            "connects": getattr(runner, "connects", 0),
            "http": counting.requests,
            "tcp": len(counting.peers),
        }

    def per_call(self, name: str, before: dict[str, int], after: dict[str, int], calls: int) -> None:
        self.figures[f"count.{name}"] = {key: (after[key] - before[key]) / calls for key in before}

    async def claude_run(self, name: str, since: float) -> dict[str, float]:
        """The fake claude server of session `name` that started after `since` (wall clock), from
        its trace and its ready log: milliseconds from `since` until it ran (its trace line), from
        its exec until it had painted its URL (claude's own delay), and from its pane's fork until
        its exec (the pane waiting for the go signal)."""
        deadline = time.monotonic() + 5
        while True:
            server = (["remote-control"], ["rc"])
            runs = [r for r in self.dev.fake_claude_trace() if r.get("name") == name and r["ts"] >= since]
            runs = [r for r in runs if r.get("argv", [])[:1] in server]
            ready = [r for r in self.dev.fake_claude_ready() if runs and r.get("pid") == runs[0]["pid"]]
            if runs and ready and runs[0].get("exec_ts") is not None:
                run = runs[0]
                return {
                    "launch": (run["ts"] - since) * 1000,
                    "own": (ready[0]["ts"] - run["exec_ts"]) * 1000,
                    "fork_gap": (run["exec_ts"] - (run.get("fork_ts") or run["exec_ts"])) * 1000,
                }
            if time.monotonic() > deadline:
                raise RuntimeError(f"no trace and ready line of the fake claude for {name}: {runs}")
            await asyncio.sleep(0.02)

    async def start_rows(self, client: Any, app: Any, counting: CountingApp, transport: paramiko.Transport) -> None:
        log(f"start_session ×{self.starts} (claude prints its URL after {START_DELAY} s), raw exec of its script")
        tool, raw, stops, launches, own, raw_own, margins, raw_margins, gaps = ([] for _ in range(9))
        before = self.counters(app, counting)
        for i in range(self.starts + 1):  # the first one untimed
            path = DIRS[i % len(DIRS)]
            t_start, wall = time.perf_counter(), time.time()
            started = await call(client, "start_session", name=f"b{i}", path=path)
            elapsed = ms_since(t_start)
            start_script = self.scripts["last"]
            if started["status"] != "ready":
                raise RuntimeError(f"start failed: {started}")
            run = await self.claude_run(f"b{i}", wall)
            if i == 0:
                before = self.counters(app, counting)
            t_stop = time.perf_counter()
            stopped = await call(client, "stop_session", id=started["id"])
            stop_ms = ms_since(t_stop)
            stop_script = self.scripts["last"]
            if not stopped["stopped"]:
                raise RuntimeError(f"stop failed: {stopped}")
            if i == 0:
                before = self.counters(app, counting)
                continue
            tool.append(elapsed)
            stops.append(stop_ms)
            launches.append(run["launch"])
            own.append(run["own"])
            margins.append(elapsed - run["own"])
            gaps.append(run["fork_gap"])
            wall = time.time()
            raw_ms = await self.raw_timed(transport, start_script)  # the same session again
            raw_run = await self.claude_run(f"b{i}", wall)
            raw.append(raw_ms)
            raw_own.append(raw_run["own"])
            raw_margins.append(raw_ms - raw_run["own"])
            await self.raw_timed(transport, stop_script)
        after = self.counters(app, counting)
        self.figures["count.start_session"] = {key: (after[key] - before[key]) / (2 * self.starts) for key in before}
        self.figure("tool.start_session", tool, raw)
        self.figure("start_delay", tool, START_DELAY * 1000)
        self.figure("start_own", tool, own, margin=median(margins))
        self.figure("raw.start_session", raw, raw_own, margin=median(raw_margins))
        self.figure("claude_own", own, START_DELAY * 1000)
        self.figures["start_fork_gap"] = {"median": median(gaps), "n": len(gaps)}
        self.figures["stop_live"] = {"median": median(stops), "n": len(stops)}
        version = [await self.raw_timed(transport, '"$HOME/.local/bin/claude" --version') for _ in range(self.starts)]
        self.figure("start_launch", launches, version)

    async def walls(self, fn: Callable[[], Awaitable[Any]]) -> list[float]:
        """Wall time of CONCURRENT calls of `fn` at once, a few rounds."""
        walls = []
        for _ in range(max(self.repeat // 5, 3)):
            start = time.perf_counter()
            await asyncio.gather(*(fn() for _ in range(CONCURRENT)))
            walls.append(ms_since(start))
        return walls

    async def concurrent_rows(self, client: Any) -> None:
        """Against one call by the same client, right before: by now the state holds the records of
        the ended starts, which list_sessions reads (the warm rows ran before any start)."""
        log(f"{CONCURRENT} concurrent calls, MCP SDK client")
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "list_tools": client.list_tools,
            "list_sessions": functools.partial(call, client, "list_sessions"),
            "list_projects": functools.partial(call, client, "list_projects"),
        }
        for key, fn in calls.items():
            one = [await self.timed(fn) for _ in range(self.repeat)]
            self.figure(f"conc.{key}", await self.walls(fn), one)

    async def plain_concurrent_rows(self, plain: PlainClient) -> None:
        log(f"{CONCURRENT} concurrent calls, plain HTTP client ({CONCURRENT} connections)")
        await plain.initialize()
        # Untimed: the pool opens its connections (the SDK client's one is open by now too).
        await asyncio.gather(*(plain.request("tools/list") for _ in range(CONCURRENT)))
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "list_tools": functools.partial(plain.request, "tools/list"),
            "list_sessions": functools.partial(plain.call, "list_sessions"),
            "list_projects": functools.partial(plain.call, "list_projects"),
        }
        for key, fn in calls.items():
            for _ in range(self.warmup):
                await fn()
            one = [await self.timed(fn) for _ in range(self.repeat)]
            self.figure(f"plain.{key}", await self.walls(fn), one)

    async def pending_rows(self, client: Any) -> None:
        log(f"list_sessions while {PENDING} starts wait for claude ({self.pending_window:g} s)")
        launched = time.time()
        starts = [
            asyncio.create_task(call(client, "start_session", name=f"pend{i}", path=DIRS[i])) for i in range(PENDING)
        ]
        try:
            deadline = time.monotonic() + self.pending_window / 2
            while time.monotonic() < deadline:  # until the 8 claudes run (their trace lines)
                traced = [r for r in self.dev.fake_claude_trace() if r.get("ts", 0) >= launched - 1]
                if len({r.get("name") for r in traced if str(r.get("name", "")).startswith("pend")}) >= PENDING:
                    break
                await asyncio.sleep(0.02)
            busy: list[float] = []
            blocked = 0
            end = launched + self.pending_window - 0.5
            while time.time() < end and len(busy) < self.repeat and not any(t.done() for t in starts):
                busy.append(await self.timed(lambda: call(client, "list_sessions")))
                if any(t.done() for t in starts):
                    blocked += 1  # it came back only once a start had finished
            started = await asyncio.gather(*starts)
        except BaseException:
            for task in starts:
                task.cancel()
            raise
        try:
            idle = [await self.timed(lambda: call(client, "list_sessions")) for _ in range(self.repeat)]
        finally:
            for item in started:
                await call(client, "stop_session", id=item["id"])
        self.figure("pending", busy, idle, blocked=blocked)

    async def process_rows(self) -> None:
        log(f"cold starts ×{self.cold} (byte-compiled, and as a script), the imports, RSS over {self.calls} calls")
        if not bytecode_current(ROOT / "rc_mcp.py"):
            raise RuntimeError("rc_mcp.py has no current .pyc: run `python -m compileall -q rc_mcp.py` first")
        tmp = Path(tempfile.mkdtemp(prefix="rc-bench-cold-"))
        with listening_socket() as sock:
            port = sock.getsockname()[1]
        server = ServerProcess(self.dev, tmp, port)
        try:
            server.start(None)
            token = footprint.token_flow(port, server.url)
            server.stop()
            floors, floor_rss, libs_ms, libs_rss, health, tools, script = ([] for _ in range(7))
            for i in range(self.cold + 1):  # the first of each untimed (page cache), all interleaved
                floor_ms, kib = import_floor(server.env)
                lib_ms, lib_kib = import_floor(server.env, IMPORT_LIBRARIES)
                health_ms, tools_ms = server.start(token)
                server.stop()
                script_ms, _ = server.start(None, SERVE_SCRIPT)
                server.stop()
                if i:
                    floors.append(floor_ms)
                    floor_rss.append(kib / 1024)
                    libs_ms.append(lib_ms)
                    libs_rss.append(lib_kib / 1024)
                    health.append(health_ms)
                    tools.append(tools_ms)
                    script.append(script_ms)
            self.figure("cold.health", health, floors)
            self.figure("cold.tools", tools, floors)
            self.figure("cold.script", script, floors)
            self.figures["import.libraries"] = {"median": median(libs_ms), "n": len(libs_ms)}
            server.start(token)
            assert server.proc is not None
            rss_start = rss_kib(server.proc.pid) / 1024
            self.figure("rss.start", [rss_start], floor_rss)
            self.figure("rss.start_libs", [rss_start], libs_rss)
            rss = await self.many_calls(server)
            self.figure("rss.end", [rss[-1]], rss_start)
            self.figure("rss.growth", [rss[-1] - rss[0]], 0.0, first=min(100, self.calls // 2))
        finally:
            server.stop()
            shutil.rmtree(tmp, ignore_errors=True)

    async def many_calls(self, server: ServerProcess) -> list[float]:
        """`calls` tool calls (the three short tools in turn, 10 at a time): RSS in MiB after the
        100th and after the last. Also the server's CPU time per call between the two (a figure)."""
        assert server.proc is not None
        pid, marks, cpu = server.proc.pid, [], []
        first = min(100, self.calls // 2)
        names = [("list_sessions", {}), ("list_projects", {}), ("stop_session", {"id": MISSING_ID})]
        async with connect(server.url, ClaudeAi(SECRET)) as client:
            done = 0
            while done < self.calls:
                batch = min(10, self.calls - done, first - done if done < first else self.calls)
                await asyncio.gather(
                    *(call(client, names[(done + k) % 3][0], **names[(done + k) % 3][1]) for k in range(batch))
                )
                done += batch
                if done == first:
                    marks.append(rss_kib(pid) / 1024)
                    cpu.append(cpu_ms(pid))
        marks.append(rss_kib(pid) / 1024)
        cpu.append(cpu_ms(pid))
        self.figure("cpu.call", [(cpu[-1] - cpu[0]) / max(self.calls - first, 1)], float("nan"))
        return marks


def worker_main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)  # before the SDK asks for INFO: progress lines only
    for noisy in ("httpx", "httpx2", "mcp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    raise_on_sigterm()
    delay_proxy.die_with_parent(os.getppid())
    if args.netns:  # before any thread: every thread and child made from now on is in it
        fd = os.open(args.netns, os.O_RDONLY)
        try:
            delay_proxy.libc_call("setns", fd, delay_proxy.CLONE_NEWNET)
        finally:
            os.close(fd)
    state = pickle.loads(Path(args.worker).read_bytes())
    dev = DevServer.__new__(DevServer)
    dev.__dict__.update(state["dev"])
    figures = asyncio.run(Worker(dev, state["options"]).run())
    Path(args.out).write_text(json.dumps(figures))
    return 0


# ── The parent: the lab, the namespace, the workers, the table ──
@contextlib.contextmanager
def delay_namespace(port: int, rtt_ms: float, max_seconds: float) -> Iterator[str]:
    """The delay proxy in front of the lab's port; yields the path of its namespace."""
    argv = [sys.executable, str(BENCH / "delay_proxy.py"), "--port", str(port), "--delay", str(rtt_ms / 2000)]
    argv += ["--max-seconds", str(max_seconds), "--parent", str(os.getpid())]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("ready "):
            raise RuntimeError(f"the delay proxy did not start (exit status {proc.poll()})")
        yield line.split()[1]
    finally:
        end_process(proc)


def run_worker(dev: DevServer, options: dict[str, Any], netns: str | None, timeout: float) -> dict[str, Result]:
    state = {"dev": {**dev.__dict__, "_proc": None}, "options": options}
    with tempfile.TemporaryDirectory(prefix="rc-bench-run-") as tmp:
        state_file, out = Path(tmp) / "state.pickle", Path(tmp) / "figures.json"
        state_file.write_bytes(pickle.dumps(state))
        argv = [sys.executable, str(Path(__file__).resolve()), "--worker", str(state_file), "--out", str(out)]
        proc = subprocess.Popen(argv + (["--netns", netns] if netns else []), stdin=subprocess.DEVNULL)
        try:
            status = proc.wait(timeout=timeout)
        finally:
            end_process(proc)
        if status != 0:
            raise RuntimeError(f"the benchmark worker failed (exit status {status})")
        return dict(json.loads(out.read_text()))


def prepare(dev: DevServer, pending_delay: float) -> None:
    """Between phases: no tmux server, no state; the fake claude's delays."""
    dev.reset()
    dev.run("mkdir -p " + " ".join(f"projects/{d}" for d in DIRS)).check_returncode()
    pending = {f"pend{i}": {"connect_delay": pending_delay} for i in range(PENDING)}
    dev.fake_claude_config({"connect_delay": START_DELAY, "spinner_interval": 0.05, "names": pending})


def machine_info() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip().split(",")[0]
    tmux = subprocess.run(["tmux", "-V"], capture_output=True, text=True).stdout.strip()
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("mcp", "paramiko", "uvicorn"))
    return (
        f"Linux {platform.release()}, {cpu} × {os.cpu_count()}, Python {platform.python_version()}, "
        f"{ssh}, {tmux}, {versions}, rc_mcp {rc_mcp.VERSION}"
    )


# ── The table ──
def fmt(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "–"
    if unit == "ms":
        return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:.2f}"


def ratio(value: float, floor: float) -> str:
    return f"{value / floor:.2f}×" if floor and floor == floor and value == value else "–"


def verdict(met: bool, text: str) -> str:
    return f"**met** ({text})" if met else f"**missed** ({text})"


def build_table(phases: dict[str, dict[str, Result]], rtt_ms: float) -> list[str]:
    loop, far = phases["loopback"], phases.get("rtt")
    both = [("loopback", loop)] + ([(f"{rtt_ms:g} ms", far)] if far else [])
    header = "| figure | floor |" + "".join(f" {n}: median | floor | × |" for n, _ in both) + " target | result |"
    lines = [header, "|" + "---|" * (4 + 3 * len(both))]

    def cells(key: str, unit: str, floor_key: str = "floor") -> list[str]:
        out = []
        for _, figures in both:
            f = figures.get(key, {})
            value, floor = f.get("median", float("nan")), f.get(floor_key, float("nan"))
            out += [fmt(value, unit), fmt(floor, unit), ratio(value, floor)]
        return out

    def row(figure: str, floor: str, values: list[str], target: str = "", result: str = "") -> None:
        lines.append(f"| {figure} | {floor} | " + " | ".join(values) + f" | {target} | {result} |")

    def by_ratio(key: str, limit: float, phases: list[tuple[str, dict[str, Result]]], note: str = "") -> str:
        out = []
        for name, figures in phases:
            if key in figures:
                r = figures[key]["median"] / figures[key]["floor"]
                out.append(f"{name}: " + verdict(r <= limit, f"{r:.2f}×{note}"))
        return "; ".join(out)

    def by_margin(key: str, limit_ms: float) -> str:
        """median − floor, or the figure's own `margin` (the median of per-sample differences)."""
        out = []
        for name, figures in both:
            if key in figures:
                extra = figures[key].get("margin", figures[key]["median"] - figures[key]["floor"])
                out.append(f"{name}: " + verdict(extra <= limit_ms, f"{extra:+.0f} ms"))
        return "; ".join(out)

    def by_value(key: str, limit: float) -> str:
        values = [(name, figures[key]["median"]) for name, figures in both if key in figures]
        return "; ".join(f"{name}: " + verdict(v <= limit, f"{v:.1f} MiB") for name, v in values)

    far_only = both[1:]
    for tool in SHORT_TOOLS:
        label = "`stop_session` (no such id)" if tool == "stop_session" else f"`{tool}`"
        if tool == "list_sessions":
            target, result = "≤ 1.6× raw exec on loopback", by_ratio("tool.list_sessions", 1.6, both[:1])
        else:
            target, result = "", ""
        if far_only:
            target += ("; " if target else "") + f"≤ 1.2× raw exec at {rtt_ms:g} ms"
            result += ("; " if result else "") + by_ratio(f"tool.{tool}", 1.2, far_only)
        row(
            f"{label} warm, whole stack", "raw paramiko exec of its script", cells(f"tool.{tool}", "ms"), target, result
        )
        row(f"{label} warm, whole stack", "fresh OpenSSH `ssh host true`", cells(f"tool.{tool}", "ms", "ssh_true"))
    row("`start_session` warm, whole stack", "raw paramiko exec of its script", cells("tool.start_session", "ms"))
    for tool in SHORT_TOOLS:
        row(f"raw exec of `{tool}`'s script", "raw exec of `true`", cells(f"raw.{tool}", "ms"))
    values = []
    for _, figures in both:
        values += [fmt(figures.get("keepalive", {}).get("median", float("nan")), "ms"), "", ""]
    row("one SSH protocol round trip: `keepalive@openssh.com` (sshd answers REQUEST_FAILURE)", "", values)
    if far:
        # One round trip as this run's network has it: the proxy's own time per crossing included.
        unit = far["keepalive"]["median"] - loop["keepalive"]["median"]
        values = ["", "", "", fmt(unit, "ms"), fmt(rtt_ms, "ms"), ratio(unit, rtt_ms)]
        row(f"effective round trip: keepalive at {rtt_ms:g} ms − on loopback", "the proxy's nominal delay", values)
        for tool in SHORT_TOOLS:
            extra = far[f"tool.{tool}"]["median"] - loop[f"tool.{tool}"]["median"]
            trips, floor = extra / unit, (far[f"raw.{tool}"]["median"] - loop[f"raw.{tool}"]["median"]) / unit
            values = ["", "", "", f"{trips:.2f}", f"{floor:.2f}", ratio(trips, floor)]
            what = f"`{tool}`: SSH round trips per call ((time at {rtt_ms:g} ms − on loopback) ÷ effective round trip)"
            note = f"{trips:.2f}; ÷ {rtt_ms:g} ms: {extra / rtt_ms:.2f}"
            row(what, "the same for its raw exec", values, "exactly 1", verdict(0.85 <= trips <= 1.15, note))
    for tool in (*SHORT_TOOLS, "start_session"):
        values = []
        for _, figures in both:
            c = figures.get(f"count.{tool}", {})
            values += [f"{c.get('opens', 0):.2f} / {c.get('execs', 0):.2f} / {c.get('shells', 0):.2f}", "1 / 1 / 0", ""]
        label = "start_session` + `stop_session" if tool == "start_session" else tool
        row(f"`{label}`: SSH channel opens / exec / shell requests per call", "raw exec", values)
    values = []
    for _, figures in both:
        per_call = [figures.get(f"count.{t}", {}).get("tcp", 0) for t in SHORT_TOOLS]
        http = [figures.get(f"count.{t}", {}).get("http", 0) for t in SHORT_TOOLS]
        values += [f"{median(per_call):.2f} (of {median(http):.2f} requests)", "0", ""]
    row("new TCP connections client → rc_mcp per short call", "a kept connection", values)
    blocked = " ".join(str(int(f.get("pending", {}).get("blocked", 0))) for _, f in both)
    row(
        f"`list_sessions` with {PENDING} starts pending",
        f"idle, the same {PENDING} sessions",
        cells("pending", "ms"),
        "≤ 3×",
        by_ratio("pending", 3.0, both) + (f" (calls that waited for a start to end: {blocked})" if blocked else ""),
    )
    clients = (
        ("conc", "MCP SDK client (its OAuth lock: one request at a time)", "one call, SDK client"),
        ("plain", f"plain HTTP client ({CONCURRENT} connections, the same token)", "one call, plain client"),
    )
    for prefix, client, one in clients:
        for tool in ("list_sessions", "list_projects"):
            row(f"{CONCURRENT} concurrent `{tool}` (wall), {client}", one, cells(f"{prefix}.{tool}", "ms"))
        row(f"{CONCURRENT} concurrent `tools/list` (wall, no SSH), {client}", one, cells(f"{prefix}.list_tools", "ms"))
    own = "claude's own delay (its exec → URL printed), per start"
    row(
        "`start_session`",
        own,
        cells("start_own", "ms"),
        "`start_session` − claude's own delay ≤ 0.2 s (median over starts)",
        by_margin("start_own", 200),
    )
    row("`start_session`", f"the fake's `connect_delay` ({START_DELAY:g} s)", cells("start_delay", "ms"))
    row("raw exec of the start script", own, cells("raw.start_session", "ms"))
    row("claude's own delay: the fake's exec → URL printed", "its `connect_delay`", cells("claude_own", "ms"))
    floor = "raw exec of the fake's `claude --version`"
    row("`start_session`: call → fake claude running (its trace)", floor, cells("start_launch", "ms"))
    floor = '`python -c "import mcp.server"`'
    deployed = 'byte-compiled (`python -c "import sys, rc_mcp; sys.exit(rc_mcp.main())"`)'
    for key, label in (("cold.health", "`/health`"), ("cold.tools", "first authenticated `tools/list`")):
        row(f"cold start to {label}, {deployed}", floor, cells(key, "ms"), "≤ import + 0.15 s", by_margin(key, 150))
    row("cold start to `/health`, `python rc_mcp.py` (compiles the module)", floor, cells("cold.script", "ms"))
    calls = loop.get("rss.growth", {}).get("calls", "")
    first = loop.get("rss.growth", {}).get("first", 100)
    row("RSS after start (byte-compiled)", "RSS of `import mcp.server`", cells("rss.start", "MiB"))
    libraries = "RSS of `import mcp.server, paramiko, uvicorn` (the libraries' own share)"
    row("RSS after start (byte-compiled)", libraries, cells("rss.start_libs", "MiB"))
    row(f"RSS after {calls} calls", "RSS after start", cells("rss.end", "MiB"), "≤ 78 MiB", by_value("rss.end", 78))
    row(f"RSS growth, call {first} → {calls}", "none", cells("rss.growth", "MiB"), "≤ 3 MiB", by_value("rss.growth", 3))
    row(
        f"rc_mcp's CPU time per short call (its own process, calls {first} → {calls}, 10 at a time)",
        "",
        cells("cpu.call", "ms"),
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description="rc_mcp's benchmark against the SSH lab: one Markdown table.")
    parser.add_argument("--quick", action="store_true", help="fewer samples (about half the time)")
    parser.add_argument("--rtt", type=float, default=50, help="round trip of the second phase, ms (0: loopback only)")
    parser.add_argument("--repeat", type=int, help="timed calls per warm row (default 30, --quick 10)")
    parser.add_argument("--calls", type=int, default=1000, help="calls for the RSS rows (default 1000)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--netns", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args)
    if os.geteuid() != 0:
        print("run as root: the lab creates a user, the delay phase a network namespace", file=sys.stderr)
        return 2
    ok, why = DevServer.available()
    if not ok:
        print(f"cannot start the SSH dev server: {why}", file=sys.stderr)
        return 2
    repeat = args.repeat or (10 if args.quick else 30)
    options = {
        "repeat": repeat,
        "warmup": 2 if args.quick else 3,
        "starts": 3 if args.quick else 5,
        "cold": 3 if args.quick else 5,
        "calls": max(args.calls, 20),
        "pending_window": 3.0 if args.quick else 4.0,
    }
    raise_on_sigterm()
    began = time.monotonic()
    compile_module()  # the cold-start and RSS rows start the byte-compiled module, as deployed
    phases: dict[str, dict[str, Result]] = {}
    log(f"starting the lab (sshd, user {USER}, tmux, the fake claude)")
    dev = DevServer.start(user=USER)
    try:
        for name, rtt in (("loopback", 0.0), ("rtt", args.rtt)):
            if name == "rtt" and rtt <= 0:
                continue
            log(f"phase: {'loopback' if not rtt else f'{rtt:g} ms round trip'}")
            prepare(dev, options["pending_window"] + 2)
            if not rtt:
                phases[name] = run_worker(dev, options, None, timeout=900)
            else:
                with delay_namespace(dev.port, rtt, max_seconds=1200) as netns:
                    phases[name] = run_worker(dev, options, netns, timeout=1200)
            for figures in phases.values():
                if "rss.growth" in figures:
                    figures["rss.growth"]["calls"] = options["calls"]
    finally:
        log("stopping the lab")
        dev.stop()
    print(
        f"Machine: {machine_info()}. Run: `python bench/run.py{' --quick' if args.quick else ''}`, "
        f"{repeat} timed calls per warm row, {time.monotonic() - began:.0f} s.\n"
    )
    print("\n".join(build_table(phases, args.rtt)))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_info(), "phases": phases}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
