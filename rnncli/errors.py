"""The one exception a user can cause. The CLI prints its message on one line and exits with its code."""


class RnncliError(Exception):
    """Bad input, a missing file, an impossible option: anything the user can fix."""

    exit_code = 2
    echo = False  # True on the other torchrun processes when the main one already reported it


def first_line(e: BaseException, width: int = 120) -> str:
    """An exception's message cut to its first line (or its type's name when it has none), for a
    one-line error built around another library's exception."""
    text = str(e).strip()
    return text.splitlines()[0][:width] if text else type(e).__name__


class Interrupted(RnncliError):
    """Ctrl-C or SIGTERM before anything was saved: exit 128 + the signal's number, as shells do."""

    exit_code = 130
    BEFORE_FIRST_EPOCH = "interrupted before the first epoch ended; no model was saved"
