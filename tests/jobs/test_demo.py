"""``pretune demo``: its generated task, the data choice, and the whole demo on the tiny BERT."""

from __future__ import annotations

import json

import pytest

from pretune.cli import main
from pretune.jobs.demo import NEGATIVE, POSITIVE, demo_data, generated_rows


def test_generated_task_is_seeded_balanced_and_follows_its_rule():
    rows = generated_rows(1000, seed=3)
    assert rows == generated_rows(1000, seed=3) and rows != generated_rows(1000, seed=4)
    labels = [y for _, y in rows]
    assert 0.4 < sum(labels) / len(labels) < 0.6

    def rule(text: str) -> int:
        positive = any(f" {w}" in text for w in POSITIVE)
        return int(positive != (" is not " in text))

    agree = sum(rule(t) == y for t, y in rows) / len(rows)
    assert 0.9 < agree < 1.0  # the rule holds except for the ~5% noise
    assert all(any(w in t for w in POSITIVE + NEGATIVE) for t, _ in rows)


def test_offline_demo_uses_the_generated_task_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    train, dev, source = demo_data(tmp_path)
    assert source.startswith("a generated sentiment task") and "offline" in source
    assert open(train).readline().strip() == "sentence,label" and sum(1 for _ in open(dev)) == 201
    assert demo_data(tmp_path, "mine.csv", "dev.csv")[2] == "your files (mine.csv, dev.csv)"


@pytest.mark.slow
def test_demo_runs_the_whole_job(tiny_bert, tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--model", str(tiny_bert), "--output", str(out), "--budget", "20m", "--threads", "1",
            "data.max_length=32", "search.n_trials=2", "compress.methods=int8-dynamic-torch",
            "compress.threads=1", "compress.bench_runs=10", "compress.isolate=false"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["data"].startswith("a generated sentiment task")
    html = open(summary["report"]["html"]).read()
    assert "demo data: a generated sentiment task" in html and 'data-chart="pareto"' in html
    assert json.loads((out / "run.json").read_text())["stages"]["search"]["counts"]["complete"] == 2
