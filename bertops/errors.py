"""The one exception type users see: a clear, one-line message and a non-zero exit."""


class BertopsError(Exception):
    """A problem the user can fix (bad input, missing file, failed gate).

    The CLI prints ``str(error)`` on one line and exits with status 2; it never shows a
    traceback for this type.
    """
