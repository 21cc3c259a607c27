"""engine.writes: one SQLite write transaction at a time, across threads and processes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.db import connection

from engine.writes import serialized

pytestmark = pytest.mark.django_db(transaction=True)

TRY_LOCK = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("held")
else:
    print("free")
"""


def other_process_sees() -> str:
    lock_file = f"{connection.settings_dict['NAME']}-writelock"
    result = subprocess.run(
        [sys.executable, "-c", TRY_LOCK, lock_file], capture_output=True, text=True, timeout=30
    )
    return result.stdout.strip()


def test_another_process_waits_while_this_one_writes():
    assert other_process_sees() == "free"
    with serialized():
        assert other_process_sees() == "held"
        with serialized():  # nested: still held, and released only by the outermost
            pass
        assert other_process_sees() == "held"
    assert other_process_sees() == "free"


def test_inside_a_transaction_it_takes_no_lock():
    from django.db import transaction

    with transaction.atomic(), serialized():
        assert other_process_sees() == "free"
