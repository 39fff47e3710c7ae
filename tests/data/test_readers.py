import json

import pytest
from conftest import SHARED_DATA

from pretune.config import DataConfig
from pretune.data import load_task_data, read_table
from pretune.data.dataset import build_spec, encode_labels, infer_task, read_examples
from pretune.errors import DataError

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not present")


def test_formats_read_the_same(tmp_path):
    rows = [{"text": "a good film", "label": "pos"}, {"text": 'he said "bad"', "label": "neg"}]
    (tmp_path / "d.csv").write_text('text,label\na good film,pos\n"he said ""bad""",neg\n')
    (tmp_path / "d.tsv").write_text('text\tlabel\na good film\tpos\nhe said "bad"\tneg\n')
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import pandas as pd
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    for ext in ("csv", "tsv", "jsonl", "parquet"):
        t = read_table(tmp_path / f"d.{ext}")
        assert t.columns["text"] == ["a good film", 'he said "bad"'], ext
        assert t.columns["label"] == ["pos", "neg"], ext


@needs_shared
def test_glue_tsv_with_bare_quotes_reads_every_row():
    t = read_table(SHARED_DATA / "sst2" / "dev.tsv")
    assert len(t) == 872  # published dev size; a quoting reader merges rows at bare quotes
    assert set(t.columns["label"]) == {"0", "1"}


@needs_shared
def test_mrpc_byte_order_mark_is_not_part_of_the_header():
    t = read_table(SHARED_DATA / "mrpc" / "dev.tsv")
    assert "Quality" in t.columns
    assert len(t) == 408


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="nope.csv: data file not found"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unknown data format '.xlsx'; use one of"):
        read_table(tmp_path / "d.xlsx")


def test_missing_column_lists_columns(tmp_path):
    (tmp_path / "d.csv").write_text("sentence,label\nhi,1\n")
    expected = r"d.csv: no text column 'text' \(columns: 'sentence', 'label'\); choose one with --text"
    with pytest.raises(DataError, match=expected):
        read_examples(tmp_path / "d.csv")


def test_empty_text_names_line_and_column(tmp_path):
    (tmp_path / "d.csv").write_text("text,label\nfine,1\n   ,0\n")
    with pytest.raises(DataError, match=r"d.csv, line 3, column 'text': empty text"):
        read_examples(tmp_path / "d.csv")


def test_non_utf8_bytes_name_the_line(tmp_path):
    (tmp_path / "d.csv").write_bytes(b"text,label\nfine,1\ncaf\xe9 au lait,0\n")
    with pytest.raises(DataError, match=r"d.csv, line 3: bytes .* are not UTF-8; re-encode"):
        read_table(tmp_path / "d.csv")


def test_wrong_field_count_names_the_line(tmp_path):
    (tmp_path / "d.tsv").write_text("text\tlabel\nok\t1\ntoo\tmany\tfields\n")
    with pytest.raises(DataError, match=r"d.tsv, line 3: 3 fields, header has 2"):
        read_table(tmp_path / "d.tsv")


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
    ex, table = read_examples(tmp_path / "d.csv")
    spec = build_spec(ex.labels, "regression", table, "label")
    with pytest.raises(DataError, match=r"d.csv, line 3, column 'label': regression target .* is not a finite number"):
        encode_labels(ex.labels, spec, table, "label")


def test_task_inference_and_label_order():
    assert infer_task(["1", "0", "1"]) == "classification"
    assert infer_task([0.5, 1.0, 4.2]) == "regression"
    assert infer_task(["pos", "neg"]) == "classification"


def test_int_like_labels_sort_numerically(tmp_path):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": "x", "label": v}) + "\n" for v in [10, 2, 1, 2.0]))
    ex, table = read_examples(tmp_path / "d.jsonl")
    spec = build_spec(ex.labels, None, table, "label")
    assert spec.labels == ["1", "2", "10"]
    assert encode_labels(ex.labels, spec, table, "label") == [2, 1, 0, 1]


def test_single_class_is_an_error(tmp_path):
    (tmp_path / "d.csv").write_text("text,label\na,x\nb,x\n")
    ex, table = read_examples(tmp_path / "d.csv")
    with pytest.raises(DataError, match="only one class"):
        build_spec(ex.labels, None, table, "label")
