"""The first-token fast path computes what the unpatched model computes, and only where it is safe."""

from __future__ import annotations

import pytest
import torch

from pretune.models.fastpath import fast_path_status, first_token_only


def _classifier(kind: str, attn: str, labels: int = 3, **extra):
    from transformers import (BertConfig, BertForSequenceClassification, RobertaConfig,
                              RobertaForSequenceClassification)

    torch.manual_seed(0)
    common = dict(vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=40, num_labels=labels, attn_implementation=attn)
    common.update(extra)
    if kind == "bert":
        return BertForSequenceClassification(BertConfig(**common))
    return RobertaForSequenceClassification(RobertaConfig(pad_token_id=1, **common))


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 50, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padded rows: the mask must reach the sliced attention
    mask[3, 3:] = 0
    ids[mask == 0] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, 1, 2])}


def _loss_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.logits.detach().clone(), {n: p.grad.clone() for n, p in model.named_parameters()
                                         if p.grad is not None}


def _assert_fast_path_matches(model, batch):
    """Under the fast path the model gives the same logits and the same gradient for every parameter."""
    logits, grads = _loss_and_grads(model, batch)
    with first_token_only(model) as active:
        assert active
        fast_logits, fast_grads = _loss_and_grads(model, batch)
    torch.testing.assert_close(fast_logits, logits, rtol=1e-5, atol=1e-6)
    assert fast_grads.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(fast_grads[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_same_logits_and_gradients(kind, attn):
    model = _classifier(kind, attn).eval()  # no dropout, so the two passes are comparable
    batch = _batch()
    _assert_fast_path_matches(model, batch)
    # outside the block the model is the plain model again: every position of the last layer is computed
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert hidden.last_hidden_state.shape[1] == batch["input_ids"].shape[1]


def test_last_layer_sees_only_the_first_position():
    model = _classifier("bert", "sdpa").eval()
    batch = _batch()
    seen = []
    ffn = model.bert.encoder.layer[-1].intermediate.dense
    handle = ffn.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    with first_token_only(model):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    handle.remove()
    assert seen == [1, batch["input_ids"].shape[1]]


def test_lora_model_is_patched_and_matches():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_classifier("bert", "sdpa"), LoraConfig(r=4, target_modules=["query", "value"],
                                                                   lora_dropout=0.0, task_type="SEQ_CLS")).eval()
    for name, p in model.named_parameters():  # non-zero B, so the adapters change the output
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    _assert_fast_path_matches(model, _batch())


def test_unsupported_models_are_left_alone():
    from transformers import BertConfig, BertForTokenClassification

    token_model = BertForTokenClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                        num_attention_heads=4, intermediate_size=64))
    on, why = fast_path_status(token_model)  # every position is labelled
    assert not on and why == "first-token fast path off: model type 'bert' is not a BERT-family sequence classifier"
    with first_token_only(token_model) as active:
        assert not active
    wants_hidden = _classifier("bert", "sdpa")
    wants_hidden.config.output_hidden_states = True
    assert fast_path_status(wants_hidden) == (False, "first-token fast path off: every position of every layer is "
                                                     "asked for")
    assert fast_path_status(_classifier("bert", "eager")) == (True, "first-token fast path on")
    assert fast_path_status(_classifier("bert", "sdpa"), enabled=False) == (
        False, "first-token fast path off (train.first_token_only=false)")
    with first_token_only(_classifier("bert", "sdpa"), enabled=False) as active:
        assert not active


@pytest.mark.parametrize("attention_dropout, hidden_dropout", [(0.5, 0.0), (0.0, 0.3)])
def test_training_mode_draws_from_the_same_distribution(attention_dropout, hidden_dropout):
    """With dropout on, the fast path draws different random numbers but from the same distribution.

    One layer, so every random draw happens in the patched layer, and one kind of dropout at a time,
    so leaving either out (or applying it twice) changes the spread of the logits.
    """
    model = _classifier("bert", "sdpa", num_hidden_layers=1, attention_probs_dropout_prob=attention_dropout,
                        hidden_dropout_prob=hidden_dropout).train()
    batch = {k: v for k, v in _batch().items() if k != "labels"}

    def draws(fast: bool, n: int = 400) -> torch.Tensor:
        torch.manual_seed(0)
        with torch.no_grad(), first_token_only(model, fast):
            return torch.stack([model(**batch).logits for _ in range(n)])

    plain, fast = draws(False), draws(True)
    se = plain.std(0) / plain.shape[0] ** 0.5
    assert (plain.std(0) > 0).all() and not torch.equal(plain, fast)  # random, with different draws...
    assert ((plain.mean(0) - fast.mean(0)).abs() < 4 * se * 2 ** 0.5).all()  # ...the same mean
    torch.testing.assert_close(fast.std(0), plain.std(0), rtol=0.15, atol=0.0)  # ...and the same spread
