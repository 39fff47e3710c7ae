"""Search space: parsing, conditional sampling, and one-line errors for bad declarations."""

from __future__ import annotations


import optuna
import pytest

from pretune.errors import ConfigError
from pretune.search.space import DEFAULT_SPACE, grid_values, parse_space, suggest, to_overrides

SPACE = {
    "train.lr": {"type": "float", "low": "1e-5", "high": "1e-3", "log": True},  # YAML 1.1 gives strings
    "train.warmup": {"type": "float", "low": 0.0, "high": 0.2},
    "train.epochs": {"type": "int", "low": 1, "high": 3},
    "train.batch_size": [16, 32],
    "method.name": {"type": "categorical", "choices": ["full", "lora", "freeze"]},
    "lora.r": {"type": "int", "low": 4, "high": 32, "log": True, "when": {"method.name": "lora"}},
    "lora.target_modules": {"choices": [["query", "value"], ["query", "key", "value"]],
                            "when": {"method.name": ["lora"]}},
    "method.train_top_layers": {"type": "int", "low": 1, "high": 2, "when": {"method.name": "freeze"}},
}


def sample_many(space, n=60, seed=0):
    params = parse_space(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(suggest(trial, params))
        study.tell(trial, 0.0)
    return out


def test_conditional_params_appear_only_under_their_method():
    samples = sample_many(SPACE)
    methods = {s["method.name"] for s in samples}
    assert methods == {"full", "lora", "freeze"}
    for s in samples:
        assert ("lora.r" in s) == (s["method.name"] == "lora")
        assert ("lora.target_modules" in s) == (s["method.name"] == "lora")
        assert ("method.train_top_layers" in s) == (s["method.name"] == "freeze")


def test_ranges_types_and_log_scale():
    samples = sample_many(SPACE, n=80)
    lrs = [s["train.lr"] for s in samples]
    assert all(1e-5 <= lr <= 1e-3 for lr in lrs)
    # Log scale: about half the draws fall below the geometric midpoint 1e-4 (linear would give ~9%).
    below = sum(lr < 1e-4 for lr in lrs) / len(lrs)
    assert 0.3 < below < 0.7
    assert all(isinstance(s["train.epochs"], int) and 1 <= s["train.epochs"] <= 3 for s in samples)
    assert {s["train.batch_size"] for s in samples} == {16, 32}
    # List choices travel as comma strings, which the config turns back into lists.
    assert {s["lora.target_modules"] for s in samples if "lora.r" in s} <= {"query,value", "query,key,value"}


def test_same_seed_same_samples():
    assert sample_many(SPACE, n=10, seed=3) == sample_many(SPACE, n=10, seed=3)
    assert sample_many(SPACE, n=10, seed=3) != sample_many(SPACE, n=10, seed=4)


def test_default_space_is_valid_and_conditional():
    params = parse_space(None)
    assert set(params) == set(DEFAULT_SPACE)
    assert params["lora.r"].when == {"method.name": ("lora",)}
    assert params["method.train_top_layers"].when == {"method.name": ("freeze",)}


def test_to_overrides_nests_dotted_keys():
    assert to_overrides({"train.lr": 1e-4, "lora.r": 8}) == {"train": {"lr": 1e-4}, "lora": {"r": 8}}


def test_grid_values_enumerates_ints_and_rejects_continuous_floats():
    grid = grid_values(parse_space({"train.epochs": {"type": "int", "low": 1, "high": 3},
                                    "train.batch_size": [16, 32]}))
    assert grid == {"train.epochs": [1, 2, 3], "train.batch_size": [16, 32]}
    with pytest.raises(ConfigError, match="give search.space.train.lr a step"):
        grid_values(parse_space({"train.lr": {"type": "float", "low": 1e-5, "high": 1e-3}}))


@pytest.mark.parametrize("space, message", [
    ({}, "search.space is empty"),
    ({"train.nope": [1, 2]}, "unknown config key 'train.nope'; valid here: train.epochs"),
    ({"output": [1, 2]}, "unknown config key 'output'"),
    ({"search.n_trials": [1, 2]}, "unknown config key 'search.n_trials'"),
    ({"train.lr": {"type": "float", "low": 1e-3, "high": 1e-5}}, "low must be <= high"),
    ({"train.lr": {"type": "float", "low": 0, "high": 1e-3, "log": True}}, "log scale needs low > 0"),
    ({"train.lr": {"type": "float", "low": "abc", "high": 1e-3}}, "expected a number, got 'abc'"),
    ({"train.lr": {"type": "normal", "low": 1, "high": 2}}, "expected one of float, int, categorical"),
    ({"train.batch_size": {"type": "categorical", "choices": []}}, "expected a non-empty list"),
    ({"train.epochs": {"type": "int", "low": 1.5, "high": 3}}, "needs whole bounds"),
    ({"lora.r": {"type": "int", "low": 4, "high": 8, "when": {"method.name": "lora"}}},
     "'method.name' is not in the space"),
    ({"method.name": ["full", "freeze"], "lora.r": {"choices": [4, 8], "when": {"method.name": "lora"}}},
     "method.name can never be ['lora']"),
    ({"lora.r": {"choices": [4], "when": {"lora.alpha": 8}}, "lora.alpha": {"choices": [8], "when": {"lora.r": 4}}},
     "cycle"),
    ({"train.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "bogus": 1}}, "unknown field(s) ['bogus']"),
])
def test_bad_space_is_one_line_error_naming_the_fix(space, message):
    with pytest.raises(ConfigError) as e:
        parse_space(space)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_all_problems_reported_together():
    with pytest.raises(ConfigError) as e:
        parse_space({"train.nope": [1], "train.lr": {"type": "float", "low": 1, "high": 0}})
    assert "train.nope" in str(e.value) and "low must be <= high" in str(e.value)
