"""--train / --eval as hub:NAME[:CONFIG]:SPLIT, read offline from a datasets cache built here."""

import glob
import shutil

import pytest
from conftest import make_rows, tiny_config

import pretune
from pretune.data import read_examples, read_table
from pretune.data.hub import parse_hub
from pretune.errors import DataError

datasets = pytest.importorskip("datasets")


def cache_hub_dataset(cache, repo_id, config, splits, tmp_path):
    """Lay ``splits`` ({name: rows}) into ``cache`` where ``load_dataset(repo_id, config)`` finds them offline.

    The parquet builder writes ``NAME/CONFIG-HASH/0.0.0/HASH/NAME-SPLIT.arrow``; a dataset loaded from
    the Hub sits under ``ORG___NAME/CONFIG/...``, which is where the offline fallback looks.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.packaged_modules.parquet.parquet import Parquet

    name = repo_id.split("/")[-1]
    files = {}
    for split, rows in splits.items():
        files[split] = str(tmp_path / f"{split}.parquet")
        pq.write_table(pa.Table.from_pylist(rows), files[split])
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    builder = Parquet(cache_dir=str(tmp_path / "build"), dataset_name=name, config_name=config, hash="0" * 16,
                      data_files=files, features=features)
    builder.download_and_prepare()
    built = glob.glob(str(tmp_path / "build" / name / f"{config}-*"))[0]
    target = cache / repo_id.replace("/", "___") / config
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(built, target)


@pytest.fixture
def hub_datasets(tmp_path, monkeypatch):
    cache = tmp_path / "datasets"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)  # read when datasets is imported
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    rows = lambda n, seed: [{"sentence": t, "label": int(lab == "pos")} for t, lab in make_rows(n, seed=seed)]
    train, dev = rows(120, 1), rows(40, 2)
    train[6]["sentence"] = "   "  # row 7, for the error message
    cache_hub_dataset(cache, "org/sent", "small", {"train": train, "validation": dev}, tmp_path)
    return train, dev


def test_hub_split_reads_as_a_table(hub_datasets):
    train, _ = hub_datasets
    table = read_table("hub:org/sent:small:train")
    assert len(table) == 120 and table.columns["sentence"] == [r["sentence"] for r in train]
    assert table.columns["label"][:3] == [["neg", "pos"][r["label"]] for r in train[:3]]  # ClassLabel names
    assert len(read_table("hub:org/sent:small:train[:10]")) == 10  # datasets' split slicing
    with pytest.raises(DataError, match=r"^hub:org/sent:small:train, row 7, column 'sentence': empty text"):
        read_examples("hub:org/sent:small:train", text="sentence")


def test_fit_on_hub_splits_uses_the_tokenization_cache(hub_datasets, tiny_bert, tmp_path):
    from pretune.data import encoded

    cfg = tiny_config(tiny_bert, "hub:org/sent:small:train[7:]", tmp_path / "run", train={"max_steps": 2})
    cfg["data"].update(eval="hub:org/sent:small:validation", text="sentence")
    result = pretune.fit(cfg)
    assert result.steps == 2 and "accuracy" in result.eval
    cached = list(encoded.default_cache_dir().glob("*.npz"))
    assert len(cached) == 2  # train and eval, keyed by their rows' texts
    calls = []
    real = encoded._tokenize
    encoded._tokenize = lambda *a: calls.append(1) or real(*a)
    try:
        pretune.fit({**cfg, "output": str(tmp_path / "again")})
    finally:
        encoded._tokenize = real
    assert calls == []  # both splits came from the cache


def test_hub_dataset_not_cached_offline_is_one_line(hub_datasets):
    with pytest.raises(DataError, match=r"^hub:org/absent:train: not in the datasets cache and cannot be downloaded "
                                        r"here \(offline\); .*load_dataset\('org/absent'\)"):
        read_table("hub:org/absent:train")
    with pytest.raises(DataError, match=r"^hub:org/sent:other:train: cannot load the Hub dataset .*'other'"):
        read_table("hub:org/sent:other:train")
    with pytest.raises(DataError, match=r"^hub:org/sent:small:test: cannot load the Hub dataset .*Unknown split"):
        read_table("hub:org/sent:small:test")


def test_hub_source_names():
    assert parse_hub("hub:imdb:train") == ("imdb", None, "train")
    assert parse_hub("hub:nyu-mll/glue:sst2:train[:1000]") == ("nyu-mll/glue", "sst2", "train[:1000]")
    for bad in ("hub:imdb", "hub:a:b:c:d", "hub::train"):
        with pytest.raises(DataError, match="a Hub dataset is named hub:NAME"):
            parse_hub(bad)


def test_without_datasets_the_extra_is_named(monkeypatch):
    from pretune.errors import MissingExtra

    monkeypatch.setitem(__import__("sys").modules, "datasets", None)
    with pytest.raises(MissingExtra, match=r"pip install 'pretune\[datasets\]'"):
        read_table("hub:imdb:train")


def test_a_list_of_class_labels_reads_as_tag_names():
    """conll2003 on the Hub stores ner_tags as a list of ClassLabel ids; a local file would hold the names."""
    from pretune.data.hub import _column

    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"]))})
    ds = datasets.Dataset.from_dict({"tokens": [["John", "Smith", "left"]], "ner_tags": [[1, 2, 0]]},
                                    features=features)
    assert _column(ds, "ner_tags") == [["B-PER", "I-PER", "O"]]
    assert _column(ds, "tokens") == [["John", "Smith", "left"]]
