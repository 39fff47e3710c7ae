"""The example configs resolve, read their data with the right columns, and ``${VAR}`` expansion works."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretune.config import load_config
from pretune.data import read_examples
from pretune.errors import ConfigError

from conftest import SHARED_DATA

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", ["sst2", "mrpc", "trec", "conll2003"])
def test_example_takes_its_data_folder_from_the_environment(name, monkeypatch, tmp_path):
    monkeypatch.setenv("PRETUNE_DATA", str(tmp_path / "glue"))
    cfg = load_config(EXAMPLES / f"{name}.yaml")
    assert cfg.data.train.startswith(str(tmp_path / "glue") + f"/{name}/")
    monkeypatch.delenv("PRETUNE_DATA")
    assert load_config(EXAMPLES / f"{name}.yaml").data.train.startswith(f"../shared/data/{name}/")


@pytest.mark.parametrize("name,classes", [("sst2", 2), ("mrpc", 2), ("trec", 6)])
def test_example_columns_match_the_shared_data(name, classes, monkeypatch):
    if not (SHARED_DATA / name).is_dir():
        pytest.skip(f"{SHARED_DATA / name} not present")
    monkeypatch.setenv("PRETUNE_DATA", str(SHARED_DATA))
    cfg = load_config(EXAMPLES / f"{name}.yaml")
    assert Path(cfg.data.train).is_file()
    ex = read_examples(cfg.data.eval, cfg.data.text, cfg.data.text_pair, cfg.data.label)
    assert len(set(ex.labels)) == classes and all(ex.texts)
    assert (ex.pairs is not None) == (name == "mrpc")


def test_conll2003_example_reads_the_iob1_files_as_tagged_sentences(monkeypatch):
    if not (SHARED_DATA / "conll2003").is_dir():
        pytest.skip(f"{SHARED_DATA / 'conll2003'} not present")
    from pretune import tasks
    from pretune.data import read_table
    from pretune.tasks import tags

    monkeypatch.setenv("PRETUNE_DATA", str(SHARED_DATA))
    cfg = load_config(EXAMPLES / "conll2003.yaml")
    table = read_table(cfg.data.eval)
    assert tasks.task_of(cfg.data) == "token_classification" and len(table) == 3250
    spec = tasks.get("token_classification").spec(table.columns["tags"], table, "tags", cfg.data)
    assert spec.settings == {"scheme": "IOB1"}
    assert {tags.split_tag(t)[1] for t in spec.labels} - {""} == {"PER", "ORG", "LOC", "MISC"}


def test_unset_variable_without_default_names_it(tmp_path, monkeypatch):
    monkeypatch.delenv("PRETUNE_NOPE", raising=False)
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  train: ${PRETUNE_NOPE}/train.csv\n  eval: ${HOME_X:-dev}.csv\n")
    with pytest.raises(ConfigError, match="environment variable PRETUNE_NOPE is not set"):
        load_config(path)
    monkeypatch.setenv("PRETUNE_NOPE", "/d")
    cfg = load_config(path)
    assert (cfg.data.train, cfg.data.eval) == ("/d/train.csv", "dev.csv")


def test_alpaca_sft_example_reads_its_rows_as_alpaca(monkeypatch):
    if not (SHARED_DATA / "instructions" / "alpaca_small").is_dir():
        pytest.skip("../shared/data/instructions/alpaca_small not present")
    from pretune import tasks
    from pretune.data import read_table

    monkeypatch.setenv("PRETUNE_DATA", str(SHARED_DATA))
    cfg = load_config(EXAMPLES / "alpaca_sft.yaml")
    assert cfg.data.task == "causal_lm" and cfg.method.name == "lora" and cfg.model.path == "smollm2"
    rows = tasks.get("causal_lm").read(read_table(cfg.data.train), cfg.data)
    assert rows.format == "alpaca" and len(rows.rows) == 2000


def test_hh_dpo_example_reads_its_pairs_and_splits_them_by_seed(monkeypatch):
    if not (SHARED_DATA / "preferences" / "hh_rlhf_harmless_base_test").is_dir():
        pytest.skip("../shared/data/preferences/hh_rlhf_harmless_base_test not present")
    from pretune import tasks
    from pretune.data import read_table, stratified_split

    monkeypatch.setenv("PRETUNE_DATA", str(SHARED_DATA))
    cfg = load_config(EXAMPLES / "hh_dpo.yaml")
    assert cfg.data.task == "dpo" and cfg.method.name == "lora" and cfg.model.path == "smollm2"
    pairs = tasks.get("dpo").read(read_table(cfg.data.train), cfg.data)
    assert len(pairs.rows) == 2303 and all(p.endswith("\n\nAssistant:") for p, _, _ in pairs.rows)
    train, dev = stratified_split(pairs.labels, cfg.data.val_fraction, cfg.train.seed, stratify=False)
    assert 280 <= len(dev) <= 320 and len(train) + len(dev) == 2303
