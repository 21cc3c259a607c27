"""`manage.py runhuey`: the worker, an alias of Huey's `run_huey` with the same options."""

from huey.contrib.djhuey.management.commands.run_huey import Command as RunHueyCommand


class Command(RunHueyCommand):
    help = "Run a ployweb worker (Huey's run_huey): executes workflow executions from the queue."
