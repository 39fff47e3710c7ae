"""Token classification through the stages: fit, eval and predict on a tiny BERT, and a search on entity F1."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tagging import write_conll, write_jsonl

from pretune import tasks
from pretune.cli import main
from pretune.config import DataConfig
from pretune.data import read_table
from pretune.tasks.tokens import rows as token_rows
from pretune.tasks.words import encode_words, read_words

SPEC = tasks.TaskSpec("token_classification", ["O", "B-NEG", "I-NEG", "B-POS", "I-POS"], {"scheme": "IOB2"})


@pytest.fixture(scope="module")
def fitted(tiny_bert, tmp_path_factory):
    """A tiny BERT fitted on 240 tagged sentences: (run folder, dev file)."""
    folder = tmp_path_factory.mktemp("tok-fit")
    train, dev = write_jsonl(folder / "train.jsonl", 240, 1), write_jsonl(folder / "dev.jsonl", 60, 2)
    out = folder / "run"
    assert main(["fit", "--model", str(tiny_bert), "--train", str(train), "--eval", str(dev), "--output", str(out),
                 "--epochs", "4", "--lr", "5e-3", "--batch-size", "16", "--seed", "0", "--threads", "1",
                 "data.max_length=32", "train.progress=false", "train.precision=fp32"]) == 0
    return out, dev


def test_fit_learns_the_entities_and_eval_reads_a_conll_file(fitted, tmp_path, capsys):
    out, dev = fitted
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "token_classification" and results["eval"]["f1"] > 0.5  # all O scores 0
    assert {"strict_f1", "accuracy", "f1_POS", "f1_NEG", "loss"} <= set(results["eval"])
    conll = write_conll(tmp_path / "dev.conll", 60, 2)  # the same sentences as CoNLL columns
    capsys.readouterr()
    assert main(["eval", str(out / "model"), "--data", str(conll), "--threads", "1", "--max-length", "32"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["rows"] == 60 and evaluated["f1"] == pytest.approx(results["eval"]["f1"], abs=1e-6)


def test_predict_on_text_gives_entities_whose_offsets_round_trip(fitted, tmp_path):
    out, _ = fitted
    texts = write_jsonl(tmp_path / "texts.jsonl", 30, 3, text=True)
    predictions = tmp_path / "p.jsonl"
    assert main(["predict", str(out / "model"), "--input", str(texts), "--output", str(predictions),
                 "--threads", "1", "--max-length", "32"]) == 0
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    inputs = [json.loads(line)["text"] for line in texts.read_text().splitlines()]
    assert len(rows) == 30 and sum(len(r["entities"]) for r in rows) > 20
    for row, text in zip(rows, inputs):
        assert row["tokens"] == text.split() and len(row["tags"]) == len(row["tokens"])
        for e in row["entities"]:
            assert text[e["char_start"]:e["char_end"]] == e["text"] == " ".join(row["tokens"][e["start"]:e["end"]])
            assert e["type"] in ("POS", "NEG") and 0 < e["score"] <= 1


def test_entities_of_chosen_outputs_round_trip_to_the_text(tiny_bert, tmp_path):
    """predict's rows from known outputs: spans over windows, character offsets into the original text."""
    from transformers import AutoTokenizer

    text = "the  film was very good , and the plot awful"  # two spaces: offsets are the text's own
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": text}) + "\n")
    rows = read_words(read_table(tmp_path / "t.jsonl"), "text", None)
    enc = encode_words(rows, AutoTokenizer.from_pretrained(str(tiny_bert)), max_length=6, stride=1)
    assert len(enc) > 2  # several windows
    wanted = ["O", "O", "O", "B-POS", "I-POS", "O", "O", "O", "O", "B-NEG"]
    outputs = np.zeros((len(enc.ids), len(SPEC.labels)), dtype=np.float32)
    has_word = enc.words >= 0
    outputs[has_word, [SPEC.labels.index(wanted[w]) for w in enc.words[has_word]]] = 5.0
    [row] = token_rows(outputs, enc, SPEC, rows)
    assert row["tags"] == wanted
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in row["entities"]] == \
        [("POS", "very good", 3, 5), ("NEG", "awful", 9, 10)]
    assert all(text[e["char_start"]:e["char_end"]] == e["text"] for e in row["entities"])


@pytest.mark.slow
def test_search_with_the_default_space_prunes_on_entity_f1(tiny_bert, tmp_path):
    from pretune.search import search

    train, dev = write_jsonl(tmp_path / "train.jsonl", 96, 1), write_jsonl(tmp_path / "dev.jsonl", 32, 2)
    result = search({"model": {"path": str(tiny_bert)},
                     "data": {"train": str(train), "eval": str(dev), "max_length": 32},
                     "train": {"threads": 1, "progress": False, "lr": 5e-3},
                     "search": {"n_trials": 3, "seed": 0, "prune_after": 0.0},  # default space, sampler and pruner
                     "output": str(tmp_path / "s")})
    assert result.objectives == [("f1", "maximize")]
    # A draw of the default space may ask a freeze of more top layers than the 2-layer model has: that trial fails
    # with the reason, and no other may.
    assert all(r["state"] in ("complete", "pruned") or "the model has 2 layers" in r["fail_reason"]
               for r in result.trials), result.trials
    assert result.counts["complete"] >= 1
    best = json.loads((result.best_dir / "config.json").read_text())
    assert best["pretune_task"] == "token_classification" and best["pretune_settings"] == {"scheme": "IOB2"}


def test_a_search_on_tag_lists_aims_at_entity_f1(tmp_path):
    from pretune.config import config_from_dict
    from pretune.search import make_plan

    train = write_jsonl(tmp_path / "train.jsonl", 8, 1)
    plan = make_plan(config_from_dict({"data": {"train": str(train)}, "output": str(tmp_path / "s")}))
    assert plan.objectives == [("f1", "maximize")]
    assert tasks.task_of(DataConfig(train=str(train))) == "token_classification"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "deberta-v2", "modernbert", "llama", "qwen2"])
def test_every_family_tags_each_word_once_through_windows(family, family_dir, tmp_path):
    """WordPiece, byte-level BPE (RoBERTa, Qwen2) and SentencePiece-style tokenizers all map sub-tokens to words
    by their offsets; max_length 12 cuts most sentences into windows."""
    import pretune

    train, dev = write_jsonl(tmp_path / "train.jsonl", 120, 1), write_jsonl(tmp_path / "dev.jsonl", 30, 2)
    texts = write_jsonl(tmp_path / "texts.jsonl", 10, 3, text=True)
    result = pretune.fit({"model": {"path": str(family_dir(family))},
                          "data": {"train": str(train), "eval": str(dev), "max_length": 12},
                          "train": {"epochs": 2, "lr": 5e-3, "batch_size": 16, "progress": False, "threads": 1,
                                    "precision": "fp32"},
                          "output": str(tmp_path / "run")})
    assert result.eval["f1"] > 0.3
    inputs = [json.loads(line)["text"] for line in texts.read_text().splitlines()]
    for row, text in zip(pretune.predict(str(result.model_dir), str(texts), max_length=12), inputs):
        assert row["tokens"] == text.split() and len(row["tags"]) == len(row["tokens"])
        assert all(text[e["char_start"]:e["char_end"]] == e["text"] for e in row["entities"])
