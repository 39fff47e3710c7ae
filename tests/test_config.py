import pytest

from pretune.config import config_from_dict, load_config, parse_overrides
from pretune.errors import ConfigError


def test_overrides_are_typed_and_nested():
    cfg = load_config(overrides=["train.lr=3e-5", "lora.r=16", "lora.target_modules=query,value",
                                 "train.precision=bf16", "data.text_pair=null"])
    assert cfg.train.lr == pytest.approx(3e-5)
    assert cfg.lora.r == 16
    assert cfg.lora.target_modules == ["query", "value"]
    assert cfg.train.precision == "bf16" and cfg.data.text_pair is None


def test_yaml_then_flags_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n  epochs: 2\nmethod:\n  name: lora\n")
    cfg = load_config(path, ["train.epochs=5"], extra={"train": {"lr": 0.01}})
    assert (cfg.train.lr, cfg.train.epochs, cfg.method.name) == (0.01, 5.0, "lora")


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'train.lrr'.*valid keys here: train.epochs.*train.lr"):
        config_from_dict({"train": {"lrr": 1}})
    with pytest.raises(ConfigError, match=r"unknown key 'modle'"):
        config_from_dict({"modle": {}})


def test_wrong_type_and_bad_value_are_named():
    with pytest.raises(ConfigError, match=r"train.batch_size: expected int, got 'big'"):
        config_from_dict({"train": {"batch_size": "big"}})
    with pytest.raises(ConfigError, match=r"method.name: expected one of full, freeze, bitfit, lora, qlora, got 'q'"):
        config_from_dict({"method": {"name": "q"}})
    with pytest.raises(ConfigError, match=r"train.lr: must be > 0"):
        config_from_dict({"train": {"lr": -1}})
    with pytest.raises(ConfigError, match=r"train.ema_decay: must be in \[0, 1\) \(0 disables\), got 1.0"):
        config_from_dict({"train": {"ema_decay": 1}})


def test_all_problems_reported_together():
    with pytest.raises(ConfigError) as e:
        config_from_dict({"train": {"lrr": 1, "batch_size": "x"}})
    assert "train.lrr" in str(e.value) and "train.batch_size" in str(e.value)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["train.lr"])


def test_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(overrides=["train.lr=1e-4", "method.name=bitfit"])
    path = tmp_path / "saved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: not valid YAML"):
        load_config(path)
