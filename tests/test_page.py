"""The page at / as a reader meets it: a real server, opened in headless Chromium (Debian's
`chromium` package), its rendered DOM read back. Skipped, saying why, where no browser is installed."""

import os
import shutil
import struct
import subprocess
import sys
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_serve import Server

from rnncli import load_model

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (Debian: apt-get install chromium)")
SENTENCE = "the acting is great but the plot is a mess"


def browse(url: str, *flags: str) -> str:
    """What Chromium prints for `url` with `flags`, once the page's requests are answered (virtual
    time runs only while nothing is loading)."""
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
            "--no-first-run", "--virtual-time-budget=30000", "--window-size=1200,1400", *flags, url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False,
                          env={**os.environ, "HOME": os.environ.get("TMPDIR", "/tmp")})
    assert done.returncode == 0, (argv, done.returncode, done.stderr[-3000:])
    return done.stdout


def dom(url: str) -> str:
    """The page's DOM after its script ran, as HTML."""
    return browse(url, "--dump-dom")


def screenshot(url: str, path: Path) -> Path:
    """A PNG of the rendered page. The README's, docs/page.png, is the SST-2 test's:
    RNNCLI_SCREENSHOT=docs/page.png python -m pytest tests/test_page.py -k sst2"""
    browse(url, f"--screenshot={path}")
    return path


class Page(HTMLParser):
    """The rendered page, as the tests read it: the label, the cells of the unrolled sentence, and
    the elements inside it."""

    def __init__(self, html: str):
        super().__init__()
        self.label, self.ready, self.cells, self.tags_in_unrolled = None, False, [], []
        self._depth_in_unrolled, self._in_word = 0, False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.ready = a.get("data-ready") == "true"
        if a.get("id") == "label":
            self.label = a.get("data-label")
        if self._depth_in_unrolled:
            self._depth_in_unrolled += 1
            self.tags_in_unrolled.append(tag)
        if a.get("id") == "unrolled":
            self._depth_in_unrolled = 1
        if "cell" in a.get("class", "").split():
            self.cells.append({"label": a.get("data-label"), "turn": a.get("data-turn") == "true", "word": ""})
        self._in_word = "word" in a.get("class", "").split()

    def handle_endtag(self, tag):
        if self._depth_in_unrolled:
            self._depth_in_unrolled -= 1
        self._in_word = False

    def handle_data(self, data):
        if self._in_word and self.cells:
            self.cells[-1]["word"] += data


def opened(server, text: str) -> Page:
    html = dom(f"{server.url}/?{urllib.parse.urlencode({'text': text})}")
    page = Page(html)
    assert page.ready, f"the page never finished reading the text:\n{html[-3000:]}"
    return page


def turns(explanation) -> list[bool]:
    """Where the answer after each word differs from the one before it."""
    labels = [max(range(len(row)), key=row.__getitem__) for row in explanation.probabilities]
    return [i > 0 and labels[i] != labels[i - 1] for i in range(len(labels))]


@pytest.fixture(scope="module")
def server(tiny_model):
    s = Server("--model", str(tiny_model))
    yield s
    assert s.stop() == 0, s.log


def test_the_page_shows_the_answer_and_one_cell_per_word(server, tiny_model):
    clf = load_model(tiny_model)
    page = opened(server, SENTENCE)
    explanation = clf.explain(SENTENCE)
    assert page.label == clf.predict([SENTENCE])[0].label
    assert [c["word"] for c in page.cells] == explanation.tokens
    step_labels = [explanation.labels[max(range(len(r)), key=r.__getitem__)] for r in explanation.probabilities]
    assert [c["label"] for c in page.cells] == step_labels  # under each word, the answer after it
    assert [c["turn"] for c in page.cells] == turns(explanation)


def test_a_sentence_of_markup_is_shown_as_text(server):
    text = '<script>document.title="owned"</script><b>bold</b> <img src=x onerror=alert(1)>'
    page = opened(server, text)
    words = [c["word"] for c in page.cells]
    assert "script" in words and "<unk>" in words  # the tokens, unknown ones as <unk>, all shown as text
    assert set(page.tags_in_unrolled) <= {"div", "span"}  # no element made of the text
    html = dom(f"{server.url}/?{urllib.parse.urlencode({'text': text})}")
    assert "<title>rnncli: watch the RNN read</title>" in html  # the script in the text never ran
    assert html.count("<script") == 1 and "<img" not in html and "<b>" not in html


def test_the_page_needs_no_network_and_no_key(tiny_model):
    s = Server("--model", str(tiny_model), env={"RNNCLI_API_KEY": "sesame"})
    try:
        import httpx

        r = httpx.get(f"{s.url}/")  # the page needs no key; what it calls does
        assert r.status_code == 200 and httpx.get(f"{s.url}/info").status_code == 401
        assert "default-src 'none'" in r.headers["content-security-policy"]  # nothing from elsewhere runs
        body = r.text.replace("http://www.w3.org/2000/svg", "")  # SVG's namespace is a name, not a fetch
        assert "http://" not in body and "https://" not in body and "src=" not in body
    finally:
        assert s.stop() == 0, s.log


def test_a_screenshot_of_the_page(server, tmp_path):
    shot = screenshot(f"{server.url}/?{urllib.parse.urlencode({'text': SENTENCE})}", tmp_path / "page.png")
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (1200, 1400)


SST2 = ROOT.parent / "shared" / "data" / "sst2"


@pytest.mark.slow
@pytest.mark.skipif(not SST2.is_dir(), reason=f"no SST-2 at {SST2}")
def test_the_sst2_model_turns_where_the_sentence_does(tmp_path):
    """On a real model the answer turns once the sentence does: positive after "great", negative by "mess"."""
    subprocess.run([sys.executable, "-m", "rnncli", "train", "--dataset", str(SST2), "--epochs", "1", "--out",
                    str(tmp_path / "sst2")], check=True, capture_output=True, timeout=900)
    s = Server("--model", str(tmp_path / "sst2"))
    try:
        page = opened(s, SENTENCE)
        words = [c["word"] for c in page.cells]
        assert page.label == "negative" and page.cells[words.index("great")]["label"] == "positive"
        assert any(c["turn"] for c in page.cells[words.index("but"):])
        if os.environ.get("RNNCLI_SCREENSHOT"):
            screenshot(f"{s.url}/?{urllib.parse.urlencode({'text': SENTENCE})}",
                       Path(os.environ["RNNCLI_SCREENSHOT"]).resolve())
    finally:
        assert s.stop() == 0, s.log


def test_an_attention_model_shows_the_weight_of_each_word(model_folder):
    folder, _ = model_folder(cell="gru", pool="attn")
    s = Server("--model", str(folder))
    try:
        from conftest import WORDS

        text = " ".join(WORDS[:6])
        explanation = load_model(folder).explain(text)
        html = dom(f"{s.url}/?{urllib.parse.urlencode({'text': text})}")
        weights = [float(w) for w in
                   (part.split('"')[0] for part in html.split('data-weight="')[1:])]
        assert weights == pytest.approx(explanation.attention, abs=1e-6) and len(weights) == 6
    finally:
        assert s.stop() == 0, s.log


def test_a_model_that_cannot_explain_says_why_and_still_answers(model_folder):
    folder, _ = model_folder(bidirectional=True, pool="mean")
    s = Server("--model", str(folder))
    try:
        page = Page(dom(f"{s.url}/?text=w1+w2"))
        assert page.ready and page.label == load_model(folder).predict(["w1 w2"])[0].label
        assert page.cells == []
    finally:
        assert s.stop() == 0, s.log
