"""The recipe a run gets for the train settings it leaves unset: chosen by the model's family, size and method."""

from __future__ import annotations

import pytest
import yaml

import pretune
from pretune.config import as_config
from pretune.search.plan import make_plan
from pretune.train import defaults

from conftest import make_tiny_bert, tiny_config


def _unset(cfg: dict) -> dict:
    """``cfg`` with the recipe's four settings removed, as a user who sets none of them writes it."""
    train = {k: v for k, v in cfg["train"].items() if k not in defaults.KEYS}
    return dict(cfg, train=train)


@pytest.mark.parametrize(("family", "method", "recipe"), [
    ("bert", "full", "small-encoder"), ("roberta", "full", "small-encoder"), ("deberta-v2", "full", "small-encoder"),
    ("bert", "lora", "small-encoder-lora"), ("bert", "freeze", "small-encoder-freeze"), ("bert", "bitfit", "generic"),
    ("llama", "full", "generic"),
    ("llama", "lora", "generic"), ("qwen2", "full", "generic")])
def test_the_recipe_follows_the_family_and_the_method(family_dir, family, method, recipe, tmp_path):
    cfg = as_config({"model": {"path": str(family_dir(family))}, "method": {"name": method},
                     "output": str(tmp_path / "o")})
    assert defaults.fill(cfg).recipe.name == recipe
    assert {k: getattr(cfg.train, k) for k in defaults.KEYS} == defaults.choose(
        defaults.ModelShape(encoder=recipe.startswith("small-encoder"), hidden=32), method).values


@pytest.mark.parametrize(("family", "method", "shape"), [
    ("bert", "lora", (16, 32, ["all-linear"])), ("bert", "full", (16, 32, ["all-linear"])),
    ("llama", "lora", (8, 16, ["auto"]))])
def test_the_adapter_follows_the_model_whatever_the_method(family_dir, family, method, shape, tmp_path):
    """A small encoder's LoRA recipe sets the adapter too; filled for every method, so a search that draws LoRA
    from a full run trains the adapter ``fit --method lora`` would. A value the user set is kept."""
    cfg = as_config({"model": {"path": str(family_dir(family))}, "method": {"name": method},
                     "output": str(tmp_path / "o")})
    filled = defaults.fill(cfg)
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.target_modules) == shape
    assert ("lora.r" in filled.describe()) == (method == "lora")  # named only when the run trains an adapter
    own = as_config({"model": {"path": str(family_dir(family))}, "lora": {"r": 4, "target_modules": ["query"]},
                     "output": str(tmp_path / "o")})
    defaults.fill(own)
    assert (own.lora.r, own.lora.alpha, own.lora.target_modules) == (4, shape[1], ["query"])


def test_a_base_sized_encoder_and_an_unknown_model_get_the_generic_recipe():
    assert defaults.choose(defaults.ModelShape(encoder=True, hidden=768), "full") is defaults.GENERIC
    assert defaults.choose(defaults.ModelShape(encoder=True, hidden=384), "full") is defaults.SMALL_ENCODER
    assert defaults.choose(None, "full") is defaults.GENERIC


def test_values_the_user_set_are_kept_and_the_rest_filled(tiny_bert, tmp_path):
    cfg = as_config({"model": {"path": str(tiny_bert)}, "train": {"lr": 1e-3, "warmup": 0.0},
                     "output": str(tmp_path / "o")})
    assert defaults.fill(cfg).recipe is defaults.SMALL_ENCODER
    assert (cfg.train.lr, cfg.train.warmup, cfg.train.weight_decay, cfg.train.layer_lr_decay) == (1e-3, 0.0, 0.0, 0.8)
    assert defaults.fill(cfg) is None  # nothing left to fill


def test_a_bare_train_config_builds_the_optimizer_with_the_generic_recipe():
    from torch import nn

    from pretune.config import TrainConfig
    from pretune.train import build_optimizer

    opt = build_optimizer(nn.Linear(2, 2), TrainConfig())
    assert {g["lr"] for g in opt.param_groups} == {defaults.GENERIC.values["lr"]}


@pytest.mark.slow
def test_fit_records_the_recipe_in_its_config_and_resumes_with_it(sentiment_csv, tmp_path):
    model = make_tiny_bert(tmp_path / "model", hidden=64)
    cfg = _unset(tiny_config(model, sentiment_csv, tmp_path / "run", train={"epochs": 1}))
    result = pretune.fit(cfg)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())["train"]
    assert {k: saved[k] for k in defaults.KEYS} == defaults.SMALL_ENCODER.values
    # The same settings again, on a run not marked finished: it is recognised as the run config.yaml records (not
    # "started with another config") and resumes from its last checkpoint to the same model.
    (result.run_dir / "results.json").unlink()
    assert pretune.fit(cfg, resume=True).eval == result.eval


def test_trial_one_of_a_search_is_what_fit_would_train(tiny_bert, sentiment_csv, tmp_path):
    cfg = _unset(tiny_config(tiny_bert, sentiment_csv, tmp_path / "s"))
    cfg["search"] = {"n_trials": 4, "portfolio": "none"}
    plan = make_plan(as_config(cfg))
    source, values = plan.start[0]
    assert source == "default"
    assert (values["train.lr"], values["train.layer_lr_decay"], values["train.warmup"]) == (3e-4, 0.8, 0.1)
    assert plan.base["train"]["weight_decay"] == 0.0


def test_validate_prints_the_values_fit_will_use(tiny_bert, tmp_path, capsys):
    from pretune.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(f"model: {{path: {tiny_bert}}}\ntrain: {{lr: 1.0e-4}}\n")
    assert main(["validate", str(config)]) == 0
    train = yaml.safe_load(capsys.readouterr().out)["train"]
    assert (train["lr"], train["layer_lr_decay"], train["warmup"], train["weight_decay"]) == (1e-4, 0.8, 0.1, 0.0)
    config.write_text("model: {path: no/such-model}\n")
    assert main(["validate", str(config)]) == 0
    captured = capsys.readouterr()
    assert yaml.safe_load(captured.out)["train"]["lr"] is None and "left to fit" in captured.err
