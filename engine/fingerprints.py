"""A short hash of a workflow's code, stored on each execution at its trigger, so its page can
say when the code has changed since it started (a replay then runs the new code)."""

from __future__ import annotations

import hashlib
import inspect
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

LENGTH = 12  # hex digits of sha256 shown and stored: enough to tell two versions apart

# Weak: the handlers of a registry that was replaced by a reload go with it.
_cache: weakref.WeakKeyDictionary[Callable[..., object], str] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def of_handler(handler: Callable[..., object]) -> str:
    """The fingerprint of the code of `handler`, worked out once per process per handler: the
    registry asks for it right after importing the module, so it is the file that was run (a
    reload gives new functions, hence a fresh reading)."""
    try:
        with _lock:
            known = _cache.get(handler)
    except TypeError:  # a callable object that cannot be a weak key: worked out each time
        return _compute(handler)
    if known is not None:
        return known
    digest = _compute(handler)
    with _lock:
        _cache[handler] = digest
    return digest


def _compute(handler: Callable[..., object]) -> str:
    """The bytes of the file that defines the handler (the workflow module, with the helpers
    it defines next to the handler), and the handler's own source and name: two handlers of one
    file differ, and so does a handler whose module is unchanged but whose code is not."""
    hasher = hashlib.sha256()
    target = inspect.unwrap(handler)
    hasher.update(
        f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}".encode()
    )
    try:
        source_file = inspect.getsourcefile(target)
        if source_file:
            hasher.update(Path(source_file).read_bytes())
        hasher.update(inspect.getsource(target).encode())
    except (OSError, TypeError):
        pass  # built-in or generated code: its name alone
    return hasher.hexdigest()[:LENGTH]


def changed(stored: str | None, current: str | None) -> str | None:
    """`current` when it differs from the execution's `stored` one; None when the same, or
    when either is unknown (an execution older than fingerprints, a workflow not defined here)."""
    return current if stored and current and current != stored else None
