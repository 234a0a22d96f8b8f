"""Errors the command line turns into a one-line message and exit code 2."""
from __future__ import annotations


class UsageError(Exception):
    """Bad user input (unknown model, missing file, bad option value, wrong checkpoint).

    The message is one line that names the problem and the fix; the CLI prints it on stderr
    and exits with code 2 (a traceback only with ``--debug``).
    """
