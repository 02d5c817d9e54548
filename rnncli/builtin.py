"""A built-in, offline, synthetic movie-review sentiment corpus.

Sentences are generated from a small compositional grammar, deterministically from a seed, with
``random.Random(seed)`` only (no global RNG state is touched). Tokens are separated by single spaces,
and punctuation (``,`` ``.`` ``!``) and the negation clitic ``n't`` are separate tokens.

How a label is composed from the words:

* A *clause* carries one polar word: an adjective ("the plot is very dull") or, for first-person
  clauses, a verb ("i loved the cast"; an adjective on the object, if any, agrees with the verb:
  "i hate this boring movie"). At most one negation word (``not``, ``never``, ``n't``, ``hardly``)
  appears in a clause, and it flips the clause's polarity ("the acting was n't great" is negative).
* A *contrast* sentence joins two clauses, and its label is the polarity of the main clause:
  the clause after ``but`` ("the cast is great but the plot is awful" is negative), or the clause
  not introduced by ``although`` ("although the plot is dull , the acting is brilliant" and
  "the acting is brilliant although the plot is dull" are both positive).

The two clauses of a contrast usually have opposite polarity, so which clause wins depends on word
order alone; that makes a unigram bag-of-words model fall well short of an order-aware model, while
the label stays a deterministic function of the token sequence (see :func:`_label_of`).

This is a library module: it never prints, and ``datasets`` is imported only by
:func:`builtin_dataset`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    import datasets

__all__ = ["LABELS", "SPLITS", "builtin_dataset", "generate"]

LABELS: tuple[str, str] = ("negative", "positive")
SPLITS: tuple[str, str, str] = ("train", "validation", "test")

NEGATIVE, POSITIVE = 0, 1

# --------------------------------------------------------------------------- lexicon

_POS_ADJ = (
    "great",
    "wonderful",
    "brilliant",
    "charming",
    "moving",
    "witty",
    "gorgeous",
    "superb",
    "delightful",
    "fantastic",
    "excellent",
    "clever",
    "beautiful",
    "gripping",
    "fun",
    "good",
    "funny",
    "engaging",
    "stunning",
    "touching",
)
_NEG_ADJ = (
    "boring",
    "dull",
    "awful",
    "terrible",
    "clumsy",
    "bland",
    "tedious",
    "lifeless",
    "predictable",
    "mediocre",
    "bad",
    "weak",
    "silly",
    "messy",
    "forgettable",
    "painful",
    "stale",
    "flat",
    "poor",
    "dreadful",
)
_ADJ = {NEGATIVE: _NEG_ADJ, POSITIVE: _POS_ADJ}

# First-person verbs: (present, past, base).
_POS_VERB = (
    ("love", "loved", "love"),
    ("enjoy", "enjoyed", "enjoy"),
    ("adore", "adored", "adore"),
    ("like", "liked", "like"),
    ("admire", "admired", "admire"),
)
_NEG_VERB = (
    ("hate", "hated", "hate"),
    ("dislike", "disliked", "dislike"),
    ("loathe", "loathed", "loathe"),
    ("despise", "despised", "despise"),
    ("detest", "detested", "detest"),
)
_VERB = {NEGATIVE: _NEG_VERB, POSITIVE: _POS_VERB}

_SUBJECTS = (
    "this movie",
    "this film",
    "the movie",
    "the film",
    "the plot",
    "the acting",
    "the director",
    "the soundtrack",
    "the script",
    "the cast",
    "the ending",
    "the dialogue",
    "the story",
    "the pacing",
    "the music",
    "the cinematography",
    "it",
)
_OBJECT_DETS = ("this", "the")
_OBJECT_NOUNS = (
    "movie",
    "film",
    "plot",
    "acting",
    "soundtrack",
    "script",
    "cast",
    "story",
    "ending",
    "dialogue",
    "performance",
    "music",
)
_DEMONSTRATIVES = ("it", "this")
_KIND_NOUNS = ("movie", "film", "story", "script", "performance")

_ADJ_INTENSIFIERS = ("very", "really", "truly", "extremely", "quite", "so", "incredibly")
_ATTRIBUTIVE_INTENSIFIERS = ("very", "really", "truly", "extremely", "incredibly")  # "a very dull film"
_NEGATED_INTENSIFIERS = ("very", "really", "that", "so")  # "is not that great"
_VERB_INTENSIFIERS = ("really", "truly", "absolutely", "just")

# Copulas: (affirmative tokens, negated variants).  Each negated variant holds exactly one negator.
_COPULAS = (
    ("is", ("is not", "is n't", "is never", "is hardly")),
    ("was", ("was not", "was n't", "was never", "was hardly")),
    ("seems", ("does n't seem", "never seems", "hardly seems")),
    ("feels", ("does n't feel", "never feels", "hardly feels")),
)

NEGATORS: frozenset[str] = frozenset({"not", "never", "n't", "hardly"})
_PUNCT = frozenset({",", ".", "!"})

# Polar word -> lexical polarity (used by the reference labeller).
_POLARITY: dict[str, int] = {}
for _pol, _words in _ADJ.items():
    _POLARITY.update({w: _pol for w in _words})
for _pol, _verbs in _VERB.items():
    _POLARITY.update({form: _pol for v in _verbs for form in v})
del _pol, _words, _verbs

# --------------------------------------------------------------------------- generation knobs

_P_CONTRAST = 0.38  # share of two-clause (but / although) sentences
_P_SAME_POLARITY = 0.25  # share of contrasts whose clauses agree
_P_NEGATION = 0.12  # per clause
_P_INTENSIFIER = 0.35
_MIN_TOKENS, _MAX_TOKENS = 4, 20


@dataclass(frozen=True)
class _Clause:
    """One clause: its tokens and its (composed) polarity, 0 negative or 1 positive."""

    tokens: tuple[str, ...]
    polarity: int

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


def _copular_clause(rng: random.Random, polarity: int, negated: bool, subject: str | None = None) -> _Clause:
    """``SUBJ COP [NEG] [INTENS] ADJ``, e.g. "the acting was n't very great"."""
    subject = subject if subject is not None else rng.choice(_SUBJECTS)
    affirmative, negated_forms = rng.choice(_COPULAS)
    verb = rng.choice(negated_forms) if negated else affirmative
    lexical = polarity ^ int(negated)
    words = [subject, verb]
    if rng.random() < _P_INTENSIFIER:
        words.append(rng.choice(_NEGATED_INTENSIFIERS if negated else _ADJ_INTENSIFIERS))
    words.append(rng.choice(_ADJ[lexical]))
    return _Clause(tuple(" ".join(words).split()), polarity)


def _kind_clause(rng: random.Random, polarity: int, negated: bool) -> _Clause:
    """``it/this is [NEG] a [INTENS] ADJ NOUN``, e.g. "this is not a very good film"."""
    lexical = polarity ^ int(negated)
    verb = rng.choice(("is", "was"))
    words = [rng.choice(_DEMONSTRATIVES), verb]
    if negated:
        words.append(rng.choice(("not", "n't", "never")))
    words.append("a")
    if rng.random() < _P_INTENSIFIER:
        words.append(rng.choice(_ATTRIBUTIVE_INTENSIFIERS))
    words.append(rng.choice(_ADJ[lexical]))
    words.append(rng.choice(_KIND_NOUNS))
    article = words.index("a")
    if words[article + 1][0] in "aeiou":
        words[article] = "an"
    return _Clause(tuple(" ".join(words).split()), polarity)


def _first_person_clause(rng: random.Random, polarity: int, negated: bool) -> _Clause:
    """``i [INTENS|NEG] VERB DET [ADJ] NOUN``, e.g. "i hate this boring movie", "i never enjoyed the film".

    An adjective on the object appears only in affirmative clauses and always agrees with the verb,
    so the clause has exactly one polarity.
    """
    lexical = polarity ^ int(negated)
    present, past, base = rng.choice(_VERB[lexical])
    words = ["i"]
    if negated:
        form = rng.randrange(4)
        if form == 0:
            words += ["do", "n't", base]
        elif form == 1:
            words += ["did", "n't", base]
        elif form == 2:
            words += ["never", past]
        else:
            words += ["hardly", past]
    else:
        if rng.random() < _P_INTENSIFIER:
            words.append(rng.choice(_VERB_INTENSIFIERS))
        words.append(rng.choice((present, past)))
    if rng.random() < 0.12:
        words.append("it")
    else:
        words.append(rng.choice(_OBJECT_DETS))
        if not negated and rng.random() < 0.4:
            words.append(rng.choice(_ADJ[lexical]))
        words.append(rng.choice(_OBJECT_NOUNS))
    return _Clause(tuple(words), polarity)


def _clause(rng: random.Random, polarity: int, subject: str | None = None) -> _Clause:
    negated = rng.random() < _P_NEGATION
    if subject is not None:
        return _copular_clause(rng, polarity, negated, subject)
    kind = rng.random()
    if kind < 0.55:
        return _copular_clause(rng, polarity, negated)
    if kind < 0.8:
        return _first_person_clause(rng, polarity, negated)
    return _kind_clause(rng, polarity, negated)


# Contrast forms; in each the label is the polarity of ``main``.
CONTRAST_FORMS = ("but", ", but", "although_first", "although_last")


def _compose(main: _Clause, sub: _Clause, form: str) -> tuple[str, int]:
    """Join a main and a subordinate/conceded clause; the sentence's label is ``main.polarity``.

    ``"but"``: "SUB but MAIN"; ``", but"``: "SUB , but MAIN"; ``"although_first"``:
    "although SUB , MAIN"; ``"although_last"``: "MAIN although SUB".
    """
    if form == "but":
        text = f"{sub.text} but {main.text}"
    elif form == ", but":
        text = f"{sub.text} , but {main.text}"
    elif form == "although_first":
        text = f"although {sub.text} , {main.text}"
    elif form == "although_last":
        text = f"{main.text} although {sub.text}"
    else:
        raise ValueError(f"unknown contrast form {form!r}; expected one of {CONTRAST_FORMS}")
    return text, main.polarity


def _sample(rng: random.Random, label: int) -> str:
    """One sentence whose label is ``label``, between 4 and 20 tokens long."""
    while True:
        if rng.random() < _P_CONTRAST:
            main = _clause(rng, label)
            sub_polarity = label if rng.random() < _P_SAME_POLARITY else 1 - label
            sub = _clause(rng, sub_polarity)
            # Two clauses about the same subject read oddly; redraw the subject once if so.
            if sub.tokens[:2] == main.tokens[:2] and sub.tokens[0] != "i":
                sub = _clause(rng, sub_polarity)
            text, _ = _compose(main, sub, rng.choice(CONTRAST_FORMS))
        else:
            text = _clause(rng, label).text
        end = rng.random()
        if end < 0.3:
            text += " ."
        elif end < 0.36:
            text += " !"
        if _MIN_TOKENS <= len(text.split()) <= _MAX_TOKENS:
            return text


def _balanced_labels(rng: random.Random, n: int) -> list[int]:
    labels = [i % 2 for i in range(n)]
    if n % 2 and rng.random() < 0.5:
        labels[-1] = POSITIVE
    rng.shuffle(labels)
    return labels


def generate(n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` (sentence, label) pairs, label 0 = negative and 1 = positive, deterministic from ``seed``.

    Classes are balanced (they differ by at most one). Sentences may repeat; see
    :func:`builtin_dataset` for disjoint splits.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = random.Random(seed)
    return [(_sample(rng, y), y) for y in _balanced_labels(rng, n)]


def builtin_dataset(seed: int = 0, sizes: Sequence[int] = (8000, 1000, 1000)) -> datasets.DatasetDict:
    """The built-in corpus as a ``datasets.DatasetDict`` with splits train / validation / test.

    Columns: ``sentence`` (string) and ``label`` (``ClassLabel(names=["negative", "positive"])``).
    No sentence occurs twice in the whole dict, so the splits are disjoint; each split's classes are
    balanced (they differ by at most one).
    """
    import datasets  # lazy: keeps `import rnncli.builtin` cheap

    sizes = tuple(int(s) for s in sizes)
    if len(sizes) != len(SPLITS) or any(s < 0 for s in sizes):
        raise ValueError(f"sizes must be three non-negative counts (train, validation, test), got {sizes}")
    rng = random.Random(seed)
    seen: set[str] = set()
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=list(LABELS))}
    )
    splits = {}
    for name, size in zip(SPLITS, sizes):
        sentences: list[str] = []
        labels = _balanced_labels(rng, size)
        for y in labels:
            for _ in range(10_000):
                text = _sample(rng, y)
                if text not in seen:
                    break
            else:  # pragma: no cover - the grammar has millions of sentences
                raise RuntimeError("the built-in grammar ran out of distinct sentences")
            seen.add(text)
            sentences.append(text)
        splits[name] = datasets.Dataset.from_dict({"sentence": sentences, "label": labels}, features=features)
    return datasets.DatasetDict(splits)


# --------------------------------------------------------------------------- reference labeller


def _clause_polarity(tokens: Sequence[str]) -> int:
    """Polarity of one clause from its words: the verb (first person) or adjective, flipped by a negator."""
    polar = [t for t in tokens if t in _POLARITY]
    if not polar:
        raise ValueError(f"no polar word in clause {' '.join(tokens)!r}")
    # In first-person clauses the verb comes first and any object adjective agrees with it.
    polarity = _POLARITY[polar[0]]
    negations = sum(t in NEGATORS for t in tokens)
    if negations > 1:
        raise ValueError(f"more than one negation in clause {' '.join(tokens)!r}")
    return polarity ^ negations


def _label_of(sentence: str) -> int:
    """The label the grammar assigns to ``sentence``, computed from its word sequence alone.

    A reference for tests: every generated pair satisfies ``_label_of(text) == label``.
    """
    tokens = sentence.split()
    while tokens and tokens[-1] in _PUNCT:
        tokens = tokens[:-1]
    if "but" in tokens:
        main = tokens[tokens.index("but") + 1 :]
    elif tokens and tokens[0] == "although":
        main = tokens[tokens.index(",") + 1 :]
    elif "although" in tokens:
        main = tokens[: tokens.index("although")]
    else:
        main = tokens
    return _clause_polarity([t for t in main if t not in _PUNCT])
