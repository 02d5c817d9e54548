"""Words to ids: <pad>=0, <unk>=1, NFKC + lowercase, a vocabulary learned from the training split only."""

import json
import subprocess
import sys

import datasets
import numpy as np
from conftest import TINY
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli.builtin import generate
from rnncli.checkpoint import load
from rnncli.config import resolve
from rnncli.tokenizer import (
    FAST_FROM,
    PAD_ID,
    UNK_ID,
    ascii_words,
    encode,
    encode_ids,
    load_tokenizer,
    read_limit,
    train_tokenizer,
)
from rnncli.train import train

TEXTS = ["Hello, World!", "hello again , world", "A café<br />in Paris", "ﬁne ＦＵＬＬ width"]


def tokens(tok, text):
    return tok.encode(text, add_special_tokens=False).tokens


def test_special_tokens_come_first():
    tok = train_tokenizer(TEXTS)
    assert tok.token_to_id("<pad>") == PAD_ID == 0
    assert tok.token_to_id("<unk>") == UNK_ID == 1


def test_lowercase_nfkc_and_punctuation_split():
    tok = train_tokenizer(TEXTS)
    assert tokens(tok, "HELLO, world!") == ["hello", ",", "world", "!"]
    # NFKC folds the ligature and the full-width letters into plain ones
    assert tokens(tok, "fine full WIDTH") == ["fine", "full", "width"]
    assert tok.token_to_id("fine") is not None and tok.token_to_id("ﬁne") is None
    assert tokens(tok, "Café") == ["café"]


def test_html_line_breaks_are_dropped():
    tok = train_tokenizer(TEXTS)
    for br in ["<br />", "<br/>", "<br>"]:
        assert tokens(tok, f"hello{br}world") == ["hello", "world"]
    assert "br" not in tok.get_vocab() and "<" not in tok.get_vocab()


def test_min_freq_and_max_vocab():
    texts = ["a a a b b c", "d a b"]
    assert set(train_tokenizer(texts, min_freq=2).get_vocab()) == {"<pad>", "<unk>", "a", "b"}
    assert set(train_tokenizer(texts, min_freq=3).get_vocab()) == {"<pad>", "<unk>", "a", "b"}
    assert set(train_tokenizer(texts, min_freq=4).get_vocab()) == {"<pad>", "<unk>", "a"}
    small = train_tokenizer(texts, max_vocab=3)  # special tokens count
    assert set(small.get_vocab()) == {"<pad>", "<unk>", "a"}
    assert encode(small, ["a c"], 7).ids.tolist() == [small.token_to_id("a"), UNK_ID]


def test_same_texts_give_the_same_ids_in_every_process():
    texts = [" ".join(f"w{i}" for i in range(k, 40)) for k in range(0, 40, 3)]  # many ties in frequency
    code = ("import json, sys\nfrom rnncli.tokenizer import train_tokenizer\n"
            "print(json.dumps(train_tokenizer(json.loads(sys.argv[1])).get_vocab(), sort_keys=True))")
    runs = [subprocess.run([sys.executable, "-c", code, json.dumps(texts)], capture_output=True, text=True,
                           check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1] == json.dumps(train_tokenizer(texts).get_vocab(), sort_keys=True) + "\n"


def test_encode_truncates_and_reports_full_lengths():
    tok = train_tokenizer(["one two three four five six seven eight nine"])
    enc = encode(tok, ["one two three four five six seven eight nine", "two", "", "zebra"], max_length=7)
    assert enc.lengths.tolist() == [7, 1, 1, 1]
    assert enc.full_lengths.tolist() == [9, 1, 0, 1]
    assert enc.starts.tolist() == [0, 7, 8, 9]
    assert [tok.id_to_token(i) for i in enc.text(0).tolist()] == ["one", "two", "three", "four", "five",
                                                                  "six", "seven"]
    assert enc.text(2).tolist() == [UNK_ID]  # an empty text is one <unk> with full length 0
    assert enc.text(3).tolist() == [UNK_ID]  # an unknown word is <unk> with full length 1
    assert len(encode(tok, [], max_length=7)) == 0


def test_a_huge_text_is_read_from_its_head_and_counts_as_truncated(monkeypatch):
    """A 100-MB line costs what its head costs; the tokens kept are those of the whole text."""
    import rnncli.tokenizer

    tok = train_tokenizer(["good fun film", "bad dull film"])
    longest = []
    real = rnncli.tokenizer.encode_ids
    monkeypatch.setattr(rnncli.tokenizer, "encode_ids", lambda t, texts: longest.append(max(map(len, texts))) or
                        real(t, texts))
    word = "é" * (4 * read_limit(7))  # one word longer than all that is read of a text
    enc = encode(tok, ["good fun " * 4 + word, word + " good", "bad film"], max_length=7)
    assert max(longest) == read_limit(7) == 65_536
    assert [tok.id_to_token(i) for i in enc.text(0).tolist()] == ["good", "fun"] * 3 + ["good"]
    assert enc.text(1).tolist() == [UNK_ID]
    assert enc.lengths.tolist() == [7, 1, 2]
    assert enc.full_lengths.tolist() == [9, 8, 2]  # a text read in part counts as truncated
    assert read_limit(1000) == 256 * 1001  # long enough for a thousand words of 256 characters


def test_saved_tokenizer_encodes_the_same(tmp_path):
    tok = train_tokenizer(TEXTS)
    tok.save(str(tmp_path / "tokenizer.json"))
    again = load_tokenizer(tmp_path / "tokenizer.json")
    for text in TEXTS + ["unseen words<br />here"]:
        assert again.encode(text, add_special_tokens=False).ids == tok.encode(text, add_special_tokens=False).ids


def test_vocabulary_comes_from_train_only(tmp_path, monkeypatch):
    datasets.disable_progress_bars()
    pairs = generate(120, seed=2)
    assert any("the" in t.split() for t, _ in pairs)
    datasets.Dataset.from_dict({"text": [t for t, _ in pairs], "label": [y for _, y in pairs]}).to_parquet(
        str(tmp_path / "train.parquet"))
    datasets.Dataset.from_dict({"text": ["zyzzyva quixotic", "the the"], "label": [1, 0]}).to_parquet(
        str(tmp_path / "validation.parquet"))
    monkeypatch.chdir(tmp_path)
    run = train(resolve(None, {**TINY, "epochs": 1, "dataset": str(tmp_path), "out": "m"}))
    vocab = load("m").tokenizer.get_vocab()
    assert "the" in vocab and "zyzzyva" not in vocab and "quixotic" not in vocab
    assert run.report.val_oov_rate == 2 / 4


VOCAB = train_tokenizer(["the film is great , not dull !"])


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(), max_size=5), max_length=st.integers(1, 7))
def test_encode_never_fails_on_any_text(texts, max_length):
    enc = encode(VOCAB, texts, max_length)
    assert len(enc) == len(texts)
    assert ((1 <= enc.lengths) & (enc.lengths <= max_length)).all()
    assert (enc.lengths == np.clip(enc.full_lengths, 1, max_length)).all()
    assert len(enc.ids) == enc.lengths.sum()
    assert ((0 <= enc.ids) & (enc.ids < VOCAB.get_vocab_size())).all()
    assert PAD_ID not in enc.ids.tolist()  # padding is the batcher's business, never a token


def test_split_words_gives_the_vocabulary_words():
    """bench/vectors.py learns vectors from these words, so they must be the tokenizer's own."""
    from rnncli.tokenizer import split_words, train_tokenizer

    texts = ["It's a <br />Film!", "does n't work"]
    words = list(split_words(texts))
    assert words == [["it", "'", "s", "a", "film", "!"], ["does", "n", "'", "t", "work"]]
    vocab = train_tokenizer(texts).get_vocab()
    assert {w for row in words for w in row} == vocab.keys() - {"<pad>", "<unk>"}


# ASCII text goes through rnncli's own copy of the rules; it must give tokenizers' ids exactly.
ASCII = st.text(alphabet=st.characters(max_codepoint=127), max_size=60)
BREAKS = st.sampled_from(["<br>", "<BR />", "<br/>", "<Br\t/>", "<br\x0b>", "<br\x1c/>", "<br / >", "< br>", "<brr>"])
WORDS = ["the", "film", "is", "great", "_", "x1", "!", "...", "'s", "<unk>"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(ASCII, st.lists(st.one_of(ASCII, BREAKS, st.sampled_from(WORDS))).map("".join)),
                min_size=1, max_size=8),
       st.booleans())
def test_the_ascii_fast_path_gives_the_ids_tokenizers_gives(texts, with_break_word):
    tok = train_tokenizer(WORDS + ["br", "THE FILM, <br />Great!!"] + (["<br>"] if with_break_word else []))
    assert ascii_words(tok) is not None
    assert encode_ids(tok, texts) == [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def test_the_fast_path_serves_ascii_texts_and_tokenizers_the_rest():
    tok = train_tokenizer(TEXTS)
    texts = ["Hello, World!", "A café<br />in Paris", "ﬁne ＦＵＬＬ width", "", "   ", "hello\x00world"]
    assert encode_ids(tok, texts * FAST_FROM) == [e.ids for e in tok.encode_batch(texts * FAST_FROM,
                                                                                    add_special_tokens=False)]


def test_a_tokenizer_with_other_rules_goes_through_tokenizers(tmp_path):
    from tokenizers import pre_tokenizers

    tok = train_tokenizer(TEXTS)
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # "world!" stays one word
    assert ascii_words(tok) is None
    assert encode_ids(tok, ["hello, world!"] * FAST_FROM)[0] == tok.encode("hello, world!", add_special_tokens=False).ids
    tok.save(str(tmp_path / "tokenizer.json"))
    assert ascii_words(load_tokenizer(tmp_path / "tokenizer.json")) is None
