"""Pretrained word vectors from a word2vec / GloVe text file, for the rows of one vocabulary.

The file holds `word v1 ... vD` per line, separated by spaces, after an optional header line `N D`
(word2vec and fastText `.vec` files have one, GloVe files do not). It is read line by line and only
the lines of vocabulary words are parsed, so a multi-GB file never sits in memory. A word the file
lacks in the vocabulary's (lowercased) spelling may be matched by its lowercased form ("Film" fills
"film" when no "film" line exists).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnncli.errors import RnncliError


@dataclass
class Vectors:
    values: np.ndarray  # (vocab, dim) float32; rows not covered are zero
    covered: np.ndarray  # (vocab,) bool: the rows the file filled
    words: int  # training vocabulary words that could be covered (special tokens excluded)
    added: int = 0  # rows after the training vocabulary: words the file brought in

    @property
    def covered_words(self) -> int:
        """Training vocabulary words the file covers."""
        return int(self.covered[: len(self.covered) - self.added].sum())

    @property
    def coverage(self) -> float:
        return self.covered_words / max(self.words, 1)


def _header(fields: list[str]) -> int | None:
    """The dimension of a word2vec header line `N D`, or None when the line is a vector."""
    if len(fields) == 2 and all(f.isdigit() for f in fields):
        return int(fields[1])
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _lines(path: Path):
    """(number, line) of a vectors file, from 1, read a line at a time; opening or reading it fails
    as one RnncliError naming the file."""
    try:
        with path.open(encoding="utf-8", errors="surrogateescape") as fh:
            yield from enumerate(fh, start=1)
    except FileNotFoundError:
        raise RnncliError(f"{path}: vectors file not found") from None
    except IsADirectoryError:
        raise RnncliError(f"{path}: is a folder, not a vectors file") from None
    except OSError as e:
        raise RnncliError(f"{path}: cannot read the vectors file ({e.strerror})") from None


def vector_words(path: str | Path):
    """The words of a vectors file, in file order (word2vec, fastText and GloVe files put frequent
    words first), read a line at a time so that a caller may stop early. Raises RnncliError for a
    missing or unreadable file; the lines themselves are checked by `read_vectors`."""
    for number, line in _lines(Path(path)):
        if number == 1 and _header(line.split()) is not None:
            continue
        word = line.rstrip("\r\n").partition(" ")[0]
        if word:
            yield word


def read_vectors(path: str | Path, vocab: dict[str, int], dim: int, skip: int = 2,
                 added: int = 0) -> Vectors:
    """The vectors of the words in `vocab` (word -> row id), each of `dim` numbers.

    Ids below `skip` (`<pad>` and `<unk>`) are never filled; the last `added` ids are words taken from
    this file (`add_words`), so coverage counts the ids before them. Raises RnncliError naming the
    file for a missing or unreadable file, a malformed line (with its number), a dimension other
    than `dim`, or a file that covers no word of the training vocabulary.
    """
    path = Path(path)
    size = max(vocab.values(), default=-1) + 1
    values = np.zeros((size, dim), dtype=np.float32)
    covered = np.zeros(size, dtype=bool)
    exact = np.zeros(size, dtype=bool)  # filled by the word's own spelling, not a case variant
    file_dim = None
    for number, line in _lines(path):
        word, _, rest = line.rstrip("\r\n").partition(" ")
        if file_dim is None:
            fields = line.split()
            if not fields:
                continue
            file_dim = _dimension(path, fields, number, dim)
            if number == 1 and _header(fields) is not None:
                continue
        row = vocab.get(word)
        own = row is not None
        if not own:
            row = vocab.get(word.lower())
        if row is None or row < skip or exact[row] or (covered[row] and not own):
            continue
        parsed = _numbers(path, number, word, rest, dim)
        if parsed is None:
            continue
        values[row] = parsed
        covered[row] = True
        exact[row] |= own
    if file_dim is None:
        raise RnncliError(f"{path}: the vectors file is empty")
    words = sum(1 for i in vocab.values() if i >= skip) - added
    if not covered[: size - added].any():
        raise RnncliError(f"{path}: no word of the vocabulary ({words:,} words) has a vector in this file")
    return Vectors(values=values, covered=covered, words=words, added=added)


def _dimension(path: Path, fields: list[str], number: int, dim: int) -> int:
    """The file's dimension, from its first line (a header or a vector), which must be `dim`."""
    file_dim = _header(fields) if number == 1 else None
    if file_dim is None:
        file_dim = len(fields) - 1
    if file_dim != dim:
        raise RnncliError(f"{path}: vectors have {file_dim} dimensions but --embed is {dim}; pass --embed {file_dim}")
    return file_dim


def _numbers(path: Path, number: int, word: str, rest: str, dim: int) -> np.ndarray | None:
    """The `dim` numbers after a word, or None for a token that holds spaces (GloVe 840B has a
    few), which is never a vocabulary word."""
    numbers = rest.split()
    if len(numbers) > dim and not all(_is_number(x) for x in numbers[:-dim]):
        return None
    if len(numbers) != dim:
        raise RnncliError(f"{path}: line {number}: expected a word and {dim} numbers, found {len(numbers)} numbers")
    try:
        return np.array(numbers, dtype=np.float32)
    except ValueError:
        raise RnncliError(f"{path}: line {number}: not a number among the values of {word!r}") from None


def init_embedding(embedding, vectors: Vectors) -> None:
    """Covered rows take the vectors; the others keep their random init, scaled to the vectors'
    standard deviation (as Kim 2014 does for unknown words), so no row dwarfs the pretrained ones.
    The padding row (id 0) stays zero."""
    import torch

    weight = embedding.weight
    covered = torch.from_numpy(vectors.covered).to(weight.device)
    known = torch.from_numpy(vectors.values[vectors.covered]).to(weight)
    rest = ~covered
    rest[0] = False
    with torch.no_grad():
        std = float(known.std()) if known.numel() > 1 else 0.0
        if std > 0:
            weight[rest] *= std
        weight[covered] = known
        weight[0] = 0.0


def vectors_note(path: str, vectors: Vectors, frozen: bool) -> str:
    """The data report's line on how much of the vocabulary the vectors cover."""
    more = f"; {vectors.added:,} more words from the file" if vectors.added else ""
    return (f"vectors {path}: {vectors.covered_words:,} of {vectors.words:,} training vocabulary words covered "
            f"({vectors.coverage:.1%}){more}, {'frozen' if frozen else 'fine-tuned'}")
