"""gunicorn's settings for `gunicorn ployweb.wsgi` run from the project root (gunicorn reads
./gunicorn.conf.py by itself); flags on the command line override them.

Threads keep connections alive (HTTP/1.1 keep-alive: a client's next request skips the TCP
handshake) and each keeps its database connection (WEB_CONN_MAX_AGE). On SQLite one process:
its threads take turns on engine.writes' lock, handed over at once, while the writers of
several processes would wait for each other in SQLite's busy handler, which sleeps whole
milliseconds (measured with bench.trigger_load: 2 processes cost 40-60% more CPU per trigger
than 1, and answered fewer; 2 or 4 threads fewer than 8). On a server database, a process per
core. WEB_CONCURRENCY sets the processes.
"""

import multiprocessing
import os

_server_database = os.environ.get("DATABASE_URL", "").startswith(("postgres", "postgresql"))
workers = int(
    os.environ.get("WEB_CONCURRENCY")
    or (min(multiprocessing.cpu_count(), 4) if _server_database else 1)
)
worker_class = "gthread"
threads = 8
keepalive = 5
