"""Errors a user can cause: the CLI prints them without a traceback and exits 2."""


class LoomError(Exception):
    """A problem with the user's input or setup, with a message that says how to fix it."""
