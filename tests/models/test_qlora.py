"""method qlora: refused in one line where it cannot run (no CUDA GPU, no bitsandbytes, FSDP), and its saved model:
the trained adapter moved onto the unquantized base and merged there. Training on a real 4-bit base needs a GPU:
``tests/gpu/test_cuda.py::test_qlora_fit_saves_a_plain_model``."""

from __future__ import annotations

import pytest
import torch
from sft import alpaca_rows, make_causal_lm, write_jsonl

from pretune.cli import main
from pretune.config import config_from_dict
from pretune.errors import ConfigError
from pretune.models import apply_method, check_qlora, load_for_task, unwrap_for_saving
from pretune.tasks import TaskSpec


def test_qlora_on_the_cpu_is_one_line_and_leaves_no_run_folder(family_dir, tmp_path, capsys):
    lm = make_causal_lm(family_dir("llama"), tmp_path / "lm")
    train = write_jsonl(tmp_path / "train.jsonl", alpaca_rows(16, 1))
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["fit", "--model", str(lm), "--train", str(train), "--task", "causal_lm", "--method", "qlora",
                 "--output", str(out), "train.device=cpu", "train.progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("pretune fit: error: method qlora: a 4-bit base (bitsandbytes) needs a CUDA GPU and this run is "
                   "on cpu; use method lora, the same adapters on an unquantized base")
    assert not out.exists()


def test_qlora_needs_bitsandbytes_and_does_not_shard(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^method qlora needs the bitsandbytes package \(pip install bitsandbytes\)"):
        check_qlora(torch.device("cuda", 0))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    with pytest.raises(ConfigError, match="^method qlora does not shard"):
        check_qlora(torch.device("cuda", 0), "fsdp")
    check_qlora(torch.device("cuda", 0), "ddp")  # where both are present: nothing to refuse


def test_a_4bit_adapter_is_merged_into_the_unquantized_base(family_dir, tmp_path):
    """What fit saves after qlora: the adapter (and nothing of the 4-bit base) moved onto a fresh full-precision
    load of the same weights and merged there. Here the "4-bit" model is a full-precision one marked as such, so
    the merged model must give exactly the adapter model's logits."""
    lm = make_causal_lm(family_dir("llama"), tmp_path / "lm")
    cfg = config_from_dict({"model": {"path": str(lm)}, "method": {"name": "lora"},
                            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["all-linear"]}})
    spec = TaskSpec("causal_lm", [])
    model = apply_method(load_for_task(cfg.model, spec)[0], cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    ids = torch.tensor([[1, 5, 9, 12, 20, 7, 3]])
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
    model.base_model.model.is_loaded_in_4bit = True
    with pytest.raises(ConfigError, match="needs the unquantized base; or set lora.merge=false"):
        unwrap_for_saving(model, merge=True)
    loads = []
    merged = unwrap_for_saving(model, merge=True,
                               full_precision_base=lambda: loads.append(1) or load_for_task(cfg.model, spec)[0])
    assert loads == [1] and merged is not model.base_model.model
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        assert torch.allclose(merged.eval()(input_ids=ids).logits, adapted, atol=1e-5)
    assert unwrap_for_saving(model, merge=False) is model  # lora.merge=false: the adapter is saved as it is
