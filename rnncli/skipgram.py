"""Word vectors learned without labels, for the embedding `rnncli pretrain` starts its language model
from: skip-gram with negative sampling (Mikolov et al. 2013), by gensim's Word2Vec.

A language model on two cores reads each word a handful of times in half an hour; skip-gram passes
over the same texts five times in about two minutes, so a word seen only a few dozen times already
sits near the words it is used like, which is what a classifier on a few thousand sentences lacks.
It reads every text whole (the language model reads the first `max_length` tokens), split into words
as the tokenizer splits them, so its words are the vocabulary's.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rnncli.errors import RnncliError
from rnncli.tokenizer import split_words
from rnncli.vectors import Vectors

WINDOW = 5  # words on each side (gensim draws a narrower window per word, as word2vec does)
NEGATIVE = 5  # words drawn from the unigram^0.75 distribution per true pair
SAMPLE = 1e-4  # frequent words are skipped with probability 1 - sqrt(SAMPLE / frequency)
MIN_COUNT = 2  # a word seen once keeps its random row: one context says little
ALPHA = 0.05  # first learning rate, down to zero over the passes (fastText's skip-gram default)


@dataclass
class Learned:
    """What the skip-gram stage made: the vectors by vocabulary row, and how long it took."""
    vectors: Vectors
    texts: int
    words: int  # running words read per pass
    seconds: float

    def note(self, epochs: int) -> str:
        v = self.vectors
        return (f"word vectors: skip-gram, {epochs} passes over {self.texts:,} texts ({self.words:,} words) in "
                f"{self.seconds:.0f}s; {v.covered_words:,} of {v.words:,} vocabulary words covered ({v.coverage:.1%}), "
                "the rest start at random")


def learn_vectors(texts: list[str], vocab: dict[str, int], dim: int, epochs: int, seed: int,
                  on_epoch: Callable[[int], None] | None = None) -> Learned:
    """Skip-gram vectors for the words of `vocab` (word -> row; rows 0 and 1 are padding and <unk>,
    which keep none). One worker thread with a fixed hash, so that the same seed gives the same
    vectors: gensim's threads race on shared weights."""
    Word2Vec, CallbackAny2Vec = _gensim()
    start = time.perf_counter()
    sentences = [words for words in split_words(texts) if words]

    class EpochEnd(CallbackAny2Vec):
        def __init__(self):
            self.done = 0

        def on_epoch_end(self, model):
            self.done += 1
            if on_epoch is not None:
                on_epoch(self.done)

    model = Word2Vec(vector_size=dim, window=WINDOW, min_count=MIN_COUNT, sg=1, negative=NEGATIVE, sample=SAMPLE,
                     alpha=ALPHA, seed=seed, workers=1, hashfxn=_stable_hash)
    model.build_vocab(sentences)
    words = model.corpus_total_words
    model.train(sentences, total_examples=len(sentences), epochs=epochs, callbacks=[EpochEnd()])
    return Learned(_by_row(model.wv, vocab, dim), len(sentences), int(words), time.perf_counter() - start)


def _gensim():
    try:
        from gensim.models import Word2Vec
        from gensim.models.callbacks import CallbackAny2Vec
    except ImportError:
        raise RnncliError('pretrain learns word vectors with gensim: pip install "rnncli[pretrain]" '
                          "(or --vector-epochs 0 to start the embedding at random)") from None
    return Word2Vec, CallbackAny2Vec


def _stable_hash(text: str) -> int:
    """gensim seeds each word's first vector from hash(word + seed); Python's str hash changes from
    one process to the next."""
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def _by_row(wv, vocab: dict[str, int], dim: int) -> Vectors:
    """The vectors as `rnncli.vectors.Vectors`: one row per vocabulary id, those gensim kept filled."""
    values = np.zeros((len(vocab), dim), dtype=np.float32)
    covered = np.zeros(len(vocab), dtype=bool)
    for word, row in vocab.items():
        at = wv.key_to_index.get(word)
        if row >= 2 and at is not None:
            values[row], covered[row] = wv.vectors[at], True
    return Vectors(values=values, covered=covered, words=max(len(vocab) - 2, 0))

