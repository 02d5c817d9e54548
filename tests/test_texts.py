"""The input rules for texts, as the CLI and the Python API read them: UTF-8, one text per "\n" line."""

import io
import sys

import pytest

from rnncli.errors import RnncliError
from rnncli.texts import read_texts, split_lines


def test_only_newline_ends_a_text():
    data = "\ufeffgreat film\r\nline\u2028separator stays\n\nform\x0cfeed\n".encode()
    assert split_lines(data, "x") == ["great film", "line\u2028separator stays", "", "form\x0cfeed"]


def test_an_empty_input_holds_no_texts_and_a_blank_line_is_one():
    assert split_lines(b"", "x") == []
    assert split_lines(b"\n", "x") == [""]


def test_invalid_utf8_names_the_line():
    with pytest.raises(RnncliError, match=r"reviews.txt: not valid UTF-8 \(line 2"):
        split_lines(b"fine\n\xff broken\n", "reviews.txt")


def test_texts_come_from_arguments_a_file_or_standard_input(tmp_path, monkeypatch):
    f = tmp_path / "reviews.txt"
    f.write_bytes(b"dull\nwitty\n")
    assert read_texts(["a", "b"]) == ["a", "b"]
    assert read_texts([], f) == ["dull", "witty"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from a pipe\n")))
    assert read_texts(["-"]) == ["from a pipe"]


@pytest.mark.parametrize("texts, file, message", [
    (["a"], "reviews.txt", "not both"),
    ([], None, "no text given"),
    ([], "missing.txt", "missing.txt: cannot read"),
])
def test_a_wrong_source_is_one_error(tmp_path, monkeypatch, texts, file, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RnncliError, match=message):
        read_texts(texts, file)
