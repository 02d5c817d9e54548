"""`--ngrams`: a bag of hashed word n-grams beside the recurrent layers, weighted by naive Bayes
log-count ratios counted in train, trained, saved, loaded and answered with the model."""

import math

import numpy as np
import pytest
import torch
from conftest import TINY, inside

from rnncli.config import ModelConfig, resolve
from rnncli.errors import RnncliError
from rnncli.ngrams import PRIME, NgramBag

VOCAB, BUCKETS = 37, 101


def test_each_row_reads_the_ngrams_that_end_on_it():
    bag = NgramBag(3, VOCAB, BUCKETS, 2)
    ids, prev = torch.tensor([5, 7, 9]), torch.tensor([-1, 0, 1])  # one text: 5 7 9
    pair = (5 * PRIME + 7) % BUCKETS
    want = [[5, 7, 9],  # the words themselves
            [0, VOCAB + pair, VOCAB + (7 * PRIME + 9) % BUCKETS],  # "5 7" ends on 7, "7 9" on 9
            [0, 0, VOCAB + (pair * PRIME + 9) % BUCKETS]]  # "5 7 9"
    assert bag.features(ids, prev).tolist() == want


def test_ratios_count_texts_not_tokens_one_class_against_the_rest():
    """Word 5 (twice) is in the positive text only, 6 in both, 7 in the negative one: with add-one
    counts over the 38 features, 5 reads log 2 for positive, 6 nothing, 7 -log 2."""
    bag = NgramBag(1, VOCAB, 1, 2)
    ids, starts, lengths = np.array([5, 5, 6, 6, 7]), np.array([0, 3]), np.array([3, 2])
    bag.fit_ratios(ids, starts, lengths, labels=np.array([1, 0]))
    positive = bag.ratio[:, 1]
    assert positive[5].item() == pytest.approx(math.log(2))
    assert positive[6].item() == pytest.approx(0.0, abs=1e-7)
    assert positive[7].item() == pytest.approx(-math.log(2))
    torch.testing.assert_close(bag.ratio[:, 0], -positive)  # two classes: each is the other's rest
    assert bag.ratio[0].abs().sum() == 0  # padding adds nothing


def test_ratios_read_texts_at_their_own_starts():
    """A carved split's texts lie anywhere in the flat ids, and a pair never spans two texts."""
    bag = NgramBag(2, VOCAB, BUCKETS, 5)
    ids = np.array([9, 5, 7, 9, 6, 8, 9])  # texts "5 7" at 1 and "6 8" at 4, the 9s belong to neither
    bag.fit_ratios(ids, np.array([4, 1]), np.array([2, 2]), labels=np.array([3, 1]))
    held = (bag.ratio[:, 3] > 0).nonzero().flatten().tolist()  # the features class 3's text holds
    assert held == sorted([6, 8, VOCAB + (6 * PRIME + 8) % BUCKETS])
    torch.testing.assert_close(bag.ratio[9], bag.ratio[10])  # 9 is in no text: it reads as unseen


def test_a_table_too_large_is_refused_before_it_is_allocated():
    with pytest.raises(RnncliError, match="--ngram-buckets"):
        NgramBag(2, 50_000, 1 << 24, 5)


def test_step_logits_add_the_ngrams_read_so_far():
    """The answer after each prefix (`predict --explain`) is what the model gives the text cut there."""
    from rnncli.model import RNNClassifier

    torch.manual_seed(0)
    model = RNNClassifier(ModelConfig(embed=11, hidden=13, dropout=0.0, ngrams=2, ngram_buckets=BUCKETS),
                          VOCAB, 5).eval()
    with torch.no_grad():
        model.ngrams.weight.normal_()
        model.ngrams.ratio.normal_()[0] = 0
        ids = torch.randint(1, VOCAB, (7, 3))  # (seq, batch)
        steps = model.step_logits(ids)  # (seq, batch, classes)
        for t in (0, 3, 6):
            torch.testing.assert_close(steps[t], model(ids[: t + 1]), atol=1e-5, rtol=0)


def test_training_with_ngrams_saves_loads_and_predicts(tmp_path, reviews_csv):
    from rnncli import checkpoint
    from rnncli.predict import Classifier
    from rnncli.train import train

    with inside(tmp_path):
        run = train(resolve(None, {**TINY, "dataset": str(reviews_csv), "ngrams": 2, "ngram_buckets": BUCKETS,
                                   "out": "bag"}))
    loaded = checkpoint.load(tmp_path / run.out)
    bag = loaded.model.ngrams
    assert bag.ratio.abs().sum() > 0 and bag.weight.abs().sum() > 0  # counted, then learned
    assert loaded.config.model.ngrams == 2
    classifier = Classifier.load(tmp_path / run.out)
    texts = ["a gorgeous , witty film", "dull and boring"]
    records = classifier.predict(texts)
    with torch.no_grad():  # the packed inference answers as the padded forward pass does
        ids = [torch.tensor(loaded.tokenizer.encode(t).ids) for t in texts]
        for record, one in zip(records, ids):
            p = loaded.model(one[:, None]).softmax(1)[0]  # (classes,)
            assert max(record.probabilities.values()) == pytest.approx(p.max().item(), abs=1e-5)


def test_init_from_a_model_with_ngrams_starts_a_new_bag(tmp_path, reviews_csv):
    """The bag belongs to the labels it was counted and learned for, like the head: a run from
    another model counts and learns its own, of its own size."""
    from rnncli import checkpoint
    from rnncli.train import train

    with inside(tmp_path):
        source = train(resolve(None, {**TINY, "epochs": 1, "dataset": str(reviews_csv), "ngrams": 2,
                                      "ngram_buckets": BUCKETS, "out": "source"}))
        run = train(resolve(None, {**TINY, "epochs": 1, "dataset": "builtin", "init_from": str(source.out),
                                   "ngrams": 3, "ngram_buckets": 53, "out": "target"}))
    bag = checkpoint.load(tmp_path / run.out).model.ngrams
    assert bag.n == 3 and bag.weight.shape == (bag.vocab_size + 53, 2)


def test_streaming_is_refused_in_one_line(tmp_path, reviews_csv):
    from rnncli.train import train

    with inside(tmp_path), pytest.raises(RnncliError, match="--streaming"):
        train(resolve(None, {**TINY, "dataset": str(reviews_csv), "streaming": True, "ngrams": 2, "out": "s"}))
