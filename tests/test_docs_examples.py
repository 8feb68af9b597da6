"""Every code block of README.md and docs/*.md runs as written (issue 16).

Each page runs once, in a fresh subprocess (tests/docs_runner.py) and a fresh temporary
folder that links the checkout's ``experiments/`` and ``benchmarks/`` (the pages are
written for a checkout's root); every block is then one test here, so a failure names the
page and line and a skipped block shows its reason. What the runner changes, visibly:

- ``jaxdl train`` commands train 3 epochs (``docs_runner.with_small_epochs``);
- the environment is a new user's: the 8 fake devices of conftest.py are taken out of
  ``XLA_FLAGS`` (a page that needs them must set them), and ``.venv/bin`` is on ``PATH``;
- compiled programs are reused across runs through JAX's persistent cache, in the folder
  conftest.py uses (``JAX_COMPILATION_CACHE_DIR``; the ``jaxdl`` command keeps a folder
  chosen that way);
- a block marked ``same-as="docs/x.md"`` (the README's copies of other pages' commands)
  is not run twice: each of its statements must be in a run block of that page.

Markers and output checks: tests/docs_runner.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import docs_runner
import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINKED = ("experiments", "benchmarks")
PAGE_TIMEOUT_S = 600
# Pages run two at a time: most of a page's time is one process importing, compiling or
# waiting for a subprocess, so a second one uses the other core.
PARALLEL_PAGES = 2
_reports: dict[Path, Future] = {}


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["MPLBACKEND"] = "Agg"
    env["PYTHONUNBUFFERED"] = "1"  # stdout and stderr in the order a terminal shows them
    env.pop("JAXDL_CACHE_DIR", None)
    return env


def _run_page(page: Path, folder: Path) -> dict[int, dict]:
    for name in LINKED:
        (folder / name).symlink_to(ROOT / name)
    report = folder / "report.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "docs_runner.py"), str(page), str(report)],
        cwd=folder, env=_environment(), capture_output=True, text=True, timeout=PAGE_TIMEOUT_S)
    assert done.returncode == 0, f"the runner itself failed on {page.name}:\n{done.stderr}"
    return {entry["line"]: entry for entry in json.loads(report.read_text())}


def _runnable_size(page: Path) -> int:
    """About how long a page takes: each shell command starts a process (a few seconds
    of imports and compile-cache loads), each python block about as much."""
    blocks = [b for b in docs_runner.parse_blocks(page.read_text())
              if b.kind in ("python", "shell") and not {"skip", "same-as"} & set(b.options)]
    return sum(len(docs_runner.statements(b.code)) if b.kind == "shell" else 1
               for b in blocks)


def _page_report(page: Path, request: pytest.FixtureRequest) -> dict[int, dict]:
    """The report of ``page``; the first call starts every selected page's run."""
    if not _reports:
        selected = {item.callspec.params["page"] for item in request.session.items
                    if getattr(item, "originalname", "") == "test_block_runs_as_written"}
        pool = ThreadPoolExecutor(max_workers=PARALLEL_PAGES)
        factory = request.getfixturevalue("tmp_path_factory")
        for each in sorted(selected, key=_runnable_size, reverse=True):  # long pages first
            _reports[each] = pool.submit(_run_page, each, factory.mktemp(each.stem))
        pool.shutdown(wait=False)
    return _reports[page].result()


def _cases() -> list:
    cases = []
    for page in PAGES:
        for block in docs_runner.parse_blocks(page.read_text()):
            if block.kind not in ("output", "signatures"):
                cases.append(pytest.param(page, block.line,
                                          id=f"{page.relative_to(ROOT)}:{block.line}"))
    return cases


@pytest.mark.parametrize(("page", "line"), _cases())
def test_block_runs_as_written(page: Path, line: int, request: pytest.FixtureRequest) -> None:
    report = _page_report(page, request)
    assert line in report, f"{page.name} changed while its blocks ran; run the tests again"
    entry = report[line]
    if entry["status"] == "skipped":
        pytest.skip(f"{page.name}:{line}: {entry['reason'] or 'marked skip without a reason'}")
    if entry["status"] == "same-as":  # run there; here only checked to say the same
        missing = docs_runner.missing_from(entry["code"], (ROOT / entry["page"]).read_text())
        assert not missing, f"{page.name}:{line}: not in a run block of {entry['page']}: {missing}"
        return
    assert entry["status"] == "ok", (
        f"{page.name}:{line} ({entry['lang']}): {entry.get('error')}\n"
        f"{'ran: ' + entry['ran'] if 'ran' in entry else ''}\n{entry.get('output', '')}")


def test_every_skip_says_why() -> None:
    missing = [f"{page.name}:{block.line}" for page in PAGES
               for block in docs_runner.parse_blocks(page.read_text())
               if "skip" in block.options and not block.options.get("reason")]
    assert not missing, f"skipped blocks without reason=: {missing}"


# The runner's own rules, so that a page cannot pass by a runner that checks nothing.

PAGE = """Intro.

<!-- docs-test: skip reason="needs 2 hosts" -->
```bash
jaxdl train --coordinator h:1
```

```python
print(1 + 1)
```

```text
2
```

Prose.

```text
an illustration, not output
```

```
bare
```
"""


def test_parse_blocks_reads_markers_outputs_and_bare_fences() -> None:
    blocks = docs_runner.parse_blocks(PAGE)
    assert [b.kind for b in blocks] == ["shell", "python", "output", "output", "other"]
    assert blocks[0].options == {"skip": "", "reason": "needs 2 hosts"}
    assert blocks[1].expected is blocks[2]
    assert blocks[1].options == {}


def test_run_page_reports_each_block(tmp_path, monkeypatch) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE.replace("2\n```\n\nProse", "3\n```\n\nProse"))
    monkeypatch.chdir(tmp_path)
    statuses = [(e["kind"], e["status"]) for e in docs_runner.run_page(page)]
    assert statuses == [("shell", "skipped"), ("python", "failed"), ("output", "not run"),
                        ("output", "not run"), ("other", "failed")]


def test_same_as_needs_every_statement_in_a_run_block() -> None:
    other = "```bash\njaxdl train --workdir a \\\n    --config.seed=1   # comment\n```\n"
    assert docs_runner.missing_from("jaxdl train --workdir a --config.seed=1\n", other) == []
    assert docs_runner.missing_from("# only a comment\njaxdl plot a\n", other) == ["jaxdl plot a"]
    skipped = "<!-- docs-test: skip reason=x -->\n" + other
    assert docs_runner.missing_from("jaxdl train --workdir a --config.seed=1", skipped) != []


def test_small_epochs_rewrites_or_adds_the_option() -> None:
    assert (docs_runner.with_small_epochs("jaxdl train --config x.py --config.epochs=20")
            == "jaxdl train --config x.py --config.epochs=3")
    assert (docs_runner.with_small_epochs("jaxdl train --workdir a && jaxdl predict")
            == "jaxdl train --config.epochs=3 --workdir a && jaxdl predict")


@pytest.mark.parametrize(("expected", "actual", "numbers", "ok"), [
    ("loss 0.081 · acc 0.98", "Epoch 1 loss 0.0812 · acc 0.9811 · 1.2s", True, True),
    ("loss 0.081", "loss 0.0822", True, False),
    ("loss 0.081", "loss 0.0822", False, True),
    ("a\n...\nc", "a\nb\nc", True, True),
    ("c\na", "a\nb\nc", True, False),  # out of order
    ("total: 1,082,369 parameters", "total: 1,082,369 parameters, 4.1 MiB", True, True),
    ("lr 1.45e-3", "lr 1.4512e-3", True, True),
    ("got ..., expected 3", "got 'x', expected 3", True, True),
])
def test_output_check(expected: str, actual: str, numbers: bool, ok: bool) -> None:
    assert (docs_runner.output_problems(expected, actual, numbers) == []) is ok
