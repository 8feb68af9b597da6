"""The error catalogue: every user-facing error of docs/errors.md, triggered for real.

One test per catalogue entry (E001, E002, ...). An API entry must raise its exception type with
the kit's message shape (``argument 'X': expected ..., got .... Fix: ...``); a CLI entry runs
``jaxdl.cli.main`` in-process and must exit 2 with one ``jaxdl: error:`` line on stderr and no
traceback. Either way the message must match the one printed in docs/errors.md, where ``...``
stands for any text; and the doc and this table must list the same IDs, so they cannot drift.

An entry with ``gap`` set is a known unclear error: its test is a strict xfail that expects the
planned behaviour (the doc shows the planned message and says "Known gap"). Fix the code, drop
``gap`` and the doc's "Known gap" line together.

``python tests/test_error_catalogue.py`` prints the real message of every entry (to refresh the
doc).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import re
import shutil
import warnings
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl as jdl
from jaxdl import cli, optim
from jaxdl.checkpoint import Checkpointer
from jaxdl.cli import compilation_cache
from jaxdl.data import augment
from jaxdl.errors import CheckpointError, InputError, InputTypeError, NonFiniteError
from jaxdl.experiment import config as config_lib

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "errors.md"
# An argument may be a pytree leaf: argument 'x['image']'.
SHAPE = re.compile(r"argument '.+?': expected .+, got .+\. Fix: .+", re.S)
CLI_ERROR_LINE = re.compile(r"jaxdl( \w+)?: error: ")
# E043/E068 damage checkpoints on purpose: the kit warns once per checkpoint it sets aside.
pytestmark = pytest.mark.filterwarnings("ignore:checkpoint .* is unusable:UserWarning")


class Ctx:
    """What the triggers share: one small binary Trainer and its state, data, a scratch folder,
    and (built on first use) one finished `jaxdl train` run."""

    def __init__(self, trainer: jdl.Trainer, state: jdl.TrainState, x: np.ndarray,
                 y: np.ndarray, tmp: pathlib.Path):
        self.trainer, self.state, self.x, self.y, self.tmp = trainer, state, x, y, tmp

    def fit(self, x: Any = None, y: Any = None, **kwargs: Any) -> Any:
        """``trainer.fit`` on the shared data with one small epoch, silently."""
        kwargs = {"epochs": 1, "batch_size": 50, "verbose": 0, **kwargs}
        return self.trainer.fit(self.state, self.x if x is None else x,
                                self.y if y is None else y, **kwargs)

    def fit_dataset(self, dataset: Any, **kwargs: Any) -> Any:
        """``trainer.fit`` on a dataset of batches (the batches hold the labels)."""
        return self.trainer.fit(self.state, dataset, **{"epochs": 1, "verbose": 0, **kwargs})

    def fit_with(self, **trainer_kwargs: Any) -> Any:
        """A fit with another Trainer of the same model and optimizer (the state fits it)."""
        trainer_kwargs = {"loss": "binary_crossentropy", **trainer_kwargs}
        trainer = jdl.Trainer(jdl.models.MLP(features=(16, 1)), **trainer_kwargs)
        return trainer.fit(self.state, self.x, self.y, epochs=1, batch_size=50, verbose=0)

    def check_labels(self, features: tuple[int, ...], loss: str, y: Any) -> Any:
        """``evaluate`` on a model of these output ``features``: labels are checked against
        its output shape before anything compiles (the state is abstract)."""
        trainer = jdl.Trainer(jdl.models.MLP(features=features), loss=loss)
        return trainer.evaluate(trainer.abstract_state(self.x), self.x, y)

    def file(self, name: str, write: Callable[[pathlib.Path], Any] | str = "") -> str:
        path = self.tmp / name
        if path.exists():
            pass
        elif callable(write):
            write(path)
        else:
            path.write_text(write)
        return str(path)

    def folder(self, name: str) -> str:
        path = self.tmp / name
        path.mkdir(exist_ok=True)
        return str(path)

    @functools.cached_property
    def run(self) -> str:
        """A finished one-epoch run of the default experiment (the file's one CLI training)."""
        workdir = self.tmp / "run"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(compilation_cache.ENV_VAR, "off")
            code = cli.main(["train", "--workdir", str(workdir), "--config.epochs=1", "--quiet"])
        assert code == 0 and (workdir / "config.json").exists()
        return str(workdir)

    def run_copy(self, name: str, keep_checkpoints: bool) -> str:
        """A copy of :attr:`run` (to damage), or just its config.json."""
        target = self.tmp / name
        if not target.exists():
            if keep_checkpoints:
                shutil.copytree(self.run, target)
            else:
                target.mkdir()
                shutil.copy(pathlib.Path(self.run) / "config.json", target / "config.json")
        return str(target)


# --- triggers that need more than one line -------------------------------------------------------


def _with_nan(c: Ctx) -> np.ndarray:
    x = c.x.copy()
    x[7, 2] = np.nan
    return x


def _nan_loss(outputs: jax.Array, labels: jax.Array) -> jax.Array:
    return outputs[:, 0] * jnp.nan


def _tiny_tree(size: int = 4096) -> dict[str, jax.Array]:
    return {"w": jnp.arange(size, dtype=jnp.float32)}


def _saved_checkpoints(c: Ctx, name: str) -> pathlib.Path:
    directory = c.tmp / name
    with Checkpointer(directory, keep=5, async_save=False) as ckpt:
        for step in (1, 2):
            ckpt.save(step, _tiny_tree(), {"epoch": step})
    return directory


def _damage(step_dirs: list[pathlib.Path]) -> None:
    """Deletes the largest file of each checkpoint's state."""
    for step_dir in step_dirs:
        files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
        max(files, key=lambda p: p.stat().st_size).unlink()


def _all_corrupt(c: Ctx) -> None:
    directory = _saved_checkpoints(c, "ckpt_corrupt")
    _damage([directory / "1", directory / "2"])
    with Checkpointer(directory) as ckpt, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "checkpoint N ... is unusable": one per step
        ckpt.restore(jax.eval_shape(_tiny_tree))


def _changed_model(c: Ctx) -> None:
    directory = _saved_checkpoints(c, "ckpt_changed")
    with Checkpointer(directory) as ckpt:
        ckpt.restore(jax.eval_shape(functools.partial(_tiny_tree, 2048)))


def _corrupt_run(c: Ctx) -> list[str]:
    workdir = c.tmp / "run_corrupt"
    if not workdir.exists():
        c.run_copy("run_corrupt", keep_checkpoints=True)
        _damage([p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()])
    return ["evaluate", "--workdir", str(workdir)]


def _csv(rows: np.ndarray) -> Callable[[pathlib.Path], None]:
    return lambda path: np.savetxt(path, rows, delimiter=",")


def _nan_rows() -> np.ndarray:
    rows = np.zeros((3, 30))
    rows[1, 2] = np.nan
    return rows


# one run per workdir (E092-E139): this process holds a folder as a live writer (or reader) would
def _in_use(c: Ctx, name: str, reader: bool = False) -> pathlib.Path:
    import contextlib

    from jaxdl.experiment import lock

    folder = c.tmp / name
    held = c.__dict__.setdefault("held_folders", {})
    if name not in held:  # held until the module's tests end
        held[name] = contextlib.ExitStack()
        if reader:
            folder.mkdir()
            lock.lock_file(folder).touch()
        held[name].enter_context(lock.shared(folder) if reader else
                                 lock.exclusive(folder, "--workdir"))
    return folder


def _config_file(c: Ctx, name: str, body: str) -> str:
    return c.file(name, "import sys\n\nimport ml_collections\n\n\n" + body)


# research code (E110-E179)
def _per_example_sq(outputs: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.sum((outputs - labels[:, None]) ** 2, axis=-1)


def _own_step(state: jdl.TrainState, batch: dict[str, jax.Array]) -> Any:
    return state.replace(step=state.step + 1), {"loss": jnp.zeros(())}


def _evaluate_without_loss(c: Ctx) -> Any:
    trainer = jdl.Trainer(jdl.models.MLP(features=(16, 1)), loss=None, train_step=_own_step)
    return trainer.evaluate(c.state, c.x, c.y)


class _HookAndAlias(jdl.Callback):
    def on_train_batch_end(self, step, logs, state):
        return state

    def on_batch_end(self, batch, logs=None):
        pass


class _TestHook(jdl.Callback):
    def on_test_end(self, logs=None):
        pass


class _ShrinksParams(jdl.Callback):
    def on_epoch_end(self, epoch, logs, state):
        return state.replace(params=jax.tree.map(lambda a: a[:1], state.params))


def _tensorboard(c):
    from jaxdl.writers.tensorboard import TensorBoardWriter

    return TensorBoardWriter(c.folder("tensorboard"))


class _TwoOutputs(nn.Module):
    """Two named outputs from one input: {"a": [B, 1], "b": [B, 1]}."""

    @nn.compact
    def __call__(self, x):
        return {"a": nn.Dense(1)(x), "b": nn.Dense(1)(x)}


def _two_outputs(c, loss, y):
    trainer = jdl.Trainer(_TwoOutputs(), loss=loss)
    state = jdl.Trainer(_TwoOutputs(), loss={"a": "mse", "b": "mse"}).init(0, c.x[:1])
    return trainer.fit(state, c.x, {k: c.y for k in y}, epochs=1, verbose=0)


def _regression_fit(c, **kwargs):
    trainer = jdl.Trainer(jdl.models.MLP(features=(4, 1)), loss="mse")
    return trainer.fit(trainer.init(0, c.x[:1]), c.x, c.x[:, 0], verbose=0, **kwargs)


class _Empty:
    """A re-iterable dataset whose every pass yields nothing."""

    def __iter__(self):
        return iter(())


def _row_sum(x):
    """A predict_fn for the explanation entries: [B, F] -> [B, 1]."""
    return jnp.sum(x, axis=1, keepdims=True)


def _explain(c, *options):
    """``jaxdl explain`` of the file's finished run on three rows, with ``options``."""
    return ["explain", "--workdir", c.run, "--input", c.file("x30.csv", _csv(np.zeros((3, 30)))),
            "--output-csv", str(c.tmp / "explained.csv"), *options]


class _ReturnsDict(jdl.Callback):
    def on_epoch_end(self, epoch, logs, state):
        return {"a": 1}


class _ExtraArgument(jdl.Callback):
    def on_epoch_end(self, epoch, logs, state, extra):
        return state


# checkpoints you can trust (E083-E119): each trigger damages a folder of its own
def _cadence(c: Ctx, **kwargs: Any) -> None:
    with Checkpointer(c.tmp / "ckpt_cadence") as ckpt:
        jdl.checkpoint.Checkpointing(ckpt, **kwargs)


def _linked_out(c: Ctx) -> None:
    run = c.tmp / "run_linked"
    if not run.exists():
        run.mkdir()
        (run / "checkpoints").symlink_to(_saved_checkpoints(c, "ckpt_of_another_run"))
    Checkpointer(run / "checkpoints", root=run)


def _blocked_digest(c: Ctx) -> None:
    """Step 2's digest cannot be written (a folder has its name): a failed background write."""
    directory = c.tmp / "ckpt_blocked"
    shutil.rmtree(directory, ignore_errors=True)
    with Checkpointer(directory, async_save=False) as ckpt:
        ckpt.save(1, _tiny_tree(), {"epoch": 1})
        ckpt.wait()
        (directory / "2.digest.json" / "x").mkdir(parents=True)
        ckpt.save(2, _tiny_tree(), {"epoch": 2})
        ckpt.wait()


def _deleted_under_a_run(c: Ctx) -> None:
    directory = c.tmp / "ckpt_deleted"
    shutil.rmtree(directory, ignore_errors=True)
    with Checkpointer(directory) as ckpt:
        ckpt.save(1, _tiny_tree(), {"epoch": 1})
        ckpt.wait()
        shutil.rmtree(directory)
        ckpt.save(2, _tiny_tree(), {"epoch": 2})


def _edit_meta(meta_file: pathlib.Path) -> None:
    meta_file.write_text(meta_file.read_text().replace('"mean": [', '"mean": [0.5, ', 1)
                         .replace('"epoch": 2', '"epoch": 3', 1))


def _edited_meta_run(c: Ctx) -> list[str]:
    workdir = pathlib.Path(c.run_copy("run_edited_meta", keep_checkpoints=True))
    for meta_file in (workdir / "checkpoints").glob("*/meta/metadata"):
        _edit_meta(meta_file)
    return ["evaluate", "--workdir", str(workdir)]


def _edited_meta_read(c: Ctx) -> None:
    directory = _saved_checkpoints(c, "ckpt_meta_edited")
    _edit_meta(directory / "2" / "meta" / "metadata")
    with Checkpointer(directory) as ckpt:
        ckpt.read_meta(2)


def _fit_saving(c: Ctx, name: str, epochs: int = 2) -> pathlib.Path:
    """A fit of ``epochs`` that checkpoints every epoch into ``c.tmp / name``."""
    from jaxdl.checkpoint import Checkpointing

    directory = c.tmp / name
    with Checkpointer(directory) as ckpt:
        c.fit(epochs=epochs, checkpointing=Checkpointing(ckpt))
    return directory


def _blocked_history_log(c: Ctx) -> None:
    """A folder where the fit's history log goes: the first save cannot write it."""
    directory = c.tmp / "ckpt_log_blocked"
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "history.jsonl").mkdir(parents=True)
    _fit_saving(c, "ckpt_log_blocked")


def _edited_history_log(c: Ctx) -> None:
    """The first line of the history log edited: no checkpoint matches it any more."""
    directory = c.tmp / "ckpt_log_edited"
    shutil.rmtree(directory, ignore_errors=True)
    _fit_saving(c, "ckpt_log_edited")
    log = directory / "history.jsonl"
    log.write_text(log.read_text().replace('"loss":[0.', '"loss":[9.', 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "checkpoint N ... is unusable": one per step
        _fit_saving(c, "ckpt_log_edited", epochs=3)


def _malformed_digests(c: Ctx) -> None:
    directory = _saved_checkpoints(c, "ckpt_bad_digest")
    for step in (1, 2):
        (directory / f"{step}.digest.json").write_text("null")
    with Checkpointer(directory) as ckpt, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "checkpoint N ... is unusable": one per step
        ckpt.restore(jax.eval_shape(_tiny_tree))


# --- the catalogue -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Entry:
    """One catalogue entry.

    Attributes:
      id: "E001", ...; a section of docs/errors.md has the same ID.
      trigger: API: ``trigger(ctx)`` raises the error. CLI: ``trigger(ctx)`` returns the argv.
      raises: the exception type (API entries); None for CLI entries.
      match: a regex the message must contain.
      shaped: the message has the argument/expected/got/Fix shape (False for errors that are not
        about one argument, such as CheckpointError: those must still say "Fix:").
      gap: a known unclear error (strict xfail); the reason says what is wrong today.
    """

    id: str
    trigger: Callable[[Ctx], Any]
    raises: type[Exception] | None
    match: str
    shaped: bool = True
    gap: str | None = None

    @property
    def cli(self) -> bool:
        return self.raises is None


CLI = None  # the `raises` of a CLI entry: it exits with code 2 instead
CATALOGUE: list[Entry] = [
    # data given to fit / evaluate / predict
    Entry("E001", lambda c: c.fit(x=c.x[:, :5]), InputError,
          r"argument 'x': .*got examples of shape \(5,\)"),
    Entry("E002", lambda c: c.fit(x=c.x.astype(str)), InputTypeError,
          r"argument 'x': expected numeric values, got dtype <U"),
    Entry("E003", lambda c: c.fit(x=_with_nan(c)), InputError,
          r"argument 'x': expected finite values.*first at row 7.*jdl\.data\.clean\(x, y\)"),
    Entry("E004", lambda c: c.fit(x=c.x[:0], y=c.y[:0]), InputError,
          r"argument 'x': expected at least one example"),
    Entry("E005", lambda c: c.fit(y=c.y[:-1]), InputError,
          r"argument 'y': expected one label per example of x \(100\), got 99 labels"),
    Entry("E006", lambda c: c.fit(y=c.y + 1), InputError,
          r"argument 'y': expected labels in \[0, 1\] for binary_crossentropy"),
    Entry("E007", lambda c: c.fit(validation_data=(c.x[:10, :5], c.y[:10])), InputError,
          r"argument 'validation_data\[0\]': .*shape \(5,\)"),
    Entry("E008", lambda c: c.fit(validation_data=c.x[:10]), InputTypeError,
          r"argument 'validation_data': expected a pair \(x_val, y_val\)"),
    Entry("E009", lambda c: c.fit(validation_split=1.5), InputError,
          r"argument 'validation_split': expected a float in \[0, 1\), got 1\.5"),
    Entry("E010", lambda c: c.fit(batch_size=0), InputError,
          r"argument 'batch_size': expected an integer >= 1, got 0"),
    Entry("E011", lambda c: c.fit(steps_per_dispatch=0), InputError,
          r"argument 'steps_per_dispatch': .*got 0\. Fix: .*'epoch' or 'auto'"),
    Entry("E012", lambda c: c.fit(epochs=-1), InputError,
          r"argument 'epochs': expected an integer >= 0, got -1"),
    Entry("E013", lambda c: c.trainer.fit({}, c.x, c.y), InputTypeError,
          r"argument 'state': expected a jdl\.TrainState"),
    Entry("E014", lambda c: c.trainer.predict(c.state, c.x[:, :3]), InputError,
          r"argument 'x': .*got examples of shape \(3,\)"),
    # model, loss and metrics that do not fit together
    Entry("E015", lambda c: c.check_labels((10,), "binary_crossentropy", c.y), InputError,
          r"argument 'y': expected 10 label value\(s\) .*output shape \(10,\)"),
    Entry("E016", lambda c: c.check_labels((3,), "categorical_crossentropy", c.y), InputError,
          r"argument 'y': expected one-hot labels of shape \(n, 3\).*sparse_categorical"),
    Entry("E017", lambda c: c.check_labels((3,), "sparse_categorical_crossentropy",
                                           np.arange(100)), InputError,
          r"argument 'y': expected class labels in \[0, 2\] .*got labels from 0 to 99"),
    Entry("E018", lambda c: c.check_labels((3,), "sparse_categorical_crossentropy",
                                           np.full(100, 0.5)), InputError,
          r"argument 'y': expected integer class labels, got non-integer float labels"),
    Entry("E019", lambda c: jdl.Trainer(jdl.models.MLP(features=(3,)), metrics=["auc"],
                                        loss="sparse_categorical_crossentropy"), InputError,
          r"argument 'metrics': expected metric 'auc' to be used with a binary loss"),
    Entry("E020", lambda c: jdl.Trainer(jdl.models.MLP(), loss="mse", metrics=["accuracy"]),
          InputError, r"argument 'metrics': expected metric 'accuracy' .*classification loss"),
    Entry("E021", lambda c: jdl.Trainer(jdl.models.MLP, loss="mse"), InputTypeError,
          r"argument 'model': .*got the class MLP\. Fix: instantiate it"),
    # names, each with the closest known one
    Entry("E022", lambda c: jdl.Trainer(jdl.models.MLP(), loss="binary_crossentropyy"),
          InputError, r"argument 'loss': .*did you mean 'binary_crossentropy'\?"),
    Entry("E023", lambda c: jdl.Trainer(jdl.models.MLP(), loss="mse", metrics=["maee"]),
          InputError, r"argument 'metrics': .*did you mean 'mae'\?"),
    Entry("E024", lambda c: jdl.Trainer(jdl.models.MLP(), loss="mse", optimizer="adamm"),
          InputError, r"argument 'optimizer': .*did you mean 'adam'\?"),
    Entry("E025", lambda c: jdl.Trainer(jdl.models.MLP(activation="rleu"), loss="mse")
          .init(0, c.x[:1]), InputError, r"argument 'activation': .*did you mean 'relu'\?"),
    Entry("E026", lambda c: jdl.models.get("mpl"), InputError,
          r"argument 'model\.name': .*did you mean 'mlp'\?"),
    Entry("E027", lambda c: jdl.data.load("iriss"), InputError,
          r"argument 'name': .*dataset names.*did you mean 'iris'\?"),
    Entry("E028", lambda c: optim.make_schedule("cosin"), InputError,
          r"argument 'schedule': .*did you mean 'cosine'\?"),
    Entry("E029", lambda c: jdl.Trainer(jdl.models.MLP(), loss="mse", nan_policy="skipp"),
          InputError, r"argument 'nan_policy': .*did you mean 'skip'\?"),
    Entry("E030", lambda c: jdl.data.clean(c.x, nonfinite="dropp"), InputError,
          r"argument 'nonfinite': .*did you mean 'drop'\?"),
    # optimizer options
    Entry("E031", lambda c: optim.make_optimizer("adamw", weight_decay=-1e-4), InputError,
          r"argument 'weight_decay': expected a float >= 0, got -0\.0001"),
    Entry("E032", lambda c: jdl.Trainer(jdl.models.MLP(), loss="mse", learning_rate=0.0),
          InputError, r"argument 'learning_rate': expected a positive float, got 0\.0"),
    Entry("E033", lambda c: optim.make_schedule("cosine", 1e-3), InputError,
          r"argument 'total_steps': .*'cosine' schedule, got None"),
    Entry("E034", lambda c: optim.make_schedule("step", 1e-3), InputError,
          r"argument 'decay_steps': expected an integer >= 1 for the 'step' schedule"),
    Entry("E035", lambda c: optim.make_optimizer("adam", clip_norm=-1.0), InputError,
          r"argument 'clip_norm': expected a positive float or None, got -1\.0"),
    # experiment configs (the functions behind `jaxdl train --config ... --config.KEY=VALUE`)
    Entry("E036", lambda c: config_lib.apply_overrides(
        config_lib.load_config(config_lib.default_config_path()), {"optimizer.lr": "1"}),
        InputError, r"argument '--config\.optimizer\.lr': .*did you mean "
                    r"'optimizer\.learning_rate'"),
    Entry("E037", lambda c: config_lib.apply_overrides(
        config_lib.load_config(config_lib.default_config_path()), {"epochs": "ten"}),
        InputError, r"argument '--config\.epochs': expected an int.*got 'ten' \(str\)"),
    Entry("E038", lambda c: config_lib.apply_overrides(
        config_lib.load_config(config_lib.default_config_path()), {"model": "mlp"}),
        InputError, r"argument '--config\.model': expected a value for one of the group's keys"),
    Entry("E039", lambda c: config_lib.load_config(c.tmp / "missing.py"), InputError,
          r"argument '--config': .*which does not exist\. Fix: .*experiment file"),
    Entry("E040", lambda c: config_lib.load_config(c.file("config.yaml", "epochs: 1\n")),
          InputError, r"argument '--config': .*not a \.py file"),
    Entry("E041", lambda c: config_lib.load_config(c.file("no_get.py", "EPOCHS = 1\n")),
          InputError, r"argument '--config': .*which has no get_config function"),
    Entry("E042", lambda c: config_lib.load_config(c.file("broken.py", "import nope_nope\n")),
          InputError, r"argument '--config': expected a config file that imports cleanly, "
                      r"got ModuleNotFoundError: .*line 1\)"),
    # checkpoints
    Entry("E043", _all_corrupt, CheckpointError,
          r"no usable checkpoint under .*: tried 2: \w+ .*, 1: \w+ .*Fix: ", shaped=False),
    Entry("E044", _changed_model, InputError,
          r"argument 'checkpoint': .*different leaves: \['w'\]: checkpoint \[4096\] float32, "
          r"model \[2048\] float32"),
    # augmentations
    Entry("E045", lambda c: augment.feature_dropout(1.5), InputError,
          r"argument 'rate': expected a float in \[0, 1\), got 1\.5"),
    Entry("E046", lambda c: augment.random_crop(-1), InputError,
          r"argument 'padding': expected an integer >= 0, got -1"),
    Entry("E047", lambda c: augment.gaussian_noise(-0.1), InputError,
          r"argument 'stddev': expected a float >= 0, got -0\.1"),
    Entry("E048", lambda c: augment.mixup(0), InputError,
          r"argument 'alpha': expected a float > 0, got 0"),
    Entry("E049", lambda c: c.fit_with(augment=augment.random_flip()), InputError,
          r"argument 'x': expected images \[B, H, W, C\]"),
    Entry("E050", lambda c: c.fit_with(augment=augment.mixup(0.2)), InputError,
          r"argument 'y': expected float labels for mixup"),
    # bundled data sets
    Entry("E051", lambda c: jdl.data.load("iris", val_fraction=1.2), InputError,
          r"argument 'val_fraction': expected a float in \[0, 1\), got 1\.2"),
    Entry("E052", lambda c: jdl.data.load("iris", val_fraction=0.5, test_fraction=0.5),
          InputError, r"argument 'val_fraction \+ test_fraction': expected a sum below 1"),
    Entry("E053", lambda c: jdl.data.load("iris", images=True), InputError,
          r"argument 'images': expected images=True only with name='digits'"),
    # transforms and callbacks
    Entry("E054", lambda c: jdl.data.Standardizer.fit(c.x)(c.x[:, :5]), InputError,
          r"argument 'x': expected examples of shape \(8,\) \(what the Standardizer"),
    Entry("E055", lambda c: jdl.EarlyStopping(mode="maxx"), InputError,
          r"argument 'mode': expected 'auto', 'min' or 'max', got 'maxx'"),
    Entry("E056", lambda c: jdl.ReduceLROnPlateau(factor=2.0), InputError,
          r"argument 'factor': expected a float in \(0, 1\), got 2\.0"),
    # a step that goes non-finite (the file's one API training run)
    Entry("E057", lambda c: c.fit_with(loss=_nan_loss, nan_policy="raise"), NonFiniteError,
          r"training step 0 was non-finite: the loss and the gradients of .*Fix: .*"
          r"nan_policy='skip'", shaped=False),
    # the `jaxdl` command
    Entry("E058", lambda c: ["frobnicate"], CLI,
          r"argument COMMAND: invalid choice: 'frobnicate'", shaped=False),
    Entry("E059", lambda c: ["train", "--workdir", c.tmp / "w", "--config.optimizer.lr=1"], CLI,
          r"argument '--config\.optimizer\.lr': .*did you mean 'optimizer\.learning_rate'"),
    Entry("E060", lambda c: ["predict", "--workdir", c.folder("some_run"), "--input",
                             c.tmp / "missing.csv"], CLI,
          r"argument '--input': expected an existing \.csv or \.npy file, .*does not exist"),
    Entry("E061", lambda c: ["predict", "--workdir", c.file("x3.csv", "1,2,3\n"), "--input",
                             c.file("x3.csv")], CLI,
          r"argument '--workdir': expected the folder of a run .*which is not a folder"),
    Entry("E062", lambda c: ["train", "--workdir", c.file("x3.csv", "1,2,3\n")], CLI,
          r"argument '--workdir': expected a folder \(new, or a run to resume\), "
          r"got .*an existing file"),
    Entry("E063", lambda c: ["predict", "--workdir", c.run, "--input",
                             c.file("x5.csv", _csv(np.zeros((3, 5))))], CLI,
          r"argument '--input': expected rows of \[30\] features .*got rows of shape \(5,\)"),
    Entry("E064", lambda c: ["train", "--workdir", c.run, "--config.epochs=1",
                             "--config.optimizer.learning_rate=0.1"], CLI,
          r"argument '--config': expected the config of the run in .*got changes to "
          r"optimizer\.learning_rate \([\d.e-]+ -> 0\.1\)"),
    Entry("E065", lambda c: ["train", "--workdir", c.run, "--config.epochs=1",
                             "--config.checkpoint.resume=false"], CLI,
          r"argument '--workdir': expected an empty directory \(checkpoint\.resume=false"),
    Entry("E066", lambda c: ["predict", "--workdir", c.folder("not_a_run"), "--input",
                             c.file("x3.csv", "1,2,3\n")], CLI,
          r"argument '--workdir': expected a directory written by `jaxdl train` "
          r"\(with config\.json\)"),
    Entry("E067", lambda c: ["evaluate", "--workdir", c.run_copy("run_no_ckpt", False)], CLI,
          r"argument '--workdir': expected a checkpoint under .*got none\. Fix: train first"),
    Entry("E068", _corrupt_run, CLI,
          r"no usable checkpoint under .*: tried \d+: \w+ .*Fix: ", shaped=False),
    Entry("E069", lambda c: ["predict", "--workdir", c.folder("some_run"), "--input",
                             c.file("x3.csv", "1,2,3\n"), "--batch-size", "0"], CLI,
          r"argument --batch-size: expected an integer >= 1, got '0'", shaped=False),
    Entry("E070", lambda c: ["train", "--workdir", c.tmp / "w_bs0", "--config.batch_size=0",
                             "--quiet"], CLI,
          r"argument '--config\.batch_size': expected an integer >= 1, got 0"),
    Entry("E071", lambda c: ["predict", "--workdir", c.run, "--input",
                             c.file("words.csv", "a,b\nc,d\n")], CLI,
          r"argument '--input': expected a \.csv of numbers"),
    Entry("E072", lambda c: ["predict", "--workdir", c.run, "--input",
                             c.file("garbage.npy", "not a numpy file")], CLI,
          r"argument '--input': expected a \.npy file of numbers"),
    Entry("E073", lambda c: ["predict", "--workdir", c.run, "--input",
                             c.file("nan.csv", _csv(_nan_rows()))], CLI,
          r"argument '--input': expected finite values"),
    Entry("E074", lambda c: ["train", "--workdir", c.tmp / "w_data", "--config.data.name=iriss",
                             "--quiet"], CLI,
          r"argument '--config\.data\.name': .*did you mean 'iris'"),
    Entry("E075", lambda c: ["train", "--workdir", c.tmp / "w_warmup",
                             "--config.optimizer.schedule=warmup_cosine",
                             "--config.optimizer.warmup_steps=100000", "--quiet"], CLI,
          r"argument '--config\.optimizer\.warmup_steps': .*Fix: .*--config\."),
    Entry("E076", lambda c: ["train", "--workdir", c.file("x3.csv", "1,2,3\n") + "/sub",
                             "--quiet"], CLI,
          r"argument '--workdir': expected a folder that can be created and written, got "
          r".*\(Not a directory\)"),
    Entry("E077", lambda c: _indivisible_restore(c), InputError,
          r"argument 'target shardings': expected shardings this checkpoint can be placed "
          r"on, got IndivisibleError"),
    Entry("E078", lambda c: jdl.Trainer(jdl.models.MLP(), loss="mse", mesh={"data": 3}),
          InputError, r"argument 'mesh': expected axis sizes whose product is the device count "
          r"\(8: cpu:0"),
    Entry("E079", lambda c: _indivisible_batch(c), InputError,
          r"argument 'batch_size': expected a global batch divisible by the data-parallel size "
          r"8 \(mesh data=8 x fsdp=1\), got 12"),
    Entry("E080", lambda c: c.fit_with(precision="float16"), InputError,
          r"argument 'precision': expected 'float32' or 'bfloat16', got 'float16'\. "
          r"Fix: use precision='bfloat16'"),
    Entry("E081", lambda c: c.fit_with(grad_accum_steps=0), InputError,
          r"argument 'grad_accum_steps': expected an integer >= 1"),
    Entry("E082", lambda c: c.fit_with(grad_accum_steps=4), InputError,
          r"argument 'batch_size': expected a batch divisible by grad_accum_steps=4 "
          r"\(equal micro-batches\), got 50\. Fix: .*\(e\.g\. 48 or 52\)"),
    # -- checkpoints you can trust (E083-E119)
    Entry("E083", lambda c: _cadence(c, every_steps=-5), InputError,
          r"argument 'every_steps': expected an integer >= 0 \(0: off\), got -5\. Fix: pass "
          r"every_steps=N"),
    Entry("E084", lambda c: _cadence(c, every_epochs=1.5), InputError,
          r"argument 'every_epochs': expected an integer >= 0 \(0: off\), got 1\.5 \(float\)"),
    Entry("E085", lambda c: Checkpointer(c.tmp / "ckpt_keep", keep=0), InputError,
          r"argument 'keep': expected an integer >= 1 \(how many of the latest checkpoints to "
          r"keep\), got 0\. Fix: pass keep=3"),
    Entry("E086", _linked_out, CheckpointError,
          r"the checkpoint directory .*run_linked/checkpoints resolves to .*ckpt_of_another_run,"
          r" outside its run's folder .*Fix: replace the link", shaped=False),
    Entry("E087", _blocked_digest, CheckpointError,
          r"writing checkpoint 2 under .*ckpt_blocked failed: Is a directory \(errno 21\)\. The "
          r"checkpoints committed before it with their digests are intact: \[1\]\. Fix: ",
          shaped=False),
    Entry("E088", _deleted_under_a_run, CheckpointError,
          r"the checkpoint directory .*ckpt_deleted was deleted, emptied or replaced while the "
          r"run was writing to it; .*Fix: ", shaped=False),
    Entry("E089", _edited_meta_run, CLI,
          r"no usable checkpoint under .*run_edited_meta/checkpoints: tried \d+: its meta does "
          r"not match its digest", shaped=False),
    Entry("E090", _edited_meta_read, CheckpointError,
          r"checkpoint 2 under .*ckpt_meta_edited is unusable: its meta does not match its "
          r"digest \(edited or damaged\)\. Fix: ", shaped=False),
    Entry("E091", _malformed_digests, CheckpointError,
          r"no usable checkpoint under .*ckpt_bad_digest: tried 2: its digest file is malformed: "
          r"expected a JSON object of checksums, got null, 1: ", shaped=False),
    # -- one run per workdir, and the command's inputs (E092-E139)
    Entry("E092", lambda c: ["train", "--workdir", _in_use(c, "w_busy"), "--quiet"], CLI,
          r"argument '--workdir': expected a folder that no other jaxdl process is writing, got "
          r".*w_busy, locked by pid \d+ on host .*Fix: wait for that process"),
    Entry("E093", lambda c: ["train", "--workdir", _in_use(c, "w_read", reader=True)], CLI,
          r"argument '--workdir': expected a folder that no other jaxdl process is using, got "
          r".*w_read, which another jaxdl command is reading"),
    Entry("E094", lambda c: ["data", "prepare", "--dataset", "iris", "--out",
                             _in_use(c, "out_busy")], CLI,
          r"argument '--out': expected a folder that no other jaxdl process is writing, got "
          r".*out_busy, locked by pid \d+"),
    Entry("E095", lambda c: ["train", "--workdir", str(c.tmp) + "/x\udcff", "--quiet"], CLI,
          r"argument '--workdir': expected a path of UTF-8 characters .*got b'.*x\\xff'"),
    Entry("E096", lambda c: ["predict", "--workdir", c.run, "--input", c.file("empty.csv", "")],
          CLI, r"argument '--input': expected a file with at least one row of features, got no "
          r"rows in empty\.csv"),
    Entry("E097", lambda c: ["predict", "--workdir", c.run, "--input", c.file(
        "one_row.npy", lambda p: np.save(p, np.zeros(30, np.float32)))], CLI,
          r"argument '--input': expected rows of features .*got a 1-D array of shape \(30,\)"),
    Entry("E098", lambda c: ["predict", "--workdir", c.run, "--input", c.file(
        "huge.npy", lambda p: np.save(p, np.full((2, 30), 1e38, np.float32)))], CLI,
          r"argument '--input': expected values that the run's normalization keeps finite"),
    Entry("E099", lambda c: ["predict", "--workdir", c.folder("some_run"), "--input",
                             c.file("x3.csv", "1,2,3\n"), "--output", c.folder("out_dir.csv")],
          CLI, r"argument '--output': expected a file path that can be written, got "
          r".*out_dir\.csv', which is a directory"),
    Entry("E100", lambda c: ["predict", "--workdir", c.folder("some_run"), "--input",
                             c.file("x3.csv", "1,2,3\n"), "--output", c.tmp / "missing" / "p.csv"],
          CLI, r"argument '--output': expected a file path that can be written, got "
          r".*missing/p\.csv', whose folder .*missing' does not exist"),
    Entry("E101", lambda c: ["data", "prepare", "--dataset", "iris", "--out",
                             c.file("x3.csv", "1,2,3\n") + "/sub"], CLI,
          r"argument '--out': expected a folder that can be created and written, got "
          r".*\(Not a directory\)"),
    Entry("E102", lambda c: ["train", "--workdir", c.tmp / "w_exits", "--config", _config_file(
        c, "exits.py", "def get_config():\n    sys.exit(0)\n")], CLI,
          r"argument '--config': expected a config file that returns its config without "
          r"exiting, got a call to sys\.exit\(0\) \(.*exits\.py, line 7\)"),
    Entry("E103", lambda c: ["train", "--config", c.folder("dir_config.py")], CLI,
          r"argument '--config': expected a Python config file .*dir_config\.py', a directory"),
    Entry("E104", lambda c: ["train", "--workdir", c.tmp / "w_typed", "--config", _config_file(
        c, "typed.py", "def get_config():\n    return ml_collections.ConfigDict("
        "{'checkpoint': {'keep': None}})\n")], CLI,
          r"argument '--config': expected checkpoint\.keep as an int \(the default is 3\), got "
          r"None \(NoneType\) in .*typed\.py"),
    Entry("E105", lambda c: ["train", "--workdir", c.tmp / "w_nameless", "--config", _config_file(
        c, "nameless.py", "def get_config():\n    return ml_collections.ConfigDict("
        "{'model': {'features': (10, 1)}})\n")], CLI,
          r"argument '--config': expected model as a group with a 'name'"),
    # -- settings that would train nothing (E106-E159)
    Entry("E106", lambda c: jdl.models.MLP(features=(16, 1), dropout_rate=1.5), InputError,
          r"argument 'dropout_rate': expected a rate in \[0, 1\) .*, got 1\.5\. Fix: pass "
          r"e\.g\. dropout_rate=0\.1, or 0 for no dropout"),
    Entry("E107", lambda c: ["summary", "--config.model.features", "(10, 0, 1)"], CLI,
          r"argument '--config\.model\.features': expected a sequence of layer widths, each "
          r"an int >= 1 .*, got \(10, 0, 1\)"),
    Entry("E108", lambda c: c.fit(shuffle="no"), InputError,
          r"argument 'shuffle': expected True or False, got 'no'\. Fix: pass shuffle=True"),
    Entry("E109", lambda c: c.fit(epochs=10**21), InputError,
          r"argument 'epochs': expected at most 1,073,741,823 epochs \(2 steps each: the step "
          r"counter is a 32-bit integer\), got 1,000,000,000,000,000,000,000"),
    # -- research code (E110-E179)
    Entry("E110", lambda c: jdl.Trainer(jdl.models.MLP(), loss=_per_example_sq,
                                        metrics=["accuracy"]), InputError,
          r"argument 'task': expected the task of the loss for metric 'accuracy' \(a callable "
          r"loss has none\), got None\. Fix: pass Trainer\(\.\.\., loss=fn, task="),
    Entry("E111", lambda c: c.fit_with(loss=lambda o, y: jnp.mean(_per_example_sq(o, y)),
                                       task="regression"), InputError,
          r"argument 'loss': expected one loss value per example, \[50\] or \[50, \.\.\.\] .*, "
          r"got <lambda> returning shape \(\)\. Fix: return the per-example losses"),
    Entry("E112", lambda c: jdl.Trainer(jdl.models.MLP(), loss=None, train_step=_own_step,
                                        precision="bfloat16"), InputError,
          r"argument 'precision': expected 'float32' with a custom train_step .*, got "
          r"'bfloat16'\. Fix: drop precision=, or do it inside your step"),
    Entry("E113", lambda c: _evaluate_without_loss(c), InputError,
          r"argument 'loss': expected a loss to evaluate with \(validation, evaluate\), got "
          r"None \(a custom train_step without one\)"),
    Entry("E114", lambda c: ["train", "--workdir", c.folder("bad_model_path"),
                             "--config.model.name=no_such_package_xyz:Net"], CLI,
          r"argument '--config\.model\.name': expected an importable module, got "
          r"'no_such_package_xyz:Net' .*PYTHONPATH"),
    Entry("E115", lambda c: c.fit(callbacks=[_ReturnsDict()]), InputTypeError,
          r"argument 'callbacks\[0\]\.on_epoch_end': expected None or a TrainState like the one "
          r"passed in, got \{'a': 1\} \(dict\) from _ReturnsDict\.on_epoch_end"),
    Entry("E116", lambda c: c.fit(callbacks=[_ExtraArgument()]), InputTypeError,
          r"argument 'callbacks\[0\]\.on_epoch_end': expected a hook taking the kit's arguments "
          r"\(epoch, logs, state\) or Keras' \(epoch, logs\)"),
    Entry("E117", lambda c: c.fit(callbacks=[lambda epoch, logs: None]), InputTypeError,
          r"argument 'callbacks\[0\]': expected a jdl\.Callback instance, got .*Fix: subclass "
          r"jdl\.Callback, or wrap functions: jdl\.LambdaCallback"),
    Entry("E118", lambda c: c.trainer.restore(c.folder("no_checkpoints")), InputError,
          r"argument 'directory': expected a checkpoint under .*no_checkpoints, got none\. Fix: "
          r"train first"),
    # -- callbacks, optimizer options and writers (E119-E127)
    Entry("E119", lambda c: jdl.LambdaCallback(on_epoch_end=3), InputTypeError,
          r"argument 'on_epoch_end': expected a function fn\(epoch, logs\) or None, got 3 "
          r"\(int\)\. Fix: pass e\.g\. on_epoch_end=lambda epoch, logs:"),
    Entry("E120", lambda c: c.fit(callbacks=[_HookAndAlias()]), InputTypeError,
          r"argument 'callbacks\[0\]\.on_train_batch_end': expected one of on_train_batch_end "
          r"and its Keras alias on_batch_end, got _HookAndAlias defining both\. Fix: define "
          r"only on_train_batch_end"),
    Entry("E121", lambda c: c.fit(callbacks=[_TestHook()]), InputTypeError,
          r"argument 'callbacks\[0\]\.on_test_end': expected hooks fit calls \(on_train_begin, "
          r".*\), got _TestHook defining on_test_end\. Fix: fit evaluates the validation set "
          r"fused on device"),
    Entry("E122", lambda c: c.fit(callbacks=[_ShrinksParams()]), InputError,
          r"argument 'callbacks\[0\]\.on_epoch_end': expected None or a TrainState like the one "
          r"passed in, got a TrainState from _ShrinksParams\.on_epoch_end whose leaf "
          r"\.params\['dense_0'\]\['bias'\] is \(1,\) float32 where the state passed in has "
          r"\(\d+,\) float32"),
    Entry("E123", lambda c: optim.make_optimizer("adam", 1e-3, betta1=0.9), InputError,
          r"argument 'optimizer options': expected options that optax\.adam takes \['b1', "
          r"'b2', .*\], got \['betta1'\]\. Fix: drop betta1 or use one of those"),
    Entry("E124", lambda c: optim.lr_scale(optax.adam(1e-3).init({"w": jnp.zeros(2)})),
          InputError,
          r"argument 'opt_state': expected an optimizer state with the kit's learning-rate "
          r"multiplier \(jaxdl\.optim\.with_lr_scale\), got a state without it\. Fix: build "
          r"the optimizer with jdl\.optim\.with_lr_scale\(tx\)"),
    Entry("E125", lambda c: _tensorboard(c).write({"loss": 0.2}), InputError,
          r"argument 'record': expected a dict with an integer 'step', got \{'loss': 0\.2\} "
          r"\(dict\)\. Fix: add the optimizer step"),
    Entry("E126", lambda c: _tensorboard(c).write({"step": 1, "split": "dev", "loss": 0.2}),
          InputError,
          r"argument 'record': expected a 'split' among \['train', 'val', 'perf', 'test'\] or "
          r"none, got 'dev'\. Fix: write \{'step': \.\.\., 'split': 'test'"),
    Entry("E127", lambda c: _tensorboard(c).write_hparams(0.1, metrics=["loss"]), InputError,
          r"argument 'hparams': expected a mapping name -> value, or one such mapping per "
          r"member, got 0\.1 \(float\)\. Fix: pass e\.g\. \{'learning_rate': 1e-3"),
    # -- your own data: pytrees, weights and iterables (E128-E148)
    Entry("E128", lambda c: c.fit({"a": c.x, "b": c.x[:70]}), InputError,
          r"argument 'x\['b'\]': expected 100 examples, as x\['a'\] has, got 70\. Fix: give "
          r"every input and label leaf the same number of rows"),
    Entry("E129", lambda c: c.fit({"a": c.x, "b": np.array(["q"] * 100)}), InputTypeError,
          r"argument 'x\['b'\]': expected numeric values, got dtype <U1\. Fix: encode "
          r"non-numeric columns as numbers first"),
    Entry("E130", lambda c: _two_outputs(c, loss={"a": "mse", "c": "mse"}, y=("a", "c")),
          InputError,
          r"argument 'loss': expected a model returning a dict of outputs with the keys of the "
          r"loss \['a', 'c'\], got \['a', 'b'\]\. Fix: give the model's outputs, the labels and "
          r"loss= the same names"),
    Entry("E131", lambda c: jdl.Trainer(_TwoOutputs(), loss={"a": "mse", "b": "mse"},
                                        loss_weights={"c": 1.0}), InputError,
          r"argument 'loss_weights': expected keys among the loss's outputs \['a', 'b'\], got "
          r"\['c'\]\. Fix: name only outputs that have a loss"),
    Entry("E132", lambda c: jdl.Trainer(jdl.models.MLP(features=(4, 1)), loss="mse",
                                        metrics={"a": ["mae"]}), InputError,
          r"argument 'metrics': expected a list with a single loss \(metrics per output need a "
          r"loss per output\), got \{'a': \['mae'\]\}\. Fix: pass loss=\{name: loss\} per "
          r"output, or metrics=\[\.\.\.\]"),
    Entry("E133", lambda c: c.fit(sample_weight=np.ones(3)), InputError,
          r"argument 'sample_weight': expected one weight per example, shape \(100,\), got "
          r"shape \(3,\)\. Fix: pass 100 weights, one per row of x"),
    Entry("E134", lambda c: c.fit(sample_weight=-np.ones(100)), InputError,
          r"argument 'sample_weight': expected finite weights >= 0, got -1\.0 at row 0\. Fix: "
          r"replace it \(a weight of 0 leaves the example out\)"),
    Entry("E135", lambda c: c.fit(class_weight={0: 1.0, 2: 3.0}), InputError,
          r"argument 'class_weight': expected labels the data has \[0, 1\], got label 2\. Fix: "
          r"drop it, or check the label encoding"),
    Entry("E136", lambda c: c.fit(class_weight="balance"), InputError,
          r"argument 'class_weight': expected 'balanced' or a \{label: weight\} mapping, got "
          r"'balance'\. Fix: pass class_weight='balanced'"),
    Entry("E137", lambda c: _regression_fit(c, class_weight={0: 1.0}), InputError,
          r"argument 'class_weight': expected a classification loss with one label per example "
          r"\(binary, sparse or one-hot\), got a regression loss with labels of shape \(100,\)\. "
          r"Fix: pass per-example weights as sample_weight instead"),
    Entry("E138", lambda c: jdl.Trainer(jdl.models.MLP(features=(4, 3)),
                                        loss="sparse_categorical_crossentropy", metrics=["tp"]),
          InputError,
          r"argument 'metrics': expected metric 'tp' to be used with a binary loss "
          r"\(binary_crossentropy\), got a multiclass loss\. Fix: use metrics=\['confusion'\]"),
    Entry("E139", lambda c: jdl.Trainer(jdl.models.MLP(features=(4, 1)), loss="mse",
                                        metrics=["confusion"]), InputError,
          r"argument 'metrics': expected metric 'confusion' to be used with a classification "
          r"loss, got a regression loss\. Fix: drop the metric or pick a loss that matches"),
    Entry("E140", lambda c: c.fit_dataset([(c.x[:16], c.y[:15])]), InputError,
          r"argument 'x': expected batches whose arrays all hold the same number \(>= 1\) of "
          r"rows, one per example, got batch 0 with rows x: 16, y: 15\. Fix: yield x, y and "
          r"sample_weight with one row per example each"),
    Entry("E141", lambda c: c.fit_dataset([(c.x[:16], c.y[:16]),
                                           (c.x[:16], c.y[:16], np.ones(16))]), InputError,
          r"argument 'x': expected every batch with the first batch's structure, got batch 1 "
          r"of epoch 0 shaped PyTreeDef\(.*\) where the first was PyTreeDef\(.*\)\. Fix: yield "
          r"batches of one structure"),
    Entry("E142", lambda c: c.fit_dataset([(np.full((16, 8), "a"), c.y[:16])]), InputTypeError,
          r"argument 'x': expected numeric arrays in every batch, got batch 0: x of dtype "
          r"<U1\. Fix: encode non-numeric values as numbers in the pipeline"),
    Entry("E143", lambda c: c.fit_dataset(_Empty()), InputError,
          r"argument 'x': expected a dataset that yields at least one batch, got .* \(_Empty\), "
          r"which yielded nothing\. Fix: check the pipeline"),
    Entry("E144", lambda c: c.fit_dataset(b for b in [(c.x[:16], c.y[:16])]), InputError,
          r"argument 'steps_per_epoch': expected an integer >= 1 with a one-shot iterator \(a "
          r"generator cannot be read again and its length is unknown\), got None\. Fix: pass "
          r"steps_per_epoch=N, or a re-iterable"),
    Entry("E145", lambda c: c.fit_dataset([(c.x[:16], c.y[:16])], shuffle=True), InputError,
          r"argument 'shuffle': expected None or False with a dataset \(it owns its order\), "
          r"got True\. Fix: shuffle in the pipeline"),
    Entry("E146", lambda c: c.fit_dataset([(c.x[:16], c.y[:16])], validation_split=0.2),
          InputError,
          r"argument 'validation_split': expected 0 with a dataset \(its batches are not held in "
          r"memory to cut\), got 0\.2\. Fix: pass validation_data=\(x_val, y_val\)"),
    Entry("E147", lambda c: c.fit_dataset([(c.x[:8], c.y[:8]), (c.x[:16], c.y[:16])]),
          InputError,
          r"argument 'x': expected batches of at most 8 rows \(the first batch's size, or "
          r"batch_size\), got batch 1 of epoch 0 with 16 rows\. Fix: yield batches no larger"),
    Entry("E148", lambda c: c.fit_dataset((b for b in [(c.x[:16], c.y[:16])] * 3), epochs=2,
                                          steps_per_epoch=2), InputError,
          r"argument 'x': expected an iterator that lasts the whole run \(epochs x "
          r"steps_per_epoch batches\), got one that ran out after 3 batches \(epoch 1, step 1\)"),
    # -- explanations (E149-E156)
    Entry("E149", lambda c: jdl.explain.attribute("lime", _row_sum, np.ones((2, 5), np.float32)),
          InputError,
          r"argument 'method': expected one of the known explanation method names "
          r"\['expected_gradients', .*\], got 'lime'\. Fix: pass a known name"),
    Entry("E150", lambda c: jdl.explain.integrated_gradients(_row_sum, np.ones((2, 5), np.float32),
                                                             steps="many"), InputError,
          r"argument 'steps': expected an integer >= 1 or 'auto', got 'many'\. Fix: pass "
          r"steps=64, or steps='auto' with a tolerance"),
    Entry("E151", lambda c: jdl.explain.expected_gradients(
        _row_sum, np.ones((2, 5), np.float32), background=np.zeros((3, 4), np.float32)),
          InputError,
          r"argument 'background': expected reference examples \[M, 5\] \(e\.g\. a sample of "
          r"training rows\), got shape \(3, 4\)\. Fix: pass rows shaped like x's"),
    Entry("E152", lambda c: _explain(c, "--member", "1"), CLI,
          r"argument '--member': expected a population run \(population\.size > 0\), got member "
          r"1 of a single-model run\. Fix: drop --member"),
    Entry("E153", lambda c: _explain(c, "--target", "first"), CLI,
          r"argument '--target': expected 'predicted', 'true', 'all' or a class index, got "
          r"'first'\. Fix: pass --target predicted"),
    Entry("E154", lambda c: _explain(c, "--baseline", "train"), CLI,
          r"argument '--baseline': expected zeros, median or a file of one row \(train: "
          r"expected_gradients' background only\), got 'train'\. Fix: pass --baseline median"),
    Entry("E155", lambda c: _explain(c, "--steps", "auto", "--method", "occlusion"), CLI,
          r"argument '--steps': expected 'auto' with --method integrated_gradients only, got "
          r"'auto' with occlusion\. Fix: pass --steps N"),
    Entry("E156", lambda c: _explain(c, "--method", "saliency", "--baseline", "zeros"), CLI,
          r"argument '--baseline': expected a method that uses a baseline \(integrated_gradients, "
          r"expected_gradients, occlusion\), got --baseline zeros with saliency\. Fix: drop "
          r"--baseline"),
    # -- your own mesh (E157)
    Entry("E157", lambda c: jdl.Trainer(jdl.models.MLP(features=(4, 1)), loss="mse",
                                        mesh=jax.make_mesh((8,), ("batch",))), InputError,
          r"argument 'mesh': expected a jax\.sharding\.Mesh whose axes are among "
          r"\['population', 'data', 'fsdp', 'tensor'\], got axes \['batch'\]\. Fix: rename "
          r"'batch' to the kit axis it plays"),
    # -- the history log (E158-E159)
    Entry("E158", _blocked_history_log, CheckpointError,
          r"writing checkpoint \d+ under .*ckpt_log_blocked \(its history log history\.jsonl\) "
          r"failed: Is a directory \(errno 21\)\. The checkpoints committed before it with their "
          r"digests are intact: none\. Fix: ", shaped=False),
    Entry("E159", _edited_history_log, CheckpointError,
          r"no usable checkpoint under .*ckpt_log_edited: tried \d+: its history log "
          r".*history\.jsonl does not match its meta \(sha256 of the lines it records\)",
          shaped=False),
]
ENTRIES = {e.id: e for e in CATALOGUE}


def _indivisible_batch(c):
    trainer = jdl.Trainer(jdl.models.MLP(features=(4, 1)), loss="binary_crossentropy",
                          mesh={"data": 8})
    state = trainer.init(jax.random.key(0), c.x[:1])
    trainer.fit(state, c.x, c.y, epochs=1, batch_size=12, verbose=0)


def _indivisible_restore(c):
    """A restore target sharded 3 ways over a dimension of 8: the data is fine, the layout not."""
    from jaxdl.checkpoint import Checkpointer

    with Checkpointer(c.tmp / "ckpt_shard") as ckpt:
        if not ckpt.steps:
            ckpt.save(1, {"w": jnp.arange(8.0)}, {})
            ckpt.wait()
        mesh = jax.make_mesh((3,), ("x",), devices=jax.devices()[:3])
        target = jax.ShapeDtypeStruct((8,), jnp.float32,
                                      sharding=jax.NamedSharding(mesh, jax.P("x")))
        ckpt.restore({"w": target})


# --- the doc -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DocEntry:
    raised: str  # the exception class, or "exit 2"
    message: str  # the documented message; "..." stands for any text
    known_gap: bool


def parse_doc(text: str) -> dict[str, DocEntry]:
    """``{id: DocEntry}`` of docs/errors.md's ``### E001 ...`` sections, in order."""
    parts = re.split(r"^### (E\d{3})\b.*$", text, flags=re.M)
    entries: dict[str, DocEntry] = {}
    for entry_id, body in zip(parts[1::2], parts[2::2], strict=True):
        assert entry_id not in entries, f"{entry_id} twice in {DOC}"
        raises = re.search(r"\*\*Raises:\*\* `(\w+)`", body)
        exits = re.search(r"\*\*Exits:\*\* `(\d+)`", body)
        block = re.search(r"```text\n(.*?)\n```", body, re.S)
        assert (raises or exits) and block, f"{entry_id}: needs Raises/Exits and a text block"
        raised = raises.group(1) if raises else f"exit {exits.group(1)}"
        entries[entry_id] = DocEntry(raised, block.group(1), "**Known gap:**" in body)
    return entries


@functools.cache
def doc_entries() -> dict[str, DocEntry]:
    return parse_doc(DOC.read_text())


def matches_doc(message: str, documented: str) -> bool:
    """Whether ``message`` is ``documented`` with each "..." standing for any text."""
    def flat(s: str) -> str:
        return " ".join(s.split())

    pattern = ".*".join(re.escape(flat(part)) for part in flat(documented).split("..."))
    return re.fullmatch(pattern, flat(message), re.S) is not None


# --- the tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctx(binary_trainer, blobs, tmp_path_factory):
    x, y = blobs
    state = binary_trainer.init(jax.random.key(0), x[:1])
    return Ctx(binary_trainer, state, x, y, tmp_path_factory.mktemp("catalogue"))


def _params(cli_entries: bool) -> list[Any]:
    return [pytest.param(e, id=e.id, marks=[pytest.mark.xfail(strict=True, reason=e.gap)]
                         if e.gap else []) for e in CATALOGUE if e.cli == cli_entries]


def _check_message(entry: Entry, text: str) -> None:
    assert re.search(entry.match, text, re.S), f"{entry.id}: {entry.match!r} not in {text!r}"
    if entry.shaped:
        assert SHAPE.search(text), f"{entry.id}: not 'argument ..: expected .., got ... Fix:'"
    else:
        assert "Fix:" in text or entry.cli, f"{entry.id}: no 'Fix:' in {text!r}"
    documented = doc_entries()[entry.id].message
    assert matches_doc(text, documented), (
        f"{entry.id}: the message differs from docs/errors.md\n doc: {documented}\n "
        f"now: {text}")


@pytest.mark.parametrize("entry", _params(cli_entries=False))
def test_api_error(entry: Entry, ctx: Ctx):
    with pytest.raises(entry.raises) as info:
        entry.trigger(ctx)
    assert type(info.value) is entry.raises, f"{entry.id}: {type(info.value).__name__}"
    text = str(info.value)
    if entry.shaped:
        assert text.startswith("argument '"), text
    _check_message(entry, text)


@pytest.mark.parametrize("entry", _params(cli_entries=True))
def test_cli_error(entry: Entry, ctx: Ctx, capsys, monkeypatch):
    monkeypatch.setenv(compilation_cache.ENV_VAR, "off")
    argv = [str(a) for a in entry.trigger(ctx)]  # may train ctx.run first: not captured below
    capsys.readouterr()
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    assert code == 2, f"{entry.id}: exit {code}\n{err}"
    assert out == ""
    lines = err.strip().splitlines()
    reported = [line for line in lines if CLI_ERROR_LINE.match(line)]
    assert len(reported) == 1 and reported[0] == lines[-1], err  # one paragraph, last
    _check_message(entry, reported[0])


def test_doc_and_catalogue_list_the_same_entries():
    documented = doc_entries()
    assert list(documented) == list(ENTRIES), "docs/errors.md and CATALOGUE differ"
    assert [e.id for e in CATALOGUE] == [f"E{i:03d}" for i in range(1, len(CATALOGUE) + 1)]
    for entry_id, entry in ENTRIES.items():
        doc = documented[entry_id]
        assert doc.raised == ("exit 2" if entry.cli else entry.raises.__name__), entry_id
        assert doc.known_gap == bool(entry.gap), f"{entry_id}: 'Known gap' in doc vs gap"
        assert doc.message.startswith("jaxdl") == entry.cli, entry_id


def test_matches_doc_wildcards():
    assert matches_doc("argument 'x': expected a, got /tmp/a/b. Fix: c",
                       "argument 'x': expected a, got .... Fix: c")
    assert not matches_doc("argument 'y': expected a", "argument 'x': ...")


if __name__ == "__main__":  # print every entry's real message, to refresh docs/errors.md
    import contextlib
    import io
    import os
    import tempfile

    os.environ[compilation_cache.ENV_VAR] = "off"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 8)).astype(np.float32)
    y = (x @ rng.normal(size=8) + 0.3 * rng.normal(size=100) > 0).astype(np.int32)
    trainer = jdl.Trainer(jdl.models.MLP(features=(16, 1)), optimizer="adam",
                          learning_rate=0.05, loss="binary_crossentropy", metrics=["accuracy"])
    c = Ctx(trainer, trainer.init(jax.random.key(0), x[:1]), x, y,
            pathlib.Path(tempfile.mkdtemp()))
    for e in CATALOGUE:
        if e.cli:
            argv = [str(a) for a in e.trigger(c)]
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = cli.main(argv)
            print(f"{e.id} exit {code}: {err.getvalue().strip().splitlines()[-1]}")
            continue
        try:
            e.trigger(c)
            print(f"{e.id} no error")
        except Exception as exc:  # whatever it is: print it
            print(f"{e.id} {type(exc).__name__}: {exc}")
