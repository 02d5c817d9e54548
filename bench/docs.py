"""Write a bench script's table into its own section of docs/results.md, so nobody copies it by hand.

A section is whatever lies between two markers on lines of their own:

    <!-- bench/speed.py -->
    ...replaced on every --write-docs run...
    <!-- /bench/speed.py -->

`write_section` replaces that text with a line naming the command, the commit and the date, and the
table in a ```text block. A section that is not in the file yet is appended at its end, under a
heading of its name. Markers that appear more than once, or an end without a start, are an error:
nothing is written then.
"""

from __future__ import annotations

import datetime
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results.md"


def markdown_table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows (the first is the header) as the lines of a markdown table, each column padded to its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines


def markers(section: str) -> tuple[str, str]:
    return f"<!-- {section} -->", f"<!-- /{section} -->"


def commit() -> str:
    """The short commit of the working tree, with `+dirty` when tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def command_line(argv: list[str] | None = None) -> str:
    """The command as it was typed (less --write-docs), with the script's path relative to the repository."""
    argv = [arg for arg in (sys.argv if argv is None else argv) if arg != "--write-docs"]
    script = Path(argv[0]).resolve()
    if script.is_relative_to(ROOT):
        argv[0] = str(script.relative_to(ROOT))
    return "python " + shlex.join(argv)


def render(table: str, command: str, when: str | None = None, where: str | None = None) -> str:
    when = when or datetime.date.today().isoformat()
    where = where or commit()
    return f"`{command}`, commit {where}, {when}:\n\n```text\n{table.strip(chr(10))}\n```\n"


def replace_section(document: str, section: str, body: str) -> str:
    """`document` with the text between `section`'s markers replaced by `body` (appended if absent)."""
    start, end = markers(section)
    lines = document.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == start]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(starts) > 1 or len(ends) > 1:
        raise ValueError(f"{start} or {end} appears more than once")
    if starts and ends and ends[0] > starts[0]:
        return "".join(lines[: starts[0] + 1]) + body + "".join(lines[ends[0]:])
    if starts or ends:
        raise ValueError(f"{start} needs a matching {end} after it")
    tail = "" if not document or document.endswith("\n\n") else ("\n" if document.endswith("\n") else "\n\n")
    return f"{document}{tail}## {section}\n\n{start}\n{body}{end}\n"


def write_section(section: str, table: str, path: Path = RESULTS, command: str | None = None) -> Path:
    """Put `table` into `section` of `path` (docs/results.md), written under a temporary name and
    renamed into place."""
    path = Path(path)
    document = path.read_text(encoding="utf-8") if path.exists() else ""
    updated = replace_section(document, section, render(table, command or command_line()))
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(updated)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote the table into {path} ({section})", file=sys.stderr)
    return path


def add_option(parser) -> None:
    """The `--write-docs` flag every bench script that prints a table shares."""
    parser.add_argument("--write-docs", action="store_true",
                        help=f"also write the table into its section of {RESULTS.relative_to(ROOT)}")
