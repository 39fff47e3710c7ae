import json

import pytest
from conftest import SHARED_DATA

from pretune.data import read_examples, read_table
from pretune.errors import DataError

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not present")


def test_formats_read_the_same(tmp_path):
    rows = [{"text": "a good film", "label": "pos"}, {"text": 'he said "bad"', "label": "neg"}]
    (tmp_path / "d.csv").write_text('text,label\na good film,pos\n"he said ""bad""",neg\n')
    (tmp_path / "d.tsv").write_text('text\tlabel\na good film\tpos\nhe said "bad"\tneg\n')
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
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


@needs_shared
def test_conll2003_files_are_read_as_conll_by_their_docstart_line():
    t = read_table(SHARED_DATA / "conll2003" / "eng.testa")  # no known extension: the first line says CoNLL
    assert len(t) == 3250 and t.token_lines  # the README's sentence count; -DOCSTART- lines are not sentences
    assert sum(map(len, t.columns["tokens"])) == 51362
    assert t.columns["tags"][0][2] == "I-ORG" and t.columns["3"] is t.columns["tags"]
