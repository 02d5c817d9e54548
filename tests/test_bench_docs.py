"""bench/docs.py: a bench script's --write-docs replaces its own section of docs/results.md and nothing else."""

import importlib.util
import stat
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_docs", ROOT / "bench" / "docs.py")
docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs)

DOC = """# Results

## Speed

by hand, kept

<!-- bench/speed.py -->
old table
<!-- /bench/speed.py -->

after, kept
<!-- bench/accuracy.py -->
other section
<!-- /bench/accuracy.py -->
"""


def test_replaces_only_its_section():
    out = docs.replace_section(DOC, "bench/speed.py", "new table\n")
    assert out == DOC.replace("old table\n", "new table\n")


def test_a_missing_section_is_appended_under_its_name():
    out = docs.replace_section(DOC, "bench/streaming.py", "rows\n")
    assert out.startswith(DOC)
    assert out[len(DOC):] == "\n## bench/streaming.py\n\n<!-- bench/streaming.py -->\nrows\n<!-- /bench/streaming.py -->\n"
    # and the next run replaces it in place
    assert docs.replace_section(out, "bench/streaming.py", "rows 2\n") == out.replace("rows\n", "rows 2\n")


@pytest.mark.parametrize("broken", [
    DOC + "<!-- bench/speed.py -->\n",  # a second start
    DOC.replace("<!-- /bench/speed.py -->\n", ""),  # a start without an end
    DOC.replace("<!-- bench/speed.py -->\n", ""),  # an end without a start
])
def test_broken_markers_are_refused(broken):
    with pytest.raises(ValueError):
        docs.replace_section(broken, "bench/speed.py", "new\n")


def test_write_section_on_a_file(tmp_path):
    path = tmp_path / "results.md"
    path.write_text(DOC, encoding="utf-8")
    path.chmod(0o644)
    docs.write_section("bench/speed.py", "| a | b |\n|---|---|\n| 1 | 2 |\n", path=path,
                       command="python bench/speed.py --rounds 1")
    text = path.read_text(encoding="utf-8")
    body = text.split("<!-- bench/speed.py -->\n")[1].split("<!-- /bench/speed.py -->")[0]
    assert body.startswith("`python bench/speed.py --rounds 1`, commit ")
    assert body.endswith("\n\n```text\n| a | b |\n|---|---|\n| 1 | 2 |\n```\n")
    assert "old table" not in text and "by hand, kept" in text and "other section" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"]  # no temporary file left


def test_command_line_names_the_script_from_the_repository():
    assert docs.command_line([str(ROOT / "bench" / "speed.py"), "--rounds", "1", "--write-docs"]) == \
        "python bench/speed.py --rounds 1"


def test_the_results_file_holds_every_bench_section_once():
    text = docs.RESULTS.read_text(encoding="utf-8")
    for script in ("accuracy", "speed", "builtin_bow", "streaming", "train_step"):
        start, end = docs.markers(f"bench/{script}.py")
        assert text.count(start + "\n") == 1 and text.count(end + "\n") == 1
        assert text.index(start) < text.index(end)


def test_a_partial_accuracy_run_writes_beside_the_full_table(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # accuracy.py imports docs.py beside it
    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "bench" / "accuracy.py")
    accuracy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(accuracy)
    assert accuracy.section_name(quick=False, seeds=[0], runs=accuracy.RUNS) == "bench/accuracy.py"
    partial = accuracy.section_name(quick=False, seeds=[0, 1, 2], runs=accuracy.selected(" sst2-lm.toml"))
    assert partial == "bench/accuracy.py --seeds 0,1,2 --only sst2-lm"
    updated = docs.replace_section(DOC, partial, "three seeds\n")
    assert "other section\n" in updated and "three seeds\n" in updated
