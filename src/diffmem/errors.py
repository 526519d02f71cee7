"""Errors a user can fix. The CLI turns them into a message and exit code 2."""


class DiffmemError(Exception):
    """Bad input or configuration: the message names the input and what to do about it."""
