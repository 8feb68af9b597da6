"""Run the fenced code blocks of a Markdown page as a new user would (issue 16).

``python tests/docs_runner.py PAGE.md REPORT.json`` runs, in the current folder:

- every ```python block in order, in one namespace (a page is a tutorial);
- every ```bash / ```sh / ```shell block with ``bash -e -c``, after
  :func:`with_small_epochs` rewrote its ``jaxdl train`` commands to a few epochs; what a
  block exports stays set for the page's later shell blocks, as in one terminal;
- a ```text block right after a run block (only blank lines or markers between) is that
  block's expected output and is checked with :func:`output_problems`; other ```text
  blocks are illustrations and are not run.

A marker comment on the line before a fence sets options for that block:
``<!-- docs-test: skip reason="needs 2 hosts" -->`` (not run, reported as skipped),
``<!-- docs-test: exit=2 -->`` (the exit status a shell block must end with),
``<!-- docs-test: numbers=any -->`` (on a text block: numbers are not compared),
``<!-- docs-test: signatures -->`` (API signatures, checked by tests/test_docs_api.py),
``<!-- docs-test: same-as="docs/cli.md" -->`` (not run again: every command or
statement of the block must appear in a run block of that page, see :func:`missing_from`).
A fence without a language is an error: say whether it is code or output.

The report lists each block with its status (ok, failed, skipped) and what went wrong.
Nothing here is pytest; tests/test_docs_examples.py runs one page per subprocess.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

RUN_LANGS = {"python": "python", "bash": "shell", "sh": "shell", "shell": "shell"}
OUTPUT_LANGS = {"text"}
MARKER = re.compile(r"^\s*<!--\s*docs-test:(.*?)-->\s*$")
FENCE = re.compile(r"^(\s*)(```+)\s*([\w+-]*)\s*$")
# Few epochs per `jaxdl train`: the pages show real runs; the test only needs them to work.
# 3, not 1: experiments/digits_cnn.py warms up for 50 steps, more than one epoch has (E075).
SMALL_EPOCHS = 3
BLOCK_TIMEOUT_S = 240


@dataclasses.dataclass
class Block:
    """One fenced block of a page: where it is, its language, code and marker options."""

    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    options: dict[str, str]
    expected: Block | None = None  # the text block that shows this block's output

    @property
    def kind(self) -> str:
        if "signatures" in self.options:
            return "signatures"
        return RUN_LANGS.get(self.lang, "output" if self.lang in OUTPUT_LANGS else "other")


def parse_options(text: str) -> dict[str, str]:
    """``skip reason="x y" exit=2`` -> {"skip": "", "reason": "x y", "exit": "2"}."""
    options = {}
    for word in shlex.split(text):
        key, _, value = word.partition("=")
        options[key] = value
    return options


def parse_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, each with the marker before it and its output."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    pending: dict[str, str] = {}
    after_run = False  # only blank lines and markers since a run block closed
    while i < len(lines):
        marker, fence = MARKER.match(lines[i]), FENCE.match(lines[i])
        if marker:
            pending = parse_options(marker.group(1))
        elif fence:
            indent, ticks, lang = fence.groups()
            end = next((j for j in range(i + 1, len(lines))
                        if lines[j].strip() == ticks), None)
            if end is None:
                raise ValueError(f"line {i + 1}: a fence that is never closed")
            body = "\n".join(ln[len(indent):] if ln.startswith(indent) else ln
                             for ln in lines[i + 1:end])
            block = Block(i + 1, lang, body + "\n", pending)
            if block.kind == "output" and after_run and blocks:
                blocks[-1].expected = block
            blocks.append(block)
            after_run, pending, i = block.kind in ("python", "shell"), {}, end
        elif lines[i].strip():
            after_run, pending = False, {}
        i += 1
    return blocks


def with_small_epochs(code: str, epochs: int = SMALL_EPOCHS) -> str:
    """Every ``jaxdl train`` command trains ``epochs`` epochs: an explicit
    ``--config.epochs=N`` is rewritten, otherwise ``--config.epochs=<epochs>`` is added."""
    code = re.sub(r"--config\.epochs[= ]\d+", f"--config.epochs={epochs}", code)
    return re.sub(r"\bjaxdl train\b(?![^\n]*--config\.epochs)",
                  f"jaxdl train --config.epochs={epochs}", code)


_NUMBER = r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?"


def _tolerance(written: str) -> float:
    """Half a unit of the last digit written: 0.081 -> 0.0005, 1.45e-3 -> 5e-6, 12 -> 0.5."""
    mantissa, _, exponent = written.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


def _line_pattern(expected: str) -> tuple[re.Pattern, list[str]]:
    """A regex for one expected line and the numbers written in it: "..." is any text, a
    run of spaces any spaces, each number a group (compared by value by the caller)."""
    pieces, written = [], []
    for token in re.split(rf"(\.\.\.|…|\s+|{_NUMBER})", expected.strip()):
        if not token:
            continue
        if token in ("...", "…"):
            pieces.append(".*?")
        elif token.isspace():
            pieces.append(r"\s+")
        elif re.fullmatch(_NUMBER, token):
            pieces.append(f"({_NUMBER})")
            written.append(token)
        else:
            pieces.append(re.escape(token))
    return re.compile("".join(pieces)), written


def _numbers_match(written: list[str], found: tuple[str, ...]) -> bool:
    for page, actual in zip(written, found, strict=True):
        a, b = float(page.replace(",", "")), float(actual.replace(",", ""))
        if abs(a - b) > _tolerance(page.replace(",", "")) * (1 + 1e-9):
            return False
    return True


def output_problems(expected: str, actual: str, numbers: bool = True) -> list[str]:
    """What of ``expected`` is missing from ``actual``: each line of the page's output (a
    line "..." skips) must appear, in order, within a line of the real output; numbers
    must round to the page's digits unless ``numbers`` is False."""
    got = actual.splitlines()
    at = 0
    for line in expected.splitlines():
        if not line.strip() or line.strip() in ("...", "…"):
            continue
        pattern, written = _line_pattern(line)
        for k in range(at, len(got)):
            match = pattern.search(got[k])
            if match and (not numbers or _numbers_match(written, match.groups())):
                at = k + 1
                break
        else:
            return [f"the page shows {line.strip()!r}; not in the output (from line {at + 1})"]
    return []


def statements(code: str) -> list[str]:
    """The lines of a block that do something: comments and blank lines dropped, shell
    line continuations joined, runs of spaces made one."""
    code = code.replace("\\\n", " ")
    lines = (re.sub(r"\s+#.*$|^\s*#.*$", "", line) for line in code.splitlines())
    return [" ".join(line.split()) for line in lines if line.strip()]


def missing_from(code: str, page_text: str) -> list[str]:
    """The statements of ``code`` that no python or shell block of ``page_text`` has."""
    present = {s for block in parse_blocks(page_text) if block.kind in ("python", "shell")
               and "skip" not in block.options for s in statements(block.code)}
    return [s for s in statements(code) if s not in present]


def _run_python(code: str, namespace: dict, name: str) -> tuple[bool, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            exec(compile(code, name, "exec"), namespace)  # noqa: S102 - the page's own code
            ok = True
        except (Exception, SystemExit):  # a block that calls sys.exit() fails too
            traceback.print_exc()
            ok = False
    return ok, out.getvalue()


SHELL_STATE = Path(".docs-shell-exports")


def _run_shell(code: str, expect_exit: int) -> tuple[bool, str]:
    # The exports of earlier blocks first, and this block's kept for the next ones.
    state = SHELL_STATE.resolve()
    script = f"[ -f {state} ] && source {state}\n{code}\nexport -p > {state}\n"
    # stderr into stdout: the page shows them interleaved, as a terminal does
    done = subprocess.run(["bash", "-e", "-c", script], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=BLOCK_TIMEOUT_S,
                          stdin=subprocess.DEVNULL)
    output = done.stdout
    if done.returncode != expect_exit:
        return False, output + f"\n[exit status {done.returncode}, expected {expect_exit}]"
    return True, output


def run_page(page: Path) -> list[dict]:
    """Run every block of ``page`` in the current folder; one report entry per block."""
    namespace: dict = {"__name__": "__main__"}
    report = []
    for block in parse_blocks(page.read_text()):
        entry = {"line": block.line, "lang": block.lang, "kind": block.kind}
        report.append(entry)
        if block.kind in ("output", "signatures"):
            entry["status"] = "not run"
            continue
        if block.kind == "other":
            entry.update(status="failed", error=f"a fence with language {block.lang!r}: "
                         "use python, bash or text")
            continue
        if "skip" in block.options:
            entry.update(status="skipped", reason=block.options.get("reason", ""))
            continue
        if "same-as" in block.options:
            entry.update(status="same-as", page=block.options["same-as"], code=block.code)
            continue
        start = time.perf_counter()
        if block.kind == "python":
            ok, output = _run_python(block.code, namespace, f"{page.name}:{block.line}")
        else:
            code = with_small_epochs(block.code)
            entry["ran"] = code
            ok, output = _run_shell(code, int(block.options.get("exit", "0")))
        entry.update(seconds=round(time.perf_counter() - start, 2), output=output[-4000:])
        problems = [] if ok else ["it failed"]
        if ok and block.expected is not None:
            numbers = block.expected.options.get("numbers") != "any"
            problems = output_problems(block.expected.code, output, numbers)
        entry.update(status="failed" if problems else "ok", error="; ".join(problems))
    return report


def main() -> None:
    page, report_path = Path(sys.argv[1]), Path(sys.argv[2])
    report_path.write_text(json.dumps(run_page(page), indent=1))


if __name__ == "__main__":
    main()
