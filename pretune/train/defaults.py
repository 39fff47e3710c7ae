"""The training settings a run gets when it sets none: a recipe chosen by the model's family and size and the
method, from evidence.

Four training settings depend on the recipe: ``train.lr``, ``train.warmup``, ``train.weight_decay`` and
``train.layer_lr_decay``; and the LoRA recipe sets the adapter's shape: ``lora.r``, ``lora.alpha`` and
``lora.target_modules``. Left unset (``None``) in the config, ``fill`` sets them from the first recipe that
matches (the adapter's shape from the LoRA recipe for the model, whatever the run's method, so that a search
that draws LoRA trains the same adapter as ``pretune fit --method lora``); a value the user set is kept. The
filled values are what ``config.yaml`` records and what a search's trial 1 (the default configuration) runs.

The recipes and their evidence:

``small-encoder`` (an encoder such as BERT, MiniLM or ELECTRA with hidden size 512 or less, full fine-tuning):
    lr 3e-4, layer-wise lr decay 0.8, 10% warmup, no weight decay: ELECTRA-small's GLUE and SQuAD recipe (Clark
    et al., 2020). In the portfolio's score matrix (``benchmarks/portfolio/matrix.csv``: all-MiniLM-L6-v2, 8 tasks
    on 2,000-row subsets, 3 epochs, batch 32) it beat the generic recipe below on 7 of 8 tasks: Banking77 0.636
    against 0.452, Emotion 0.874 against 0.658, STS-B 0.826 against 0.824, TREC 0.922 against 0.898; TweetEval
    irony was the exception, 0.714 against 0.728 (see docs/search.md).
``small-encoder-lora`` (the same models, LoRA):
    lr 5e-4, the generic recipe's other values: the LoRA paper's learning rate for RoBERTa-base on GLUE (Hu et
    al., 2021; an adapter starts at zero and needs a larger step). In the matrix (LoRA r 8, alpha 16 on query and
    value) it beat the generic 5e-5 on 7 of 8 tasks: TREC 0.786 against 0.258, SST-2 0.786 against 0.532,
    Banking77 0.350 against 0.016; on MRPC both predicted the majority class. 5e-5 barely moves the adapters in
    3 epochs of 2,000 rows.
    The adapter: r 16, alpha 32 on every Linear layer of the body (``all-linear``) rather than peft's query and
    value at r 8. In the matrix (c06 against c05, all else equal) it was better on 7 of 8 tasks, by 3.8 (SST-2)
    to 22.8 points (Emotion): MRPC 0.770 against 0.684 (the majority class), SICK 0.830 against 0.663, TweetEval
    irony 0.720 against 0.628, STS-B 0.823 against 0.734 (before a new regression head started at the targets'
    mean, 0.033 against 0.287); level on Banking77 (0.344 against 0.350). On TweetEval offensive (2,000 rows,
    2 epochs, not a matrix task) query and value answered the majority class (accuracy 0.653, MCC 0) and every
    Linear layer reached 0.773 (MCC 0.50), level with full fine-tuning's 0.778. It trains 9x the parameters
    (664,322 with the head, 2.8% of MiniLM, against 74,498) and its epochs took 1.7x as long there. Full
    fine-tuning stays the default method: it is the better bet on a 6-layer encoder.
``small-encoder-freeze`` (the same models, the head and top layers trained):
    lr 1e-4, the generic recipe's other values. In the matrix (the top 2 of 6 layers) it beat the generic 5e-5 on
    7 of 8 tasks: STS-B 0.694 against 0.571, Emotion 0.688 against 0.566, TREC 0.876 against 0.832; MRPC was the
    exception, 0.703 against 0.706. Whether a still higher rate is better is not measured.
``generic`` (every other model and method):
    lr 5e-5, 6% warmup, weight decay 0.01, no layer-wise decay: the top of the BERT paper's grid (2e-5 to 5e-5) and
    the Hugging Face Trainer's own lr and weight-decay range. No measurement of pretune's yet says better for larger
    encoders, decoders or adapters; the matrix can be extended with those models to learn their recipes.

Data size does not enter yet: every matrix task was a 2,000-row subset, so the evidence says nothing about it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Optional

from ..config import LoraConfig, RunConfig, TrainConfig

KEYS = ("lr", "warmup", "weight_decay", "layer_lr_decay")  # train.<key>
LORA_KEYS = ("r", "alpha", "target_modules")  # lora.<key>: the adapter's shape
SMALL_HIDDEN = 512  # ELECTRA-small is 256, MiniLM-L6 and L12 384; BERT-base and up are 768 or more


@dataclass(frozen=True)
class Recipe:
    name: str
    values: dict[str, float]  # train.<key>
    evidence: str
    lora: Optional[dict[str, Any]] = None  # lora.<key>, for a LoRA recipe: the adapter's shape


GENERIC = Recipe("generic", {"lr": 5e-5, "warmup": 0.06, "weight_decay": 0.01, "layer_lr_decay": 1.0},
                 "the BERT paper's grid; no measurement of pretune's for this model and method yet")
SMALL_ENCODER = Recipe("small-encoder", {"lr": 3e-4, "warmup": 0.1, "weight_decay": 0.0, "layer_lr_decay": 0.8},
                       "ELECTRA-small's recipe; beat the generic one on 7 of 8 tasks in benchmarks/portfolio")
SMALL_ENCODER_LORA = Recipe("small-encoder-lora",
                            {"lr": 5e-4, "warmup": 0.06, "weight_decay": 0.01, "layer_lr_decay": 1.0},
                            "LoRA at 5e-4 beat the generic 5e-5 on 7 of 8 tasks in benchmarks/portfolio (tied on "
                            "the 8th), and r 16 on every Linear layer beat r 8 on query and value on 7 of 8",
                            lora={"r": 16, "alpha": 32, "target_modules": ["all-linear"]})
SMALL_ENCODER_FREEZE = Recipe("small-encoder-freeze",
                              {"lr": 1e-4, "warmup": 0.06, "weight_decay": 0.01, "layer_lr_decay": 1.0},
                              "the top layers at 1e-4 beat the generic 5e-5 on 7 of 8 tasks in benchmarks/portfolio")
SMALL_ENCODER_RECIPES = {"full": SMALL_ENCODER, "lora": SMALL_ENCODER_LORA, "freeze": SMALL_ENCODER_FREEZE}  # by method


@dataclass(frozen=True)
class ModelShape:
    """What a recipe is chosen by: an encoder or not, and the hidden size (None where the config has none); and
    the number of transformer blocks, which bounds what a search may draw for ``method.train_top_layers``."""
    encoder: bool
    hidden: Optional[int]
    layers: Optional[int] = None


def choose(shape: Optional[ModelShape], method: str) -> Recipe:
    """The recipe for a model of ``shape`` (None: unknown) tuned with ``method``."""
    if shape is not None and shape.encoder and shape.hidden is not None and shape.hidden <= SMALL_HIDDEN:
        return SMALL_ENCODER_RECIPES.get(method, GENERIC)
    return GENERIC


@functools.lru_cache(maxsize=16)
def _shape_of(path: str, trust_remote_code: bool) -> Optional[ModelShape]:
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    from ..models.sources import is_gguf

    if is_gguf(path):  # GGUF files hold decoder LLMs; reading their metadata here would cost seconds
        return ModelShape(encoder=False, hidden=None)
    try:
        hf_cfg = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None  # the model's own loading says what is wrong with it
    archs = " ".join(getattr(hf_cfg, "architectures", None) or [])
    decoder = "CausalLM" in archs or "LMHead" in archs or bool(getattr(hf_cfg, "is_decoder", False))
    encoder = hf_cfg.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not decoder
    hidden = getattr(hf_cfg, "hidden_size", None)
    layers = getattr(hf_cfg, "num_hidden_layers", None)  # every family's config maps its own name to this one
    return ModelShape(encoder=encoder, hidden=int(hidden) if isinstance(hidden, int) else None,
                      layers=int(layers) if isinstance(layers, int) else None)


def model_shape(cfg: RunConfig) -> Optional[ModelShape]:
    """The shape of ``cfg``'s model, read from its config (None where there is no model path, or its config cannot
    be read: the model's own loading then says what is wrong with it)."""
    from ..errors import PretuneError
    from ..models.sources import resolve_model_path

    if not cfg.model.path:
        return None
    try:
        path = resolve_model_path(cfg.model.path, cfg.model.allow_pickle, cfg.model.trust_remote_code)
    except PretuneError:
        return None
    return _shape_of(str(path), cfg.model.trust_remote_code)


def missing(train: TrainConfig) -> list[str]:
    return [k for k in KEYS if getattr(train, k) is None]


def missing_lora(lora: LoraConfig) -> list[str]:
    return [k for k in LORA_KEYS if getattr(lora, k) is None]


def lora_shape(shape: Optional[ModelShape]) -> dict[str, Any]:
    """The adapter's shape (``lora.r``, ``alpha``, ``target_modules``) for a model of ``shape``."""
    from ..models.methods import PLAIN_LORA  # r 8, alpha 16 on peft's targets for the architecture (auto)

    return choose(shape, "lora").lora or PLAIN_LORA


@dataclass(frozen=True)
class Filled:
    """What ``fill`` set: the recipe and the train keys it filled; the LoRA keys and the values they got."""
    recipe: Recipe
    keys: tuple[str, ...]
    lora: tuple[tuple[str, Any], ...] = ()
    method: str = "full"

    def describe(self) -> str:
        shown = [f"{k} {self.recipe.values[k]:g}" for k in self.keys]
        if self.method in ("lora", "qlora"):  # the adapter's shape matters only when there is an adapter
            shown += [f"lora.{k} {','.join(v) if isinstance(v, list) else v}" for k, v in self.lora]
        return f"train defaults ({self.recipe.name} recipe: {self.recipe.evidence}): {', '.join(shown)}"


def fill(cfg: RunConfig) -> Optional[Filled]:
    """Set the recipe's values on the train settings ``cfg`` leaves unset (in place); returns what was filled, or
    None when every setting was set. ``cfg.model.path`` should already be a local folder or GGUF file (a Hub id
    is read from the cache, like any model). Nothing is logged: ``fit`` logs ``Filled.describe()`` once the run's
    inputs are checked, so that bad input stays a one-line error."""
    unset, unset_lora = missing(cfg.train), missing_lora(cfg.lora)
    if not unset and not unset_lora:
        return None
    shape = _shape_of(str(cfg.model.path), cfg.model.trust_remote_code) if cfg.model.path else None
    filled = Filled(choose(shape, cfg.method.name), tuple(unset), _set_lora(cfg, shape), cfg.method.name)
    for key in unset:
        setattr(cfg.train, key, filled.recipe.values[key])
    return filled


def _set_lora(cfg: RunConfig, shape: Optional[ModelShape]) -> tuple[tuple[str, Any], ...]:
    """Set the LoRA keys ``cfg`` leaves unset from the model's LoRA recipe; returns (key, value) of those set."""
    adapter = lora_shape(shape)
    out = tuple((k, adapter[k]) for k in missing_lora(cfg.lora))
    for key, v in out:
        setattr(cfg.lora, key, list(v) if isinstance(v, list) else v)  # a copy: configs never share a list
    return out


def fill_config(cfg: RunConfig) -> Optional[Filled]:
    """``fill`` for a config whose model path may still be a Hub id or a packaged name (``minilm``): the path is
    resolved first, as ``fit`` resolves it (a Hub id from the cache, or a ``ModelError``), and kept resolved."""
    from ..models.sources import resolve_model_path

    if not missing(cfg.train) and not missing_lora(cfg.lora):
        return None
    if cfg.model.path:
        cfg.model.path = resolve_model_path(cfg.model.path, cfg.model.allow_pickle, cfg.model.trust_remote_code)
    return fill(cfg)


def value(train: TrainConfig, key: str) -> Any:
    """``train.<key>``, or the generic recipe's where a bare ``TrainConfig`` (no model known) left it unset."""
    got = getattr(train, key)
    return GENERIC.values[key] if got is None else got
