"""Errors the command line reports as a user's mistake: ``error: <message>`` and exit code 2, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (file, flag, data): printed as 'error: ...' with exit code 2, no traceback."""
