"""End to end on the tiny BERT with the real ``fit``: the CLI, best/ loading with transformers, real failures."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from pretune.cli import main


@pytest.mark.slow
def test_cli_search_on_tiny_bert_writes_a_loadable_best_model(base_config, tmp_path, capsys, monkeypatch):
    import optuna

    monkeypatch.setenv("PRETUNE_QUIET_OPTUNA", "0")  # main() sets it; monkeypatch restores it afterwards
    optuna.logging.set_verbosity(optuna.logging.INFO)
    base_config["search"] = {"space": {
        "train.lr": [1e-3],
        "method.name": ["freeze", "lora"],
        "lora.r": {"choices": [2], "when": {"method.name": "lora"}},
        # No Linear layer of the tiny BERT is called "gate": that trial must fail alone, and the study go on.
        "lora.target_modules": {"choices": ["query", "gate"], "when": {"method.name": "lora"}},
        "method.train_top_layers": {"type": "int", "low": 1, "high": 2, "when": {"method.name": "freeze"}}},
        "sampler": "grid", "seed": 3, "pruner": "none"}  # grid points of every key, conditional ones included
    out = base_config.pop("output")
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(base_config))
    argv = ["search", "--config", str(path), "--n-trials", "4", "--output", out, "--study", "tiny"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = list(csv.DictReader(open(f"{out}/trials.csv")))
    assert len(rows) == 4 and summary["counts"]["done"] == 4
    # The CLI keeps Optuna's "[I ...] Trial 0 finished" lines off the console (its own progress line says it).
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING
    for row in rows:
        if row["state"] == "fail":
            assert row["params.lora.target_modules"] == "gate" and "match no Linear layer" in row["fail_reason"]
        else:
            assert row["state"] == "complete" and int(row["train_samples"]) > 0
    states = [r["state"] for r in rows]
    assert states.count("fail") == sum(r["params.lora.target_modules"] == "gate" for r in rows) >= 1, states
    assert {r["params.method.train_top_layers"] for r in rows if r["params.method.name"] == "freeze"} == {"1", "2"}
    best = max((r for r in rows if r["state"] == "complete"), key=lambda r: float(r["accuracy"]))
    assert summary["best_trial"] == int(best["number"])

    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(summary["best_dir"])
    assert model.config.num_labels == 2

    # The same command again resumes: the study is complete, nothing re-runs.
    assert main(argv + ["--n-trials", "4"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["counts"] == summary["counts"] and again["best_trial"] == summary["best_trial"]


def test_cli_bad_sampler_is_a_one_line_error(base_config, tmp_path, capsys):
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(base_config))
    assert main(["search", "--config", str(path), "--sampler", "anneal"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("pretune search: error: search.sampler: unknown sampler 'anneal'; choose one of tpe, random, "
                   "grid, cmaes, qmc, gp, nsga2, nsga3, bruteforce")


def test_cli_timeout_flag_is_parsed(base_config, tmp_path, capsys):
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(base_config))
    assert main(["search", "--config", str(path), "--timeout", "soon"]) == 2
    assert "--timeout: cannot read duration 'soon'" in capsys.readouterr().err


@pytest.mark.slow
def test_accuracy_and_measured_latency_objectives_give_a_pareto_set(base_config):
    from pretune.search import search

    base_config["search"] = {"space": {"method.name": ["full", "lora"], "lora.r": {"choices": [2], "when":
                             {"method.name": "lora"}}}, "sampler": "grid", "n_trials": 2,
                             "objectives": ["accuracy", "latency_ms"]}
    result = search(base_config)
    assert result.objectives == [("accuracy", "maximize"), ("latency_ms", "minimize")]
    done = [r for r in result.trials if r["state"] == "complete"]
    assert len(done) == 2 and all(r["latency_ms"] > 0 for r in done)
    assert result.pareto and {r["number"] for r in result.pareto} <= {r["number"] for r in done}
