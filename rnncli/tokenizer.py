"""Words to ids with the `tokenizers` library: a WordLevel vocabulary learned from the training split.

NFKC + lowercase, HTML line breaks dropped, words and punctuation split. `<pad>` is 0, `<unk>` is 1.
Truncation to `max_length` happens in `encode`, so the data report can say how much was cut.
"""

from __future__ import annotations

import itertools
import re
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnncli.errors import RnncliError, first_line

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


def _blank_tokenizer():
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    tok = Tokenizer(WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(r"(?i)<br\s*/?>"), " "),  # IMDB's HTML line breaks
        normalizers.NFKC(),
        normalizers.Lowercase(),
    ])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+ runs and punctuation runs
    return tok


CHUNK = 4096  # texts handed to `tokenizers` at once


def train_tokenizer(texts: list[str], min_freq: int = 1, max_vocab: int = 50000):
    """Learn the vocabulary from training texts only (validation words stay unknown, as at serving).

    Ids are ordered by frequency, ties by the word itself, so the same texts always give the same
    ids (the `tokenizers` trainer breaks ties in hash order, which would change the model's init).
    """
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer

    counter = _blank_tokenizer()
    counter.train_from_iterator(texts, trainer=WordLevelTrainer(
        vocab_size=2**31 - 1, min_frequency=1, special_tokens=[PAD, UNK], show_progress=False))
    counts = np.zeros(counter.get_vocab_size(), dtype=np.int64)
    for chunk in range(0, len(texts), CHUNK):  # a chunk at a time, as in encode()
        ids = np.fromiter(itertools.chain.from_iterable(encode_ids(counter, texts[chunk: chunk + CHUNK])),
                          dtype=np.int64)
        counts += np.bincount(ids, minlength=len(counts))
    words = sorted(((int(counts[i]), w) for w, i in counter.get_vocab().items() if i > UNK_ID),
                   key=lambda cw: (-cw[0], cw[1]))
    kept = [w for c, w in words if c >= min_freq][: max(max_vocab - 2, 0)]
    tok = _blank_tokenizer()
    tok.model = WordLevel(vocab={PAD: PAD_ID, UNK: UNK_ID, **{w: i + 2 for i, w in enumerate(kept)}},
                          unk_token=UNK)
    return tok


def add_words(tok, words, max_vocab: int):
    """`tok` with the `words` it lacks appended after its own, in the order given, until it holds
    `max_vocab` ids; returns (tokenizer, words added).

    For the words of a pretrained vectors file: a validation or serving word that the training split
    never showed keeps its pretrained row instead of becoming <unk>. A word is first normalized as
    texts are ("Film" -> "film"); one that would never come out of a text whole ("don't" splits into
    three) is skipped. Existing ids do not move.
    """
    from tokenizers.models import WordLevel

    vocab = tok.get_vocab()
    before = len(vocab)
    for word in words:
        if len(vocab) >= max_vocab:
            break
        word = tok.normalizer.normalize_str(word)
        if word not in vocab and [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(word)] == [word]:
            vocab[word] = len(vocab)
    grown = _blank_tokenizer()
    grown.model = WordLevel(vocab=vocab, unk_token=UNK)
    return grown, len(vocab) - before


def split_words(texts):
    """Each text as the words the vocabulary is made of (normalized and split as `train_tokenizer`
    does): for tools that learn from the same words, such as bench/vectors.py."""
    tok = _blank_tokenizer()
    for text in texts:
        yield [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))]


def _encode_batch(tok, texts: list[str]):
    fast = getattr(tok, "encode_batch_fast", None)  # skips character offsets we never use
    return (fast or tok.encode_batch)(texts, add_special_tokens=False)


# `_blank_tokenizer`'s rules written out for ASCII text, where NFKC changes nothing, lowercasing is
# ASCII's, and the regex engine's \w and \s are [A-Za-z0-9_] and [\t\n\v\f\r ]: the same ids as
# `tokenizers` gives (tested against it on generated text), at about a quarter of its time per short
# text, which is most of the cost of classifying one sentence. Other texts go through `tokenizers`.
_ASCII_BREAK = re.compile(r"<br[\t\n\x0b\x0c\r ]*/?>", re.ASCII)  # on lowercased text
_ASCII_WORD = re.compile(r"[a-z0-9_]+|[^a-z0-9_\t\n\x0b\x0c\r ]+", re.ASCII)
FAST_FROM = 256  # texts in one call from which the word dictionary (milliseconds to build) pays
_ascii_words: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> AsciiWords | None


class AsciiWords:
    """Ids of ASCII texts by the rules above, with a dictionary of the tokenizer's words."""

    def __init__(self, vocab: dict[str, int]):
        self.get = vocab.get

    def ids(self, text: str) -> list[int]:
        text = text.lower()
        if "<" in text:
            text = _ASCII_BREAK.sub(" ", text)
        get = self.get
        return [get(word, UNK_ID) for word in _ASCII_WORD.findall(text)]


def ascii_words(tok) -> AsciiWords | None:
    """The ASCII fast path for `tok`, built once per tokenizer object; None unless `tok` has exactly
    the rules `_blank_tokenizer` gives (a WordLevel vocabulary with nothing added around it). rnncli
    never changes a tokenizer once it encodes with it; one changed later keeps the words it had."""
    if tok in _ascii_words:
        return _ascii_words[tok]
    blank = _blank_tokenizer()
    same = (type(tok.model).__name__ == "WordLevel" and tok.model.unk_token == UNK and tok.normalizer is not None
            and tok.pre_tokenizer is not None
            and tok.normalizer.__getstate__() == blank.normalizer.__getstate__()
            and tok.pre_tokenizer.__getstate__() == blank.pre_tokenizer.__getstate__()
            and not tok.get_added_tokens_decoder() and tok.truncation is None and tok.padding is None
            and tok.post_processor is None)
    fast = _ascii_words[tok] = AsciiWords(tok.get_vocab()) if same else None
    return fast


def encode_ids(tok, texts: list[str]) -> list[list[int]]:
    """Each text's ids, untruncated: ASCII texts by `AsciiWords` where the tokenizer has it (built
    when a call has FAST_FROM texts, or earlier by `ascii_words`), the rest by `tokenizers`."""
    fast = _ascii_words.get(tok) if len(texts) < FAST_FROM else ascii_words(tok)
    if fast is None:
        return [e.ids for e in _encode_batch(tok, texts)]
    out = [fast.ids(text) if text.isascii() else None for text in texts]
    others = [i for i, ids in enumerate(out) if ids is None]
    if others:
        for i, encoding in zip(others, _encode_batch(tok, [texts[i] for i in others])):
            out[i] = encoding.ids
    return out


def load_tokenizer(path: str | Path):
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise RnncliError(f"{path}: tokenizer file is missing")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception on bad JSON
        raise RnncliError(f"{path}: not a valid tokenizer file ({first_line(e)})") from None
    if tok.token_to_id(PAD) != PAD_ID or tok.token_to_id(UNK) != UNK_ID:
        raise RnncliError(f"{path}: tokenizer lacks <pad>=0 and <unk>=1")
    return tok


@dataclass
class Encoded:
    """Token ids of many texts, flat, with each text's start; lengths are after truncation."""

    ids: np.ndarray  # (total tokens,) int64
    starts: np.ndarray  # (texts,) int64
    lengths: np.ndarray  # (texts,) int64, >= 1
    full_lengths: np.ndarray  # (texts,) int64, before truncation (0 for an empty text; see `read_limit`)

    def __len__(self) -> int:
        return len(self.lengths)

    def text(self, i: int) -> np.ndarray:
        return self.ids[self.starts[i]: self.starts[i] + self.lengths[i]]

    def subset(self, rows: np.ndarray) -> Encoded:
        """The texts at `rows`, sharing this one's flat id array."""
        return Encoded(self.ids, self.starts[rows], self.lengths[rows], self.full_lengths[rows])


CHARS_PER_TOKEN = 256  # characters read per kept token: far more than any real text's words need


def read_limit(max_length: int) -> int:
    """How many characters of a text are read when `max_length` tokens are kept.

    Enough for max_length words of 256 characters, so real text loses nothing; a line of 100 MB (or
    one 100-MB word) is read from its head instead of costing minutes and gigabytes of token lists.
    A text read only in part counts as truncated."""
    return max(65_536, CHARS_PER_TOKEN * (max_length + 1))


def encode(tok, texts: list[str], max_length: int) -> Encoded:
    """Encode texts, keeping the first `max_length` tokens; an empty text becomes one <unk>.

    Texts go a chunk at a time: `tokenizers`' Encoding objects cost about 100 bytes a token, which
    for all of IMDB at once would be most of the training run's memory.
    """
    read_parts, cut_parts, id_parts = [], [], []
    limit = read_limit(max_length)
    for chunk in range(0, len(texts), CHUNK):
        part = texts[chunk: chunk + CHUNK]
        id_lists = encode_ids(tok, [text[:limit] for text in part])
        read_parts.append(np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists)))
        cut_parts.append(np.fromiter((len(text) > limit for text in part), dtype=bool, count=len(part)))
        kept = (ids[:max_length] or [UNK_ID] for ids in id_lists)
        id_parts.append(np.fromiter(itertools.chain.from_iterable(kept), dtype=np.int64))
        del id_lists
    read = np.concatenate(read_parts) if read_parts else np.zeros(0, dtype=np.int64)  # tokens read of each text
    cut = np.concatenate(cut_parts) if cut_parts else np.zeros(0, dtype=bool)  # texts read only in part
    lengths = np.clip(read, 1, max_length)
    starts = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    ids = np.concatenate(id_parts) if id_parts else np.zeros(0, dtype=np.int64)
    full = np.where(cut, np.maximum(read, max_length + 1), read)  # a text read in part counts as truncated
    return Encoded(ids=ids, starts=starts, lengths=lengths, full_lengths=full)
