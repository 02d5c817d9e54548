"""The input rules for texts to classify: one text per line of UTF-8, as `predict` and the Python API read them.

Only "\n" ends a line (a trailing "\r" is dropped), so a U+2028 or a form feed inside a text stays
in it; a byte-order mark is skipped; an empty input holds no texts, while a blank line is a text
(an empty one, answered with an empty record).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rnncli.errors import RnncliError


def split_lines(data: bytes, where: str) -> list[str]:
    """The texts in `data`, one per line; `where` names the source in errors."""
    try:
        decoded = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise RnncliError(f"{where}: not valid UTF-8 (line {line}, byte {e.start})") from None
    if not decoded:
        return []
    lines = decoded.split("\n")
    if decoded.endswith("\n"):
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def read_file(path: str | Path) -> list[str]:
    """The texts of a file, one per line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RnncliError(f"{path}: cannot read ({e.strerror})") from None
    return split_lines(data, str(path))


def iter_lines(path: Path, buffer: int) -> Iterator[list[str]]:
    """The texts of a file, `buffer` lines at a time, by `split_lines`' rules: for files larger than
    memory (`rnncli pretrain --streaming`)."""
    try:
        fh = path.open("rb")
    except OSError as e:
        raise RnncliError(f"{path}: cannot read ({e.strerror})") from None
    with fh:
        texts: list[str] = []
        offset = 0
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise RnncliError(f"{path}: not valid UTF-8 (line {number}, byte {offset + e.start})") from None
            offset += len(raw)
            texts.append(line.removesuffix("\n").removesuffix("\r"))
            if len(texts) == buffer:
                yield texts
                texts = []
        if texts:
            yield texts


def read_stdin() -> list[str]:
    import sys

    return split_lines(sys.stdin.buffer.read(), "standard input")


def read_texts(texts: list[str], file: str | Path | None = None) -> list[str]:
    """The texts a command was given: as arguments, from `file`, or from standard input for `-`."""
    if file is not None and texts:
        raise RnncliError("give texts as arguments or --file, not both")
    if file is not None:
        return read_file(file)
    if texts == ["-"]:
        return read_stdin()
    if not texts:
        raise RnncliError("no text given: pass TEXT..., --file F, or - to read standard input")
    return list(texts)
