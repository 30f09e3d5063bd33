"""rc_mcp imported once, then served by a fresh forked child on request: restarts cost a fork, not
an interpreter start and rc_mcp's imports (for tests that crash the server many times).

    python testbed/fork_server.py   # rc_mcp's environment, as for `python rc_mcp.py serve`

Prints `ready` once the configuration is loaded, then reads one command a line on stdin:

    start      fork a child that runs rc_mcp.serve(config); prints the child's pid
    wait PID   wait for that child to exit (end it yourself, e.g. SIGKILL); prints `exited PID CODE`

At end of input every child still running is killed (SIGKILL) and waited for. No thread or event
loop runs in the parent, so forking it is safe.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rc_mcp  # noqa: E402  (after the path above)


def main() -> int:
    environ = rc_mcp.read_environment()
    rc_mcp.configure_logging((environ.get("LOG_LEVEL") or "WARNING").upper())
    config = rc_mcp.load_config(environ)
    # What each child would otherwise import again: uvicorn and its protocol, and zxcvbn with its
    # dictionaries (the start-up warning about a weak MCP_SECRET).
    import uvicorn.lifespan.on  # noqa: F401
    import uvicorn.loops.asyncio  # noqa: F401
    import uvicorn.protocols.http.h11_impl  # noqa: F401

    rc_mcp.weak_secret_warning(config.mcp_secret)
    children: set[int] = set()
    print("ready", flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "start":
            pid = os.fork()
            if pid == 0:  # the child: serve until killed
                code = 70
                try:
                    code = rc_mcp.serve(config)
                finally:
                    os._exit(code)
            children.add(pid)
            print(pid, flush=True)
        elif command == "wait":
            pid = int(args[0])
            _, status = os.waitpid(pid, 0)
            children.discard(pid)
            print(f"exited {pid} {os.waitstatus_to_exitcode(status)}", flush=True)
        else:
            print(f"unknown command {command!r}", file=sys.stderr, flush=True)
            return 2
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
