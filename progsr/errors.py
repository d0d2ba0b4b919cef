"""The one exception type for user mistakes: the CLI prints it as one line, never a traceback."""


class UserError(Exception):
    """A problem with the user's input or settings (bad path, bad option, unreadable file)."""
