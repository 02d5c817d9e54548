"""`python -m rnncli` and the `rnncli` command. Ctrl-C while the CLI itself is still importing
ends as it does later: one line and exit code 130, no traceback."""

import os
import sys


def main() -> None:
    try:
        from rnncli.cli import main as cli
    except KeyboardInterrupt:
        sys.stderr.write("rnncli: interrupted\n")
        exit_now(130)
    cli()


def exit_now(code: int) -> None:
    """Exit with `code` at once, output flushed. After a Ctrl-C that came early (while modules
    were still importing), the interpreter's own shutdown was seen to end the process by SIGINT
    instead (exit -2, about 1 run in 10); nothing is left to clean up by then."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
