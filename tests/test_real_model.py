"""A few runs on the real packaged all-MiniLM-L6-v2 and a slice of SST-2 (marked real_model)."""

import json

import pytest
from conftest import SHARED_DATA

pytestmark = [pytest.mark.real_model, pytest.mark.slow,
              pytest.mark.skipif(not (SHARED_DATA / "sst2").is_dir(), reason="../shared/data/sst2 not present")]


@pytest.fixture(scope="module")
def minilm():
    from pretune.models import packaged_minilm
    try:
        return packaged_minilm()
    except Exception as e:  # the extra is not installed
        pytest.skip(str(e))


def test_full_fine_tune_on_an_sst2_slice_beats_chance(minilm, tmp_path):
    from transformers import AutoModelForSequenceClassification

    import pretune

    sst2 = SHARED_DATA / "sst2"
    result = pretune.fit({
        "model": {"path": "minilm"},
        "data": {"train": str(sst2 / "train.tsv"), "eval": str(sst2 / "dev.tsv"), "text": "sentence",
                 "max_train_samples": 1200, "max_eval_samples": 300},
        "train": {"epochs": 2, "lr": 1e-4, "batch_size": 32, "progress": False, "threads": 2, "seed": 0},
        "output": str(tmp_path / "run")})
    # 2 epochs of 1,200 rows: well above the 51% majority class, below the full-data figure
    assert result.eval["accuracy"] > 0.75
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir)
    assert model.config.id2label == {0: "0", 1: "1"} and model.config.num_hidden_layers == 6
    rows = pretune.predict(str(result.model_dir), str(sst2 / "dev.tsv"), text="sentence")
    assert len(rows) == 872 and {r["label"] for r in rows} == {"0", "1"}
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert saved["total_params"] == 22_713_986 and saved["eval"] == result.eval


@pytest.mark.skipif(not (SHARED_DATA / "conll2003").is_dir(), reason="../shared/data/conll2003 not present")
def test_minilm_learns_named_entities_from_a_conll2003_slice(minilm, tmp_path):
    """800 sentences of the original IOB1 files, one epoch: well above the 0 of tagging everything O."""
    from transformers import AutoModelForTokenClassification

    import pretune

    conll = SHARED_DATA / "conll2003"
    result = pretune.fit({
        "model": {"path": "minilm"},
        "data": {"train": str(conll / "eng.train"), "eval": str(conll / "eng.testa"), "max_length": 64,
                 "max_train_samples": 800, "max_eval_samples": 300},
        "train": {"epochs": 1, "lr": 3e-4, "batch_size": 16, "progress": False, "threads": 2, "seed": 0},
        "output": str(tmp_path / "run")})
    assert result.eval["f1"] > 0.5 and result.eval["f1_PER"] > 0.7  # measured: 0.67 and 0.89
    model = AutoModelForTokenClassification.from_pretrained(result.model_dir)
    assert model.config.pretune_settings == {"scheme": "IOB1"} and model.config.id2label[0] == "O"
    texts = ["Peter Blackburn met officials of the European Commission in Brussels on Thursday.",
             "Germany beat Japan 2-1 in Tokyo."]
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    rows = pretune.predict(str(result.model_dir), str(tmp_path / "texts.jsonl"), max_length=64)
    entities = [(text[e["char_start"]:e["char_end"]], e["text"]) for r, text in zip(rows, texts) for e in r["entities"]]
    assert len(entities) >= 3 and all(a == b for a, b in entities)
