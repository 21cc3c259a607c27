"""The server of `manage.py serve`: Django's runserver without the keep-alive stall.

wsgiref writes a response's headers and its body in two separate `send()` calls. With Nagle's
algorithm on, the body waits for the client to acknowledge the headers, and on a reused
connection the client delays that acknowledgement by ~40 ms (Linux's delayed ACK): every
request after a connection's first paid it. TCP_NODELAY on each accepted socket sends the body
at once, as gunicorn does on its listening socket.

Database connections are kept between requests (CONN_MAX_AGE); runserver starts a thread per
client connection, so that thread closes its own when the client connection ends.
"""

from __future__ import annotations

import socket

from django.contrib.staticfiles.management.commands.runserver import Command as RunserverCommand
from django.core.servers.basehttp import WSGIServer
from django.db import connections


class NoDelayWSGIServer(WSGIServer):
    """runserver's WSGIServer, with Nagle's algorithm off on every connection it accepts, and
    the database connections of a client connection's thread closed when it ends."""

    def get_request(self) -> tuple[socket.socket, object]:
        connection, address = super().get_request()
        if connection.family in (socket.AF_INET, socket.AF_INET6):
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address

    def close_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        # Called in the thread that served this client connection, after its last request.
        connections.close_all()
        super().close_request(request)


class NoDelayRunserver(RunserverCommand):
    """`runserver` (with its static files handling) on NoDelayWSGIServer."""

    server_cls = NoDelayWSGIServer
