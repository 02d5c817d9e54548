"""The classifier's contract: padding never changes a text's result, shapes follow the config."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli.config import ModelConfig
from rnncli.model import RNNClassifier

VOCAB, EMBED, HIDDEN, CLASSES = 37, 11, 13, 3


def build(**kw) -> RNNClassifier:
    """A tiny model; an n-gram bag (`ngrams` > 0, 101 buckets) gets random weights and ratios, as
    one fresh from training would have none."""
    torch.manual_seed(0)
    config = ModelConfig(embed=EMBED, hidden=HIDDEN, dropout=0.0, ngram_buckets=101, **kw)
    model = RNNClassifier(config, VOCAB, CLASSES).eval()
    if config.ngrams:
        with torch.no_grad():
            model.ngrams.weight.normal_()
            model.ngrams.ratio.normal_()[0] = 0  # feature 0 (padding, no n-gram) adds nothing
    return model


@settings(max_examples=40, deadline=None)
@given(
    cell=st.sampled_from(["rnn", "gru", "lstm"]),
    pool=st.sampled_from(["last", "mean", "max", "attn"]),
    bidirectional=st.booleans(),
    layers=st.integers(1, 2),
    lengths=st.lists(st.integers(1, 7), min_size=2, max_size=5),
    ngrams=st.integers(0, 3),
    seed=st.integers(0, 10_000),
)
def test_padding_does_not_change_a_sentence(cell, pool, bidirectional, layers, lengths, ngrams, seed):
    model = build(cell=cell, pool=pool, bidirectional=bidirectional, layers=layers, ngrams=ngrams)
    g = torch.Generator().manual_seed(seed)
    texts = [torch.randint(1, VOCAB, (n,), generator=g) for n in lengths]
    batch = torch.zeros(max(lengths), len(texts), dtype=torch.long)  # (seq, batch), 0 = <pad>
    for j, t in enumerate(texts):
        batch[: len(t), j] = t
    with torch.no_grad():
        together = model(batch, torch.tensor(lengths))  # (batch, classes)
        for j, t in enumerate(texts):
            alone = model(t[:, None])  # (1, classes)
            torch.testing.assert_close(together[j], alone[0], atol=1e-5, rtol=0)


@settings(max_examples=40, deadline=None)
@given(
    cell=st.sampled_from(["rnn", "gru", "lstm"]),
    pool=st.sampled_from(["last", "mean", "max", "attn"]),
    layers=st.integers(1, 2),
    lengths=st.lists(st.integers(1, 7), min_size=2, max_size=5),
    ngrams=st.integers(0, 3),
    seed=st.integers(0, 10_000),
)
def test_padding_does_not_change_a_gradient(cell, pool, layers, lengths, ngrams, seed):
    """A one-direction model trains on right-padded batches (rnncli.batching.SortedBatches): the
    loss and every weight's gradient are those of its texts, each run alone."""
    model = build(cell=cell, pool=pool, layers=layers, ngrams=ngrams).train()  # dropout 0: the same arithmetic as eval
    g = torch.Generator().manual_seed(seed)
    texts = [torch.randint(1, VOCAB, (n,), generator=g) for n in lengths]
    labels = torch.randint(0, CLASSES, (len(texts),), generator=g)
    batch = torch.zeros(max(lengths), len(texts), dtype=torch.long)  # (seq, batch), 0 = <pad>
    for j, t in enumerate(texts):
        batch[: len(t), j] = t
    params = [p for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(batch, torch.tensor(lengths)), labels, reduction="sum")
    together = torch.autograd.grad(loss, params, allow_unused=True)
    alone_loss = sum(torch.nn.functional.cross_entropy(model(t[:, None]), labels[j: j + 1], reduction="sum")
                     for j, t in enumerate(texts))
    alone = torch.autograd.grad(alone_loss, params, allow_unused=True)
    torch.testing.assert_close(loss, alone_loss, atol=1e-5, rtol=1e-5)
    for (name, _), a, b in zip(model.named_parameters(), together, alone):
        if a is None or b is None:
            assert a is None and b is None, name
            continue
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_logits_shape_and_step_logits_match_last_pooling():
    model = build(layers=2)
    ids = torch.randint(1, VOCAB, (7, 3))  # (seq, batch)
    with torch.no_grad():
        logits = model(ids)
        steps = model.step_logits(ids)
    assert logits.shape == (3, CLASSES)
    assert steps.shape == (7, 3, CLASSES)
    torch.testing.assert_close(steps[-1], logits)  # the last prefix is the whole text


def test_identity_init_makes_recurrent_weights_the_identity():
    model = build(cell="rnn", nonlinearity="relu", weight_init="identity")
    torch.testing.assert_close(model.rnn.weight_hh_l0.data, torch.eye(HIDDEN))
    assert model.rnn.bias_hh_l0.abs().sum() == 0


def test_orthogonal_init_per_gate():
    model = build(cell="gru", weight_init="orthogonal")
    for gate in model.rnn.weight_hh_l0.data.chunk(3):  # (hidden, hidden) each
        torch.testing.assert_close(gate @ gate.T, torch.eye(HIDDEN), atol=1e-5, rtol=0)


def test_word_dropout_reads_tokens_as_unk_only_while_training():
    from rnncli.dropout import word_dropout

    ids = torch.randint(2, VOCAB, (7, 3))  # (seq, batch), no <pad> or <unk>
    ids[5:, 0] = 0  # the first text is padded after 5 tokens
    torch.manual_seed(1)
    dropped = word_dropout(ids, 0.3, training=True)  # (seq, batch)
    changed = dropped != ids
    assert changed.any() and not changed.all()
    assert (dropped[changed] == 1).all()  # a dropped token becomes <unk>, never another word
    assert (dropped[5:, 0] == 0).all()  # padding stays padding
    torch.manual_seed(2)
    share = (word_dropout(torch.randint(2, VOCAB, (400, 50)), 0.3, training=True) == 1).float().mean()
    assert abs(share - 0.3) < 0.02
    assert torch.equal(word_dropout(ids, 0.3, training=False), ids)  # evaluation reads every word
    assert torch.equal(word_dropout(ids, 0.0, training=True), ids)


def test_explainable_only_for_one_direction_and_last_pooling():
    assert build().explainable
    assert not build(bidirectional=True).explainable
    assert not build(pool="mean").explainable
    assert build(pool="attn", bidirectional=True).explainable  # it shows the attention each word gets


@settings(max_examples=60, deadline=None)
@given(
    cell=st.sampled_from(["rnn", "gru", "lstm"]),
    pool=st.sampled_from(["last", "mean", "max", "attn"]),
    nonlinearity=st.sampled_from(["tanh", "relu"]),
    bidirectional=st.booleans(),
    layers=st.integers(1, 3),
    lengths=st.lists(st.integers(1, 7), min_size=1, max_size=6),
    lookup=st.sampled_from(["none", "vocabulary", "words used"]),
    ngrams=st.integers(0, 3),
    seed=st.integers(0, 10_000),
)
def test_packed_inference_matches_one_text_at_a_time(cell, pool, nonlinearity, bidirectional, layers, lengths,
                                                     lookup, ngrams, seed):
    """Evaluation packs many texts into one run without padding (each text read backwards within
    its own length for a second direction), may look the first layer's input terms up in a table,
    and pools with its own code for every mode; each answer is the text's own, as the padded
    batch's pooling gives it too."""
    import numpy as np

    from rnncli.batching import packed_batch
    from rnncli.tokenizer import Encoded

    model = build(cell=cell, pool=pool, nonlinearity=nonlinearity, bidirectional=bidirectional, layers=layers,
                  ngrams=ngrams)
    assert model.packable
    g = torch.Generator().manual_seed(seed)
    lengths = np.array(lengths)
    enc = Encoded(ids=torch.randint(1, VOCAB, (int(lengths.sum()),), generator=g).numpy(),
                  starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths=lengths, full_lengths=lengths)
    order, ids, sizes = packed_batch(enc, np.arange(len(lengths)))
    assert sorted(order.tolist()) == list(range(len(lengths))) and sum(sizes) == lengths.sum()
    words = np.unique(enc.ids)  # the words these texts use, sorted
    tables = {"none": None, "vocabulary": model.input_table(tokens=VOCAB + 1),  # more tokens than words: it pays
              "words used": model.input_table(tokens=len(words) + 1, words=words)}
    assert model.input_table(tokens=VOCAB) is None and model.input_table(tokens=len(words), words=words) is None
    table = tables[lookup]
    assert (table is None) == (lookup == "none")
    logits = model.packed_logits(ids, sizes, table)  # (texts, classes), longest first
    padded = torch.zeros(int(lengths.max()), len(lengths), dtype=torch.long)  # (seq, batch), 0 = <pad>
    for i in range(len(lengths)):
        padded[: lengths[i], i] = torch.from_numpy(enc.text(i))
    with torch.no_grad():
        together = model(padded, torch.from_numpy(lengths))  # (batch, classes): the padded pooling
        for row, i in enumerate(order):
            alone = model(torch.from_numpy(enc.text(i))[:, None])  # (1, classes)
            torch.testing.assert_close(logits[row], alone[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(together[i], alone[0], atol=1e-5, rtol=0)


def test_every_worker_thread_flushes_denormals():
    """Fading gradients and AdamW's moments for unused words reach denormal floats, some 20x slower
    on the CPU unless flushed to zero; torch's worker threads must flush them too, not only the main
    thread (half of this product ran unflushed on the second thread before the flag moved to import)."""
    import subprocess
    import sys

    code = ("import torch, rnncli.model\n"
            "torch.set_num_threads(2)\n"
            "x = torch.full((1 << 22,), 1e-39)  # denormal: below float32's smallest normal, 1.18e-38\n"
            "print(int((x * 1.0).ne(0).sum()))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "0"


def test_attention_pooling_is_a_weighted_mean_over_valid_steps():
    """`attn` scores each step's output and softmaxes the scores over the text's own steps: with every
    score equal it is the mean, and a step that scores far higher takes the whole weight."""
    lengths = torch.tensor([7, 4, 2])
    out = torch.randn(7, 3, HIDDEN)  # (seq, batch, hidden)
    model = build(pool="attn")
    with torch.no_grad():
        model.attn.weight.zero_()
        torch.testing.assert_close(model.pool(out, lengths), build(pool="mean").pool(out, lengths))
        model.attn.weight[0, 0] = 1e4  # the score follows the first feature
        out[:, :, 0] = torch.arange(7.0)[:, None]  # which grows with the step
        pooled = model.pool(out, lengths)  # (batch, hidden)
    for j, n in enumerate(lengths.tolist()):  # the last valid step wins, never padding beyond it
        torch.testing.assert_close(pooled[j], out[n - 1, j])
