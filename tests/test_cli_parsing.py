"""Tests for the `jaxdl` command line: parsing, dispatch, exit codes, compilation cache.

The commands call `jaxdl.experiment`; a fake module stands in for it, so these tests never train.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import types

import pytest

import jaxdl
from jaxdl import cli
from jaxdl.cli import compilation_cache
from jaxdl.errors import InputError
from jaxdl.experiment.config import default_config_path, load_config

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Runs each test in a fresh folder, with the compilation cache off."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(compilation_cache.ENV_VAR, "off")


@pytest.fixture
def fake_run(monkeypatch):
    """A stand-in `jaxdl.experiment` that records its calls (or raises ``fake.error`` if set)."""
    import jaxdl.experiment as real_experiment

    fake = types.ModuleType("jaxdl.experiment")
    fake.__path__ = list(real_experiment.__path__)  # its config modules stay importable
    fake.calls = []
    fake.error = None

    def record(name):
        def call(*args, **kwargs):
            fake.calls.append((name, args, kwargs))
            if fake.error is not None:
                raise fake.error

        return call

    fake.train_and_evaluate = record("train")
    fake.predict_from_workdir = record("predict")
    monkeypatch.setitem(sys.modules, "jaxdl.experiment", fake)
    monkeypatch.setattr(jaxdl, "experiment", fake, raising=False)
    return fake


def run_main(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- override tokens ---------------------------------------------------------------------------


def fail(message):
    raise SystemExit(f"usage: {message}")


def test_split_overrides_both_syntaxes_in_order():
    tokens = ["--config.a.b=1", "--config.c", "x y", "--config.seed", "-1", "--config.d=k=v"]
    assert cli.split_overrides(tokens, fail) == {"a.b": "1", "c": "x y", "seed": "-1", "d": "k=v"}
    assert cli.split_overrides(["--config.a=1", "--config.a=2"], fail) == {"a": "2"}


@pytest.mark.parametrize(
    "tokens, match",
    [
        (["--config.epochs"], "expected a value"),
        (["--config.epochs", "--quiet"], "expected a value"),
        (["--config.=1"], "dotted KEY"),
        (["--config.a..b=1"], "dotted KEY"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["stray"], "unrecognized arguments: stray"),
    ],
)
def test_split_overrides_usage_errors(tokens, match):
    with pytest.raises(SystemExit, match=match):
        cli.split_overrides(tokens, fail)


def test_parse_args_mixes_options_and_overrides():
    args = cli.parse_args(
        [
            "train",
            "--config.epochs",
            "3",
            "--quiet",
            "--config.optimizer.name=sgd",
            "--workdir",
            "w",
        ]
    )
    assert args.quiet and args.workdir == "w" and args.config is None
    assert args.overrides == {"epochs": "3", "optimizer.name": "sgd"}


# --- dispatch ----------------------------------------------------------------------------------


def test_train_calls_train_and_evaluate_with_overridden_config(capsys, fake_run, tmp_path):
    code, _, err = run_main(
        capsys,
        "train",
        "--config.optimizer.learning_rate=3e-4",
        "--config.epochs",
        "3",
        "--config.model.features",
        "(64, 1)",
        "--config.optimizer.name=sgd",
        "--quiet",
        "--workdir",
        "runs/a",
    )
    assert code == 0, err
    [(name, (config, workdir), kwargs)] = fake_run.calls
    assert name == "train" and kwargs == {"quiet": True}
    assert config.optimizer.learning_rate == 3e-4 and config.optimizer.name == "sgd"
    assert config.epochs == 3 and config.model.features == (64, 1)
    default = load_config(default_config_path())
    assert config.batch_size == default.batch_size  # untouched keys keep the default's values
    assert workdir == tmp_path / "runs" / "a" and workdir.is_absolute()


def test_train_defaults_print_the_workdir(capsys, fake_run, tmp_path):
    code, _, err = run_main(capsys, "train")
    assert code == 0
    [(_, (_, workdir), kwargs)] = fake_run.calls
    assert kwargs == {"quiet": False}
    assert workdir.parent == tmp_path / "jaxdl_runs"
    assert workdir.name.startswith("default_config-")
    assert str(workdir.relative_to(tmp_path)) in err


def test_train_with_a_config_file(capsys, fake_run, tmp_path):
    (tmp_path / "exp.py").write_text(
        "import ml_collections\ndef get_config():\n    return ml_collections.ConfigDict({'a': 1})\n"
    )
    code, _, err = run_main(capsys, "train", "--config", "exp.py", "--config.a=2")
    assert code == 0, err
    [(_, (config, workdir), _)] = fake_run.calls
    assert config.a == 2 and workdir.name.startswith("exp-")


def test_cache_is_enabled_before_run_is_called(capsys, fake_run, monkeypatch):
    order = []
    monkeypatch.setattr(compilation_cache, "enable_compilation_cache", lambda: order.append("c"))
    fake_run.train_and_evaluate = lambda *a, **k: order.append("train")
    assert run_main(capsys, "train", "--workdir", "w")[0] == 0
    assert order == ["c", "train"]


def test_predict_dispatch(capsys, fake_run, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "x.csv").write_text("1,2\n")
    code, _, err = run_main(
        capsys, "predict", "--workdir", "run", "--input", "x.csv", "--batch-size", "16"
    )
    assert code == 0, err
    assert fake_run.calls == [("predict", (tmp_path / "run", pathlib.Path("x.csv"), None, 16),
                               {"member": None})]
    run_main(capsys, "predict", "--workdir", "run", "--input", "x.csv", "--output", "p.npy",
             "--member", "2")
    assert fake_run.calls[-1][1][2:] == (pathlib.Path("p.npy"), None)
    assert fake_run.calls[-1][2] == {"member": 2}


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--workdir", "missing", "--input", "x.csv"], "'--workdir'"),
        (["--workdir", "run", "--input", "missing.csv"], "'--input'.*does not exist"),
        (["--workdir", "run", "--input", "x.txt"], "'--input'.*.csv or .npy"),
        (["--workdir", "run", "--input", "x.csv", "--output", "p.json"], "'--output'"),
        (["--workdir", "run", "--input", "x.csv", "--batch-size", "0"], "integer >= 1"),
        (["--workdir", "run"], "required: --input"),
        (["--workdir", "run", "--input", "x.csv", "--config.a=1"], "unrecognized"),
    ],
)
def test_predict_input_errors_exit_2(capsys, fake_run, tmp_path, argv, match):
    (tmp_path / "run").mkdir()
    (tmp_path / "x.csv").write_text("1,2\n")
    (tmp_path / "x.txt").write_text("1,2\n")
    code, _, err = run_main(capsys, "predict", *argv)
    assert code == 2
    assert pytest.importorskip("re").search(match, err), err
    assert "Traceback" not in err and not fake_run.calls


# --- exit codes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, match",
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: COMMAND"),
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--config.epochs"], "expected a value"),
    ],
)
def test_usage_errors_exit_2_without_traceback(capsys, fake_run, argv, match):
    code, _, err = run_main(capsys, *argv)
    assert code == 2
    assert match in err and "usage: jaxdl" in err and "Traceback" not in err
    assert not fake_run.calls


@pytest.mark.parametrize(
    "override, match",
    [
        ("--config.optimizer.lr=1", "did you mean 'optimizer.learning_rate'"),
        ("--config.epochs=ten", "expected an int"),
        ("--config.model.features=64", "expected a tuple"),
    ],
)
def test_bad_overrides_exit_2_with_one_paragraph(capsys, fake_run, override, match):
    code, out, err = run_main(capsys, "train", override)
    assert code == 2 and out == ""
    assert err.startswith("jaxdl: error: argument '--config.") and err.count("\n") == 1
    assert match in err and "Traceback" not in err
    assert not fake_run.calls


def test_help_exits_0(capsys):
    code, out, _ = run_main(capsys, "train", "--help")
    assert code == 0 and "--config.KEY=VALUE" in out


@pytest.mark.parametrize(
    "error, code",
    [
        (InputError("argument 'x': expected a, got b. Fix: c"), 2),
        (FileNotFoundError("no such file: data.csv"), 2),
        (RuntimeError("boom"), 1),
        (ValueError("a plain ValueError is a bug, not an input error"), 1),
        (KeyboardInterrupt(), 130),
    ],
)
def test_exceptions_from_the_run_map_to_exit_codes(capsys, fake_run, error, code):
    fake_run.error = error
    got, _, err = run_main(capsys, "train", "--workdir", "w")
    assert got == code
    if code == 2:
        assert err == f"jaxdl: error: {error}\n"
    if code == 1:
        assert "Traceback" in err and str(error) in err and "internal error" in err


def test_module_entry_point_reports_input_error_without_traceback(tmp_path):
    """`python -m jaxdl` end to end: exit 2, one paragraph, and no JAX import on that path."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "jaxdl", "train", "--config", "nonexistent.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stderr.splitlines()
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time")}
    message = [line for line in lines if not line.startswith("import time")]
    assert result.returncode == 2, result.stderr
    assert len(message) == 1 and message[0].startswith("jaxdl: error: argument '--config'")
    assert "nonexistent.py" in message[0] and "Traceback" not in result.stderr
    assert not imported & {"jax", "flax", "optax", "orbax", "sklearn"}


# --- compilation cache -------------------------------------------------------------------------


def test_resolve_cache_dir(monkeypatch, tmp_path):
    resolve = compilation_cache.resolve_cache_dir
    assert resolve(environ={"JAXDL_CACHE_DIR": "off"}) is None
    assert resolve(environ={"JAXDL_CACHE_DIR": ""}) is None
    assert resolve(environ={"JAXDL_CACHE_DIR": "OFF"}) is None
    assert resolve(environ={"JAXDL_CACHE_DIR": "c"}) == tmp_path / "c"
    assert resolve(environ={"XDG_CACHE_HOME": "/x"}) == pathlib.Path("/x/jaxdl/xla")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve(environ={}) == tmp_path / ".cache" / "jaxdl" / "xla"
    assert resolve("explicit", environ={"JAXDL_CACHE_DIR": "off"}) == tmp_path / "explicit"


def test_enable_compilation_cache_sets_jax_options(monkeypatch, tmp_path):
    jax = pytest.importorskip("jax")
    updates = {}
    monkeypatch.setattr(jax.config, "update", lambda name, value: updates.update({name: value}))
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path / "xla"))
    assert compilation_cache.enable_compilation_cache() == str(tmp_path / "xla")
    assert (tmp_path / "xla").is_dir()
    assert updates == {
        "jax_compilation_cache_dir": str(tmp_path / "xla"),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
        "jax_compilation_cache_max_size": compilation_cache.DEFAULT_MAX_BYTES,
    }
    assert all(hasattr(jax.config, name) for name in updates)  # the names exist in this JAX

    updates.clear()
    monkeypatch.setenv("JAXDL_CACHE_DIR", "off")
    assert compilation_cache.enable_compilation_cache() is None and not updates
    (tmp_path / "file").write_text("")
    with pytest.warns(RuntimeWarning, match="compilation cache off"):
        assert compilation_cache.enable_compilation_cache(tmp_path / "file" / "xla") is None
    assert not updates


def test_the_cache_is_bounded_by_its_size_limit(tmp_path):
    # A real process: compile many small programs under a limit of a few entries.
    import subprocess
    import sys

    script = (
        "from jaxdl.cli import compilation_cache as c; c.enable_compilation_cache()\n"
        "import jax, jax.numpy as jnp\n"
        "for i in range(60):\n"
        "    jax.jit(lambda a, i=i: jnp.sin(a) * i + jnp.cos(a * i))(jnp.ones(i + 1))\n")
    env = {**os.environ, "JAXDL_CACHE_DIR": str(tmp_path / "xla"),
           "JAXDL_CACHE_MAX_BYTES": "60000"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    sizes = [p.stat().st_size for p in (tmp_path / "xla").glob("*-cache")]
    assert len(sizes) > 3 and sum(sizes) <= 60000  # the oldest entries were evicted
    assert "Please install" not in done.stderr  # filelock, which the limit needs, is there
    assert compilation_cache.max_bytes({"JAXDL_CACHE_MAX_BYTES": "-1"}) == -1
    with pytest.warns(RuntimeWarning, match="not a positive number of bytes"):
        assert compilation_cache.max_bytes({"JAXDL_CACHE_MAX_BYTES": "lots"}) == (
            compilation_cache.DEFAULT_MAX_BYTES)
