"""Watching a run: live progress in a terminal, profiles, summary, recompile watchdog."""

import json
import logging
import os
import pty
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import jaxdl as jdl
from jaxdl import cli
from jaxdl.train import perf
from jaxdl.writers import profile as profiling


def test_a_terminal_gets_a_live_progress_bar(tmp_path):
    leader, follower = pty.openpty()
    env = {**os.environ, "JAXDL_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "120",
           "TERM": "xterm-256color"}
    proc = subprocess.Popen([sys.executable, "-m", "jaxdl", "train", "--workdir",
                             str(tmp_path / "run"), "--config.epochs=3"],
                            stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=300) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "Epoch 3/3" in screen and "test · loss" in screen
    assert "\x1b[" in screen and "━" in screen  # rich drew a bar with terminal escapes


def test_plain_lines_when_not_a_terminal(binary_trainer, blobs, capsys):
    x, y = blobs
    state = binary_trainer.init(jax.random.key(0), x[:1])
    binary_trainer.fit(state, x, y, epochs=2, batch_size=16)
    out = capsys.readouterr().out
    assert out.count("Epoch ") == 2 and "\x1b[" not in out


def test_profile_window_writes_a_trace(binary_trainer, blobs, tmp_path):
    x, y = blobs
    start, end = profiling.parse_steps("7:14")
    prof = profiling.Profiler(tmp_path / "profile", start, end)
    state = binary_trainer.init(jax.random.key(0), x[:1])
    binary_trainer.fit(state, x, y, epochs=3, batch_size=16, callbacks=[prof], verbose=0)
    assert prof.traced == (7, 14)
    traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 0
    with pytest.raises(ValueError, match="argument 'profile.steps'"):
        profiling.parse_steps("20:10")


class _CastToHalf(jdl.Callback):
    def on_epoch_end(self, epoch, logs, state):
        if epoch == 0:
            return state.replace(params=jax.tree.map(lambda p: p.astype(jnp.bfloat16),
                                                     state.params))
        return state


def test_recompile_watchdog_names_the_changed_argument(blobs, caplog):
    x, y = blobs
    trainer = jdl.Trainer(jdl.models.MLP(features=(8, 1)), loss="binary_crossentropy",
                          optimizer="sgd")
    state = trainer.init(jax.random.key(0), x[:1])
    with caplog.at_level(logging.WARNING, logger="jaxdl"):
        trainer.fit(state, x, y, epochs=2, batch_size=16, verbose=0, callbacks=[_CastToHalf()])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "['state'].params['dense_0']['kernel']" in warnings[0]
    assert "float32" in warnings[0] and "bfloat16" in warnings[0]


def test_summary_command_prints_the_parameter_table(capsys):
    assert cli.main(["summary", "--config.model.features", "(16, 1)"]) == 0
    out = capsys.readouterr().out
    assert "['dense_0']['kernel']  (30, 16)" in out and "total: 513 parameters" in out


def test_peak_flops_table_and_override():
    class Device:
        device_kind = "NVIDIA H100 80GB HBM3"

    assert perf.peak_flops(Device()) == 989e12
    assert perf.peak_flops(jax.devices()[0]) is None  # a CPU: unknown unless given
    assert perf.peak_flops(override=1e12) == 1e12
    record = perf.report({"steps_per_s": 100.0}, 2e9, 1e12)
    assert record["mfu"] == pytest.approx(0.2)


def test_plot_command(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"step": 4 * e, "epoch": e, "split": s, "loss": 1.0 / e + (0.1 if s == "val" else 0)}
             for e in (1, 2, 3) for s in ("train", "val")]
    (run / "metrics.jsonl").write_text("".join(f"{json.dumps(r)}\n"
                                               for r in lines))
    out = tmp_path / "curves.png"
    assert cli.main(["plot", str(run), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["plot", str(empty)]) == 2
    assert "argument 'WORKDIR'" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert cli.main(["evaluate", "--workdir", str(tmp_path / "missing")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert cli.main(["evaluate", "--workdir", str(tmp_path / "missing"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("jaxdl: error:")
