"""On-disk records: round trips, the streaming writer, clear errors, `jaxdl data prepare`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxdl import cli
from jaxdl.data import datasets
from jaxdl.data.records import RecordWriter, open_records, write_records
from jaxdl.errors import InputError, InputTypeError


@pytest.fixture
def arrays():
    rng = np.random.default_rng(1)
    return {"x": rng.normal(size=(23, 2, 3)).astype(np.float32),
            "y": rng.integers(0, 5, 23).astype(np.int32),
            "tokens": rng.integers(0, 256, (23, 7)).astype(np.uint8),
            "keep": rng.random(23) > 0.5}


def test_round_trip_keeps_values_shapes_and_dtypes(tmp_path, arrays):
    records = write_records(tmp_path / "r", arrays, {"source": "test"}, chunk_rows=4)
    assert len(records) == 23 and records.info == {"source": "test"}
    for k, v in arrays.items():
        assert records.fields[k] == (v.shape[1:], v.dtype)
        np.testing.assert_array_equal(records.arrays[k], v)
        np.testing.assert_array_equal(np.load(tmp_path / "r" / f"{k}.npy"), v)  # plain npy
    idx = np.array([[3, 0], [22, 3]])
    rows = records[idx]
    assert rows["x"].shape == (2, 2, 2, 3) and type(rows["x"]) is np.ndarray
    np.testing.assert_array_equal(rows["tokens"], arrays["tokens"][idx])
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["fields"]["x"] == {"shape": [2, 3], "dtype": "float32"}
    assert meta["num_examples"] == 23 and meta["version"] == 1


def test_streaming_writer_without_a_known_total(tmp_path, arrays):
    with RecordWriter(tmp_path / "s", {"split": "train"}) as writer:
        for start in range(0, 23, 5):
            writer.append({k: v[start:start + 5] for k, v in arrays.items()})
        assert not (tmp_path / "s" / "meta.json").exists()  # not readable until closed
    records = open_records(tmp_path / "s")
    for k, v in arrays.items():
        np.testing.assert_array_equal(records.arrays[k], v)
    # A safe cast is accepted (int16 rows into an int32 field).
    with RecordWriter(tmp_path / "c") as writer:
        writer.append({"y": np.arange(3, dtype=np.int32)})
        writer.append({"y": np.arange(2, dtype=np.int16)})
    assert open_records(tmp_path / "c").arrays["y"].tolist() == [0, 1, 2, 0, 1]


def test_a_failed_write_is_not_readable(tmp_path, arrays):
    with pytest.raises(RuntimeError), RecordWriter(tmp_path / "f") as writer:
        writer.append({"x": arrays["x"]})
        raise RuntimeError("disk full")
    with pytest.raises(InputError, match="no meta.json .*did not finish"):
        open_records(tmp_path / "f")
    writer = RecordWriter(tmp_path / "n", num_examples=10)
    writer.append({"x": arrays["x"][:4]})
    with pytest.raises(InputError, match="num_examples': expected 10 rows, as declared, got 4"):
        writer.close()
    assert not (tmp_path / "n" / "meta.json").exists()


@pytest.mark.parametrize("bad, match", [
    ({"x": np.zeros((4, 2)), "y": np.zeros(3)}, "one common length, got x: 4, y: 3"),
    ({"x": np.zeros((4, 2)), "y": np.float32(1)}, "y: a scalar"),
    ({"bad name": np.zeros(3)}, "identifiers"),
    ({}, "non-empty dict"),
    ({"x": np.array(["a", "b"])}, "numbers or booleans"),
])
def test_bad_arrays_are_named(tmp_path, bad, match):
    with pytest.raises((InputError, InputTypeError), match=match):
        write_records(tmp_path / "b", bad)


def test_chunks_must_match_the_first(tmp_path):
    writer = RecordWriter(tmp_path / "m")
    writer.append({"x": np.zeros((2, 3), np.float32)})
    with pytest.raises(InputError, match=r"chunk\['x'\]': expected rows of shape \(3,\)"):
        writer.append({"x": np.zeros((2, 4), np.float32)})
    with pytest.raises(InputError, match="dtype float32"):
        writer.append({"x": np.zeros((2, 3), np.float64)})
    with pytest.raises(InputError, match=r"fields \['x'\]"):
        writer.append({"x": np.zeros((2, 3), np.float32), "y": np.zeros(2)})
    writer.abort()


def test_existing_records_need_overwrite(tmp_path, arrays):
    write_records(tmp_path / "o", {"y": arrays["y"]})
    with pytest.raises(InputError, match="already holds records.*overwrite"):
        write_records(tmp_path / "o", {"y": arrays["y"]})
    again = write_records(tmp_path / "o", {"y": arrays["y"][:5]}, overwrite=True)
    assert len(again) == 5


def test_opening_bad_folders(tmp_path, arrays):
    with pytest.raises(InputError, match="argument 'directory'.*no such folder.*Fix:"):
        open_records(tmp_path / "nope")
    folder = tmp_path / "r"
    write_records(folder, arrays)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable meta.json"):
        open_records(folder)
    (folder / "meta.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(InputError, match="format version 1, got .*version 99"):
        open_records(folder)
    (folder / "meta.json").write_text(json.dumps(meta))
    np.save(folder / "y.npy", arrays["y"][:-1])  # a field file cut short
    with pytest.raises(InputError, match=r"y.npy of shape \(23,\).*got .*shape \(22,\)"):
        open_records(folder)
    (folder / "y.npy").unlink()
    with pytest.raises(InputError, match="readable y.npy"):
        open_records(folder)
    with pytest.raises(InputTypeError, match="records.arrays"):
        write_records(tmp_path / "s", arrays)["y"]


def test_cli_prepare_writes_records_of_the_bundled_split(tmp_path, capsys):
    code = cli.main(["data", "prepare", "--dataset", "iris", "--out", str(tmp_path / "iris"),
                     "--seed", "3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    data = datasets.load("iris", seed=3)
    for split, (x, y) in data.splits.items():
        records = open_records(tmp_path / "iris" / split)
        assert summary["splits"][split]["num_examples"] == len(records) == len(x)
        np.testing.assert_array_equal(records.arrays["x"], x)
        np.testing.assert_array_equal(records.arrays["y"], y)
        assert records.info["split"] == split and records.info["seed"] == 3
    assert records.info["scaler"]["kind"] == "standardizer"


def test_cli_prepare_text_and_errors(tmp_path, capsys):
    code = cli.main(["data", "prepare", "--dataset", "text", "--out", str(tmp_path / "t"),
                     "--split", "test", "--seq-len", "256", "--stride", "512"])
    out, err = capsys.readouterr()
    assert code == 0, err
    records = open_records(tmp_path / "t" / "test")
    assert records.fields["x"].shape == (256,) and records.info["vocab_size"] == 256
    assert records.info["unigram_bits_per_byte"] > 3
    np.testing.assert_array_equal(records.arrays["y"][:, :-1], records.arrays["x"][:, 1:])
    assert not (tmp_path / "t" / "train").exists()

    code = cli.main(["data", "prepare", "--dataset", "text", "--out", str(tmp_path / "t"),
                     "--split", "test"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "--overwrite" in err
    code = cli.main(["data", "prepare", "--dataset", "mnist", "--out", str(tmp_path)])
    _, err = capsys.readouterr()
    assert code == 2 and "argument 'dataset'" in err and "Traceback" not in err
    assert cli.main(["data", "prepare", "--out", str(tmp_path)]) == 2  # --dataset missing
