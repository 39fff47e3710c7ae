"""causal_lm's data and loss: the formats, the response mask, bad rows, cutting, packing, and the loss on the scored
positions only."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from sft import TEMPLATE, alpaca_rows, make_causal_lm, write_jsonl

from pretune.config import DataConfig
from pretune.data import IGNORE, read_table
from pretune.errors import ConfigError, DataError
from pretune.models import load_tokenizer
from pretune.tasks import causal_lm
from pretune.tasks.instructions import ALPACA


@pytest.fixture(scope="module")
def lm_dir(family_dir, tmp_path_factory):
    return make_causal_lm(family_dir("llama"), tmp_path_factory.mktemp("lm") / "llama-lm")


@pytest.fixture(scope="module")
def tok(lm_dir):
    return load_tokenizer(lm_dir)


def _encode(path, tok, **data):
    cfg = DataConfig(max_length=data.pop("max_length", 64), **data)
    return causal_lm.encode(causal_lm.read(read_table(path), cfg), tok, cfg, None)


def _scored(enc, tok, i=0):
    a, b = enc.offsets[i], enc.offsets[i + 1]
    labels = enc.labels[a:b]
    return tok.convert_ids_to_tokens(labels[labels != IGNORE].tolist())


def test_alpaca_rows_score_the_response_and_eos_only(tok, tmp_path):
    rows = [{"instruction": "the plot", "input": "", "output": "good great"}]
    enc = _encode(write_jsonl(tmp_path / "a.jsonl", rows), tok)
    assert _scored(enc, tok) == ["good", "great", "</s>"]
    assert tok.decode(enc.ids[: enc.offsets[1]]).startswith("<s>")
    both = _encode(tmp_path / "a.jsonl", tok, train_on_prompt=True)
    assert len(_scored(both, tok)) == len(both.ids) - 1  # all but the first token, which nothing predicts
    assert ALPACA.format(instruction="x").endswith("### Response:\n")


def test_prompt_completion_text_and_chat_formats(tok, tmp_path):
    pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "the film was", "completion": "awful dull"}])
    assert _scored(_encode(pc, tok), tok) == ["awful", "dull", "</s>"]
    text = write_jsonl(tmp_path / "t.jsonl", [{"text": "the film was good"}])
    assert _scored(_encode(text, tok), tok) == ["the", "film", "was", "good", "</s>"]  # after <s>
    chat = write_jsonl(tmp_path / "c.jsonl", [{"messages": [
        {"role": "system", "content": "the"}, {"role": "user", "content": "film"},
        {"role": "assistant", "content": "good"}, {"role": "user", "content": "plot"},
        {"role": "assistant", "content": "awful poor"}]}])
    # each assistant turn with the template's end of turn; the user turns and the system message are not learnt
    assert _scored(_encode(chat, tok, chat_template=TEMPLATE), tok) == ["good", "</s>", "awful", "poor", "</s>"]


@pytest.mark.parametrize("row,match", [
    ({"messages": [{"role": "user", "content": "good"}, {"role": "user", "content": "bad"}]},
     r"line 1, message 2: role 'user' where 'assistant' was due; roles must alternate"),
    ({"messages": [{"role": "user", "content": "good"}]}, r"line 1: the conversation ends without an assistant"),
    ({"messages": "good"}, r"line 1, column 'messages': expected a list of role/content objects"),
    ({"messages": [{"speaker": "user", "text": "good"}]}, r"line 1, message 1: expected a \{role, content\} object"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]},
     r"line 1, message 2: empty assistant response"),
    ({"instruction": "good", "input": "", "output": ""}, r"line 1, column 'output': empty response; fill it in"),
    ({"prompt": "good", "completion": None}, r"line 1, column 'completion': expected text, got nothing"),
    ({"question": "good"}, r"cannot tell the instruction format from the columns \('question'\)"),
])
def test_bad_rows_are_one_line_errors_naming_file_row_and_fix(row, match, tok, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(DataError, match=match) as e:
        _encode(path, tok, chat_template=TEMPLATE)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_chat_rows_without_a_template_say_how_to_give_one(tok, tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "a"},
                                                            {"role": "assistant", "content": "good"}]}])
    with pytest.raises(ConfigError, match=r"c.jsonl: chat rows \(messages\) need a chat template .* set "
                                          r"data.chat_template"):
        _encode(path, tok)


def test_long_examples_are_cut_from_the_prompt_side_and_counted(tok, tmp_path, caplog):
    long = " ".join(["the film"] * 20)
    path = write_jsonl(tmp_path / "l.jsonl", [{"prompt": long, "completion": "good great"},
                                              {"prompt": "the", "completion": "bad"}])
    with caplog.at_level(logging.INFO, logger="pretune"):
        enc = _encode(path, tok, max_length=8)
    assert list(enc.lengths) == [8, 4]  # <s> the bad </s>
    assert _scored(enc, tok) == ["good", "great", "</s>"]  # the response kept whole
    assert "1 of 2 examples are longer than data.max_length=8 and were cut from the prompt side" in caplog.text


def _model(lm_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(lm_dir)).eval()


def test_loss_on_the_scored_positions_equals_the_full_logits_loss(lm_dir, tok, tmp_path):
    enc = _encode(write_jsonl(tmp_path / "a.jsonl", alpaca_rows(6, 0)), tok)
    batch = causal_lm.collate(enc, np.arange(6), tok.pad_token_id)
    model = _model(lm_dir)
    with torch.no_grad():
        out = causal_lm.forward(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    labels = batch["labels"]
    full = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                             labels[:, 1:].reshape(-1), ignore_index=IGNORE)
    assert causal_lm.loss(out, labels).item() == pytest.approx(full.item(), rel=1e-5)
    assert out.shape == (*labels.shape, 1) and bool((out[..., 0][labels == IGNORE] == 0).all())


def test_a_packed_batch_gives_each_example_the_loss_it_has_alone(lm_dir, tok, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", alpaca_rows(8, 1))
    plain, packed = _encode(path, tok, max_length=96), _encode(path, tok, max_length=96, packing=True)
    rows = np.arange(8)
    batch = causal_lm.collate(packed, rows, tok.pad_token_id)
    assert batch["input_ids"].shape[0] < 8  # several examples share a row
    assert (batch["position_ids"] == 0).sum() >= 8  # positions restart at each example
    model = _model(lm_dir)
    with torch.no_grad():
        together = causal_lm.forward(model, batch)
        for i in rows:
            alone = causal_lm.forward(model, causal_lm.collate(plain, [i], tok.pad_token_id))
            n = alone.shape[1]
            assert torch.allclose(together[i, :n], alone[0], atol=1e-5), i
            assert bool((together[i, n:] == 0).all())


def test_labels_and_packing_survive_the_split(tok, tmp_path):
    enc = _encode(write_jsonl(tmp_path / "a.jsonl", alpaca_rows(5, 2)), tok, packing=True)
    sub = enc.select([3, 1])
    assert sub.pack == enc.pack and sub.token_labels
    assert list(sub.labels[: sub.offsets[1]]) == list(enc.labels[enc.offsets[3]:enc.offsets[4]])
    assert json.dumps(causal_lm.metrics(np.zeros((len(sub.ids), 1)), sub, None)) == \
        json.dumps({"loss": 0.0, "perplexity": 1.0})
