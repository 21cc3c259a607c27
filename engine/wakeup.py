"""Wake idle workers at once when a message is queued on the SQLite queue.

Huey's SQLite queue is polled: an idle worker thread sleeps between polls. Every worker
process on the host listens on a Unix datagram socket in PLOY_DATA_DIR; whoever queues a
message sends each one a byte, and its sleeping threads poll right away instead of waiting
out their delay. Redis blocks on the queue itself and needs none of this.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

# Unix socket paths are short (108 bytes on Linux); a longer data folder polls as before.
MAX_PATH = 100
LISTENERS_CACHED_SECONDS = 1.0


def enabled() -> bool:
    """A SQLite queue (a file on this host) is polled; Redis blocks and needs no nudge."""
    return "filename" in settings.HUEY


def _folder() -> Path:
    return Path(settings.PLOY_DATA_DIR) / "wakeup"


class Listener:
    """This worker process's socket; `wait(seconds)` returns early when a nudge arrives."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._socket: socket.socket | None = None
        self._path = _folder() / f"{os.getpid()}.sock"

    def start(self) -> None:
        if not enabled() or len(str(self._path)) > MAX_PATH:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()  # a predecessor with this pid died without cleaning up
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(self._path))
        threading.Thread(
            target=self._listen, args=(self._socket,), name="ploy-wakeup", daemon=True
        ).start()

    def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        self.notify()

    def wait(self, seconds: float) -> None:
        with self._condition:
            self._condition.wait(seconds)

    def notify(self) -> None:
        with self._condition:
            self._condition.notify_all()

    def _listen(self, listening: socket.socket) -> None:
        while True:
            try:
                listening.recv(16)
            except OSError:
                return
            self.notify()


listener = Listener()

_cache: tuple[float, list[str]] = (0.0, [])


def nudge() -> None:
    """Tell every worker process on this host that a message is waiting."""
    global _cache
    if not enabled():
        return
    checked_at, paths = _cache
    if time.monotonic() - checked_at > LISTENERS_CACHED_SECONDS:
        folder = _folder()
        paths = [str(path) for path in folder.glob("*.sock")] if folder.is_dir() else []
        _cache = (time.monotonic(), paths)
    for path in paths:
        _send(path)


_sender = threading.local()


def _send(path: str) -> None:
    sender = getattr(_sender, "socket", None)
    if sender is None:
        sender = _sender.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.setblocking(False)
    try:
        sender.sendto(b"!", path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # its worker is gone
    except OSError:  # its buffer is full: it is awake already
        pass
