"""The figures the deploy files are sized from: cold start, memory, shutdown time.

    cold start   spawn of the byte-compiled module, as the Dockerfile starts it (`--script`:
                 `python rc_mcp.py`, which compiles it first), in local mode, until GET /health
                 answers 200, N runs
    RSS          `ps -o rss` of that server after R requests (/health, both OAuth metadata
                 documents, and fixed-client OAuth flows that write the token store)
    shutdown     SIGTERM until the process has exited

Run from the repository root with the runtime dependencies installed:
    python bench/footprint.py [--runs 7] [--requests 300] [--script]
Everything stays on 127.0.0.1; every process started here is stopped before it exits.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
SECRET = "footprint-secret-0123456789abcdef"
CLIENT_ID = hashlib.sha256(f"{SECRET}:client_id".encode()).hexdigest()[:36]
CLIENT_SECRET = hashlib.sha256(f"{SECRET}:client_secret".encode()).hexdigest()
CALLBACK = "https://claude.ai/api/mcp/auth_callback"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port: int, method: str, path: str, body: str | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def token_flow(port: int, server_url: str) -> str:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode(
        {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": CALLBACK,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "s",
            "resource": f"{server_url}/mcp",
        }
    )
    status, headers, _ = request(port, "GET", f"/authorize?{query}")
    assert status == 302, status
    code = parse_qs(urlsplit(headers["location"]).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "code_verifier": verifier,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "resource": f"{server_url}/mcp",
    }
    status, _, body = request(port, "POST", "/token", urlencode(form))
    assert status == 200, (status, body)
    return json.loads(body)["access_token"]


SERVE_COMPILED = "import sys, rc_mcp; sys.exit(rc_mcp.main())"  # the Dockerfile's CMD


def start(tmp: Path, port: int, script: bool = False) -> tuple[subprocess.Popen[bytes], float]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "MCP_SECRET": SECRET,
        "PROJECTS_BASE_DIR": str(tmp),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "TOKEN_STORE_PATH": str(tmp / "state" / "oauth-tokens.json"),
        "TMUX_TMPDIR": str(tmp),
        "PYTHONPATH": str(ROOT),
    }
    argv = [sys.executable, str(ROOT / "rc_mcp.py")] if script else [sys.executable, "-c", SERVE_COMPILED]
    began = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=tmp,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if request(port, "GET", "/health")[0] == 200:
                return proc, time.perf_counter() - began
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"rc_mcp.py never answered /health (exit status {proc.poll()})")


def stop(proc: subprocess.Popen[bytes]) -> float:
    began = time.perf_counter()
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.perf_counter() - began


def rss_kib(pid: int) -> int:
    return int(subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True).stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--script", action="store_true", help="start `python rc_mcp.py` (compiled at each start)")
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "rc_mcp.py")], check=True)
    colds, stops, rss_start, rss_after = [], [], [], []
    with tempfile.TemporaryDirectory() as tmpdir:
        for run in range(args.runs):
            tmp = Path(tmpdir) / str(run)
            tmp.mkdir()
            port = free_port()
            proc, cold = start(tmp, port, args.script)
            try:
                colds.append(cold)
                rss_start.append(rss_kib(proc.pid))
                server_url = f"http://localhost:{port}"
                paths = ["/health", "/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource"]
                for i in range(args.requests):
                    if i % 10 == 9:
                        token_flow(port, server_url)
                    else:
                        assert request(port, "GET", paths[i % 3])[0] == 200
                rss_after.append(rss_kib(proc.pid))
            finally:
                stops.append(stop(proc))
    ms = [round(c * 1000) for c in colds]
    print(f"cold start to /health 200: median {statistics.median(colds) * 1000:.0f} ms (runs: {ms})")
    print(f"RSS at start: median {statistics.median(rss_start) / 1024:.1f} MiB (max {max(rss_start) / 1024:.1f})")
    print(
        f"RSS after {args.requests} requests: median {statistics.median(rss_after) / 1024:.1f} MiB "
        f"(max {max(rss_after) / 1024:.1f})"
    )
    print(f"SIGTERM to exit (idle): median {statistics.median(stops) * 1000:.0f} ms (max {max(stops) * 1000:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
