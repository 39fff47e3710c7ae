"""Report stage (``pretune report``): a self-contained HTML page and a Markdown summary, from saved results only.

    from pretune.report import report         # or: import pretune; pretune.report(run_dir)
    paths = report("runs/sst2")                # {"html": .../report.html, "markdown": .../report.md}
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .. import files
from .._package import make_package_callable
from .collect import collect
from .render import to_html, to_markdown


def report(run_dir: str | Path, output: Optional[str | Path] = None, title: Optional[str] = None) -> dict[str, Path]:
    """Write ``report.html`` and ``report.md`` for a run, search or compress folder.

    Args:
        run_dir: a ``pretune run`` folder, or a ``pretune search`` / ``pretune compress`` output folder.
        output: folder for the two files (default: ``run_dir``).
        title: page title (default: "pretune report: <folder name>").

    Returns:
        ``{"html": path, "markdown": path}``.

    Raises:
        PretuneError: no such folder, or no saved results in it.
    """
    facts = collect(run_dir)
    out = Path(output) if output else Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or f"pretune report: {Path(run_dir).resolve().name}"
    paths = {"html": out / files.REPORT_HTML, "markdown": out / files.REPORT_MD}
    files.write_text(paths["html"], to_html(facts, title))
    files.write_text(paths["markdown"], to_markdown(facts, title, files.REPORT_HTML))
    return paths


make_package_callable(__name__, report)

__all__ = ["report", "collect"]
