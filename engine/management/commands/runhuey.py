"""`manage.py runhuey`: the worker, Huey's `run_huey` with the same options, registered as a
`Worker` that heartbeats, and stopped gracefully by SIGTERM as by Ctrl-C."""

from __future__ import annotations

import logging
import signal

from django.conf import settings
from django.db import connections
from django.utils.module_loading import autodiscover_modules
from huey.consumer import Consumer
from huey.consumer import Worker as HueyWorker
from huey.consumer_options import ConsumerConfig
from huey.contrib.djhuey.management.commands.run_huey import Command as RunHueyCommand

from engine import wakeup, workers

logger = logging.getLogger(__name__)


class PloyWorker(HueyWorker):
    """A worker thread whose idle sleep ends early when a new message is announced."""

    delay: float

    def sleep(self) -> None:
        self.delay = min(self.delay, self.max_delay)
        wakeup.listener.wait(self.delay)
        self.delay *= self.backoff


class PloyConsumer(Consumer):
    """Huey's consumer, telling the engine when it stops so runs hand over at their next step;
    the first SIGTERM or SIGINT stops gracefully, a second one at once."""

    worker_class = PloyWorker

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._signal_actions[signal.SIGINT] = (False, True)
        self._signal_actions[signal.SIGTERM] = (False, True)
        # Until Huey installs its handlers (at the end of its start), a signal is remembered
        # and handled then, instead of killing the process with its threads already running.
        self._early_signal: int | None = None
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._remember)

    def _remember(self, signum: int, frame: object) -> None:
        self._early_signal = signum

    def _set_signal_handlers(self) -> None:
        super()._set_signal_handlers()
        if self._early_signal is not None:
            self._handle_signal(self._early_signal, None)

    def _handle_signal(self, signum: int, frame: object) -> None:
        super()._handle_signal(signum, frame)
        for other in (signal.SIGINT, signal.SIGTERM):
            signal.signal(other, signal.default_int_handler)

    def stop(self, graceful: bool = False) -> None:
        try:
            workers.current().begin_stopping()
        except Exception:  # the database may be what failed; stopping must go on
            logger.exception("could not mark the worker as stopping")
        wakeup.listener.notify()  # idle threads see the stop flag now
        super().stop(graceful=graceful)


class Command(RunHueyCommand):
    help = "Run a ployweb worker (Huey's run_huey): executes workflow executions from the queue."

    def handle(self, *args: object, **options: object) -> None:
        from huey.contrib.djhuey import HUEY

        consumer_options = dict(settings.HUEY.get("consumer", {}))
        consumer_options.update({key: value for key, value in options.items() if value is not None})
        if not options.get("disable_autoload"):
            autodiscover_modules("tasks")
        config = ConsumerConfig(**consumer_options)
        config.validate()
        huey_logger = logging.getLogger("huey")
        if not huey_logger.handlers:
            config.setup_logger(huey_logger)
        for alias in connections:
            connections.settings[alias]["CONN_MAX_AGE"] = settings.WORKER_CONN_MAX_AGE
        consumer = PloyConsumer(HUEY, **config.values)
        worker = workers.current()
        worker.start(threads=config.workers)
        wakeup.listener.start()
        try:
            consumer.run()
        finally:
            wakeup.listener.stop()
            worker.stop()
            logger.info("worker %s stopped", worker.id)
