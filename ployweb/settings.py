"""Django settings: the only module that reads the environment (PLOY_*, DATABASE_URL, DJANGO_*)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dj_database_url
import django

BASE_DIR = Path(__file__).resolve().parent.parent

PLOY_DATA_DIR = Path(os.environ.get("PLOY_DATA_DIR") or BASE_DIR / ".ploy").resolve()
PLOY_DATA_DIR.mkdir(parents=True, exist_ok=True)
PLOY_CONFIG = Path(os.environ.get("PLOY_CONFIG") or BASE_DIR / "ploy.yaml").resolve()
# A worker silent this long is dead: its executions resume on a live worker.
PLOY_WORKER_TIMEOUT_SECONDS = float(os.environ.get("PLOY_WORKER_TIMEOUT_SECONDS") or 5)
# On SIGTERM or Ctrl-C, running step bodies get this long to finish before the worker exits.
PLOY_SHUTDOWN_SECONDS = float(os.environ.get("PLOY_SHUTDOWN_SECONDS") or 25)
# The leader re-queues executions whose queue message was lost this often, once overdue by
# the grace period.
PLOY_SWEEP_SECONDS = float(os.environ.get("PLOY_SWEEP_SECONDS") or 60)
PLOY_SWEEP_GRACE_SECONDS = float(os.environ.get("PLOY_SWEEP_GRACE_SECONDS") or 10)
PLOY_MAX_PAYLOAD_BYTES = int(os.environ.get("PLOY_MAX_PAYLOAD_BYTES") or 1024 * 1024)
PLOY_API_TOKEN = os.environ.get("PLOY_API_TOKEN") or None
# What a step attempt keeps of its logs and prints (engine.attempt_logs): the first and last half.
PLOY_ATTEMPT_LOG_BYTES = int(os.environ.get("PLOY_ATTEMPT_LOG_BYTES") or 64 * 1024)


def _secret_key() -> str:
    """A key from the environment, else one generated once and kept in the data folder."""
    if os.environ.get("DJANGO_SECRET_KEY"):
        return os.environ["DJANGO_SECRET_KEY"]
    path = PLOY_DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = os.environ.get("DJANGO_DEBUG", "").lower() in {"1", "true", "yes"}
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
ALLOWED_HOSTS = [
    host.strip()
    for host in (os.environ.get("DJANGO_ALLOWED_HOSTS") or ",".join(LOCAL_HOSTS)).split(",")
    if host.strip()
]
# A host beyond the local ones means a real deployment: the dashboard then needs a staff login
# (dashboard.access). Decided here, from the environment, before the test runner adds its own.
DASHBOARD_REQUIRES_LOGIN = any(host.lower() not in LOCAL_HOSTS for host in ALLOWED_HOSTS)
CSRF_TRUSTED_ORIGINS = [
    origin for origin in (os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS") or "").split(",") if origin
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "huey.contrib.djhuey",
    "ninja",
    "engine",
    "dashboard",
]
if django.VERSION < (6, 0):
    INSTALLED_APPS.append("template_partials")

MIDDLEWARE = [
    "ployweb.middleware.ContentLengthMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's, skipped for /api/ requests (ployweb.middleware.BrowserOnly).
    "ployweb.middleware.BrowserSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "ployweb.middleware.BrowserAuthenticationMiddleware",
    "ployweb.middleware.BrowserMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "ployweb.middleware.BrowserHtmxMiddleware",
    "dashboard.access.DashboardAccessMiddleware",
]

ROOT_URLCONF = "ployweb.urls"
WSGI_APPLICATION = "ployweb.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.access.access_context",
            ],
        },
    },
]

# SQLite serves the web process and several workers at once: WAL lets readers run beside the
# writer, the busy timeout makes writers queue instead of failing, and IMMEDIATE transactions
# take the write lock up front so a read-then-write transaction can never deadlock.
SQLITE_OPTIONS = {
    "timeout": 30,
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}


# Seconds a web thread keeps its database connection: a gunicorn process holds one per thread
# (processes x threads in all); `manage.py serve` closes a thread's connections when its client
# connection ends, since runserver starts a thread per client connection.
WEB_CONN_MAX_AGE = 600


def _database(url: str | None) -> dj_database_url.DBConfig:
    if not url:
        url = f"sqlite:///{PLOY_DATA_DIR / 'ploy.sqlite3'}"
    # Each web thread keeps its connection (WEB_CONN_MAX_AGE) and checks it before reuse, so a
    # request does not pay a new connection (~3 ms on PostgreSQL); workers keep theirs too
    # (WORKER_CONN_MAX_AGE).
    config = dj_database_url.parse(url, conn_max_age=WEB_CONN_MAX_AGE, conn_health_checks=True)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["OPTIONS"] = {**SQLITE_OPTIONS, **config.get("OPTIONS", {})}
    elif config["ENGINE"] == "django.db.backends.postgresql":
        config["OPTIONS"] = {**POSTGRES_OPTIONS, **config.get("OPTIONS", {})}
    return config


# PostgreSQL's JIT compiles a query whose estimated cost is high (a count over a big table, a
# grouped read of the running executions): 0.1-0.3 s of compiling for queries that run in a
# few milliseconds, on every request. The engine's queries are all short: no JIT.
POSTGRES_OPTIONS = {"options": "-c jit=off"}


DATABASES = {"default": _database(os.environ.get("DATABASE_URL"))}
# A worker thread runs execution after execution: it keeps its connection (Huey closes old ones
# around each task), and a dropped one is replaced before reuse instead of failing a run.
WORKER_CONN_MAX_AGE = 600


def _huey(url: str | None) -> dict[str, Any]:
    """Huey's storage: a SQLite file by default, Redis for scale-out."""
    # Results are never read: a message only says "look at execution X".
    common = {"name": "ployweb", "immediate": False, "utc": True, "results": False}
    # An idle consumer polls a SQLite queue with back-off; capped at 0.5 s (Huey's default is
    # 10 s), a new execution never waits long for an idle worker. Redis blocks instead of polling.
    # SIGTERM is graceful, like Ctrl-C (Huey's default makes it an immediate stop).
    consumer = {
        "workers": 4,
        "worker_type": "thread",
        "scheduler_interval": 1,
        "max_delay": 0.5,
        "periodic": False,
        "graceful_signal": "TERM",
        "shutdown_timeout": PLOY_SHUTDOWN_SECONDS,
    }
    if url and urlparse(url).scheme in {"redis", "rediss", "unix"}:
        # The priority queue lets released executions of dead workers jump a backlog.
        return {**common, "huey_class": "huey.PriorityRedisHuey", "url": url, "consumer": consumer}
    filename = urlparse(url).path if url else str(PLOY_DATA_DIR / "queue.sqlite3")
    return {
        **common,
        "huey_class": "engine.queue.SqliteQueue",
        "filename": filename,
        "consumer": consumer,
    }


HUEY = _huey(os.environ.get("PLOY_QUEUE_URL"))

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = PLOY_DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise serves from the finders until collectstatic runs
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "admin:login"


def _not_django(record: object) -> bool:
    """Django's own loggers print through the handlers of its DEFAULT_LOGGING, as ever."""
    name = getattr(record, "name", "")
    return name != "django" and not name.startswith("django.")


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"not_django": {"()": "django.utils.log.CallbackFilter", "callback": _not_django}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "root_console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["not_django"],
        },
    },
    # Every logger prints at INFO through the root, the workflows' own too (and a step body's
    # records are also kept with its attempt: engine.attempt_logs). Huey's has a handler of its
    # own, else run_huey adds one.
    "root": {"handlers": ["root_console"], "level": "INFO"},
    "loggers": {
        "engine": {"level": os.environ.get("PLOY_LOG_LEVEL", "INFO")},
        "huey": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
