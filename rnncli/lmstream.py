"""Pretraining texts read as a stream (`rnncli pretrain --streaming`): memory bounded by a buffer.

Each source is read lazily, `stream_buffer` texts at a time: a .txt file line by line, a data set's
train split as a `datasets` IterableDataset (through `streaming.open_stream` when it has labels, so
that the rows `rnncli train --streaming` carves for validation with the same seed are skipped here
too). Several sources take turns, a buffer each. A text is held out for the perplexity by a seeded
hash of its characters, so every epoch skips the same texts without remembering rows; the first
`vocab_sample` texts give the vocabulary, the skip-gram vectors and the held-out texts measured.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rnncli.config import DataConfig
from rnncli.data import TEXT_COLUMNS, as_texts, find_column, has_labels, open_dataset, require_train
from rnncli.errors import RnncliError
from rnncli.streaming import open_stream
from rnncli.texts import iter_lines

HASH_SLOTS = 1_000_000  # the held-out share is decided in millionths

Reader = Callable[[int, int], Iterator[list[str]]]  # (buffer, epoch) -> the source's texts, a buffer at a time


@dataclass
class TextStream:
    """The training texts of one or more sources, read afresh each epoch."""
    name: str
    source: str
    fingerprint: str
    sample: list[str]  # the first vocab_sample training texts
    validation: list[str]  # the held-out texts among the first rows: the perplexity's
    seed: int
    val_fraction: float
    notes: list[str] = field(default_factory=list)
    readers: list[Reader] = field(default_factory=list, repr=False)

    @property
    def train(self) -> list[str]:
        """The training texts held in memory: the sample, since the stream's length is unknown."""
        return self.sample

    def held_out(self, text: str) -> bool:
        """Whether `text` is one of the perplexity's: a seeded hash in the `val_fraction` share."""
        key = f"{self.seed}\n{text}".encode("utf-8", "surrogatepass")
        return zlib.crc32(key) % HASH_SLOTS < self.val_fraction * HASH_SLOTS

    def buffers(self, buffer: int, epoch: int) -> Iterator[list[str]]:
        """Every text, a buffer of each source in turn."""
        streams = [read(buffer, epoch) for read in self.readers]
        for texts in itertools.chain.from_iterable(itertools.zip_longest(*streams)):
            if texts is not None:
                yield texts

    def chunks(self, buffer: int, epoch: int) -> Iterator[list[str]]:
        """The non-blank training texts, a buffer at a time."""
        for texts in self.buffers(buffer, epoch):
            kept = [t for t in texts if t.strip() and not self.held_out(t)]
            if kept:
                yield kept


def open_text_stream(config: DataConfig, seed: int) -> TextStream:
    """The sources of `config.dataset` (`a,b`) as streams, and their first rows read."""
    specs = source_specs(config.dataset)
    sources, readers, notes = [], [], []
    for spec in specs:
        source, read, said = _source(dataclasses.replace(config, dataset=spec), seed)
        sources.append(source)
        readers.append(read)
        notes += [f"{spec}: {note}" for note in said] if len(specs) > 1 else said
    stream = TextStream(config.dataset, ",".join(sources), _fingerprint(sources), [], [], seed,
                        config.val_fraction, notes, readers)
    _read_first_rows(stream, config.vocab_sample, config.stream_buffer)
    return stream


def source_specs(dataset: str) -> list[str]:
    """The sources named by `dataset`: one, or several joined by commas (a path holding a comma is one)."""
    whole = Path(dataset).expanduser().exists() or "," not in dataset
    specs = [dataset] if whole else [s.strip() for s in dataset.split(",")]
    if not all(specs):
        raise RnncliError(f"{dataset}: an empty name in the list of sources")
    return specs


def text_file(spec: str) -> Path | None:
    """The path of a source that is a .txt file (one text a line), checked to exist; None for other sources."""
    path = Path(spec).expanduser()
    if path.suffix.lower() != ".txt":
        return None
    if not path.is_file():
        raise RnncliError(f"{spec}: no such file")
    return path


def _read_first_rows(stream: TextStream, count: int, buffer: int) -> None:
    """The first `count` texts of the stream, split into the sample and the held-out texts."""
    first: list[str] = []
    for texts in stream.buffers(min(buffer, count), epoch=0):
        first += texts
        if len(first) >= count:
            break
    first = [t for t in first[:count] if t.strip()]
    stream.sample = [t for t in first if not stream.held_out(t)]
    stream.validation = [t for t in first if stream.held_out(t)]
    if len(stream.sample) < 2 or not stream.validation:
        raise RnncliError(f"{stream.name}: {len(stream.sample)} training and {len(stream.validation)} held-out "
                          f"text(s) among the first {count:,} (--vocab-sample); pretraining needs 2 and 1")
    stream.notes.append(f"streaming: vocabulary and word vectors from the first {len(first):,} texts; texts "
                        f"held out for the perplexity by a hash of each (seed {stream.seed}, "
                        f"{stream.val_fraction:.0%}), {len(stream.validation):,} of them measured")


def _fingerprint(sources: list[str]) -> str:
    return hashlib.sha256("|".join(["streaming", *sources]).encode()).hexdigest()[:16]


def _source(config: DataConfig, seed: int) -> tuple[str, Reader, list[str]]:
    """(what was opened, its reader, notes) of one source: a .txt file or a data set's train split."""
    path = text_file(config.dataset)
    if path is not None:
        return str(path.resolve()), lambda buffer, epoch: iter_lines(path, buffer), ["a text file, one text a line"]
    dsd, source = open_dataset(config.dataset, streaming=True)
    train = require_train(dsd, config.dataset)
    columns = list(train.features or next(iter(train.take(1)), {}))
    if not columns:
        raise RnncliError(f"{config.dataset}: the train split is empty")
    text_col = find_column(columns, config.text_column, TEXT_COLUMNS, "text", config.dataset)
    if has_labels(columns, config):
        corpus = open_stream(config, seed)
        note = "the train split" + (", without the rows rnncli train --streaming carves for validation "
                                    "with the same seed" if corpus.held_out else "")
        return source, lambda buffer, epoch: corpus.texts(buffer, seed, epoch), [note]

    def read(buffer: int, epoch: int) -> Iterator[list[str]]:
        for batch in train.select_columns([text_col]).iter(batch_size=buffer):
            yield as_texts(batch[text_col])
    return source, read, ["the train split (no labels there)"]
