"""The offline byte corpus: a fixed split by file, windows shifted by one, the baseline."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdl.data import prepare, text
from jaxdl.errors import InputError


@pytest.fixture
def root(tmp_path):
    """A small fake library: kept files, and files in folders the corpus leaves out."""
    files = {f"pkg{i}/mod{j}.py": f"# module {i}.{j}\nvalue = {i * j}\n" * (i + j + 1)
             for i in range(6) for j in range(16)}
    files.update({"test/test_x.py": "skip", "pkg1/tests/t.py": "skip",
                  "idlelib/idle_test/a.py": "skip", "site-packages/lib.py": "skip",
                  "pkg2/__pycache__/m.py": "skip", "top.py": "print('top')\n",
                  "notes.txt": "not python"})
    for rel, body in files.items():
        path = tmp_path / "lib" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    return tmp_path / "lib"


def test_split_is_by_file_disjoint_and_complete(root):
    parts = {s: text.corpus_files(s, root) for s in text.SPLITS}
    every = sorted(p for names in parts.values() for p in names)
    assert len(every) == len(set(every)) == 97  # 96 modules + top.py, nothing excluded kept
    assert not any(k in p for p in every for k in ("test", "site-packages", "__pycache__"))
    for s, names in parts.items():
        assert names == sorted(names)
        assert all(text.split_of(p) == s for p in names)


def test_split_depends_only_on_the_path():
    # Fixed forever: changing the rule would silently change every reported result.
    known = {"json/decoder.py": "train", "os.py": "train", "asyncio/unix_events.py": "val",
             "ctypes/util.py": "val", "_pydecimal.py": "test", "asyncio/tasks.py": "test"}
    assert {p: text.split_of(p) for p in known} == known
    names = [f"m{i}.py" for i in range(4000)]
    shares = {s: sum(text.split_of(n) == s for n in names) / len(names) for s in text.SPLITS}
    assert 0.87 < shares["train"] < 0.93 and 0.03 < shares["val"] < 0.07


def test_stdlib_corpus_splits_are_disjoint_and_nonempty():
    parts = {s: set(text.corpus_files(s)) for s in text.SPLITS}
    assert all(parts.values())
    assert not (parts["train"] & parts["val"] or parts["train"] & parts["test"]
                or parts["val"] & parts["test"])
    assert "os.py" in set().union(*parts.values())
    assert not any(p.startswith("test/") for p in set().union(*parts.values()))


def test_load_corpus_concatenates_sorted_files_and_caps(root):
    names = text.corpus_files("train", root)
    whole = text.load_corpus("train", root=root)
    assert whole.dtype == np.uint8
    assert whole.tobytes() == b"".join((root / n).read_bytes() for n in names)
    capped, info = text.load_corpus_with_info("train", max_bytes=100, root=root)
    np.testing.assert_array_equal(capped, whole[:100])
    assert info["bytes"] == 100 and len(info["sha256"]) == 64 and info["split"] == "train"


def test_windows_shift_by_one():
    data = np.arange(23, dtype=np.uint8)
    x, y = text.windows(data, seq_len=5)
    assert x.shape == y.shape == (4, 5) and x.dtype == y.dtype == np.int32
    assert text.num_windows(23, 5) == 4
    np.testing.assert_array_equal(x[1], data[5:10])
    np.testing.assert_array_equal(y, x + 1)  # next byte of every position
    xs, ys = text.windows(data, seq_len=5, stride=2)
    assert len(xs) == text.num_windows(23, 5, 2) == 9
    np.testing.assert_array_equal(xs[3], data[6:11])
    np.testing.assert_array_equal(ys[:, :-1], xs[:, 1:])
    part = text.windows(data, 5, 2, start=3, count=4)
    np.testing.assert_array_equal(part[0], xs[3:7])
    np.testing.assert_array_equal(part[1], ys[3:7])


def test_unigram_bits_per_byte():
    uniform = np.arange(256, dtype=np.uint8).repeat(4)
    assert text.unigram_bits_per_byte(uniform, uniform) == pytest.approx(8.0)
    train = np.array([65] * 6, np.uint8)  # p(A) = 7/262, others 1/262
    assert text.unigram_bits_per_byte(train, np.array([65], np.uint8)) == pytest.approx(
        -np.log2(7 / 262))


def test_prepare_text_writes_windows(root, tmp_path):
    out = prepare.prepare("text", tmp_path / "t", ("train", "val"), seq_len=16, stride=8,
                          root=root, max_bytes=600)
    train = text.load_corpus("train", 600, root)
    x, y = text.windows(train, 16, 8)
    np.testing.assert_array_equal(out["train"].arrays["x"], x)
    np.testing.assert_array_equal(out["train"].arrays["y"], y)
    assert out["train"].info["bytes"] == 600 and out["train"].info["stride"] == 8
    val = text.load_corpus("val", root=root)
    assert out["val"].info["unigram_bits_per_byte"] == pytest.approx(
        text.unigram_bits_per_byte(train, val))


def test_bad_inputs(root):
    with pytest.raises(InputError, match="split"):
        text.load_corpus("dev", root=root)
    with pytest.raises(InputError, match="max_bytes"):
        text.load_corpus("train", max_bytes=0, root=root)
    with pytest.raises(InputError, match="seq_len': expected a window shorter"):
        text.windows(np.zeros(10, np.uint8), 10)
    with pytest.raises(InputError, match="stride"):
        text.windows(np.zeros(10, np.uint8), 3, stride=0)
    with pytest.raises(InputError, match="root"):
        text.corpus_files("train", root / "missing")
