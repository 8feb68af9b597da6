"""A researcher's own model in a CLI run: named by import path in the config, trained, then
predicted from the workdir and loaded back with jdl.load."""

import os
import subprocess
import sys

import numpy as np
import pytest

import jaxdl as jdl

NETS = '''
import flax.linen as nn


class MyNet(nn.Module):
    width: int = 8

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(1)(nn.tanh(nn.Dense(self.width)(x)))
'''

CONFIG = '''
from jaxdl.experiment.default_config import get_config as reference


def get_config():
    c = reference()
    c.model = {"name": "nets:MyNet", "width": 6}
    c.epochs = 2
    c.metrics = ("accuracy",)
    return c
'''


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_model")
    (root / "exp").mkdir()
    (root / "exp" / "nets.py").write_text(NETS)
    (root / "exp" / "my.py").write_text(CONFIG)
    env = {**os.environ, "JAXDL_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "xla")}
    done = subprocess.run([sys.executable, "-m", "jaxdl", "train", "--config",
                           str(root / "exp" / "my.py"), "--workdir", str(root / "run"), "--quiet"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    x = jdl.data.load("breast_cancer", seed=0, standardize=False).x_test[:5]
    np.savetxt(root / "x.csv", x, delimiter=",")
    return root, env


def _predict(root, env, **extra):
    return subprocess.run([sys.executable, "-m", "jaxdl", "predict", "--workdir",
                           str(root / "run"), "--input", str(root / "x.csv")],
                          env={**env, **extra}, capture_output=True, text=True, timeout=300)


def test_predict_on_a_run_of_a_user_module_importable_from_the_environment(trained):
    root, env = trained
    done = _predict(root, env, PYTHONPATH=str(root / "exp"))
    assert done.returncode == 0, done.stderr
    probabilities = np.loadtxt(done.stdout.splitlines(), delimiter=",")
    assert probabilities.shape == (5,) and ((0 <= probabilities) & (probabilities <= 1)).all()


def test_predict_says_where_the_user_module_must_be_importable_from(trained):
    root, env = trained
    done = _predict(root, env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "argument '--config.model.name'" in done.stderr and "PYTHONPATH" in done.stderr


def test_a_workdir_never_supplies_the_code_it_runs(trained):
    root, env = trained
    (root / "run" / "nets.py").write_text(NETS)  # a module planted inside the workdir
    try:
        done = _predict(root, env, PYTHONPATH=str(root / "run"))
    finally:
        (root / "run" / "nets.py").unlink()
    assert done.returncode == 2 and "would be imported from inside it" in done.stderr


def test_jdl_load_rebuilds_the_trainer_and_the_state(trained, monkeypatch):
    root, _ = trained
    monkeypatch.syspath_prepend(str(root / "exp"))
    trainer, state = jdl.load(root / "run")
    assert type(trainer.model).__name__ == "MyNet" and trainer.model.width == 6
    x = np.random.default_rng(0).normal(size=(4, 30)).astype(np.float32)
    assert trainer.predict(state, x).shape == (4, 1)


def test_a_model_name_that_is_not_a_module_class_is_refused():
    for name, match in (("os:system", "a flax.linen.Module class"),
                        ("no_such_pkg_xyz:Net", "an importable module"),
                        ("a b:C", "'package.module:ClassName'")):
        with pytest.raises(jdl.InputError, match=match):
            jdl.models.get(name)
