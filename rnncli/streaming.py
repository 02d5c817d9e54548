"""A training split read as a stream (`--streaming`): memory bounded by a buffer, whatever the corpus size.

The split is a `datasets` IterableDataset. Its first `vocab_sample` rows, in file order, train the
vocabulary, fix the label names and, when the data has no validation split, give a seeded,
stratified validation carve whose rows are then skipped in training. Each epoch reads the shards
(files) in a seeded order, `buffer` rows at a time; train.py groups each buffer by length and
shuffles it like an in-memory split. Rows further apart than the buffer are never mixed, so a file
sorted by label needs shards or a large buffer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from rnncli.config import DataConfig
from rnncli.data import (
    Split,
    as_texts,
    carve_mask,
    carved_note,
    open_dataset,
    pick_columns,
    require_train,
    to_splits,
)
from rnncli.errors import RnncliError


@dataclass
class StreamedCorpus:
    name: str
    source: str
    fingerprint: str
    labels: list[str]
    sample: Split  # the training rows among the first vocab_sample: vocabulary and data report
    splits: dict[str, Split]  # validation (and test), held in memory
    notes: list[str]
    shards: list = field(repr=False)  # the train split, one IterableDataset per shard
    columns: tuple[str, str] = ("text", "label")
    held_out: dict[int, np.ndarray] = field(default_factory=dict)  # shard -> row numbers carved off
    strings: bool = False  # labels are strings (mapped through `labels`), not ids

    @property
    def train(self) -> Split:
        """The training rows held in memory: the sample, since the stream's length is unknown."""
        return self.sample

    def counted_splits(self) -> dict[str, Split]:
        """The splits as the data report counts them: of train, only the rows read so far."""
        return {"train (first rows)": self.sample, **self.splits}

    def chunks(self, buffer: int, seed: int, epoch: int, part: int = 0, parts: int = 1) -> Iterator[Split]:
        """The training rows, `buffer` at a time: shards in a seeded order per epoch; with `parts`
        data-parallel processes, each reads its own shards (or every parts-th row of one shard)."""
        for texts, values in self.rows(buffer, seed, epoch, part, parts):
            yield Split(as_texts(texts), self._ids(values))

    def texts(self, buffer: int, seed: int, epoch: int) -> Iterator[list[str]]:
        """The training rows' texts as `chunks` reads them, their labels unread (rnncli pretrain)."""
        for texts, _ in self.rows(buffer, seed, epoch):
            yield as_texts(texts)

    def rows(self, buffer: int, seed: int, epoch: int, part: int = 0, parts: int = 1
             ) -> Iterator[tuple[list, list]]:
        """(text cells, label values) of the labelled training rows, `buffer` at a time (see `chunks`)."""
        order = np.random.default_rng([seed, epoch]).permutation(len(self.shards))
        by_shard = len(self.shards) >= parts
        mine = order[part::parts] if by_shard else order
        for k in mine:
            offset = 0
            for batch in self.shards[k].iter(batch_size=buffer):
                texts, values = batch[self.columns[0]], batch[self.columns[1]]
                rows = np.arange(offset, offset + len(values))
                offset += len(values)
                keep = np.array([v is not None and v != -1 for v in values], dtype=bool)
                if int(k) in self.held_out:
                    keep &= ~np.isin(rows, self.held_out[int(k)])
                if not by_shard:
                    keep &= rows % parts == part
                picked = np.flatnonzero(keep)
                if len(picked):
                    yield [texts[i] for i in picked], [values[i] for i in picked]

    def _ids(self, values: list) -> np.ndarray:
        n = len(self.labels)
        if self.strings:
            index = {name: i for i, name in enumerate(self.labels)}
            ids = np.array([index.get(str(v), -1) for v in values], dtype=np.int64)
        else:
            ids = np.array([int(v) for v in values], dtype=np.int64)
        bad = (ids < 0) | (ids >= n)
        if bad.any():
            value = values[int(np.flatnonzero(bad)[0])]
            raise RnncliError(f"{self.name}: label {value!r} appears after the first rows that fixed the "
                              f"{n} classes ({', '.join(self.labels)}); raise --vocab-sample")
        return ids


def open_stream(config: DataConfig, seed: int = 0, known_labels: list[str] | None = None) -> StreamedCorpus:
    """Open the data set as streams; read the vocabulary sample and the small splits.

    `known_labels` (a trained model's) fixes the label ids, as in `data.load_corpus`.
    """
    dsd, source = open_dataset(config.dataset, streaming=True)
    where = config.dataset
    train = require_train(dsd, where)
    text_col, label_col, names = pick_columns(_columns(train, where), train.features, config, where)
    n = train.num_shards
    shards = [train.shard(num_shards=n, index=k) for k in range(n)] if n > 1 else [train]
    texts, values, origin = _first_rows(shards, text_col, label_col, config.vocab_sample)
    raw = {"train": (texts, values)} | _small_splits(dsd, text_col, label_col)
    notes = [f"streaming: vocabulary and labels from the first {len(values):,} training rows"]
    labels, splits = to_splits(raw, names, known_labels, where, notes)
    sample = splits.pop("train")
    if len(sample) == 0:
        raise RnncliError(f"{where}: the train split is empty")
    held_out: dict[int, np.ndarray] = {}
    if "validation" not in splits:
        kept = [o for o, v in zip(origin, values) if v is not None and v != -1]  # to_splits drops unlabeled rows
        sample, splits["validation"], held_out = _carve(sample, kept, config.val_fraction, seed)
        notes.append(carved_note(len(splits["validation"]), config.val_fraction, seed,
                                 f"the first {len(kept):,} training rows"))
    notes += _label_run_note(sample, config.stream_buffer)
    fingerprint = hashlib.sha256(f"{source}|streaming|{n}".encode()).hexdigest()[:16]
    return StreamedCorpus(name=where, source=source, fingerprint=fingerprint, labels=labels, sample=sample,
                          splits=splits, notes=notes, shards=shards, columns=(text_col, label_col),
                          held_out=held_out, strings=any(isinstance(v, str) for v in values))


def _columns(train, where: str) -> list[str]:
    """The stream's columns; some builders learn them only from the first row."""
    if train.features is not None:
        return list(train.features)
    first = next(iter(train.take(1)), None)
    if first is None:
        raise RnncliError(f"{where}: the train split is empty")
    return list(first)


def _first_rows(shards: list, text_col: str, label_col: str, count: int) -> tuple[list, list, list]:
    """The texts and label values of the first `count` rows, shard after shard, and each one's (shard, row)."""
    texts, values, origin = [], [], []
    for k, shard in enumerate(shards):
        row = 0
        for batch in shard.iter(batch_size=min(count, 10_000)):
            take = min(len(batch[label_col]), count - len(values))
            texts += batch[text_col][:take]
            values += batch[label_col][:take]
            origin += [(k, row + i) for i in range(take)]
            row += take
            if len(values) >= count:
                return texts, values, origin
    return texts, values, origin


def _small_splits(dsd, text_col: str, label_col: str) -> dict[str, tuple[list, list]]:
    """Validation and test, read whole: {split: (text cells, label values)}."""
    raw = {}
    for name in ("validation", "test"):
        if name in dsd:
            rows = {text_col: [], label_col: []}
            for batch in dsd[name].select_columns([text_col, label_col]).iter(batch_size=10_000):
                rows[text_col] += batch[text_col]
                rows[label_col] += batch[label_col]
            raw[name] = (rows[text_col], rows[label_col])
    return raw


def _carve(sample: Split, origin: list[tuple[int, int]], fraction: float, seed: int
           ) -> tuple[Split, Split, dict[int, np.ndarray]]:
    """A seeded, stratified validation carve from the sample: (train rows, validation rows, and
    shard -> the row numbers carved off, which the epochs then skip)."""
    mask = carve_mask(sample.labels, fraction, seed)
    held_out: dict[int, list[int]] = {}
    for (k, row), is_val in zip(origin, mask):
        if is_val:
            held_out.setdefault(k, []).append(row)
    rows = {k: np.array(r, dtype=np.int64) for k, r in held_out.items()}
    return sample.pick(~mask), sample.pick(mask), rows


def _label_run_note(sample: Split, buffer: int) -> list[str]:
    """A warning when the stream holds long runs of one label, which a buffer cannot mix."""
    runs = np.flatnonzero(np.diff(sample.labels)) if len(sample) > 1 else np.empty(0)
    longest = int(np.diff(np.concatenate([[0], runs + 1, [len(sample)]])).max())
    if longest <= max(buffer // 2, 1000):
        return []
    note = (f"the stream holds {longest:,} rows of one label in a row: batches mix only rows within "
            f"--stream-buffer ({buffer:,}); shuffle the files or raise it")
    return [note]
