"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """A problem with the user's input (file, flag, data); the message names it and the fix."""
