"""Test settings: a fresh data folder per test session, shared with worker subprocesses."""

import os
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# Written to the environment (not only to settings) so that worker subprocesses inherit them.
# Each parallel (xdist) worker gets a folder of its own (its test database, queue and the fixture
# workflows' notes), not the one it inherits from the process that started it.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _XDIST_WORKER and os.environ.get("PLOY_TEST_DATA_WORKER") != _XDIST_WORKER:
    os.environ["PLOY_DATA_DIR"] = tempfile.mkdtemp(prefix=f"ploy-test-{_XDIST_WORKER}-")
    os.environ["PLOY_TEST_DATA_WORKER"] = _XDIST_WORKER
os.environ.setdefault("PLOY_DATA_DIR", tempfile.mkdtemp(prefix="ploy-test-"))
os.environ.setdefault("PLOY_CONFIG", str(TESTS / "workflows" / "ploy.yaml"))
os.environ.setdefault("PLOY_WORKER_TIMEOUT_SECONDS", "2")
os.environ.setdefault("PLOY_SWEEP_GRACE_SECONDS", "1")

from ployweb.settings import *  # noqa: E402,F403
from ployweb.settings import DATABASES, PLOY_DATA_DIR  # noqa: E402

# A real SQLite file (never :memory:), the same file the worker subprocesses open.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(PLOY_DATA_DIR / "test.sqlite3")}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
