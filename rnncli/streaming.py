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
    LABEL_COLUMNS,
    TEXT_COLUMNS,
    Split,
    as_texts,
    carve_mask,
    find_column,
    label_ids,
    open_dataset,
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

    def chunks(self, buffer: int, seed: int, epoch: int, part: int = 0, parts: int = 1) -> Iterator[Split]:
        """The training rows, `buffer` at a time: shards in a seeded order per epoch; with `parts`
        data-parallel processes, each reads its own shards (or every parts-th row of one shard)."""
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
                    yield Split(as_texts(texts[i] for i in picked), self._ids([values[i] for i in picked]))

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
    if "train" not in dsd:
        raise RnncliError(f"{where}: no train split (found: {', '.join(dsd) or 'none'})")
    train = dsd["train"]
    features = train.features
    if features is None:  # some builders learn their columns only from the first row
        first = next(iter(train.take(1)), None)
        if first is None:
            raise RnncliError(f"{where}: the train split is empty")
        columns = list(first)
    else:
        columns = list(features)
    text_col = find_column(columns, config.text_column, TEXT_COLUMNS, "text", where)
    label_col = find_column(columns, config.label_column, LABEL_COLUMNS, "label", where)
    feature = features.get(label_col) if features is not None else None
    names = list(feature.names) if hasattr(feature, "names") else None

    n = train.num_shards
    shards = [train.shard(num_shards=n, index=k) for k in range(n)] if n > 1 else [train]
    texts, values, origin = [], [], []  # the first vocab_sample rows and their (shard, row)
    for k, shard in enumerate(shards):
        row = 0
        for batch in shard.iter(batch_size=min(config.vocab_sample, 10_000)):
            take = min(len(batch[label_col]), config.vocab_sample - len(values))
            texts += batch[text_col][:take]
            values += batch[label_col][:take]
            origin += [(k, row + i) for i in range(take)]
            row += take
            if len(values) >= config.vocab_sample:
                break
        if len(values) >= config.vocab_sample:
            break
    raw = {"train": (texts, values)}
    for name in ("validation", "test"):
        if name in dsd:
            rows = {text_col: [], label_col: []}
            for batch in dsd[name].select_columns([text_col, label_col]).iter(batch_size=10_000):
                rows[text_col] += batch[text_col]
                rows[label_col] += batch[label_col]
            raw[name] = (rows[text_col], rows[label_col])
    notes = [f"streaming: vocabulary and labels from the first {len(values):,} training rows"]
    strings = any(isinstance(v, str) for v in values)
    labels, raw = label_ids(raw, names, known_labels, where, notes)
    kept = [o for o, v in zip(origin, values) if v is not None and v != -1]  # label_ids drops unlabeled rows
    splits = {name: Split(as_texts(cells), ids) for name, (cells, ids) in raw.items()}
    sample = splits.pop("train")
    if len(sample) == 0:
        raise RnncliError(f"{where}: the train split is empty")
    held_out: dict[int, np.ndarray] = {}
    if "validation" not in splits:
        mask = carve_mask(sample.labels, config.val_fraction, seed)
        for (k, row), is_val in zip(kept, mask):
            if is_val:
                held_out.setdefault(k, []).append(row)
        held_out = {k: np.array(rows, dtype=np.int64) for k, rows in held_out.items()}
        splits["validation"] = Split([t for t, m in zip(sample.texts, mask) if m], sample.labels[mask])
        sample = Split([t for t, m in zip(sample.texts, ~mask) if m], sample.labels[~mask])
        notes.append(f"no validation split: carved {int(mask.sum()):,} rows ({config.val_fraction:.0%}, "
                     f"stratified, seed {seed}) from the first {len(mask):,} training rows")
    runs = np.flatnonzero(np.diff(sample.labels)) if len(sample) > 1 else np.empty(0)
    longest = int(np.diff(np.concatenate([[0], runs + 1, [len(sample)]])).max())
    if longest > max(config.stream_buffer // 2, 1000):
        notes.append(f"the stream holds {longest:,} rows of one label in a row: batches mix only rows within "
                     f"--stream-buffer ({config.stream_buffer:,}); shuffle the files or raise it")
    fingerprint = hashlib.sha256(f"{source}|streaming|{n}".encode()).hexdigest()[:16]
    return StreamedCorpus(name=where, source=source, fingerprint=fingerprint, labels=labels, sample=sample,
                          splits=splits, notes=notes, shards=shards, columns=(text_col, label_col),
                          held_out=held_out, strings=strings)
