"""Every example in the concepts guide (``docs/concepts.md`` and ``docs/concepts/*.md``) runs and prints what the
guide shows.

The convention, stated at the top of ``docs/concepts.md`` too:

- A fenced ```` ```python ```` block directly followed (blank lines aside) by a ```` ```text ```` block is an
  example: the Python runs and its standard output must match the text block.
- A ```` ```console ```` block is an example too: each line starting with ``$ `` is a shell command (``pretune``
  runs this checkout's ``python -m pretune``), and the lines up to the next command are what it prints, standard
  output and standard error together.
- Other fenced blocks (``bash``, ``yaml``, a ``python`` block with no ``text`` block after it) are not run.

Output is compared line by line. Text must match exactly (trailing spaces aside); a number matches within one unit
of its last printed digit (0.8125 accepts 0.8124 to 0.8126; an integer must be equal), so a rounding that falls
the other way on another machine does not fail the test, and any real change does.

Each example runs in a fresh namespace, in its own temporary folder. ``python tests/test_concepts.py --write``
runs them all and writes what they print into the guide: read the diff before committing it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "docs" / "concepts.md", *sorted((ROOT / "docs" / "concepts").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
# 22,713,986 | 0.8125 | -3.5e-07 | 16.28 ; an integer's commas group thousands, so "[1, 2]" reads as two numbers
NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")


@dataclass
class Example:
    page: Path
    line: int  # of the opening fence, 1-based
    kind: str  # python | console
    code: str
    expected: str
    span: tuple[int, int]  # characters of the output to rewrite: the text block's body, or the console block's

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT / 'docs').as_posix()}:{self.line}"


def examples(page: Path) -> list[Example]:
    """The examples of one page, in order."""
    text = page.read_text(encoding="utf-8")
    blocks = list(FENCE.finditer(text))
    out = []
    for i, m in enumerate(blocks):
        line = text.count("\n", 0, m.start()) + 1
        if m.group(1) == "console":
            out.append(Example(page, line, "console", m.group(2), "", m.span(2)))
        elif m.group(1) == "python" and i + 1 < len(blocks):
            nxt = blocks[i + 1]
            if nxt.group(1) == "text" and not text[m.end():nxt.start()].strip():
                out.append(Example(page, line, "python", m.group(2), nxt.group(2), nxt.span(2)))
    return out


ALL = [e for page in PAGES for e in examples(page)]


# ----------------------------------------------------------------------------- running


def run_python(code: str, where: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, where, "exec"), {"__name__": "__main__"})
    return out.getvalue()


def _shim(folder: Path) -> dict[str, str]:
    """An environment whose ``pretune`` is this checkout's ``python -m pretune``."""
    bin_dir = folder / ".bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "pretune"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m pretune "$@"\n')
    script.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


def console_commands(block: str) -> list[tuple[str, list[str]]]:
    """(command, expected lines) for each ``$ `` line of a console block."""
    out: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


def run_console(block: str, folder: Path) -> str:
    """The block with each command's output in place of the guide's."""
    env = _shim(folder)
    lines = []
    for command, _ in console_commands(block):
        done = subprocess.run(["bash", "-c", command], cwd=folder, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=120)
        lines += [f"$ {command}", *done.stdout.splitlines()]
    return "\n".join(lines) + "\n"


def run(example: Example, folder: Path) -> str:
    """What the example prints (for a console block: the whole block, commands included)."""
    old = Path.cwd()
    os.chdir(folder)
    try:
        if example.kind == "console":
            return run_console(example.code, folder)
        return run_python(example.code, f"{example.page.name}:{example.line}")
    finally:
        os.chdir(old)


# ----------------------------------------------------------------------------- comparing


def _tolerance(token: str) -> float:
    mantissa, _, exponent = token.replace(",", "").lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (-decimals) * 10.0 ** int(exponent or 0) if decimals else 0.0


def same_line(expected: str, got: str) -> bool:
    """Equal text, numbers within a unit of the expected number's last digit."""
    want, have = NUMBER.split(expected.rstrip()), NUMBER.split(got.rstrip())
    want_n, have_n = NUMBER.findall(expected), NUMBER.findall(got)
    if want != have or len(want_n) != len(have_n):
        return False
    for a, b in zip(want_n, have_n):
        x, y = float(a.replace(",", "")), float(b.replace(",", ""))
        if abs(x - y) > _tolerance(a) * (1 + 1e-9):
            return False
    return True


def mismatch(expected: str, got: str) -> str | None:
    """None when ``got`` matches ``expected``, else a message showing both."""
    a, b = expected.rstrip("\n").splitlines(), got.rstrip("\n").splitlines()
    if len(a) == len(b) and all(same_line(x, y) for x, y in zip(a, b)):
        return None
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if not same_line(x, y)), min(len(a), len(b)))
    return (f"output differs from the guide at line {first + 1} of the block\n--- guide\n" + "\n".join(a)
            + "\n--- printed\n" + "\n".join(b))


def test_the_comparison_tolerates_the_last_digit_and_nothing_more():
    assert same_line("accuracy 0.8125 after 22,713,986", "accuracy 0.8126 after 22,713,986")
    assert not same_line("accuracy 0.8125", "accuracy 0.8128")
    assert not same_line("22,713,986 parameters", "22,713,987 parameters")
    assert not same_line("lr 1.0e-04", "lr 1.2e-04")
    assert same_line("[1, 2]", "[1, 2]") and not same_line("[1, 2]", "[1, 3]")
    assert not same_line("p50 ms", "p95 ms")


def test_every_concept_page_has_a_runnable_example():
    assert len(PAGES) > 1
    assert set(PAGES[1:]) <= {e.page for e in ALL}, "a page of docs/concepts/ without a runnable example"


@pytest.mark.parametrize("example", ALL, ids=[e.id for e in ALL])
def test_example_prints_what_the_guide_shows(example: Example, tmp_path):
    got = run(example, tmp_path)
    want = example.code if example.kind == "console" else example.expected
    problem = mismatch(want, got)
    assert problem is None, f"{example.id}: {problem}"


# ----------------------------------------------------------------------------- --write


def write_outputs() -> None:
    """Run every example and write what it prints into the guide."""
    import tempfile

    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for example in reversed(examples(page)):  # from the end, so earlier spans stay valid
            with tempfile.TemporaryDirectory() as tmp:
                got = run(example, Path(tmp))
            a, b = example.span
            text = text[:a] + got + text[b:]
            want = example.code if example.kind == "console" else example.expected
            print(f"{example.id}: {'same' if mismatch(want, got) is None else 'CHANGED'}")
        page.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_concepts.py --write")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(ROOT))
    write_outputs()
