"""The one exception type for a user's mistake; the CLI prints it as a single line."""


class RlcscError(Exception):
    """Bad input (missing/corrupt file, wrong parameter, absent device): reported without traceback."""
