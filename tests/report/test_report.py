"""``pretune report`` on synthetic saved results: content, self-containment, partial folders, errors."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from pretune.cli import main
from pretune.errors import PretuneError
from pretune.report import report
from pretune.report.collect import collect
from pretune.report.svg import nice_ticks



def test_html_is_self_contained_and_has_every_chart(saved_run):
    paths = report(saved_run)
    html = paths["html"].read_text()
    charts = re.findall(r'data-chart="([\w-]+)"', html)
    assert charts == ["search-history", "search-by-samples", "importances", "learning-curves", "training-loss",
                      "pareto"]
    # nothing is fetched at view time: no scripts, no external links or images
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<link" not in html and "<img" not in html
    for svg in re.findall(r"<svg.*?</svg>", html, flags=re.S):
        ET.fromstring(svg)  # each chart is well-formed XML


def test_report_shows_the_saved_numbers(saved_run):
    html = report(saved_run)["html"].read_text()
    assert "int8-dynamic-ort" in html and "prune-magnitude" in html
    assert "distill needs training rows" in html  # a failed variant keeps its reason
    assert "lora.r: too big &lt;b&gt;" in html  # user text is escaped
    assert "7.0 min, about 10 unpruned trials of 40 s each" in html  # the plan from run.json
    assert "2.13.0" in html  # environment from a trial's results.json
    # where each trial came from: the table's column and the marks on the history chart
    assert "<td>portfolio:c07</td>" in html and "<td>default</td>" in html
    assert "from portfolio:c07): accuracy" in html and 'class="label">D</text>' in html


def test_a_best_trial_at_chance_level_is_flagged(saved_run):
    assert "<td>warning</td>" not in report(saved_run)["html"].read_text()
    path = saved_run / "search" / "results.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "warning": "the model is at chance level: MCC 0.000"}))
    assert "<td>warning</td><td>the model is at chance level: MCC 0.000</td>" in report(saved_run)["html"].read_text()


def test_best_so_far_against_samples_counts_every_trials_samples(saved_run):
    from pretune.report.render import best_by_samples_chart

    facts = collect(saved_run)
    chart = best_by_samples_chart(facts["search"])
    assert 'data-chart="search-by-samples"' in chart and "training samples (all trials)" in chart
    facts["search"]["trials"] = facts["search"]["trials"][:1]
    assert best_by_samples_chart(facts["search"]) is None  # one point is no curve


def test_pareto_markers_scale_with_size_and_front_is_marked(saved_run):
    html = report(saved_run)["html"].read_text()
    pareto = re.search(r'<svg[^>]*data-chart="pareto".*?</svg>', html, flags=re.S).group(0)
    radii = {m.group(2): float(m.group(1)) for m in
             re.finditer(r'r="([\d.]+)" fill="#[0-9a-f]+" class="point"><title>([\w-]+):', pareto)}
    # sizes: source 2.0 MiB, prune 1.0, int8 0.5 -> strictly decreasing marker radius
    assert radii["source"] > radii["prune-magnitude"] > radii["int8-dynamic-ort"]
    assert pareto.count('fill="#2ca02c" class="point"') == 2  # source and int8 on the front


def test_learning_curves_are_the_best_trials_in_order(saved_run):
    facts = collect(saved_run)
    assert [c["trial"] for c in facts["search"]["curves"]] == [4, 1, 0]
    # train loss is put on the samples axis: 64 samples / 4 steps = 16 per step
    assert facts["search"]["curves"][0]["loss"][0] == (16.0, 1.0)


def test_markdown_summary_has_the_tables(saved_run):
    md = report(saved_run)["markdown"].read_text()
    assert md.startswith("# pretune report: run")
    for heading in ("## What was asked", "## Search", "## Variants and the Pareto front", "## Environment"):
        assert heading in md
    table = [ln for ln in md.splitlines() if ln.startswith("| int8-dynamic-ort |")]
    assert len(table) == 1 and "| accepted | 0.79 |" in table[0]


def test_search_folder_alone_is_reported_without_variants(tmp_path, run_writer):
    root = run_writer(tmp_path / "r", with_compress=False)
    html = report(root / "search", output=tmp_path / "out")["html"].read_text()
    assert 'data-chart="search-history"' in html and 'data-chart="pareto"' not in html


def test_compress_folder_alone_is_reported(saved_run, tmp_path):
    html = report(saved_run / "compress", output=tmp_path / "o")["html"].read_text()
    assert 'data-chart="pareto"' in html and 'data-chart="search-history"' not in html


def test_empty_folder_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(PretuneError, match="no search"):
        report(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_cli_writes_both_files(saved_run, capsys):
    assert main(["report", str(saved_run), "--title", "SST-2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["html"].endswith("report.html") and "<h1>SST-2</h1>" in open(out["html"]).read()


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.61, 0.83)[0] >= 0.61 and nice_ticks(0.61, 0.83)[-1] <= 0.83


def test_api_function_survives_importing_the_stage_modules(saved_run):
    import pretune
    import pretune.jobs.estimate  # noqa: F401  (job modules share names with the API functions)
    import pretune.jobs.run  # noqa: F401
    import pretune.report.collect  # noqa: F401  (a submodule of the callable report package)

    assert callable(pretune.run) and callable(pretune.estimate)
    assert pretune.report(saved_run)["html"].is_file()
