"""`python -m rnncli` and the `rnncli` command. Ctrl-C while the CLI itself is still importing
ends as it does later: one line and exit code 130, no traceback."""

import sys


def main() -> None:
    try:
        from rnncli.cli import main as cli
    except KeyboardInterrupt:
        sys.stderr.write("rnncli: interrupted\n")
        raise SystemExit(130) from None
    cli()


if __name__ == "__main__":
    main()
