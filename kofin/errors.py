"""The one exception type the CLI shows to users as a message instead of a traceback."""


class KofinError(Exception):
    """A problem the user can fix: bad input, bad config, a missing or incomplete run.

    The message names the file, line or key and says what to do; the CLI prints it and exits 1.
    """
