"""A TCP proxy that adds a fixed delay to every chunk, each way, in front of a port on 127.0.0.1.

It lives between a network namespace of its own and the host's loopback: it creates an empty
network namespace (only `lo`, brought up), listens on 127.0.0.1:PORT *inside* it, then returns to
the host namespace, where it connects every accepted connection to 127.0.0.1:PORT (the lab's sshd).
A process started in that namespace reaches the dev server at the usual address and port — known
hosts, SSH config and rc_mcp's settings unchanged — but only through this proxy: every chunk read is
written to the other side DELAY seconds later (in order, without waiting for the previous one), so
the round trip is 2 × DELAY. A new connection also waits one round trip before it is connected, as
a TCP handshake on a real link would. (There is no `netem` on these kernels; this replaces it.)

The namespace has no name (nothing in /run/netns): it exists while this process holds it and
processes run in it, and the kernel removes it with the last of them. The proxy is bounded: it
exits after --max-seconds, when its parent exits (PR_SET_PDEATHSIG), on SIGTERM/SIGINT, and
accepts at most --max-connections at once; every queue is bounded (backpressure, not memory).

Run by bench/run.py (as root: a network namespace needs CAP_SYS_ADMIN). On standard output it
prints one line once listening: `ready NAMESPACE_PATH` (`/proc/<pid>/fd/<n>`, for setns/nsenter).

    python bench/delay_proxy.py --port 2222 [--delay 0.025] [--max-seconds 900]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import struct
import sys
import time

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
CHUNK = 65536
QUEUE_CHUNKS = 256  # per direction: at most 16 MiB in flight


def libc_call(name: str, *args: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


def die_with_parent(parent: int) -> None:
    """SIGTERM to this process when the parent exits; exit now if it already has."""
    libc_call("prctl", PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        sys.exit("the parent has exited")


def loopback_up() -> None:
    """`ip link set lo up` in the current namespace (a new one starts with lo down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def listen_in_new_namespace(port: int) -> tuple[socket.socket, int]:
    """The listening socket on 127.0.0.1:port in a new network namespace, and an fd holding that
    namespace; the calling process is back in its own namespace when this returns."""
    host_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        libc_call("unshare", CLONE_NEWNET)
        try:
            namespace = os.open("/proc/self/ns/net", os.O_RDONLY)
            loopback_up()
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen(128)
        finally:
            libc_call("setns", host_ns, CLONE_NEWNET)  # sockets made from now on are the host's
    finally:
        os.close(host_ns)
    return listener, namespace


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer, each chunk written `delay` seconds after it was read."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

    async def send() -> None:
        while True:
            due, chunk = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not chunk:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while True:
            chunk = await reader.read(CHUNK)
            await queue.put((time.monotonic() + delay, chunk))
            if not chunk:
                break
        await sender
    finally:
        sender.cancel()


async def serve(listener: socket.socket, port: int, delay: float, deadline: float, max_connections: int) -> None:
    slots = asyncio.Semaphore(max_connections)

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if slots.locked():
            client_writer.close()
            return
        async with slots:
            upstream_writer = None
            try:
                await asyncio.sleep(2 * delay)  # the TCP handshake's round trip
                upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
                for writer in (client_writer, upstream_writer):
                    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await asyncio.gather(
                    pump(client_reader, upstream_writer, delay), pump(upstream_reader, client_writer, delay)
                )
            except (OSError, asyncio.CancelledError):  # a reset, or the proxy stopping
                pass
            finally:
                client_writer.close()
                if upstream_writer is not None:
                    upstream_writer.close()

    server = await asyncio.start_server(handle, sock=listener)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(deadline - time.monotonic(), 0))


def main() -> int:
    parser = argparse.ArgumentParser(description="Delay proxy in front of 127.0.0.1:PORT, in a namespace of its own.")
    parser.add_argument("--port", type=int, required=True, help="the port, in the new namespace and on the host")
    parser.add_argument("--delay", type=float, default=0.025, help="seconds added to each chunk, each way")
    parser.add_argument("--max-seconds", type=float, default=900, help="exit after this long (default 900)")
    parser.add_argument("--max-connections", type=int, default=64, help="connections at once (default 64)")
    parser.add_argument("--parent", type=int, default=os.getppid(), help="exit when this process has exited")
    args = parser.parse_args()
    die_with_parent(args.parent)
    deadline = time.monotonic() + args.max_seconds
    listener, namespace = listen_in_new_namespace(args.port)
    print(f"ready /proc/{os.getpid()}/fd/{namespace}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(listener, args.port, args.delay, deadline, args.max_connections))
    os.close(namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
