"""The input rules for texts, as the CLI and the Python API read them: UTF-8, one text per "\n" line."""

import io
import sys

import pytest

from rnncli.errors import RnncliError
from rnncli.texts import iter_lines, read_texts, split_lines


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


@pytest.mark.parametrize("data", [b"\xef\xbb\xbfone\r\ntwo\n\nthree\xe2\x80\xa8still three\x0cand\n", b"no newline at the end",
                                  b"", b"\n\n", b"a\xef\xbb\xbfb\n\xef\xbb\xbfc"])
def test_a_file_read_a_buffer_at_a_time_gives_the_texts_read_whole(tmp_path, data):
    path = tmp_path / "texts.txt"
    path.write_bytes(data)
    buffers = list(iter_lines(path, 2))
    assert all(0 < len(b) <= 2 for b in buffers)
    assert [t for b in buffers for t in b] == split_lines(data, str(path))


def test_a_file_read_a_buffer_at_a_time_names_its_bad_byte_as_a_whole_read_does(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xe9 here\n")
    with pytest.raises(RnncliError) as whole:
        split_lines(path.read_bytes(), str(path))
    with pytest.raises(RnncliError) as streamed:
        list(iter_lines(path, 1))
    assert str(streamed.value) == str(whole.value)
