"""Tests for the built-in synthetic sentiment corpus (rnncli.builtin)."""

from __future__ import annotations

import random
import re
import subprocess
import sys

import pytest

from rnncli import builtin as corpus
from rnncli.builtin import LABELS, _Clause, _compose, _label_of, builtin_dataset, generate

POLAR_WORDS = set(corpus._POLARITY)


@pytest.fixture(scope="module")
def dataset():
    return builtin_dataset(seed=0)


@pytest.fixture(scope="module")
def rows(dataset):
    """{split: (sentences, labels)} as plain lists (column access on a Dataset is not free)."""
    return {name: (split["sentence"], split["label"]) for name, split in dataset.items()}


def _tokens(text: str) -> list[str]:
    """Whitespace + punctuation tokenization, as a downstream tokenizer would do it."""
    return re.findall(r"\w+|[^\w\s]", text)


# --------------------------------------------------------------------------- determinism


def test_generate_is_deterministic_per_seed():
    assert generate(200, seed=7) == generate(200, seed=7)
    assert generate(200, seed=7) != generate(200, seed=8)


def test_generate_does_not_touch_the_global_rng():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate(50, seed=0)
    assert random.random() == expected


def test_generate_shapes_and_balance():
    pairs = generate(301, seed=3)
    assert len(pairs) == 301
    assert generate(0, seed=3) == []
    labels = [y for _, y in pairs]
    assert set(labels) == {0, 1}
    assert abs(labels.count(0) - labels.count(1)) <= 1
    for text, _ in pairs:
        assert 4 <= len(text.split()) <= 20
        assert text == text.lower()
        assert "  " not in text and text == text.strip()


def test_builtin_dataset_is_deterministic():
    a = builtin_dataset(seed=5, sizes=(40, 10, 10))
    b = builtin_dataset(seed=5, sizes=(40, 10, 10))
    c = builtin_dataset(seed=6, sizes=(40, 10, 10))
    for split in ("train", "validation", "test"):
        assert a[split].to_dict() == b[split].to_dict()
    assert a["train"]["sentence"] != c["train"]["sentence"]


# --------------------------------------------------------------------------- dataset shape


def test_builtin_dataset_splits_columns_and_features(dataset):
    import datasets

    assert list(dataset) == ["train", "validation", "test"]
    assert {k: len(v) for k, v in dataset.items()} == {"train": 8000, "validation": 1000, "test": 1000}
    for split in dataset.values():
        assert split.column_names == ["sentence", "label"]
        assert split.features["sentence"] == datasets.Value("string")
        assert isinstance(split.features["label"], datasets.ClassLabel)
        assert split.features["label"].names == ["negative", "positive"] == list(LABELS)


def test_builtin_dataset_splits_are_disjoint_and_deduplicated(rows):
    train, val, test = (set(rows[s][0]) for s in ("train", "validation", "test"))
    assert len(train) == 8000 and len(val) == 1000 and len(test) == 1000
    assert not train & val and not train & test and not val & test


def test_builtin_dataset_is_balanced(rows):
    for _, labels in rows.values():
        share = sum(labels) / len(labels)
        assert 0.4 <= share <= 0.6


def test_custom_sizes_and_bad_sizes():
    small = builtin_dataset(seed=1, sizes=(7, 3, 0))
    assert [len(small[s]) for s in ("train", "validation", "test")] == [7, 3, 0]
    with pytest.raises(ValueError):
        builtin_dataset(sizes=(10, 10))
    with pytest.raises(ValueError):
        builtin_dataset(sizes=(10, -1, 10))


def test_vocabulary_covers_the_example_sentence(rows):
    vocab = {t for s in rows["train"][0] for t in _tokens(s)}
    assert {"i", "hate", "this", "boring", "movie"} <= vocab
    assert {"but", "although", "not", "never", "hardly", ",", "very"} <= vocab


def test_contrast_sentences_are_a_good_share(rows):
    sentences = rows["train"][0]
    share = sum(("but" in s.split()) or ("although" in s.split()) for s in sentences) / len(sentences)
    assert 0.3 <= share <= 0.55


# --------------------------------------------------------------------------- label composition


@pytest.mark.parametrize(
    "sentence, label",
    [
        ("i hate this boring movie", 0),
        ("the plot is very dull", 0),
        ("the acting was n't great", 0),
        ("i never enjoyed the film", 0),
        ("the script is hardly charming", 0),
        ("i did n't hate it", 1),
        ("this is not a bad film .", 1),
        ("the cast is great but the plot is awful", 0),
        ("the plot is awful but the cast is great", 1),
        ("although the plot is dull , the acting is brilliant", 1),
        ("the acting is brilliant although the plot is dull", 1),
        ("although the acting is brilliant , the plot is dull", 0),
    ],
)
def test_reference_labels(sentence, label):
    assert _label_of(sentence) == label


def test_every_generated_label_follows_from_the_words(rows):
    seen: dict[str, int] = {}
    for sentences, labels in rows.values():
        for text, y in zip(sentences, labels):
            assert _label_of(text) == y, text
            assert seen.setdefault(text, y) == y
    for text, y in generate(2000, seed=11):
        assert _label_of(text) == y, text
        assert seen.setdefault(text, y) == y


def test_each_clause_has_one_polar_word_sense_and_at_most_one_negation(rows):
    for text in rows["validation"][0]:
        tokens = [t for t in text.split() if t not in {".", "!"}]
        if "but" in tokens:
            i = tokens.index("but")
            clauses = [tokens[:i], tokens[i + 1 :]]
        elif tokens[0] == "although":
            i = tokens.index(",")
            clauses = [tokens[1:i], tokens[i + 1 :]]
        elif "although" in tokens:
            i = tokens.index("although")
            clauses = [tokens[:i], tokens[i + 1 :]]
        else:
            clauses = [tokens]
        for clause in clauses:
            clause = [t for t in clause if t != ","]
            assert clause, text
            assert sum(t in corpus.NEGATORS for t in clause) <= 1, text
            polarities = {corpus._POLARITY[t] for t in clause if t in POLAR_WORDS}
            assert len(polarities) == 1, text  # e.g. "i hate this boring movie": verb and adjective agree


def test_swapping_clauses_around_but_flips_the_label(rows):
    flipped = 0
    for text, y in zip(*rows["train"]):
        tokens = text.split()
        if "but" not in tokens:
            continue
        end = [t for t in tokens if t in {".", "!"}]
        body = [t for t in tokens if t not in {".", "!", ","}]
        i = body.index("but")
        first, second = body[:i], body[i + 1 :]
        p_first, p_second = corpus._clause_polarity(first), corpus._clause_polarity(second)
        assert y == p_second
        swapped = " ".join(second + ["but"] + first + end)
        assert _label_of(swapped) == p_first
        if p_first != p_second:
            flipped += 1
            assert _label_of(swapped) == 1 - y
    assert flipped > 500


@pytest.mark.parametrize("form", corpus.CONTRAST_FORMS)
def test_compose_takes_the_label_of_the_main_clause(form):
    great = _Clause(("the", "cast", "is", "great"), 1)
    dull = _Clause(("the", "plot", "is", "dull"), 0)
    for main, sub in ((great, dull), (dull, great)):
        text, y = _compose(main, sub, form)
        assert y == main.polarity == _label_of(text)
        assert set(text.split()) >= set(main.tokens) | set(sub.tokens)
    # Same bag of words, opposite labels: only the order tells them apart.
    a, ya = _compose(great, dull, form)
    b, yb = _compose(dull, great, form)
    assert sorted(a.split()) == sorted(b.split()) and ya != yb


def test_compose_rejects_unknown_form():
    with pytest.raises(ValueError):
        _compose(_Clause(("it", "is", "good"), 1), _Clause(("it", "is", "bad"), 0), "because")


# --------------------------------------------------------------------------- word order matters


def test_unigram_bag_of_words_falls_short(rows):
    pytest.importorskip("sklearn")
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 1), token_pattern=r"(?u)\b\w+\b|n't|[,.!]")
    (train_x, train_y), (test_x, test_y) = rows["train"], rows["test"]
    model = LogisticRegression(max_iter=2000).fit(vectorizer.fit_transform(train_x), train_y)
    accuracy = model.score(vectorizer.transform(test_x), test_y)
    assert 0.6 <= accuracy < 0.95


# --------------------------------------------------------------------------- library hygiene


def test_import_is_cheap_and_quiet():
    # Only what importing the corpus module itself adds counts (the package __init__ is not ours).
    code = (
        "import sys, rnncli; before = set(sys.modules); import rnncli.builtin; "
        "bad = [m for m in ('datasets', 'typer', 'rich', 'torch') if m in set(sys.modules) - before]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    assert out.stderr == ""
