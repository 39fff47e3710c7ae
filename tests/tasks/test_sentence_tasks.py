"""The sentence-level tasks: how classification and regression read, check and encode their labels."""

import json

import pytest

from pretune import tasks
from pretune.config import DataConfig
from pretune.data import read_examples, read_table
from pretune.errors import DataError
from pretune.tasks import load_task_data


def test_label_unseen_in_training_is_an_error(tmp_path, tiny_bert):
    from transformers import AutoTokenizer
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
