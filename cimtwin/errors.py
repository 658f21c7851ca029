"""Errors that are the user's to fix: the CLI prints them without a traceback."""


class UserError(Exception):
    """Bad input or configuration; the message says what and where."""
