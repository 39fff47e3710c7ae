"""One contract suite over every registered task: fit, eval and predict on a tiny model, through the CLI.

A new task registers itself and adds a data maker to ``DATA`` below; the suite then checks that it trains
(the loss falls), that its saved model says which task it is, that eval reports its default metric, and that
predict writes one row per input row.
"""

from __future__ import annotations

import json
import random

import pytest
from conftest import make_rows, write_csv

from pretune import tasks
from pretune.cli import main


def _classification(folder, n, seed):
    return write_csv(folder / f"cls-{seed}.csv", make_rows(n, seed=seed, classes=3))


def _regression(folder, n, seed):
    # The score counts the positive words: a signal a tiny model can learn.
    rows = []
    for text, label in make_rows(n, seed=seed):
        rows.append((text, round({"pos": 0.8, "neg": 0.2}[label] + random.Random(text).uniform(-0.05, 0.05), 3)))
    return write_csv(folder / f"reg-{seed}.csv", rows)


def _token_classification(folder, n, seed):
    from tagging import write_jsonl

    return write_jsonl(folder / f"tok-{seed}.jsonl", n, seed)


def _causal_lm(folder, n, seed):
    from sft import alpaca_rows, write_jsonl

    return write_jsonl(folder / f"sft-{seed}.jsonl", alpaca_rows(n, seed))


def _dpo(folder, n, seed):
    from dpo import pair_rows
    from sft import write_jsonl

    return write_jsonl(folder / f"dpo-{seed}.jsonl", pair_rows(n, seed))


DATA = {"classification": _classification, "regression": _regression,
        "token_classification": _token_classification, "causal_lm": _causal_lm, "dpo": _dpo}
DECODER_TASKS = {"causal_lm", "dpo"}  # tuned from a tiny Llama with its LM head; the others from the tiny BERT


def test_every_registered_task_has_contract_data():
    assert set(tasks.names()) == set(DATA), "a new task needs a data maker in DATA"


@pytest.mark.parametrize("name", sorted(DATA))
def test_task_contract_fit_eval_predict(name, tiny_bert, family_dir, tmp_path, capsys):
    from sft import make_causal_lm

    task = tasks.get(name)
    train, dev = DATA[name](tmp_path, 160, seed=1), DATA[name](tmp_path, 40, seed=2)
    out = tmp_path / "run"
    model = make_causal_lm(family_dir("llama"), tmp_path / "lm") if name in DECODER_TASKS else tiny_bert
    assert main(["fit", "--model", str(model), "--train", str(train), "--eval", str(dev), "--task", name,
                 "--output", str(out), "--epochs", "3", "--lr", "5e-3", "--batch-size", "16", "--seed", "0",
                 "--threads", "1", "data.max_length=32", "train.progress=false", "train.log_every=1"]) == 0
    fitted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert task.default_metric in fitted["eval"] and "loss" in fitted["eval"]
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if r["type"] == "train"]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, "training did not lower the loss"
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["pretune_task"] == name

    assert main(["eval", str(out / "model"), "--data", str(dev), "--threads", "1", "--max-length", "32"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["rows"] == 40
    assert evaluated[task.default_metric] == pytest.approx(fitted["eval"][task.default_metric], abs=1e-5)

    predictions = tmp_path / "predictions.jsonl"
    assert main(["predict", str(out / "model"), "--input", str(dev), "--output", str(predictions),
                 "--threads", "1", "--max-length", "32"]) == 0
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(rows) == 40 and all(isinstance(r, dict) and r for r in rows)
    assert rows == json.loads(json.dumps(task.rows(*_outputs_of(out / "model", dev))))


def _outputs_of(folder, data):
    """The task's ``rows`` arguments for the model's outputs on ``data``, computed here, so that predict's rows can
    be checked against the task: (outputs, encoded rows, spec, examples)."""
    from pretune.config import DataConfig
    from pretune.models import load_finetuned
    from pretune.models.fastpath import first_token_only
    from pretune.runtime import resolve
    from pretune.train import predict_outputs

    model, tok, spec = load_finetuned(folder)
    examples, enc = tasks.read_unlabelled(str(data), DataConfig(max_length=32), spec, tok)
    with first_token_only(model):  # as predict runs it, at its default device and precision
        return predict_outputs(model, enc, spec, 64, tok.pad_token_id, resolve("auto", "auto")), enc, spec, examples
