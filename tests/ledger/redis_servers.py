"""Throwaway ``redis-server`` processes for the tests: one server, or a three-node cluster, on free ports.

Never the machine's own Redis: each server is started here on a port the OS
says is free, keeps nothing on disk, and is killed when the tests end.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["SERVER", "RedisServer", "free_port", "start_cluster"]

SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def free_port(bus: bool = False) -> int:
    """A port nothing listens on; with ``bus``, one whose cluster bus port (+10000) is free too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not bus:
            return port
        if port + 10000 < 65536:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


class RedisServer:
    """One ``redis-server`` on ``port``; :meth:`stop` and :meth:`start` again keep the port."""

    def __init__(self, directory: Path, *, cluster: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port(bus=cluster)
        self.directory = directory / str(self.port)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cluster = cluster
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        command = [SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.directory), *self.extra]
        if self.cluster:
            command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.cli("ping") not in ("PONG", "NOAUTH Authentication required."):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def cli(self, *args: str) -> str:
        done = subprocess.run([CLI, "-p", str(self.port), *args], capture_output=True, text=True, timeout=10)
        return done.stdout.strip()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


def start_cluster(directory: Path) -> list[RedisServer]:
    """Three primaries and no replicas, the slots spread over them, ready to serve."""
    nodes = [RedisServer(directory, cluster=True).start() for _ in range(3)]
    try:
        subprocess.run(
            [CLI, "--cluster", "create", *(n.address for n in nodes), "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            check=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while any("cluster_state:ok" not in n.cli("cluster", "info") for n in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis cluster did not become ready")
            time.sleep(0.05)
    except Exception:
        for node in nodes:
            node.stop()
        raise
    return nodes
