"""Servers for tests, on 127.0.0.1 only, every wait bounded: the app in a uvicorn thread of this
process (models loaded once per module), or `roberta-torch serve` as a child process."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time

from .paths import REPO_ROOT, TESTS_DIR


@contextlib.contextmanager
def app_server(app, startup_timeout: float = 60):
    """Serve `app` (its lifespan included) on an ephemeral loopback port; yield its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("The test server did not start.")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


class ServeProcess:
    """`python -m roberta_torch serve ARGS --port 0` as a child; `url` once it listens."""

    def __init__(self, args: list[str], env: dict | None = None, startup_timeout: float = 120):
        environment = {**os.environ, **(env or {})}
        environment["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR), environment.get("PYTHONPATH", "")])
        self.process = subprocess.Popen(
            [sys.executable, "-m", "roberta_torch", "serve", *args, "--host", "127.0.0.1", "--port", "0"],
            env=environment, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + startup_timeout
        self.url = None
        while self.url is None:
            for line in list(self.lines):
                match = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
                if match:
                    self.url = match.group(1)
            if self.url is None:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("roberta-torch serve did not start:\n" + "".join(self.lines[-40:]))
                time.sleep(0.05)

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(10)
        return self.process.returncode
