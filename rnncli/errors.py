"""The one exception a user can cause. The CLI prints its message on one line and exits with code 2."""


class RnncliError(Exception):
    """Bad input, a missing file, an impossible option: anything the user can fix."""

    echo = False  # True on the other torchrun processes when the main one already reported it
