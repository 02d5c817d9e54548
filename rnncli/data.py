"""Every data source through `datasets.load_dataset`: hub ids, local folders and files, the built-in corpus.

The result is a `Corpus`: plain lists of texts and integer labels per split, the label names, and
where it came from. Columns are found by name, string labels become ids, unlabeled rows are dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnncli.config import DataConfig
from rnncli.errors import RnncliError, first_line
from rnncli.tokenizer import UNK_ID, Encoded

ALIASES = {
    "sst2": "stanfordnlp/sst2",
    "imdb": "stanfordnlp/imdb",
    "rotten_tomatoes": "cornell-movie-review-data/rotten_tomatoes",
    "sst5": "SetFit/sst5",
}
TEXT_COLUMNS = ("text", "sentence", "review", "content")
LABEL_COLUMNS = ("label", "labels", "sentiment")
FILE_BUILDERS = {".parquet": ("parquet", {}), ".csv": ("csv", {}), ".tsv": ("csv", {"delimiter": "\t", "quoting": 3}),
                 ".json": ("json", {}), ".jsonl": ("json", {})}
# Integer labels with no names: the usual sentiment conventions, so predictions read as words.
CONVENTIONAL_NAMES = {
    2: ["negative", "positive"],
    3: ["negative", "neutral", "positive"],
    5: ["very negative", "negative", "neutral", "positive", "very positive"],
}


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray  # (rows,) int64 ids into Corpus.labels

    def __len__(self) -> int:
        return len(self.texts)

    def class_counts(self, n: int) -> list[int]:
        return np.bincount(self.labels, minlength=n).tolist()

    def pick(self, mask: np.ndarray) -> Split:
        """The rows where `mask` is true."""
        return Split([t for t, m in zip(self.texts, mask) if m], self.labels[mask])


@dataclass
class Corpus:
    name: str  # as the user gave it
    source: str  # what was loaded: a hub id, a resolved path, or "builtin"
    fingerprint: str
    labels: list[str]
    splits: dict[str, Split]
    notes: list[str] = field(default_factory=list)

    @property
    def train(self) -> Split:
        """The training rows held in memory."""
        return self.splits["train"]

    def counted_splits(self) -> dict[str, Split]:
        """The splits as the data report counts them."""
        return self.splits


@dataclass
class DataReport:
    labels: list[str]
    rows: dict[str, int]
    class_counts: dict[str, list[int]]
    length_percentiles: dict[str, int]  # tokens per training text before truncation: p50, p90, p99, max
    truncated_share: float  # training texts longer than max_length
    max_length: int
    vocab_size: int
    val_oov_rate: float  # validation tokens the vocabulary does not know
    notes: list[str]


def data_report(corpus: Corpus, train: Encoded, validation: Encoded, vocab_size: int, max_length: int
                ) -> DataReport:
    """What the training run reads: rows and classes per split, text lengths, vocabulary coverage."""
    full = train.full_lengths
    shown = corpus.counted_splits()
    return DataReport(
        labels=corpus.labels,
        rows={name: len(split) for name, split in shown.items()},
        class_counts={name: split.class_counts(len(corpus.labels)) for name, split in shown.items()},
        length_percentiles=length_percentiles(full),
        truncated_share=float((full > max_length).mean()),
        max_length=max_length,
        vocab_size=vocab_size,
        val_oov_rate=float((validation.ids == UNK_ID).mean()) if len(validation.ids) else 0.0,
        notes=list(corpus.notes),
    )


def length_percentiles(full_lengths: np.ndarray) -> dict[str, int]:
    """Tokens per text before truncation: p50, p90, p99 and max."""
    pct = {f"p{q}": int(np.percentile(full_lengths, q)) for q in (50, 90, 99)}
    return pct | {"max": int(full_lengths.max())}


def as_texts(cells) -> list[str]:
    """Text cells as strings; a missing cell (None) is an empty text."""
    return ["" if t is None else str(t) for t in cells]


def open_dataset(spec: str, streaming: bool = False):
    """A `datasets.DatasetDict` for a data spec, or a one-line error saying what to use instead.

    With `streaming`, an `IterableDatasetDict` whose rows are read from the files as they are used.
    """
    # read by huggingface_hub when first imported: an unreachable hub fails in seconds, not minutes
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    import datasets

    datasets.disable_progress_bars()
    if spec == "builtin":
        from rnncli.builtin import builtin_dataset

        dsd = builtin_dataset()
        if streaming:
            dsd = datasets.IterableDatasetDict({name: split.to_iterable_dataset() for name, split in dsd.items()})
        return dsd, "builtin"
    path = Path(spec).expanduser()
    if path.exists():
        return _open_local(path, streaming), str(path.resolve())
    looks_local = spec.startswith((".", "/", "~")) or Path(spec).suffix.lower() in FILE_BUILDERS
    if looks_local:
        raise RnncliError(f"{spec}: no such file or folder")
    return _open_hub(ALIASES.get(spec, spec), streaming), ALIASES.get(spec, spec)


@contextlib.contextmanager
def _quiet_datasets():
    """datasets logs a parser's failure itself before raising; the raised error is reported instead."""
    import datasets

    before = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(before)


def _json_files(path: Path) -> list[Path]:
    """The JSON and JSON Lines files a data path names: itself, or those in its folder."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in (".json", ".jsonl"))
    return [path] if path.suffix.lower() in (".json", ".jsonl") else []


def json_problem(path: Path) -> str | None:
    """Where a JSON or JSON Lines file first breaks, as `line N: why`, or None if it parses.
    Read only after the loader failed, so a good file is never read twice."""
    with open(path, "rb") as fh:
        one_document = fh.read(4096).lstrip().startswith(b"[")
        fh.seek(0)
        if one_document:
            return _json_error(fh.read(), None)
        for number, raw in enumerate(fh, start=1):
            problem = _json_error(raw, number) if raw.strip() else None
            if problem:
                return problem
    return None


def _json_error(raw: bytes, line: int | None) -> str | None:
    try:
        json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        line = line or raw[: e.start].count(b"\n") + 1
        return f"line {line}: not valid UTF-8 ({e.reason})"
    except json.JSONDecodeError as e:
        return f"line {line if line else e.lineno}: {e.msg}"
    return None


def _open_local(path: Path, streaming: bool = False):
    import datasets

    try:
        if path.is_dir():
            files = [p for p in path.iterdir() if p.suffix.lower() in FILE_BUILDERS]
            if not files:
                raise RnncliError(f"{path}: folder holds no .parquet/.csv/.tsv/.json/.jsonl files")
            suffixes = {p.suffix.lower() for p in files}
            if len(suffixes) > 1:
                raise RnncliError(f"{path}: folder mixes file types ({', '.join(sorted(suffixes))})")
            builder, kwargs = FILE_BUILDERS[suffixes.pop()]
            data_files: dict[str, list[str]] = {}  # train-00000-of-00002.parquet and its shards: one split
            for p in sorted(files):
                data_files.setdefault(p.stem.split("-")[0], []).append(str(p))
            with _quiet_datasets():
                return datasets.load_dataset(builder, data_files=data_files, streaming=streaming, **kwargs)
        suffix = path.suffix.lower()
        if suffix not in FILE_BUILDERS:
            raise RnncliError(f"{path}: unsupported file type (use .parquet, .csv, .tsv, .json or .jsonl)")
        builder, kwargs = FILE_BUILDERS[suffix]
        with _quiet_datasets():
            return datasets.load_dataset(builder, data_files={"train": str(path)}, streaming=streaming, **kwargs)
    except RnncliError:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow, json and csv parsers raise many kinds
        for file in _json_files(path):
            problem = json_problem(file)
            if problem:
                raise RnncliError(f"{file}: {problem}") from None
        raise RnncliError(f"{path}: cannot read data ({first_line(e, 200)})") from None


def _open_hub(hub_id: str, streaming: bool = False):
    """A data set from the Hugging Face hub, or from the local cache when the hub's host cannot be
    resolved here: the hub client would otherwise retry for half a minute, printing each try."""
    import datasets

    host = _unreachable_hub()
    try:
        with _quiet_hub(offline=host is not None):
            return datasets.load_dataset(hub_id, streaming=streaming)
    except Exception as e:  # noqa: BLE001 - the hub client raises many kinds when offline
        why = f"{host} cannot be reached from here and the local cache lacks it" if host else first_line(e, 160)
        raise RnncliError(
            f"cannot load {hub_id!r} from the Hugging Face hub ({why}); use a local folder or file "
            "(e.g. --dataset ../shared/data/sst2, --dataset reviews.csv) or --dataset builtin"
        ) from None


def _unreachable_hub() -> str | None:
    """The hub's host name when it has no address here (no network or DNS) and no proxy is set; else None."""
    import socket
    import urllib.request
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    if not host or urllib.request.getproxies():
        return None
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return host
    return None


@contextlib.contextmanager
def _quiet_hub(offline: bool):
    """The hub client's own warnings silenced (the raised error is reported instead); with `offline`,
    datasets and huggingface_hub read only the local cache."""
    import datasets.config
    from huggingface_hub import constants
    from huggingface_hub.utils import logging as hub_logging

    before = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE, hub_logging.get_verbosity()
    hub_logging.set_verbosity_error()
    if offline:
        constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        with _quiet_datasets():
            yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = before[:2]
        hub_logging.set_verbosity(before[2])


def find_column(columns: list[str], wanted: str, candidates: tuple[str, ...], what: str, where: str) -> str:
    if wanted:
        if wanted not in columns:
            raise RnncliError(f"{where}: no {what} column {wanted!r} (columns: {', '.join(columns)})")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    flag = f"--{what}-column"
    raise RnncliError(f"{where}: no {what} column found among {', '.join(columns)}; name it with {flag}")


def fingerprint(dsd) -> str:
    parts = {name: getattr(split, "_fingerprint", "") for name, split in sorted(dsd.items())}
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def require_train(dsd, where: str):
    """The data set's train split, or a one-line error naming the splits it has."""
    if "train" not in dsd:
        raise RnncliError(f"{where}: no train split (found: {', '.join(dsd) or 'none'})")
    return dsd["train"]


def has_labels(columns: list[str], config: DataConfig) -> bool:
    """Whether a split of `columns` names a label column, `--label-column`'s or a usual one: a
    labelled source is read as `rnncli train` reads it; an unlabelled one only for its texts."""
    return any(c in columns for c in (config.label_column, *LABEL_COLUMNS) if c)


def pick_columns(columns: list[str], features, config: DataConfig, where: str) -> tuple[str, str, list[str] | None]:
    """The text and label columns, and the label names the data declares (a ClassLabel's), if any."""
    text_col = find_column(columns, config.text_column, TEXT_COLUMNS, "text", where)
    label_col = find_column(columns, config.label_column, LABEL_COLUMNS, "label", where)
    feature = features.get(label_col) if features is not None else None
    return text_col, label_col, list(feature.names) if hasattr(feature, "names") else None


def to_splits(raw: dict, names, known_labels, where: str, notes: list[str]) -> tuple[list[str], dict[str, Split]]:
    """{split: (text cells, label values)} -> the label names and {split: Split} of the labeled rows."""
    labels, raw = label_ids(raw, names, known_labels, where, notes)
    return labels, {name: Split(as_texts(texts), ids) for name, (texts, ids) in raw.items()}


def carved_note(rows: int, fraction: float, seed: int, taken_from: str) -> str:
    return f"no validation split: carved {rows:,} rows ({fraction:.0%}, stratified, seed {seed}) from {taken_from}"


def load_corpus(config: DataConfig, seed: int = 0, known_labels: list[str] | None = None,
                need_train: bool = True) -> Corpus:
    """Load and normalise a data set. `known_labels` (a trained model's) fixes the label ids."""
    dsd, source = open_dataset(config.dataset)
    where = config.dataset
    if need_train:
        require_train(dsd, where)
    first = next(iter(dsd.values()))
    text_col, label_col, names = pick_columns(list(first.column_names), first.features, config, where)
    raw = {}
    for name, split in dsd.items():
        rows = split.select_columns([text_col, label_col])[:]  # plain lists, read from Arrow at once
        raw[name] = (rows[text_col], rows[label_col])
    notes: list[str] = []
    labels, splits = to_splits(raw, names, known_labels, where, notes)
    if need_train and len(splits["train"]) == 0:
        raise RnncliError(f"{where}: the train split is empty")
    if "validation" not in splits and len(splits.get("train", ())):
        # carved the same way (seed, fraction) at training and at evaluation, so eval sees the same rows
        splits["train"], splits["validation"] = carve(splits["train"], config.val_fraction, seed)
        notes.append(carved_note(len(splits["validation"]), config.val_fraction, seed, "train"))
    return Corpus(name=config.dataset, source=source, fingerprint=fingerprint(dsd), labels=labels,
                  splits=splits, notes=notes)


def label_ids(raw, names, known_labels, where, notes):
    """Map every split's labels to ids 0..n-1; drop rows labelled -1 or None (unlabeled)."""
    values = [v for _, labels in raw.values() for v in labels if v is not None and v != -1]
    if not values:
        raise RnncliError(f"{where}: no labeled rows")
    strings = isinstance(values[0], str)
    if strings:
        seen = sorted({str(v) for v in values})
        labels = known_labels or seen
    else:
        if any(isinstance(v, float) and not float(v).is_integer() for v in values):
            raise RnncliError(f"{where}: labels must be integers or strings, found {values[0]!r}")
        top = int(max(values))
        if min(values) < 0:
            raise RnncliError(f"{where}: negative label {int(min(values))} (only -1, unlabeled, is allowed)")
        labels = known_labels or names or CONVENTIONAL_NAMES.get(top + 1, [str(i) for i in range(top + 1)])
    index = {name: i for i, name in enumerate(labels)}
    out = {}
    for split, (texts, values) in raw.items():
        keep = [i for i, v in enumerate(values) if v is not None and v != -1]
        if len(keep) < len(values):
            notes.append(f"{split}: dropped {len(values) - len(keep):,} unlabeled rows")
        if strings:
            unknown = sorted({str(values[i]) for i in keep} - index.keys())
            if unknown:
                raise RnncliError(f"{where}: {split} has labels the model does not know: {', '.join(unknown)}")
            ids = np.array([index[str(values[i])] for i in keep], dtype=np.int64)
        else:
            ids = np.array([int(values[i]) for i in keep], dtype=np.int64)
            if len(ids) and ids.max() >= len(labels):
                bad = sorted(set(ids[ids >= len(labels)].tolist()))
                raise RnncliError(f"{where}: {split} has labels the model does not know: "
                                  f"{', '.join(map(str, bad))} (it knows {len(labels)} classes)")
        out[split] = ([texts[i] for i in keep], ids)
    return list(labels), out


def carve_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which rows a seeded, stratified carve puts into validation."""
    rng = np.random.default_rng(seed)
    val_rows = [np.empty(0, dtype=np.int64)]
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        rng.shuffle(rows)
        val_rows.append(rows[: round(len(rows) * fraction)])
    val_mask = np.zeros(len(labels), dtype=bool)
    val_mask[np.concatenate(val_rows)] = True
    return val_mask


def carve(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """A seeded, stratified validation split taken from train."""
    val_mask = carve_mask(train.labels, fraction, seed)
    return train.pick(~val_mask), train.pick(val_mask)
