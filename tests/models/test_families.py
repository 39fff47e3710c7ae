"""Every model family through the model stage: heads, padding, the layer finder, the tuning methods, LoRA targets,
and one contract over fit -> predict -> reload with ``transformers`` alone.

The models are 2-layer, 32-wide and random (``tests/families.py``); ``family_dir`` builds each once per session.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import make_rows, write_csv
from families import DECODERS, FAMILIES

import pretune
from pretune.config import config_from_dict
from pretune.data import collate, tokenize
from pretune.errors import ConfigError
from pretune.models import (METHODS, apply_method, encoder_layers, head_parameter_names, layer_index, load_for_task,
                            lora_targets)
from pretune.models.fastpath import fast_path_status
from pretune.tasks import TaskSpec
from pretune.train import build_optimizer, default_loss, defaults

SPEC = TaskSpec("classification", ["neg", "pos"])
TEXTS = ["good film very good", "awful plot", "fine scene", "dull poor story was bad quite dull"]
PAIRS = ["the plot", "bad", "a very good actor", "film"]

# What the layer finder must see: the block stack, a parameter it maps to 0 and the ones it maps to n + 1.
ANATOMY = {
    "bert": ("bert.encoder.layer", "bert.embeddings.word_embeddings.weight",
             {"bert.pooler.dense.weight", "classifier.weight"}),
    "roberta": ("roberta.encoder.layer", "roberta.embeddings.word_embeddings.weight",
                {"classifier.dense.weight", "classifier.out_proj.weight"}),
    "distilbert": ("distilbert.transformer.layer", "distilbert.embeddings.word_embeddings.weight",
                   {"pre_classifier.weight", "classifier.weight"}),
    "deberta-v2": ("deberta.encoder.layer", "deberta.encoder.rel_embeddings.weight",
                   {"pooler.dense.weight", "classifier.weight"}),
    "modernbert": ("model.layers", "model.embeddings.tok_embeddings.weight",
                   {"model.final_norm.weight", "head.dense.weight", "classifier.weight"}),
    "llama": ("model.layers", "model.embed_tokens.weight", {"model.norm.weight", "score.weight"}),
    "qwen2": ("model.layers", "model.embed_tokens.weight", {"model.norm.weight", "score.weight"}),
}
LORA_DEFAULTS = {"bert": ["query", "value"], "roberta": ["query", "value"], "deberta-v2": ["query_proj", "value_proj"],
                 "llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"],
                 # no peft default for these two: every Linear of the body
                 "distilbert": ["k_lin", "lin1", "lin2", "out_lin", "q_lin", "v_lin"],
                 "modernbert": ["Wi", "Wo", "Wqkv"]}
NO_BIAS = ("llama", "modernbert")  # bodies without a single bias term: BitFit is refused


def _load(folder, name="full", spec=SPEC, **sections):
    sections.setdefault("method", {"name": name})
    cfg = config_from_dict({"model": {"path": str(folder)}, **sections})
    defaults.fill(cfg)  # the model's recipe, as fit fills it (a small encoder's LoRA: every Linear layer)
    model, tok = load_for_task(cfg.model, spec)
    return apply_method(model, cfg), tok, cfg


def _batch(tok, pairs=None):
    enc = tokenize(TEXTS, pairs, tok, 24).with_labels(np.array([1, 0, 1, 0]))
    return collate(enc, [0, 1, 2, 3], tok.pad_token_id)


def _inputs(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_padded_row_gets_the_logits_it_gets_alone(family, family_dir):
    model, tok, _ = _load(family_dir(family))
    model.eval()
    assert tok.pad_token_id is not None and model.config.pad_token_id == tok.pad_token_id
    enc = tokenize(TEXTS, PAIRS, tok, 24)
    batch = collate(enc, [0, 1, 2, 3], tok.pad_token_id)
    assert (batch["attention_mask"] == 0).any(), "the batch must hold padding for this test to mean anything"
    with torch.no_grad():
        together = model(**batch).logits
        alone = torch.cat([model(**collate(enc, [i], tok.pad_token_id)).logits for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("family", DECODERS)
def test_decoders_read_the_last_real_token(family, family_dir):
    """Right padding (pretune's batches) with pad = eos: the head's logits are the score of the last real token."""
    model, tok, _ = _load(family_dir(family))
    model.eval()
    batch = _batch(tok)
    with torch.no_grad():
        hidden = model.model(**_inputs(batch)).last_hidden_state  # (B, T, H)
        last = batch["attention_mask"].sum(1) - 1  # (B,)
        expected = model.score(hidden[torch.arange(4), last])
        assert torch.allclose(model(**_inputs(batch)).logits, expected, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_finder_maps_embeddings_to_0_blocks_to_1_n_and_the_head_to_n_plus_1(family, family_dir):
    model, _, _ = _load(family_dir(family))
    stack, embedding, top = ANATOMY[family]
    prefix, layers = encoder_layers(model)
    assert (prefix, len(layers)) == (stack, 2)
    index = {name: layer_index(name, prefix, 2) for name, _ in model.named_parameters()}
    assert index[embedding] == 0
    assert {n for n in top if index[n] == 3} == top
    assert {index[n] for n in index if n.startswith(stack + ".1.")} == {2}
    assert set(index.values()) == {0, 1, 2, 3}
    # the search and fit's layer-wise LR decay uses the same finder: four distinct scales
    opt = build_optimizer(model, config_from_dict({"train": {"layer_lr_decay": 0.5}}).train)
    assert {g["lr_scale"] for g in opt.param_groups} == {0.125, 0.25, 0.5, 1.0}


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"qlora"}))  # qlora: a GPU (tests/gpu)
@pytest.mark.parametrize("family", FAMILIES)
def test_one_step_moves_exactly_the_trainable_parameters(family, method, family_dir):
    if method == "bitfit" and family in NO_BIAS:
        with pytest.raises(ConfigError, match=f"method bitfit: model type '{family}' has no bias terms in its "
                                              "body; use method lora or freeze"):
            _load(family_dir(family), method)
        return
    torch.manual_seed(0)
    model, tok, cfg = _load(family_dir(family), train={"lr": 1e-2, "weight_decay": 0.0},
                            method={"name": method, "train_top_layers": 1})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, cfg.train)
    default_loss(SPEC)(model, _batch(tok))[0].backward()
    opt.step()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for name, p in model.named_parameters():
        moved = not torch.equal(before[name], p.detach())
        if p.requires_grad:
            # LoRA's B starts at zero, so A gets no gradient on the first step
            assert moved or "lora_A" in name, f"{family}/{method}: trainable {name} did not move"
        else:
            assert not moved, f"{family}/{method}: frozen {name} moved"
    stack = ANATOMY[family][0]
    if method == "freeze":
        assert any(f"{stack}.1." in n for n in trainable) and not any(f"{stack}.0." in n for n in trainable)
    if method == "bitfit":
        assert any(n.endswith("bias") for n in trainable if n.startswith(stack))
    if method == "lora":
        adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n in trainable if ".lora_A" in n}
        # the recipe's adapter: every Linear layer of a small encoder (these are tiny), peft's targets otherwise
        every = {n.rsplit(".", 1)[-1] for n in lora_targets(_load(family_dir(family))[0], ["all-linear"])}
        assert adapted == (every if cfg.lora.target_modules == ["all-linear"] else set(LORA_DEFAULTS[family]))
        assert cfg.lora.target_modules == (["auto"] if family in ("llama", "qwen2") else ["all-linear"])


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_default_targets_come_from_the_architecture(family, family_dir):
    model, _, _ = _load(family_dir(family))
    assert lora_targets(model) == LORA_DEFAULTS[family] == lora_targets(model, ["auto"])
    every = lora_targets(model, ["all-linear"])
    assert set(LORA_DEFAULTS[family]) <= {n.rsplit(".", 1)[-1] for n in every}
    head = {"classifier", "score", "pre_classifier", "out_proj"}
    assert not head & set(every)
    # the search's default space samples these keywords as strings
    adapted, _, _ = _load(family_dir(family), "lora", lora={"target_modules": "all-linear"})
    head = {n.rsplit(".", 1)[0] for n in head_parameter_names(model)}
    body = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in head}
    assert {n.split(".lora_A")[0].removeprefix("base_model.model.") for n, _ in adapted.named_parameters()
            if ".lora_A" in n} == body


def test_bert_all_linear_leaves_the_pooler_alone(family_dir):
    # BERT's body and pooler both have Linear layers called "dense"; peft matches name suffixes
    model, _, _ = _load(family_dir("bert"))
    every = lora_targets(model, ["all-linear"])
    assert "dense" not in every and "bert.encoder.layer.0.output.dense" in every


def test_explicit_lora_targets_still_work_and_unknown_ones_list_the_names(family_dir):
    model, _, _ = _load(family_dir("llama"), "lora", lora={"target_modules": ["q_proj", "k_proj", "o_proj"]})
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A" in n}
    assert adapted == {"q_proj", "k_proj", "o_proj"}
    with pytest.raises(ConfigError, match=r"lora.target_modules: \['query', 'value'\] match no Linear layer; "
                                          r"available Linear names: down_proj, gate_proj, .*q_proj"):
        _load(family_dir("llama"), "lora", lora={"target_modules": ["query", "value"]})


@pytest.mark.parametrize("family", FAMILIES)
def test_first_token_fast_path_only_for_bert_encoders(family, family_dir):
    model, _, _ = _load(family_dir(family))
    assert fast_path_status(model)[0] == (family in ("bert", "roberta"))


# ------------------------------------------------------------------ the contract: fit, predict, reload


def _data(tmp_path, task, pair):
    rows = make_rows(64, seed=3)
    if task == "regression":
        rows = [(t, round({"pos": 0.8, "neg": 0.2}[y] + random.Random(t).uniform(-0.05, 0.05), 3)) for t, y in rows]
    if pair:
        rng = random.Random(4)
        rows = [(t, " ".join(rng.choices(["the", "film", "plot", "scene"], k=2)), y) for t, y in rows]
        return write_csv(tmp_path / f"{task}-pairs.csv", rows, header=("text", "text2", "label"))
    return write_csv(tmp_path / f"{task}.csv", rows)


CASES = [(f, "classification", False, "full") for f in FAMILIES] + \
        [(f, "regression", False, "full") for f in FAMILIES] + \
        [(f, "classification", True, "lora") for f in ("bert", "llama")]  # pairs; LoRA merged into the saved model


@pytest.mark.parametrize("family,task,pair,method", CASES)
def test_fit_predict_and_reload_with_transformers(family, task, pair, method, family_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    data = _data(tmp_path, task, pair)
    columns = {"text_pair": "text2"} if pair else {}
    result = pretune.fit({"model": {"path": str(family_dir(family))},
                          "data": {"train": str(data), "task": task, "max_length": 24, **columns},
                          "train": {"max_steps": 3, "batch_size": 16, "lr": 1e-3, "progress": False, "threads": 1,
                                    "eval_every": 3},
                          "method": {"name": method}, "output": str(tmp_path / "run")})
    # fp32, as transformers runs the reference below (predict defaults to bf16 on a bf16 CPU)
    rows = pretune.predict(str(result.model_dir), str(data), max_length=24, threads=1, precision="fp32", **columns)
    assert len(rows) == 64 and all(("label" in r) if task == "classification" else ("score" in r) for r in rows)

    # the saved folder is a plain transformers model: the same outputs with transformers alone, padded its way
    import csv
    from transformers import AutoTokenizer

    with open(data, newline="", encoding="utf-8") as f:
        head = list(csv.DictReader(f))[:8]
    tok = AutoTokenizer.from_pretrained(str(result.model_dir))
    plain = AutoModelForSequenceClassification.from_pretrained(str(result.model_dir)).eval()
    enc = tok([r["text"] for r in head], [r["text2"] for r in head] if pair else None, padding=True,
              return_tensors="pt")
    with torch.no_grad():
        logits = plain(**{k: v for k, v in enc.items() if k in tok.model_input_names}).logits
    if task == "regression":
        assert [r["score"] for r in rows[:8]] == pytest.approx(logits.squeeze(-1).tolist(), abs=1e-5)
    else:
        probs = torch.softmax(logits, -1)
        got = [p for r in rows[:8] for p in r["probabilities"].values()]
        assert got == pytest.approx(probs.reshape(-1).tolist(), abs=1e-5)
