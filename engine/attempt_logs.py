"""Logs per attempt: what a step body logs (Python `logging`), prints, or passes to `step.log`,
kept with the attempt that ran it.

A capture belongs to the thread running the body: it is a ContextVar, and every thread has a
context of its own, so steps running at once on other worker threads or parallel branches never
mix their lines. step.run's `timeout=` helper thread runs in a copy of the caller's context and
writes to the same capture. Everything captured still reaches the process's own output.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import sys
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import TextIO, TypedDict

from django.conf import settings

from engine import live_logs
from engine.errors import StepMisuse
from engine.payloads import storable

PRINT_LEVEL = "PRINT"
STEP_LOG_LOGGER = "step.log"
MAX_DATA_DEPTH = 32
MAX_INT_BITS = 10_000  # about 3,000 digits, under Python's limit of 4,300 for int <-> str
# The attributes every LogRecord has: the others came from `extra=` and are the line's data.
RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# Set on the worker-log copy of a step.log line, so that it is not captured a second time.
ALREADY_CAPTURED = "ploy_already_captured"
_STREAM_EMIT = logging.StreamHandler.emit.__code__

worker_log = logging.getLogger("engine.step_log")


class LogLine(TypedDict):
    at: str  # ISO 8601 UTC, ending in Z
    level: str  # the logging level's name, PRINT for print(), or NOTE for the engine's own
    logger: str  # the logger's name, `stdout` / `stderr` for print(), `step.log`
    message: str
    data: dict[str, object] | None  # step.log's keywords, or a record's `extra=` fields


_current: contextvars.ContextVar[AttemptLog | None] = contextvars.ContextVar(
    "ploy_attempt_log", default=None
)


class AttemptLog:
    """The capture of one attempt, in the thread that enters it (a context manager); its lines
    are kept from the first write on. Cheap when nothing is written: the hot path."""

    __slots__ = ("_limit", "_lines", "_token", "attempt")
    _creating = threading.Lock()  # the body and its timeout thread may both write first

    def __init__(self, limit: int | None = None, *, attempt: int | None = None) -> None:
        self._limit = limit
        self._lines: BoundedLines | None = None
        self._token: contextvars.Token[AttemptLog | None] | None = None
        # the id of the attempt row its lines reach while it runs (engine.live_logs)
        self.attempt = attempt

    def __enter__(self) -> AttemptLog:
        install()
        self._token = _current.set(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if self.attempt is not None:
            live_logs.forget(self)  # the body is over: the attempt's end writes the rest

    def add(
        self,
        level: str,
        logger: str,
        message: str,
        data: dict[str, object] | None = None,
        at: datetime | None = None,
    ) -> None:
        self._buffer().add(_line(level, logger, message, data, at))

    def write(self, stream: str, text: str) -> None:
        """print()'s text: one line per newline, the rest kept until the next write or the end."""
        self._buffer().write(stream, text)

    def end(self) -> list[LogLine] | None:
        """The attempt's lines, None when there are none; later writes are dropped (a body
        that outlived its timeout goes on writing to the process's output only)."""
        if self._lines is None:
            with AttemptLog._creating:
                if self._lines is None:
                    self._lines = ENDED
        return self._lines.end()

    def so_far(self) -> tuple[int, list[LogLine]]:
        """How many lines were written so far, and the lines kept of them (complete lines:
        print()'s text without its newline yet waits for the end)."""
        lines = self._lines
        return (0, []) if lines is None else lines.so_far()

    def _buffer(self) -> BoundedLines:
        if self._lines is None:
            with AttemptLog._creating:
                if self._lines is None:
                    limit = settings.PLOY_ATTEMPT_LOG_BYTES if self._limit is None else self._limit
                    self._lines = BoundedLines(limit)
                    if self.attempt is not None:
                        live_logs.watch(self, self.attempt)
        return self._lines


class BoundedLines:
    """Lines up to `limit` bytes of JSON: the first and the last half are kept (the start says
    what the body was doing, the end what it did last), and a note says how much was cut
    between them."""

    def __init__(self, limit: int) -> None:
        self._half = limit // 2
        self._head: list[LogLine] = []
        self._head_bytes = 0
        self._head_full = False
        self._tail: deque[tuple[LogLine, int]] = deque()
        self._tail_bytes = 0
        self._cut = 0
        self._partial: dict[str, str] = {}  # print()'s text before its newline, by stream
        # The body and its timeout thread may both write; reentrant, since a signal handler
        # that logs may interrupt a write in the same thread.
        self._lock = threading.RLock()
        self._lines: list[LogLine] | None = None
        self._closed = False
        self._written = 0  # lines kept or cut so far

    def add(self, line: LogLine) -> None:
        with self._lock:
            if not self._closed:
                self._keep(line)

    def write(self, stream: str, text: str) -> None:
        with self._lock:
            if self._closed:
                return
            *complete, rest = (self._partial.get(stream, "") + text).split("\n")
            if len(rest) > self._half:  # no newline in sight: do not hold it all
                complete, rest = [*complete, rest], ""
            self._partial[stream] = rest
            for piece in complete:
                self._keep(_line(PRINT_LEVEL, stream, piece.removesuffix("\r")))

    def end(self) -> list[LogLine] | None:
        with self._lock:
            if not self._closed:
                self._closed = True
                for stream, rest in self._partial.items():
                    if rest:
                        self._keep(_line(PRINT_LEVEL, stream, rest))
                self._lines = self._kept() or None
            return self._lines

    def so_far(self) -> tuple[int, list[LogLine]]:
        with self._lock:
            return self._written, self._kept()

    def _kept(self) -> list[LogLine]:
        note = [_line("NOTE", "ployweb", self._note())] if self._cut else []
        return self._head + note + [line for line, _ in self._tail]

    def _note(self) -> str:
        kept = self._half * 2 // 1024
        return (
            f"... {self._cut} bytes cut: an attempt keeps the first and the last half of its "
            f"{kept} KiB of logs"
        )

    def _keep(self, line: LogLine) -> None:
        self._written += 1
        size = _size(line)
        if size > self._half // 2:  # one line leaves room for others in its half
            line, size = self._shortened(line, size)
        if not self._head_full:
            if self._head_bytes + size <= self._half:
                self._head.append(line)
                self._head_bytes += size
                return
            self._head_full = True
        self._tail.append((line, size))
        self._tail_bytes += size
        while self._tail_bytes > self._half:
            _, dropped = self._tail.popleft()
            self._tail_bytes -= dropped
            self._cut += dropped

    def _shortened(self, line: LogLine, size: int) -> tuple[LogLine, int]:
        """A line longer than a quarter of the limit, cut to fit (its data first, then the end
        of its message), saying how much was cut."""
        limit = self._half // 2 - 40  # room for the note
        if line["data"] is not None:
            line = {**line, "data": None}
        encoded = line["message"].encode("utf-8")
        keep = max(len(encoded) - (_size(line) - limit), 0)
        message = encoded[:keep].decode("utf-8", "ignore")
        cut = size - _size({**line, "message": message})
        line = {**line, "message": f"{message} ... {cut} bytes cut"}
        return line, _size(line)


ENDED = BoundedLines(0)  # what an attempt that wrote nothing ends with: no lines, closed
ENDED.end()


class CaptureHandler(logging.Handler):
    """On the root logger: a record emitted in a thread that runs a step body joins its attempt's
    log; in any other thread it does nothing (the process's own handlers print it as before)."""

    def handle(self, record: logging.LogRecord) -> bool:
        log = _current.get()
        if log is None or getattr(record, ALREADY_CAPTURED, False):
            return False
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{FORMATTER.formatException(record.exc_info)}"
            if record.stack_info:
                message = f"{message}\n{record.stack_info}"
            at = datetime.fromtimestamp(record.created, UTC)
            log.add(record.levelname, record.name, message, _extra(record), at)
        except Exception:  # a record whose message cannot be built, as logging itself does
            self.handleError(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


FORMATTER = logging.Formatter()
HANDLER = CaptureHandler()


class CapturingStream:
    """sys.stdout or sys.stderr: every write goes to the stream as before, and is copied to the
    attempt log of the writing thread, when it runs a step body."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self._stream = stream
        self._name = name

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        log = _current.get()
        # A logging handler writing here has already had its record captured.
        if log is not None and sys._getframe(1).f_code is not _STREAM_EMIT:
            log.write(self._name, text)
        return written

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def install() -> None:
    """The root logger's handler and the stream proxies, once per process; checked at each
    capture, since a test runner (or a user) may have replaced sys.stdout or the handlers."""
    if HANDLER not in logging.root.handlers:
        logging.root.addHandler(HANDLER)
    if type(sys.stdout) is not CapturingStream and sys.stdout is not None:
        sys.stdout = CapturingStream(sys.stdout, "stdout")
    if type(sys.stderr) is not CapturingStream and sys.stderr is not None:
        sys.stderr = CapturingStream(sys.stderr, "stderr")


def step_log(message: object, data: dict[str, object]) -> None:
    """`step.log(message, **data)`: a structured line in this thread's attempt, also written to
    the worker's log. Values that are not JSON are stored as their repr()."""
    log = _current.get()
    if log is None:
        raise StepMisuse(
            "step.log() was called outside a step body: its lines belong to the attempt running "
            "in this thread; call it inside the function given to step.run() (between steps, "
            "use logging or print: they reach the worker's log)"
        )
    text = _text(message, str)
    values = _data(data)
    log.add("INFO", STEP_LOG_LOGGER, text, values)
    if values:
        worker_log.info("%s %s", text, json.dumps(values), extra={ALREADY_CAPTURED: True})
    else:
        worker_log.info("%s", text, extra={ALREADY_CAPTURED: True})


def as_text(line: LogLine) -> str:
    """One line as a log file shows it: time, level, logger, message and data."""
    data = f" {json.dumps(line['data'], ensure_ascii=False)}" if line.get("data") else ""
    return f"{line['at']} {line['level']} {line['logger']}: {line['message']}{data}"


def _line(
    level: str,
    logger: str,
    message: str,
    data: dict[str, object] | None = None,
    at: datetime | None = None,
) -> LogLine:
    moment = at or datetime.now(UTC)
    return {
        "at": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": storable(level),
        "logger": storable(logger),
        "message": storable(message),
        "data": data,
    }


def _size(line: LogLine) -> int:
    return len(json.dumps(line, ensure_ascii=False).encode("utf-8", "backslashreplace"))


def _extra(record: logging.LogRecord) -> dict[str, object] | None:
    extra = {key: value for key, value in vars(record).items() if key not in RECORD_ATTRIBUTES}
    return _data(extra)


def _data(values: dict[str, object]) -> dict[str, object] | None:
    if not values:
        return None
    return {_text(key, str): _jsonable(value, 1) for key, value in values.items()}


def _jsonable(value: object, depth: int) -> object:
    """`value` as JSON every database stores; what JSON cannot hold becomes its repr()."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):  # past Python's digit limit, no text can be made of it
        return value if value.bit_length() < MAX_INT_BITS else f"<int of {value.bit_length()} bits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return storable(value)
    if depth < MAX_DATA_DEPTH and isinstance(value, list | tuple):
        return [_jsonable(item, depth + 1) for item in value]
    if depth < MAX_DATA_DEPTH and isinstance(value, dict):
        return {_text(key, str): _jsonable(item, depth + 1) for key, item in value.items()}
    return _text(value, repr)


def _text(value: object, convert: Callable[[object], str]) -> str:
    if isinstance(value, str):
        return storable(value)
    try:
        return storable(convert(value))
    except Exception:  # the value's own __str__ or __repr__ (user code) failed
        return f"<{type(value).__name__}: {convert.__name__}() failed>"
