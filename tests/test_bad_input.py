"""Bad input end to end, through a real `manage.py runserver` on a fresh SQLite file and, where it
answers on 127.0.0.1:5432, a fresh PostgreSQL database: every malformed body, header and filter
gets a clear 4xx (JSON under /api/), nothing is stored, and nothing answers 500. Unusual but
valid inputs are stored, read back and shown."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = "postgres://postgres@127.0.0.1:5432"


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True, kw_only=True)
class Reply:
    status: int
    content_type: str
    body: bytes

    def json(self) -> dict:
        assert self.content_type.startswith("application/json"), (self.status, self.body[:300])
        return json.loads(self.body)


@dataclass(frozen=True, kw_only=True)
class Server:
    """A `manage.py runserver` on its own database: what a user runs, not the test client."""

    port: int
    log: Path

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Reply(
                status=response.status,
                content_type=response.getheader("Content-Type", ""),
                body=response.read(),
            )
        finally:
            connection.close()

    def trigger(self, body: bytes, name: str = "SLEEPER") -> Reply:
        headers = {"Content-Type": "application/json"}
        return self.request("POST", f"/api/workflows/{name}/trigger", body, headers)

    def raw(self, request: bytes) -> Reply:
        """Bytes as they are sent, for framing http.client would not write."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as connection:
            connection.sendall(request)
            received = b""
            while chunk := connection.recv(65536):
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        return Reply(
            status=int(lines[0].split()[1]),
            content_type=headers.get("Content-Type", ""),
            body=body,
        )

    def execution_ids(self) -> list[str]:
        reply = self.request("GET", "/api/executions?limit=200")
        assert reply.status == 200, reply
        return [item["id"] for item in reply.json()["items"]]


def manage(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def running_server(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Server]:
    backend = request.param
    if backend == "postgres" and not reachable(5432):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    folder = tmp_path_factory.mktemp(f"bad-input-{backend}")
    database = f"ployweb_test_{uuid.uuid4().hex[:12]}"
    if backend == "postgres":
        import psycopg

        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        url = f"{POSTGRES}/{database}"
    else:
        url = f"sqlite:///{folder / 'ploy.sqlite3'}"
    env = {
        **{key: value for key, value in os.environ.items() if key != "PLOY_API_TOKEN"},
        "DJANGO_SETTINGS_MODULE": "ployweb.settings",
        "DATABASE_URL": url,
        "PLOY_QUEUE_URL": f"sqlite:///{folder / 'queue.sqlite3'}",
        "PLOY_DATA_DIR": str(folder),
    }
    env.pop("DJANGO_ALLOWED_HOSTS", None)
    manage(env, "migrate", "--verbosity", "0")
    port, log = free_port(), folder / "runserver.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "runserver",
                f"127.0.0.1:{port}",
                "--noreload",
            ],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: reachable(port) or process.poll() is not None, timeout=60)
        assert process.poll() is None, log.read_text()
        yield Server(port=port, log=log)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if backend == "postgres":
            import psycopg

            with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture
def server(running_server: Server) -> Iterator[Server]:
    """The server, and after the test a look at what it logged meanwhile: no 500, no traceback."""
    start = running_server.log.stat().st_size
    yield running_server
    with open(running_server.log, errors="replace") as log:
        log.seek(start)
        text = log.read()
    assert "Traceback" not in text and '" 500 ' not in text, text[-3000:]


# --- what the engine stores -------------------------------------------------------------------


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("\ud800", "a string contains a lone surrogate such as \\ud800"),
        ({"ok": ["fine", "x\udfff"]}, "lone surrogate"),
        ({"\udc00": 1}, "lone surrogate"),
        ("\ude00\ud83d", "lone surrogate"),
        ({"a": "\x00"}, "the NUL character"),
        (float("nan"), "Out of range float values are not JSON compliant"),
        pytest.param(10**5000, "Exceeds the limit (4300 digits)", id="5001-digits"),
        (nested(100_000), "it is nested too deeply"),
        ({1, 2}, "Object of type set is not JSON serializable"),
    ],
)
def test_to_json_refuses_what_a_database_or_a_page_cannot_hold(value, reason):
    from engine.errors import NotJSONSerializable
    from engine.payloads import to_json

    with pytest.raises(NotJSONSerializable) as caught:
        to_json(value, "the output of step 'x'")
    assert reason in str(caught.value)
    assert str(caught.value).startswith("the output of step 'x' is not JSON-serialisable (")


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("\ud83d\ude00", "😀"),  # a pair of halves is one character once stored
        ("😀 é \\ud800 \\u0000", "😀 é \\ud800 \\u0000"),  # escapes as plain text
        pytest.param(10**400, 10**400, id="401-digits"),
        (nested(128), nested(128)),
    ],
)
def test_to_json_keeps_what_every_database_can_hold(value, stored):
    from engine.payloads import to_json

    assert to_json(value, "the input") == stored


def test_an_error_with_nul_or_a_lone_surrogate_is_stored_escaped():
    """An attempt's error must be recorded whatever it says: PostgreSQL refuses NUL in text."""
    from engine.payloads import error_details

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    details = error_details(ValueError("bad \x00 byte and \ud800 half"))
    assert details["message"] == "bad \\x00 byte and \\ud800 half"
    assert "\x00" not in details["traceback"]
    json.dumps(details, ensure_ascii=False).encode("utf-8")
    assert error_details(Unprintable())["message"] == "<Unprintable: str() failed>"


# --- the trigger body -------------------------------------------------------------------------

SURROGATE = "a lone surrogate such as \\ud800"
BAD_BODIES = [
    (b'"\\ud800"', SURROGATE),
    (b'{"text": "x\\udc00y"}', SURROGATE),
    (b'{"\\udbff": 1}', SURROGATE),
    (b'["\\ude00\\ud83d"]', SURROGATE),  # both halves, in the wrong order
    (b'"a\\u0000b"', "a string contains the NUL character"),
    (b'{"\\u0000": 1}', "a string contains the NUL character"),
    (b'"a\x00b"', "not valid JSON (Invalid control character"),
    (b"\x00", "not valid JSON (Expecting value"),
    (b"NaN", "NaN is not a JSON value"),
    (b"[Infinity]", "Infinity is not a JSON value"),
    (b'{"a": -Infinity}', "-Infinity is not a JSON value"),
    (b"1e999", "Out of range float values are not JSON compliant"),
    (b"-1e400", "Out of range float values are not JSON compliant"),
    (b"9" * 5000, "Exceeds the limit (4300 digits) for integer string conversion"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON nested deeper than 128 levels"),
    (b'{"a":' * 129 + b"1" + b"}" * 129, "JSON nested deeper than 128 levels"),
    (b"\xff\xfe", "not UTF-8 text (invalid start byte at byte 0)"),
    (b'"\xed\xa0\x80"', "not UTF-8 text"),  # a surrogate encoded as UTF-8 bytes
    (b'"\xc0\xaf"', "not UTF-8 text"),  # an overlong encoding
    (b"{'a': 1}", "not valid JSON (Expecting property name enclosed in double quotes"),
]


@pytest.mark.parametrize(("body", "detail"), BAD_BODIES, ids=[repr(b[:24]) for b, _ in BAD_BODIES])
def test_a_bad_trigger_body_is_a_400_with_a_clear_detail(server: Server, body: bytes, detail):
    before = server.execution_ids()
    reply = server.trigger(body)
    assert reply.status == 400, reply
    assert detail in reply.json()["detail"]
    assert "\n" not in reply.json()["detail"]
    assert server.execution_ids() == before


ODD_BUT_VALID = [
    (b"1" + b"0" * 400, 10**400),
    (b"-" + b"7" * 4000, -int("7" * 4000)),
    (b"1.5e308", 1.5e308),
    (b"-0", 0),
    (b'"\\ud83d\\ude00 \xc3\xa9"', "😀 é"),
    (b'"\\\\u0000 and \\\\ud800 as text"', "\\u0000 and \\ud800 as text"),
    (b"[" * 128 + b"]" * 128, json.loads("[" * 128 + "]" * 128)),
    (b'{"\xef\xbf\xbf": "\\u0001\\u001f"}', {"\uffff": "\x01\x1f"}),
]


@pytest.mark.parametrize(
    ("body", "stored"), ODD_BUT_VALID, ids=[repr(b[:24]) for b, _ in ODD_BUT_VALID]
)
def test_an_odd_but_valid_input_is_stored_read_back_and_shown(server: Server, body, stored):
    reply = server.trigger(body)
    assert reply.status == 202, reply
    execution_id = reply.json()["executionId"]
    execution = server.request("GET", f"/api/executions/{execution_id}")
    assert execution.status == 200, execution
    read_back = execution.json()["input"]
    # PostgreSQL's jsonb writes 1.5e308 out in digits, which json.loads reads as an integer.
    assert read_back == stored or float(read_back) == stored
    for page in (f"/executions/{execution_id}/", "/", "/?workflow=sleeper"):
        shown = server.request("GET", page)
        assert shown.status == 200, (page, shown.body[:300])


# --- framing ----------------------------------------------------------------------------------


def post(head: str, body: bytes = b'{"a": 1}') -> bytes:
    return (
        "POST /api/workflows/SLEEPER/trigger HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nConnection: close\r\n{head}\r\n"
    ).encode() + body


CHUNKED = b"8\r\n" + b'{"a": 1}' + b"\r\n0\r\n\r\n"
FRAMING = [
    (
        post("Transfer-Encoding: chunked\r\n", CHUNKED),
        411,
        "the request body was sent chunked, without a Content-Length header",
    ),
    (
        post("Transfer-Encoding: chunked\r\nContent-Length: 18\r\n", CHUNKED),
        400,
        "both Transfer-Encoding: chunked and Content-Length",
    ),
    (post("Content-Length: -5\r\n"), 400, "must be the body's size in bytes, got '-5'"),
    (post("Content-Length: abc\r\n"), 400, "must be the body's size in bytes, got 'abc'"),
    (post("Content-Length: 0x8\r\n"), 400, "got '0x8'"),
]


@pytest.mark.parametrize(
    ("request_bytes", "status", "detail"),
    FRAMING,
    ids=["chunked", "chunked-and-length", "negative-length", "letters-length", "hex-length"],
)
def test_a_body_whose_length_cannot_be_trusted_is_refused(
    server: Server, request_bytes: bytes, status: int, detail: str
):
    """runserver hands Django a chunked body as empty: it was once triggered with null."""
    before = server.execution_ids()
    reply = server.raw(request_bytes)
    assert reply.status == status, reply
    assert detail in reply.json()["detail"]
    assert server.execution_ids() == before


def test_a_body_with_its_length_is_still_read(server: Server):
    reply = server.raw(post("Content-Length: 8\r\n"))
    assert reply.status == 202, reply
    execution = server.request("GET", f"/api/executions/{reply.json()['executionId']}")
    assert execution.json()["input"] == {"a": 1}


# --- filters and ids --------------------------------------------------------------------------

NUL = quote("a\x00b")


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        (f"/?workflow={NUL}", 200, "the workflow filter contains a NUL character: remove it"),
        (f"/?status={NUL}", 200, "status must be one of"),
        (f"/?q={NUL}", 200, "is not (the start of) an execution id"),
        (f"/?cursor={NUL}", 200, "is not valid: pass the nextCursor"),
        (f"/?from={NUL}&trigger={NUL}", 200, "Trigger"),
        (f"/executions/{NUL}/", 404, ""),
        (f"/api/executions?workflow={NUL}", 422, "String should match pattern"),
        (f"/api/executions?status={NUL}", 422, "status must be one of"),
        (f"/api/executions/{NUL}", 404, "no execution with id"),
        (f"/api/workflows/{NUL}/trigger", 404, "unknown workflow"),
    ],
)
def test_a_nul_in_a_filter_or_an_id_is_refused_cleanly(server: Server, path, status, text):
    method = "POST" if path.endswith("/trigger") else "GET"
    reply = server.request(method, path)
    assert reply.status == status, (reply.status, reply.body[:500])
    assert text in reply.body.decode("utf-8", "replace").replace("&#x27;", "'")


# --- the dashboard's trigger form -------------------------------------------------------------


def form_post(server: Server, data: dict[str, str]) -> Reply:
    """The form as a browser sends it: with the CSRF cookie and token the page handed out."""
    cookie = SimpleCookie()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request("GET", "/")
    response = connection.getresponse()
    cookie.load(response.getheader("Set-Cookie", ""))
    html = response.read().decode()
    connection.close()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    body = "&".join(f"{key}={quote(value)}" for key, value in data.items())
    return server.request(
        "POST",
        "/trigger/",
        body.encode(),
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={cookie['csrftoken'].value}",
            "X-CSRFToken": token,
        },
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("9" * 5000, "Not valid JSON: Exceeds the limit (4300 digits)"),
        ("[" * 100_000, "Not valid JSON: JSON nested deeper than 128 levels."),
        ("NaN", "Not valid JSON: NaN is not a JSON value."),
        ("[1e999]", "Out of range float values are not JSON compliant"),
        ('"\\ud800"', "a lone surrogate such as \\ud800"),
        ('"\\u0000"', "a string contains the NUL character"),
        ("a\x00b", "Null characters are not allowed."),
        ('{"a": ', "Not valid JSON: Expecting value at line 1, column 7."),
    ],
)
def test_the_dashboard_form_refuses_bad_json_inline(server: Server, text: str, error: str):
    before = server.execution_ids()
    reply = form_post(server, {"binding": "SLEEPER", "input": text})
    assert reply.status == 422, (reply.status, reply.body[:500])
    assert error in reply.body.decode().replace("&quot;", '"').replace("&#x27;", "'")
    assert server.execution_ids() == before


def test_a_bad_host_header_answers_json_under_api(server: Server):
    """Django refuses it before any view runs, with the site's handler400."""
    reply = server.request("GET", "/api/workflows", headers={"Host": "bad host"})
    assert reply.status == 400
    assert reply.json()["detail"].startswith("bad request")


# --- a server error that does happen ----------------------------------------------------------

SERVER_ERRORS = """
import django
django.setup()
from django.test import Client, RequestFactory
from django.urls import get_resolver
import engine.api

def broken(execution_id, **options):
    raise RuntimeError("boom inside the API")

engine.api.records.load_record_page = broken
response = Client(HTTP_HOST="localhost").get("/api/executions/x")
print(response.status_code, response.content.decode())
handler = get_resolver().resolve_error_handler(500)
try:
    raise RuntimeError("boom outside any view")
except RuntimeError:
    response = handler(RequestFactory().get("/api/executions"))
print(response.status_code, response.content.decode())
"""


def test_a_server_error_is_answered_as_json_and_its_traceback_reaches_the_log():
    """With the project's own settings (DEBUG off), as a deployment runs: Django alone would log
    nothing of either, and answer the second with its HTML page."""
    environment = {
        **{key: value for key, value in os.environ.items() if key != "PLOY_API_TOKEN"},
        "DJANGO_SETTINGS_MODULE": "ployweb.settings",
        "DJANGO_DEBUG": "",
    }
    result = subprocess.run(
        [sys.executable, "-c", SERVER_ERRORS],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.splitlines() == [
        '500 {"detail": "internal server error (RuntimeError): see the server\'s log"}',
        '500 {"detail": "internal server error: see the server\'s log"}',
    ], result.stderr
    assert "GET /api/executions/x failed" in result.stderr
    assert "RuntimeError: boom inside the API" in result.stderr
    assert "GET /api/executions failed" in result.stderr
    assert "RuntimeError: boom outside any view" in result.stderr
    assert result.stderr.count("Traceback (most recent call last)") == 2


def test_a_dashboard_post_with_a_malformed_content_length_is_a_400(client):
    response = client.post(
        "/trigger/",
        data="binding=DATA_FLOW",
        CONTENT_LENGTH="abc",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400
