"""One exception family for user mistakes.

Anything the user can fix (a bad config key, a missing or malformed file, wrong shapes, labels
out of range, NaN inputs) raises :class:`UserError` (or a subclass) with a one-line message that
names the thing and what was expected. The command line prints the message and exits with
status 2, without a traceback. Bugs still raise ordinary exceptions.
"""


class UserError(ValueError):
    """A mistake the user can fix; the message is one line naming what and what was expected."""


class ConfigError(UserError):
    """A bad configuration key, type or value."""


class DataError(UserError):
    """A missing, truncated or malformed data file, or data out of range."""


class MissingExtra(UserError, ImportError):
    """An optional extra is not installed (``import eventprop.torch`` without torch, ...); the
    message names the extra to install. An ImportError too, so ``except ImportError`` works."""
