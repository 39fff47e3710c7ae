"""Device and precision: ``train.device`` and ``train.precision`` resolved once, checked against the machine."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from pretune import runtime
from pretune.cli import main
from pretune.config import config_from_dict
from pretune.errors import ConfigError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


def test_auto_picks_the_device_and_the_precision_it_runs_natively():
    rt = runtime.resolve("auto", "auto")
    assert rt.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if rt.device.type == "cpu":
        assert rt.precision == ("bf16" if runtime.cpu_runs_bf16() else "fp32")
    assert runtime.resolve("cpu", "fp32").precision == "fp32"
    assert runtime.resolve("cpu", "fp16").scaler() is not None and runtime.resolve("cpu", "bf16").scaler() is None


def test_the_cpu_flag_decides_bf16(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_runs_bf16", lambda: False)
    assert runtime.resolve("cpu", "auto").precision == "fp32"
    monkeypatch.setattr(runtime, "cpu_runs_bf16", lambda: True)
    assert runtime.resolve("cpu", "auto").precision == "bf16"


def test_autocast_runs_in_the_chosen_precision():
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)
    with runtime.resolve("cpu", "bf16").autocast():
        assert layer(x).dtype == torch.bfloat16
    with runtime.resolve("cpu", "fp32").autocast():
        assert layer(x).dtype == torch.float32


@no_cuda
def test_cuda_on_a_machine_without_it_is_a_one_line_error(tiny_bert, sentiment_csv, tmp_path, capsys):
    with pytest.raises(ConfigError, match="torch sees no CUDA device on this machine"):
        runtime.resolve("cuda:1", "auto")
    out = tmp_path / "run"
    assert main(["fit", "--model", str(tiny_bert), "--train", str(sentiment_csv), "--output", str(out),
                 "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pretune fit: error: train.device=cuda, but torch sees no CUDA device") and "\n" not in err
    assert not out.exists()


def test_bad_names_and_the_old_bf16_key_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="train.device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"):
        runtime.resolve("gpu", "auto")
    with pytest.raises(ConfigError, match="train.precision: expected one of auto, fp32, bf16, fp16, got 'half'"):
        config_from_dict({"train": {"precision": "half"}})
    with pytest.raises(ConfigError, match=r"train.bf16 was replaced by train.precision \(auto, fp32, bf16 or fp16"):
        config_from_dict({"train": {"bf16": True}})
    with pytest.raises(ConfigError, match="model.attn_implementation: expected one of sdpa, eager, "
                                          "flash_attention_2, got 'flash'"):
        config_from_dict({"model": {"attn_implementation": "flash"}})


@no_cuda
def test_flash_attention_without_a_gpu_is_refused_before_loading(tiny_bert, sentiment_csv, tmp_path):
    import pretune

    cfg = tiny_config(tiny_bert, sentiment_csv, tmp_path / "run")
    cfg["model"]["attn_implementation"] = "flash_attention_2"
    with pytest.raises(ConfigError, match="flash_attention_2 needs a CUDA GPU; use sdpa"):
        pretune.fit(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_the_attention_implementation_reaches_the_model_and_the_results(attention, tiny_bert, sentiment_csv,
                                                                       tmp_path):
    import json

    import pretune

    cfg = tiny_config(tiny_bert, sentiment_csv, tmp_path / "run", train={"max_steps": 2})
    cfg["model"]["attn_implementation"] = attention
    result = pretune.fit(cfg)
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert (saved["device"], saved["precision"]) == ("cpu", "fp32")
    from pretune.models import load_finetuned

    model, _, _ = load_finetuned(result.model_dir, attn_implementation=attention)
    assert model.config._attn_implementation == attention
