"""One contract suite over every registered tuning method, plus method-specific behaviour."""

import numpy as np
import pytest
import torch

from pretune.config import config_from_dict
from pretune.data import collate, tokenize
from pretune.errors import ConfigError, ModelError
from pretune.models import METHODS, apply_method, count_parameters, load_for_task, unwrap_for_saving
from pretune.models.load import check_model_folder
from pretune.tasks import TaskSpec
from pretune.train import build_optimizer, default_loss

SPEC = TaskSpec("classification", ["neg", "pos"])


def _model(tiny_bert, method_name="full", **sections):
    cfg = config_from_dict({"model": {"path": str(tiny_bert)}, "method": {"name": method_name}, **sections})
    model, tok = load_for_task(cfg.model, SPEC)
    return apply_method(model, cfg), tok, cfg


def _batch(tok):
    enc = tokenize(["good film very good", "awful plot", "fine scene", "dull poor story was bad"], None, tok, 16)
    enc = enc.with_labels(np.array([1, 0, 1, 0]))
    return collate(enc, [0, 1, 2, 3], tok.pad_token_id)


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"qlora"}))  # qlora: a GPU (tests/gpu)
def test_one_step_moves_exactly_the_trainable_parameters(tiny_bert, method):
    torch.manual_seed(0)
    model, tok, cfg = _model(tiny_bert, method, train={"lr": 1e-2, "weight_decay": 0.0})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, cfg.train)
    loss, _ = default_loss(SPEC)(model, _batch(tok))
    loss.backward()
    opt.step()
    trainable, total = count_parameters(model)
    assert 0 < trainable <= total
    for name, p in model.named_parameters():
        moved = not torch.equal(before[name], p.detach())
        if p.requires_grad:
            # LoRA's B starts at zero so A gets no gradient on the first step; everything else moves
            assert moved or "lora_A" in name, f"{method}: trainable {name} did not move"
        else:
            assert not moved, f"{method}: frozen {name} moved"


def test_method_trainable_sets(tiny_bert):
    full, _, _ = _model(tiny_bert, "full")
    bitfit, _, _ = _model(tiny_bert, "bitfit")
    freeze, _, _ = _model(tiny_bert, "freeze", method={"name": "freeze", "train_top_layers": 1})
    names = lambda m: {n for n, p in m.named_parameters() if p.requires_grad}
    assert all(n.endswith("bias") or n.startswith("classifier") or "pooler" in n for n in names(bitfit))
    assert any("layer.1." in n for n in names(freeze)) and not any("layer.0." in n for n in names(freeze))
    assert not any("embeddings" in n for n in names(freeze))
    assert count_parameters(bitfit)[0] < count_parameters(freeze)[0] < count_parameters(full)[0]


@pytest.mark.parametrize("use_dora", [False, True])
def test_lora_matches_base_at_init_and_merge_keeps_logits(tiny_bert, use_dora):
    torch.manual_seed(0)
    base, tok, _ = _model(tiny_bert, "full")
    base.eval()
    batch = _batch(tok)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    torch.manual_seed(0)
    lora, _, cfg = _model(tiny_bert, "lora", lora={"r": 4, "alpha": 8, "dropout": 0.0, "use_dora": use_dora})
    lora.eval()
    # DoRA adds a magnitude vector per adapted layer; plain LoRA has none
    assert any("lora_magnitude_vector" in n for n, _ in lora.named_parameters()) == use_dora
    with torch.no_grad():
        # the heads are initialised from the same seed, so only the adapter could differ: B = 0 at init
        assert torch.allclose(base(**inputs).logits, lora(**inputs).logits, atol=1e-6)
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # make the adapter matter
        adapted = lora(**inputs).logits
        assert not torch.allclose(adapted, base(**inputs).logits, atol=2e-5)  # DoRA keeps magnitudes: smaller
        merged = unwrap_for_saving(lora, merge=True)
        assert not any("lora" in n for n, _ in merged.named_parameters())
        assert torch.allclose(merged(**inputs).logits, adapted, atol=1e-5)


def test_lora_targets_that_match_nothing_list_the_names(tiny_bert):
    with pytest.raises(ConfigError, match=r"lora.target_modules: \['q_proj'\] match no Linear layer; available "
                                          r"Linear names: .*query.*value"):
        _model(tiny_bert, "lora", lora={"target_modules": ["q_proj"]})


def test_applying_lora_warns_nothing(tiny_bert):
    """peft reads transformers' deprecated ``is_gradient_checkpointing`` on every wrap: a FutureWarning per fit that
    a user can do nothing about. pretune's wrap keeps it off (pytest's own filter would hide it here)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _model(tiny_bert, "lora")
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


def test_freeze_more_layers_than_exist(tiny_bert):
    with pytest.raises(ConfigError, match="the model has 2 layers, got 5"):
        _model(tiny_bert, "freeze", method={"name": "freeze", "train_top_layers": 5})


def test_not_a_model_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelError, match="not a Hugging Face model folder \\(no config.json\\)"):
        check_model_folder(tmp_path)
    with pytest.raises(ModelError, match="model folder not found"):
        check_model_folder(tmp_path / "missing")


def test_pickle_weights_need_explicit_permission(tmp_path, tiny_bert):
    import shutil

    from transformers import AutoModel
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert, folder)
    model = AutoModel.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="pickle files .* pass --allow-pickle if you trust the source"):
        check_model_folder(folder)
    assert check_model_folder(folder, allow_pickle=True) == folder


def test_all_linear_leaves_a_tied_lm_head_alone():
    """SmolLM2 ties lm_head to the input embeddings; named_parameters lists that weight once, under the
    embeddings' name, so the head is found by identity: every body Linear is adapted, lm_head is not."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from pretune.models.methods import lora_targets

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = AutoModelForCausalLM.from_config(cfg)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    targets = lora_targets(model, ["all-linear"])
    assert "lm_head" not in targets
    assert set(targets) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
