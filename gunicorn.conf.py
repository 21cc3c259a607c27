"""gunicorn's settings for `gunicorn ployweb.wsgi` run from the project root (gunicorn reads
./gunicorn.conf.py by itself); flags on the command line override them.

Threads keep connections alive (HTTP/1.1 keep-alive: a browser's or a client's next request
skips the TCP handshake) and each keeps its database connection (WEB_CONN_MAX_AGE). SQLite
writers of all the processes queue on engine.writes' file lock, so two processes do not
sleep in SQLite's busy handler. WEB_CONCURRENCY (gunicorn's own variable) sets the processes.
"""

import multiprocessing
import os

workers = int(os.environ.get("WEB_CONCURRENCY") or min(multiprocessing.cpu_count(), 4))
worker_class = "gthread"
threads = 4
keepalive = 5
