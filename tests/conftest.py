"""Test setup: 8 fake CPU devices, a persistent compilation cache, shared fixtures.

XLA_FLAGS must be set before jax is imported anywhere, so this file sets it at
import time (pytest imports conftest first).
"""

import os
import subprocess

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

_cache = os.environ.get("JAXDL_TEST_CACHE_DIR",
                        os.path.join(os.path.expanduser("~"), ".cache", "jaxdl", "xla-tests"))
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def blobs():
    """A small, separable binary problem: 8 features, 100 examples (not a multiple of 16)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 8)).astype(np.float32)
    w = rng.normal(size=8)
    y = (x @ w + 0.3 * rng.normal(size=100) > 0).astype(np.int32)
    return x, y


@pytest.fixture(scope="session")
def binary_trainer():
    """One Trainer (compiled programs) shared by the tests that train on ``blobs``."""
    import jaxdl as jdl

    model = jdl.models.MLP(features=(16, 1))
    return jdl.Trainer(model, optimizer="adam", learning_rate=0.05, loss="binary_crossentropy",
                       metrics=["accuracy"])


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size)``: a new tmpfs of ``size`` (e.g. "160k") under ``tmp_path``, a disk the
    test can fill; unmounted afterwards. Skips the test where mounting is not allowed."""
    mounts = []

    def mount(size: str):
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(scope="module")
def tanh_mlp():
    """A random 3-class MLP (smooth, so the trapezoid rule converges fast) and 8 inputs of 5
    features: ``(predict_fn, x)``."""
    import functools

    import jaxdl as jdl

    model = jdl.models.MLP(features=(16, 16, 3), activation="tanh")
    x = jax.random.normal(jax.random.key(1), (8, 5))
    variables = model.init(jax.random.key(0), x[:1])
    return functools.partial(model.apply, variables), np.asarray(x)


@pytest.fixture(scope="session")
def poison_once():
    """A callback class: ``PoisonOnce(epoch)`` sets the parameters to NaN once, after
    ``epoch`` (its flag is not checkpointed), for nan_policy="rollback" to undo."""
    import jax

    import jaxdl as jdl

    class PoisonOnce(jdl.Callback):
        def __init__(self, epoch):
            self.epoch, self.done = epoch, False

        def on_epoch_end(self, epoch, logs, state):
            if epoch == self.epoch and not self.done:
                self.done = True
                return state.replace(params=jax.tree.map(lambda p: p * np.nan, state.params))
            return state

    return PoisonOnce
