"""The errors a user can fix: a config, a data file, a run folder, an input.

Every one derives from `UserError`, which the command line prints as one line (exit 2);
any other exception is a bug in metajax and keeps its traceback.
"""


class UserError(Exception):
    """Base of the errors whose message says what to change."""


class InputError(UserError, ValueError):
    """Inputs that do not fit: an impossible episode, a support set of another width."""
