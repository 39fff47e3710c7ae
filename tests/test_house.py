"""The house rules the layout relies on, checked on the code itself.

- ``pretune/cli/`` is the only code that parses argv or configures logging: importing every other module leaves
  the root logger and ``sys.argv`` alone, and none of them names ``argparse``, ``sys.argv``, ``basicConfig`` or a
  library's verbosity setter.
- No module outside ``cli/`` imports ``pretune.cli`` (the hidden cycle cli -> search -> runner -> cli).
- Stages import only the stages before them: config -> data -> tasks -> models -> train -> jobs.fit -> search ->
  compress -> bench -> serve -> report, with the shared modules (errors, files, runtime, metrics) below them all.
- ``pretune report`` works where torch cannot be imported at all.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pretune"


def library_modules() -> list[str]:
    """Dotted names of every module outside ``pretune/cli``."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[1:2] == ["cli"] or parts[-1] == "__main__":
            continue
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the pretune modules ``path`` imports (relative imports resolved)."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    package = list(rel.parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n == "pretune" or n.startswith("pretune.")}


def test_importing_every_library_module_leaves_logging_and_argv_alone():
    code = """
import importlib, json, logging, sys
root = logging.getLogger()
before = (list(root.handlers), root.level, list(sys.argv))
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
after = (list(root.handlers), root.level, list(sys.argv))
print(json.dumps([repr(before), repr(after)]))
"""
    modules = library_modules()
    assert len(modules) > 40 and "pretune.jobs.fit" in modules and "pretune.cli" not in modules
    out = subprocess.run([sys.executable, "-c", code, json.dumps(modules)], capture_output=True, text=True,
                         timeout=300, check=True)
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == after


FORBIDDEN = ("argparse", "sys.argv", "basicConfig", "set_verbosity", "disable_progress_bar", "addHandler",
             "PRETUNE_QUIET")


@pytest.mark.parametrize("module", library_modules())
def test_no_library_module_parses_argv_or_sets_up_logging(module):
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    text = path.read_text()
    assert not [w for w in FORBIDDEN if w in text], f"{module} does the entry point's work"
    assert not [m for m in imported_modules(path) if m.startswith("pretune.cli")], f"{module} imports the CLI"


# Each stage may import the shared modules and the stages listed before it, never one after it.
SHARED = {"pretune", "pretune.errors", "pretune.files", "pretune.runtime", "pretune.metrics", "pretune._package",
          "pretune.config", "pretune.workers"}
ORDER = ["data", "tasks", "models", "train", "jobs.fit", "search", "compress", "bench", "serve", "report", "jobs"]
LATER_USES = {  # named exceptions, each a lazy import with its reason at the call site
    ("bench", "compress"),  # bench loads the variant formats compress writes (compress.formats)
    ("search", "bench"),  # a latency objective is measured with the bench harness
    ("compress", "bench"),  # every variant is measured with the bench harness
}


def _stage(module: str) -> str | None:
    rest = module.removeprefix("pretune.")
    for stage in sorted(ORDER, key=len, reverse=True):
        if rest == stage or rest.startswith(stage + "."):
            return stage
    return None


def test_stages_import_only_what_comes_before_them():
    wrong = []
    for module in library_modules():
        mine = _stage(module)
        if mine is None:
            continue
        path = PACKAGE.parent / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
        for other in imported_modules(path) - SHARED:
            theirs = _stage(other)
            if theirs and theirs != mine and ORDER.index(theirs) > ORDER.index(mine) \
                    and (mine, theirs) not in LATER_USES:
                wrong.append(f"{module} imports {other}")
    assert not wrong, wrong


def test_report_runs_where_torch_cannot_be_imported(tmp_path):
    """A report needs the saved JSON only: it must work on a machine without torch."""
    import pretune
    from pretune import files

    run = tmp_path / "run"
    (run / files.COMPRESS).mkdir(parents=True)
    bench = {"eval": {"metric": "accuracy", "metrics": {"accuracy": 0.9}, "rows": 10},
             "latency_ms": {"p50": 4.0, "p95": 5.0}, "throughput": {"samples_per_s": 100.0, "batch_size": 32},
             "size_mb": 80.0, "parameters": 22_000_000, "memory": {"peak_rss_mb": 500.0}}
    variant = {"name": "onnx", "status": "accepted", "bench": {**bench, "latency_ms": {"p50": 1.0, "p95": 1.5}},
               "points_lost": 0.0, "ratios": {"latency_p50_speedup": 4.0, "size_reduction": 1.0}, "pareto": True}
    files.write_json(run / files.COMPRESS / files.RESULTS,
                     {"metric": "accuracy", "source_bench": bench, "variants": [variant], "pareto_front": ["onnx"],
                      "tolerance_points": 1.0})
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers', 'optuna'):\n"
        "            raise ImportError(f'{name} is made unimportable for this test')\n"
        "sys.meta_path.insert(0, NoTorch())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(Path(pretune.__file__).parents[1])])}
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "unimportable" in check.stderr  # the blocker works
    out = subprocess.run([sys.executable, "-m", "pretune", "report", str(run)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (run / files.REPORT_HTML).is_file() and "onnx" in (run / files.REPORT_MD).read_text()
