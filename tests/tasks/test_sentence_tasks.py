"""The sentence-level tasks: how classification and regression read, check and encode their labels."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pretune import tasks
from pretune.config import DataConfig, config_from_dict
from pretune.data import read_examples, read_table
from pretune.errors import DataError
from pretune.jobs.fit import prepare
from pretune.tasks import load_task_data


def test_label_unseen_in_training_is_an_error(tmp_path, tiny_bert):
    (tmp_path / "train.csv").write_text("text,label\ngood,pos\nbad,neg\ngreat,pos\nawful,neg\n")
    (tmp_path / "eval.csv").write_text("text,label\ngood,pos\nfine,neutral\n")
    cfg = DataConfig(train=str(tmp_path / "train.csv"), eval=str(tmp_path / "eval.csv"))
    with pytest.raises(DataError, match=r"eval.csv, line 3, column 'label': label 'neutral' does not occur in the "
                                        r"training data \(known: neg, pos\)"):
        load_task_data(cfg, AutoTokenizer.from_pretrained(tiny_bert))


@pytest.mark.parametrize("bad", ["nan", "", "high"])
def test_bad_regression_target(tmp_path, bad):
    (tmp_path / "d.csv").write_text(f"text,label\ngood,0.5\nbad,{bad}\nok,1.5\n")
    table = read_table(tmp_path / "d.csv")
    ex = read_examples(table)
    task = tasks.get("regression")
    spec = task.spec(ex.labels, table, "label")
    with pytest.raises(DataError, match=r"d.csv, line 3, column 'label': regression target .* is not a finite number"):
        task.labels(ex.labels, spec, table, "label")


def test_task_inference_and_label_order():
    assert tasks.infer(["1", "0", "1"]) == "classification"
    assert tasks.infer([0.5, 1.0, 4.2]) == "regression"
    assert tasks.infer(["pos", "neg"]) == "classification"


def test_int_like_labels_sort_numerically(tmp_path):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": "x", "label": v}) + "\n" for v in [10, 2, 1, 2.0]))
    table = read_table(tmp_path / "d.jsonl")
    ex = read_examples(table)
    task = tasks.get("classification")
    spec = task.spec(ex.labels, table, "label")
    assert spec.labels == ["1", "2", "10"]
    assert task.labels(ex.labels, spec, table, "label").tolist() == [2, 1, 0, 1]


def test_single_class_is_an_error(tmp_path):
    (tmp_path / "d.csv").write_text("text,label\na,x\nb,x\n")
    table = read_table(tmp_path / "d.csv")
    with pytest.raises(DataError, match="only one class"):
        tasks.get("classification").spec(read_examples(table).labels, table, "label")


def _regression_file(path, n=24):
    rows = [("good fine film", 47.5), ("bad dull plot", 41.0), ("great acting", 58.0), ("awful ending", 44.5)]
    lines = [f"{rows[i % 4][0]} {i},{rows[i % 4][1] + i % 3}\n" for i in range(n)]
    path.write_text("text,label\n" + "".join(lines))
    return path


def _heads(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 1]


@pytest.mark.parametrize("method", ["full", "lora", "freeze"])
def test_a_new_regression_head_starts_at_the_targets_mean(tmp_path, tiny_bert, method):
    """Targets far from 0 (40-60): a new head's bias starts at their mean, whatever the method trains, so a
    short or low-rate run need not learn the offset (STS-B's LoRA runs predicted near 0 without it)."""
    train = _regression_file(tmp_path / "train.csv")
    cfg = config_from_dict(tiny_config(tiny_bert, train, tmp_path / "out", method={"name": method},
                                       data={"task": "regression"}))
    _, data, model = prepare(cfg)
    mean = float(np.mean(data.train.labels))
    assert 45 < mean < 55
    heads = _heads(model)
    assert heads and all(h.bias.tolist() == pytest.approx([mean]) for h in heads)


def test_a_trained_regression_head_keeps_its_bias(tmp_path, tiny_bert):
    """Tuning a regression model further leaves its head as it was trained."""
    trained = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=1, problem_type="regression")
    with torch.no_grad():
        trained.classifier.bias.fill_(3.25)
    trained.save_pretrained(tmp_path / "trained")
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path / "trained")
    train = _regression_file(tmp_path / "train.csv")
    cfg = config_from_dict(tiny_config(tmp_path / "trained", train, tmp_path / "out", data={"task": "regression"}))
    _, _, model = prepare(cfg)
    assert [h.bias.item() for h in _heads(model)] == [3.25]
