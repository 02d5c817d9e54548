"""Classifier.predict: one record per text, in order, whatever the text; explain reads the RNN step by step."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnncli.errors import RnncliError
from rnncli.predict import BATCH_TOLERANCE, Classifier


@pytest.fixture(scope="module")
def clf(tiny_model):
    return Classifier.load(tiny_model)


def known_words(clf, n):
    words = sorted(w for w in clf.tokenizer.get_vocab() if w.isalpha())
    assert len(words) >= n
    return words[:n]


def assert_distribution(p, labels):
    assert list(p.probabilities) == labels
    assert math.isclose(sum(p.probabilities.values()), 1.0, abs_tol=1e-5)
    assert all(0.0 <= v <= 1.0 for v in p.probabilities.values())
    assert p.label in labels and p.score == p.probabilities[p.label]


def test_one_record_per_text_in_input_order(clf):
    texts = ["i loved the film", "dull", "", "the plot is awful , but the cast is great", "   ", "dull"]
    preds = clf.predict(texts, batch_size=2)
    assert [p.text for p in preds] == texts
    assert [p.empty for p in preds] == [False, False, True, False, True, False]
    for p in preds:
        if p.empty:  # a blank line is answered with an empty record, never skipped
            assert p.label is None and p.score is None and p.probabilities == {} and p.tokens == 0
        else:
            assert_distribution(p, ["neg", "pos"])
    assert preds[1].probabilities == pytest.approx(preds[5].probabilities, abs=BATCH_TOLERANCE, rel=0)
    assert clf.predict([]) == []


@pytest.mark.parametrize("batch_size", [1, 2, 7, 128])
def test_a_texts_answer_does_not_depend_on_its_batch(clf, batch_size):
    """Batch-invariant to BATCH_TOLERANCE: alone, or among others of every length, anywhere."""
    text = "the plot is awful , but the cast is great"
    alone = clf.predict([text])[0]
    others = ["dull", "i loved the film", "a b c d e f g h i j k l m n o p q", "great great great"] * 5
    for position in (0, 3, len(others)):
        texts = others[:position] + [text] + others[position:]
        p = clf.predict(texts, batch_size=batch_size)[position]
        assert p.label == alone.label
        assert p.probabilities == pytest.approx(alone.probabilities, abs=BATCH_TOLERANCE, rel=0)


def test_unknown_share(clf):
    a, b = known_words(clf, 2)
    p = clf.predict([f"{a} qqzx {b} vvwy"])[0]
    assert p.unknown_share == 0.5 and p.tokens == 4
    assert clf.predict([f"{a} {b}"])[0].unknown_share == 0.0
    assert clf.predict(["qqzx"])[0].unknown_share == 1.0


def test_threshold_decides_the_second_label(clf):
    p = clf.predict(["i loved the film"])[0]
    positive = p.probabilities["pos"]
    below = clf.predict(["i loved the film"], threshold=positive * 0.99)[0]
    above = clf.predict(["i loved the film"], threshold=min(positive * 1.01 + 1e-6, 0.999999))[0]
    assert below.label == "pos" and below.score == positive
    assert above.label == "neg" and above.score == p.probabilities["neg"]
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(RnncliError, match="threshold"):
            clf.predict(["x"], threshold=bad)


def test_a_prediction_answered_at_a_threshold_later_is_the_one_asked_for_at_once(clf):
    """What the server does: one pass without a threshold, each request's threshold applied after."""
    texts = ["i loved the film", "dull", "", "not bad at all"]
    for threshold in (0.01, 0.3, 0.5, 0.7, 0.99):
        assert [p.at_threshold(threshold) for p in clf.predict(texts)] == clf.predict(texts, threshold=threshold)


def test_a_megabyte_of_text_is_truncated_and_answered(clf):
    a, b = known_words(clf, 2)
    text = f"{a} {b} " * (1_000_000 // (len(a) + len(b) + 2))
    assert len(text) >= 999_000
    p = clf.predict([text])[0]
    assert p.truncated and p.tokens == clf.max_length
    assert_distribution(p, ["neg", "pos"])


@pytest.mark.parametrize("text", ["!!! ?", "...", "😀🎬🍿", "¿¡", "—"])
def test_punctuation_and_emoji_are_answered(clf, text):
    p = clf.predict([text])[0]
    assert not p.empty and p.tokens >= 1
    assert_distribution(p, ["neg", "pos"])


def test_explain_follows_the_tokens_and_ends_at_the_prediction(clf):
    text = "the plot is awful , but the cast is great !"
    ex = clf.explain(text)
    n = len(clf.tokenizer.encode(text, add_special_tokens=False).ids)
    assert len(ex.tokens) == len(ex.probabilities) == ex.prediction.tokens == n == 11
    assert ex.tokens[:3] == ["the", "plot", "is"]
    assert ex.labels == ["neg", "pos"]
    for row in ex.probabilities:
        assert math.isclose(sum(row), 1.0, abs_tol=1e-5)
    predicted = clf.predict([text])[0].probabilities
    torch.testing.assert_close(torch.tensor(ex.probabilities[-1]), torch.tensor(list(predicted.values())),
                               atol=1e-5, rtol=0)


def test_records_are_what_predict_json_prints(clf):
    """The records the CLI prints come from the library: a Python API user gets the same dicts."""
    p = clf.predict(["a great film"])[0]
    record = p.to_dict(top_k=1)
    assert record["label"] == p.label and record["top"] == [(p.label, p.score)]
    assert p.to_dict()["top"] is None  # no ranking asked for
    assert {k: v for k, v in record.items() if k != "top"} == dataclasses.asdict(p)  # every field, as it is
    ex = clf.explain("the plot is awful , but the cast is great !")
    shown = ex.to_dict()
    assert shown["tokens"] == ex.tokens and shown["probabilities"] == ex.probabilities
    assert "attention" not in shown  # a last-step model has an answer after each prefix instead
    assert (shown["label"], shown["score"]) == (ex.prediction.label, ex.prediction.score)
    json.dumps(shown), json.dumps(record)  # plain types only


def test_predict_json_writes_a_chunk_of_records_at_a_time(clf, tiny_model, tmp_path, monkeypatch):
    """A long input's records come a chunk at a time, in input order, the same as one call gives."""
    from typer.testing import CliRunner

    import rnncli.predict
    from rnncli.cli import app

    texts = ["a good film", "", "dull and slow", "fine fine", "bad"] * 3
    chunks = list(clf.predict_chunks(texts, chunk=4))
    assert [len(c) for c in chunks] == [4, 4, 4, 3]
    whole = clf.predict(texts)
    assert [p.label for c in chunks for p in c] == [p.label for p in whole]
    assert [p.score for c in chunks for p in c] == pytest.approx([p.score for p in whole], abs=BATCH_TOLERANCE)
    monkeypatch.setattr(rnncli.predict, "CHUNK", 4)
    (tmp_path / "texts.txt").write_text("".join(t + "\n" for t in texts))
    result = CliRunner().invoke(app, ["predict", "--model", str(tiny_model), "--file", str(tmp_path / "texts.txt"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == texts


def test_explain_is_cut_at_max_length(clf):
    ex = clf.explain("great " * (clf.max_length + 50))
    assert len(ex.tokens) == len(ex.probabilities) == clf.max_length


def test_explain_an_empty_text_is_an_error(clf):
    with pytest.raises(RnncliError, match="empty"):
        clf.explain("   ")


@pytest.mark.parametrize("options, why", [({"bidirectional": True}, "bidirectional"),
                                          ({"pool": "mean"}, "mean"), ({"pool": "max"}, "max")])
def test_explain_refuses_models_it_cannot_read(model_folder, options, why):
    folder, _ = model_folder(**options)
    clf = Classifier.load(folder)
    assert clf.predict(["w1 w2"])[0].label is not None  # predict still works
    with pytest.raises(RnncliError, match=f"last step.*{why}"):
        clf.explain("w1 w2 w3")


def test_explain_an_attention_model_shows_the_weights_its_answer_is_pooled_with(model_folder):
    """For `--pool attn` (here bidirectional, which has no answer after each prefix) --explain gives
    each token's attention weight: they sum to 1, and pooling `out` with them gives the prediction."""
    folder, _ = model_folder(cell="gru", bidirectional=True, pool="attn")
    clf = Classifier.load(folder)
    ex = clf.explain("w1 w2 w3 w4 w5")
    assert ex.tokens == ["w1", "w2", "w3", "w4", "w5"] and ex.probabilities == []
    assert len(ex.attention) == 5 and math.isclose(sum(ex.attention), 1.0, abs_tol=1e-5)
    assert max(ex.attention) > min(ex.attention)  # an untrained score still tells the steps apart
    ids = torch.tensor(clf.tokenizer.encode("w1 w2 w3 w4 w5", add_special_tokens=False).ids)[:, None]  # (seq, 1)
    with torch.no_grad():
        out, _ = clf.model.encode(ids)  # (seq, 1, hidden x 2)
        pooled = (out[:, 0] * torch.tensor(ex.attention)[:, None]).sum(0)  # (hidden x 2,)
        probs = clf.model.head(pooled).softmax(-1)  # (classes,)
    torch.testing.assert_close(probs, torch.tensor(list(ex.prediction.probabilities.values())), atol=1e-5, rtol=0)


WORDS = ["i", "loved", "the", "film", "plot", "is", "dull", "great", ",", "but", "not", "zzyzx", "é", "😀"]
sentence = st.lists(st.sampled_from(WORDS), min_size=0, max_size=9).map(" ".join)


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(sentence | st.text(max_size=30), min_size=1, max_size=8), batch_size=st.integers(1, 5))
def test_a_prediction_does_not_depend_on_its_batch(clf, texts, batch_size):
    together = clf.predict(texts, batch_size=batch_size)
    for text, p in zip(texts, together):
        alone = clf.predict([text])[0]
        assert p.empty == alone.empty
        if not p.empty:
            torch.testing.assert_close(torch.tensor(list(p.probabilities.values())),
                                       torch.tensor(list(alone.probabilities.values())), atol=1e-5, rtol=0)


@settings(max_examples=100, deadline=None)
@given(text=st.text())
def test_any_string_gets_a_distribution(clf, text):
    p = clf.predict([text])[0]
    assert p.text == text
    if p.empty:
        assert p.probabilities == {}
    else:
        assert_distribution(p, ["neg", "pos"])


def test_prediction_never_imports_the_data_stack(tiny_model):
    code = (
        "import sys\n"
        "heavy = lambda: sorted(m for m in ('datasets', 'pandas', 'pyarrow') if m in sys.modules)\n"
        "import rnncli.predict, rnncli.checkpoint\n"
        "assert heavy() == [], ('import', heavy())\n"
        "from rnncli.predict import Classifier\n"
        "clf = Classifier.load(sys.argv[1])\n"
        "assert clf.predict(['i loved it', ''])[0].label in ('neg', 'pos')\n"
        "clf.explain('i loved it')\n"
        "assert heavy() == [], ('predict', heavy())\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code, str(tiny_model)], capture_output=True, text=True, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_a_few_texts_run_on_one_thread_and_the_setting_is_restored(clf, monkeypatch):
    """Waking torch's worker threads costs more than a few texts' arithmetic; a big input keeps them."""
    import rnncli.inference

    real, seen = rnncli.inference.logits_of, []

    def spy(*args, **kw):
        seen.append(torch.get_num_threads())
        return real(*args, **kw)

    monkeypatch.setattr(rnncli.inference, "logits_of", spy)
    before = torch.get_num_threads()
    clf.predict(["a great film", "dull"])
    clf.predict(["a great film"] * 5000)  # 15,000 tokens
    assert seen == [1, before]
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("options", [{}, {"cell": "gru", "bidirectional": True, "pool": "attn"}, {"cell": "lstm"}])
def test_a_warm_classifier_answers_as_a_cold_one(model_folder, options):
    """`warm` (what a server builds once: the ASCII word dictionary and the first layer's lookup
    table) changes no answer beyond BATCH_TOLERANCE."""
    folder, _ = model_folder(**options)
    cold, warm = Classifier.load(folder), Classifier.load(folder).warm()
    assert warm._table is not None and cold._table is None
    texts = ["i loved the film", "dull, dull , DULL", "", "é 😀 the plot", "zzyzx is not great<br/>but"] * 3
    for a, b in zip(cold.predict(texts), warm.predict(texts)):
        assert (a.label, a.tokens, a.unknown_share, a.empty) == (b.label, b.tokens, b.unknown_share, b.empty)
        for k in a.probabilities:
            assert a.probabilities[k] == pytest.approx(b.probabilities[k], abs=BATCH_TOLERANCE, rel=0)
