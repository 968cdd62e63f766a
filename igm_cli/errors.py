"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""


class IgmError(Exception):
    """Bad user input or an unusable file: printed as ``igm: error: <message>``, exit code 2."""
