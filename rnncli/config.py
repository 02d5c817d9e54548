"""One run configuration: dataclasses mirrored by the TOML sections [data], [model], [train] and
[pretrain] (read by `rnncli pretrain` only).

Every field name is also its TOML key and, with dashes, its CLI flag (`batch_size` <-> `--batch-size`).
Defaults live here and nowhere else. Precedence: defaults < `--config FILE.toml` < CLI flags; with
`init_from`, the source model's cell and sizes (ARCHITECTURE) stand in for the defaults.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnncli.errors import RnncliError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CELLS = ("rnn", "gru", "lstm")
NONLINEARITIES = ("tanh", "relu")
POOLS = ("last", "mean", "max", "attn")
INITS = ("default", "orthogonal", "identity")
CLASS_WEIGHTS = ("none", "auto")
PRECISIONS = ("fp32", "bf16", "fp16")


ARCHITECTURE = ("cell", "nonlinearity", "layers", "embed", "hidden", "bidirectional")  # what --init-from shares
SEED_LIMIT = 2**32  # numpy's seeds are 0 <= seed < 2**32


def _option(default: Any, help: str, **limits: Any) -> Any:
    """A field with its help text and limits (min, max, choices) kept beside its default."""
    return field(default=default, metadata={"help": help, **limits})


# Legacy spellings still read from TOML files and old model folders: old key -> (section, field).
RENAMED = {"init": ("model", "weight_init")}


@dataclass
class DataConfig:
    dataset: str = _option("builtin", "Data: `builtin`, a hub id or alias (sst2, sst5, imdb, rotten_tomatoes), "
                      "a local folder in hub layout, or one .parquet/.csv/.tsv/.json/.jsonl file.")
    text_column: str = _option("", "Text column; empty: found by name (text, sentence, review, content).")
    label_column: str = _option("", "Label column; empty: found by name (label, labels, sentiment).")
    val_fraction: float = _option(0.1, "Share of train carved out (seeded, stratified) when there is no "
                             "validation split.", min=0.0, max=0.9, exclusive_min=True)
    max_length: int = _option(256, "Tokens kept per text; longer texts are truncated.", min=1, max=100_000)
    min_freq: int = _option(1, "Words seen fewer times in train become <unk>.", min=1, max=10**9)
    max_vocab: int = _option(50000, "Largest vocabulary, special tokens included.", min=3, max=10_000_000)
    streaming: bool = _option(False, "Read the training split as a stream (datasets IterableDataset), a buffer "
                         "at a time, for corpora larger than memory.")
    vocab_sample: int = _option(100000, "With --streaming: the first rows read to build the vocabulary, fix the "
                           "labels and carve validation when there is none.", min=1, max=10**9)
    stream_buffer: int = _option(20000, "With --streaming: rows held at once, grouped by length and shuffled.",
                           min=1, max=10**8)


@dataclass
class ModelConfig:
    cell: str = _option("rnn", "Recurrent cell.", choices=CELLS)
    nonlinearity: str = _option("tanh", "Activation of the plain rnn cell.", choices=NONLINEARITIES)
    layers: int = _option(1, "Stacked recurrent layers.", min=1, max=64)
    embed: int = _option(128, "Embedding size (the RNN's input feature size).", min=1, max=8192)
    hidden: int = _option(128, "Hidden state size.", min=1, max=8192)
    bidirectional: bool = _option(False, "Read each text both ways.")
    pool: str = _option("last", "How the steps' outputs become one vector: the last valid step, the mean or max "
                   "over valid steps, or attn: a mean weighted by a score learned for each step's output.",
                   choices=POOLS)
    dropout: float = _option(0.2, "Dropout on embeddings, between layers and before the head.", min=0.0, max=0.95)
    word_dropout: float = _option(0.0, "While training, the chance that a token is read as <unk>: the model learns not "
                             "to lean on any one word and what <unk> means in context.", min=0.0, max=0.95)
    ngrams: int = _option(0, "A bag of word n-grams beside the recurrent layers (NBSVM): each n-gram of up to this "
                     "many words, weighted by its naive Bayes log-count ratio in train, gets a learned "
                     "weight per class. The bag and the head learn on losses of their own (the loss shown "
                     "is the sum) and the answer adds their log probabilities. Helps long texts; 0: none.",
                     min=0, max=4)
    ngram_buckets: int = _option(1 << 21, "Hash buckets for the --ngrams of two or more words.", min=1, max=1 << 24)
    weight_init: str = _option("orthogonal", "How the recurrent weights W_hh start: PyTorch's default, orthogonal, or "
                          "identity (Le et al. 2015, for relu rnn). Not --init-from, which starts from a "
                          "trained model.", choices=INITS)
    vectors: str = _option("", "Pretrained word vectors (word2vec/GloVe text: `word v1 ... vD` per line, optional "
                      "`N D` header) for the embedding rows of the words they cover; D must equal --embed. "
                      "Read once at the start of training: the model folder holds the weights.")
    vectors_vocab: bool = _option(True, "Words of the vectors file that the training split lacks join the "
                             "vocabulary (up to --max-vocab, in file order) with their vectors, so that "
                             "they are not <unk> at validation and prediction.")
    freeze_vectors: bool = _option(False, "Keep the embedding fixed during training (needs --vectors); "
                              "otherwise the vectors are fine-tuned.")
    init_from: str = _option("", "Start from a trained model folder (transfer, e.g. SST-2 to SST-5) or a language "
                        "model (rnncli pretrain): its vocabulary, embedding and recurrent layers. Its cell and "
                        "sizes are the run's unless the config or flags set them (then they must match); the "
                        "head starts anew for this data's labels.")

    @property
    def explainable(self) -> bool:
        """Whether `predict --explain` can show how such a model reads a text: the answer after each
        prefix (one direction, last step) or the attention each word gets (`attn` pooling)."""
        return (not self.bidirectional and self.pool == "last") or self.pool == "attn"


@dataclass
class TrainConfig:
    epochs: int = _option(5, "Passes over the training split.", min=1, max=100_000)
    batch_size: int = _option(64, "Texts per batch.", min=1, max=1_000_000)
    lr: float = _option(3e-3, "AdamW learning rate.", min=0.0, exclusive_min=True)
    lr_decay: float = _option(1.0, "Each epoch's learning rate is the previous epoch's times this; 1 keeps it "
                         "constant.", min=0.0, max=1.0, exclusive_min=True)
    weight_decay: float = _option(0.0, "AdamW weight decay.", min=0.0)
    clip: float = _option(1.0, "Gradient norm clip; 0 turns it off.", min=0.0)
    seed: int = _option(0, "Seed for weights, data order and splits.", min=0, max=SEED_LIMIT - 1)
    patience: int = _option(3, "Stop after this many epochs without a better validation accuracy.", min=1,
                     max=100_000)
    restarts: int = _option(3, "When a batch's loss explodes, start the epoch again from the weights it began "
                            "with at half the learning rate, at most this many times in a run; 0 stops "
                            "at the first explosion.", min=0, max=20)
    label_smoothing: float = _option(0.0, "Train towards (1 - this) on the true label and the rest spread over the "
                                "others, instead of all on the true label.", min=0.0, max=0.99)
    adversarial: float = _option(0.0, "Adversarial training (Miyato et al. 2017): each step also trains on the batch "
                            "with its embedded words moved this far (L2 over each text) the way that raises "
                            "the loss most; 0 turns it off. A step then costs about three times as much.",
                            min=0.0, max=1000.0)
    class_weights: str = _option("none", "`auto` weighs the loss by inverse class frequency.", choices=CLASS_WEIGHTS)
    device: str = _option("auto", "auto, cpu, cuda or cuda:N. Under torchrun, cuda means each process's "
                     "LOCAL_RANK GPU.")
    precision: str = _option("fp32", "Training arithmetic: bf16 or fp16 autocast on CUDA (fp16 with loss "
                        "scaling); CPU trains in fp32.", choices=PRECISIONS)
    out: str = _option("", "Model folder; empty: runs/<dataset>-<timestamp>.")


@dataclass
class PretrainConfig:
    vector_epochs: int = _option(5, "Passes of skip-gram word vectors (gensim's Word2Vec) over the texts before "
                            "the language model, whose embedding starts from them; 0 starts it at random. "
                            "Not with --vectors, which gives the embedding its start.", min=0, max=1000)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


_SECTION_TYPES = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "pretrain": PretrainConfig}


def field_info(name: str) -> dataclasses.Field:
    """The dataclass field behind a flat name such as `batch_size`."""
    for cls in _SECTION_TYPES.values():
        for f in dataclasses.fields(cls):
            if f.name == name:
                return f
    raise KeyError(name)


def help_text(name: str) -> str:
    """Help for a CLI flag, with the default read from the dataclass."""
    return field_help(field_info(name))


def field_help(f: dataclasses.Field) -> str:
    """A field's help text, its choices, and its default and range read from the dataclass."""
    if isinstance(f.default, bool):
        default = "on" if f.default else "off"
    else:
        default = f.default if f.default != "" else "(empty)"
    choices = f" One of: {', '.join(f.metadata['choices'])}." if "choices" in f.metadata else ""
    bounds = valid_range(f)
    return f"{f.metadata['help']}{choices} (default: {default}{'; ' + bounds if bounds else ''})"


COMMAND_LINE = "command line"


def _name(f: dataclasses.Field, where: str) -> str:
    """How an error names a field: the flag on the command line, the key in a file."""
    return f"--{f.name.replace('_', '-')}" if where == COMMAND_LINE else f"`{f.name}`"


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(value: Any, f: dataclasses.Field, where: str) -> Any:
    kind = type(f.default)
    if kind is bool:
        if not isinstance(value, bool):
            raise RnncliError(f"{where}: {_name(f, where)} must be true or false, not {value!r}")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RnncliError(f"{where}: {_name(f, where)} must be {_KINDS[kind]}, not {value!r}")
    return value


def valid_range(f: dataclasses.Field) -> str:
    """The values a numeric field takes, in words: `> 0`, `between 0 and 0.95`, `> 0 and <= 1`."""
    m = {k: (f"{v:g}" if isinstance(v, float) else v) for k, v in f.metadata.items()}
    low = m.get("min")
    lo_sign = ">" if m.get("exclusive_min") else ">="
    if low is not None and "max" in m:
        if m.get("exclusive_min"):
            return f"> {low} and <= {m['max']}"
        return f"between {low} and {m['max']}"
    if low is not None:
        return f"{lo_sign} {low}"
    return f"<= {m['max']}" if "max" in m else ""


def _check(value: Any, f: dataclasses.Field, where: str) -> None:
    m = f.metadata
    if "choices" in m and value not in m["choices"]:
        raise RnncliError(f"{where}: {_name(f, where)} must be one of {', '.join(m['choices'])}, not {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    bad = isinstance(value, float) and not math.isfinite(value)  # NaN passes every comparison
    if "min" in m:
        bad = bad or (value <= m["min"] if m.get("exclusive_min") else value < m["min"])
    if "max" in m:
        bad = bad or value > m["max"]
    if bad:
        kind = "a finite number" if isinstance(value, float) else "an integer"
        bounds = valid_range(f)
        raise RnncliError(f"{where}: {_name(f, where)} must be {kind}{' ' + bounds if bounds else ''}, not {value!r}")


def from_dict(raw: dict[str, Any], where: str = "config", base: Config | None = None) -> Config:
    """Sections of raw values laid over `base` (defaults when None); unknown keys are errors."""
    config = base or Config()
    if not isinstance(raw, dict):
        raise RnncliError(f"{where}: must be a table of sections, not {type(raw).__name__}")
    for section, values in raw.items():
        if section not in _SECTION_TYPES:
            raise RnncliError(f"{where}: unknown section [{section}] (known: {', '.join(_SECTION_TYPES)})")
        if not isinstance(values, dict):
            raise RnncliError(f"{where}: [{section}] must be a table of keys")
        target = getattr(config, section)
        known = {f.name: f for f in dataclasses.fields(target)}
        for key, value in values.items():
            if RENAMED.get(key, ("", ""))[0] == section and RENAMED[key][1] not in values:
                key = RENAMED[key][1]
            if key not in known:
                raise RnncliError(f"{where}: unknown key `{key}` in [{section}]")
            value = _coerce(value, known[key], where)
            _check(value, known[key], where)
            setattr(target, key, value)
    return config


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise RnncliError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise RnncliError(f"{path}: not valid TOML ({e})") from None
    except OSError as e:
        raise RnncliError(f"{path}: cannot read config ({e.strerror})") from None


def resolve(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file, then flat `overrides` from the command line (None means unset).
    With `init_from`, the source model's architecture stands in for the defaults: what the file and
    the flags leave unset comes from the model the run starts from (once that folder exists: a
    config may name the folder another run will write, and training refuses a missing one)."""
    raw = load_toml(config_file) if config_file is not None else {}
    flags = _flags_by_section(overrides or {})
    config = from_dict(flags, where=COMMAND_LINE, base=from_dict(raw, where=str(config_file)))
    if config.model.init_from and Path(config.model.init_from).exists():
        base = from_dict(raw, where=str(config_file), base=source_architecture(config.model.init_from))
        config = from_dict(flags, where=COMMAND_LINE, base=base)
    return config


def source_architecture(folder: str) -> Config:
    """Defaults with the ARCHITECTURE fields of the model folder `folder` (classifier or language model)."""
    from rnncli.checkpoint import CONFIG, read_meta

    model = from_dict(read_meta(folder)["config"], where=str(Path(folder) / CONFIG)).model
    return Config(model=ModelConfig(**{key: getattr(model, key) for key in ARCHITECTURE}))


def _flags_by_section(overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat {name: value} from the command line as {section: {name: value}}, unset (None) left out."""
    by_section: dict[str, dict[str, Any]] = {}
    for name, value in overrides.items():
        if value is None:
            continue
        section = next((s for s, cls in _SECTION_TYPES.items()
                        if name in {f.name for f in dataclasses.fields(cls)}), None)
        if section is None:
            raise RnncliError(f"{COMMAND_LINE}: unknown option `{name}`")
        by_section.setdefault(section, {})[name] = value
    return by_section
