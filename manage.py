#!/usr/bin/env python
"""Django's command-line utility; a configuration error ends it with one clear line."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ployweb.settings")
    from django.core.management import execute_from_command_line

    from engine.errors import ConfigError

    try:
        execute_from_command_line(sys.argv)
    except ConfigError as error:
        sys.exit(f"ployweb: {error}")


if __name__ == "__main__":
    main()
