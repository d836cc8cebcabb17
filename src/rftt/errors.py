"""The base of every error rftt raises for bad input, so the CLI can print it without a traceback."""


class RfttError(Exception):
    """Bad input or configuration; the message says where (file, line, field or setting) and how to fix it."""
