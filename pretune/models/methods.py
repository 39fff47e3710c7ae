"""Tuning methods: which parameters train. A registry of plain functions.

Each method takes a freshly loaded model and the run config, sets
``requires_grad`` (or wraps the model, for LoRA) and returns the model to train.
``unwrap_for_saving`` turns the trained model back into a plain ``transformers``
model (merging a LoRA adapter when asked).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Callable, Optional

from torch import nn

from .. import tasks
from ..config import RunConfig
from ..errors import ConfigError

METHODS: dict[str, Callable[[nn.Module, RunConfig], nn.Module]] = {}


def register(name: str):
    def deco(fn):
        METHODS[name] = fn
        return fn
    return deco


def apply_method(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """Apply ``cfg.method.name``; an unknown name lists the valid ones."""
    try:
        fn = METHODS[cfg.method.name]
    except KeyError:
        raise ConfigError(f"method.name: unknown method {cfg.method.name!r}; choose one of "
                          f"{', '.join(METHODS)}") from None
    return fn(model, cfg)


# ------------------------------------------------------------------ model anatomy


def encoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The stack of transformer blocks: the longest ``ModuleList`` (prefix, module)."""
    best = ("", None)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and (best[1] is None or len(mod) > len(best[1])):
            best = (name, mod)
    if best[1] is None:
        raise ConfigError(f"cannot find the transformer layers of {type(model).__name__}")
    return best


def head_parameter_names(model: nn.Module) -> set[str]:
    """Parameters outside the pretrained body (classifier, score) plus a pooler feeding it."""
    prefix = getattr(model, "base_model_prefix", "")
    names = set()
    for name, _ in model.named_parameters():
        if not (prefix and name.startswith(prefix + ".")) or ".pooler." in name:
            names.add(name)
    return names


def layer_index(name: str, layers_prefix: str, n_layers: int) -> int:
    """0 for embeddings, 1..n for block i-1, n+1 for everything after (final norm, pooler, head)."""
    m = re.match(re.escape(layers_prefix) + r"\.(\d+)\.", name)
    if m:
        return int(m.group(1)) + 1
    if "embed" in name:  # embeddings, embed_tokens, tok_embeddings, DeBERTa's rel_embeddings
        return 0
    parent = layers_prefix.rpartition(".")[0]
    if parent and name.startswith(parent + ".LayerNorm."):
        return 0  # DeBERTa's encoder.LayerNorm normalises the relative position embeddings every layer reads
    return n_layers + 1


def is_no_decay(model: nn.Module) -> set[str]:
    """Biases and normalisation weights: no weight decay for these (decoupled AdamW convention)."""
    names = set()
    for mod_name, mod in model.named_modules():
        is_norm = "norm" in type(mod).__name__.lower() or isinstance(mod, (nn.LayerNorm, nn.GroupNorm))
        for p_name, _ in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if is_norm or p_name == "bias" or p_name.endswith("bias"):
                names.add(full)
    return names


# ------------------------------------------------------------------ methods


@register("full")
def full(model: nn.Module, cfg: RunConfig) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


@register("freeze")
def freeze(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """Train the head plus the top ``method.train_top_layers`` blocks; freeze the rest."""
    prefix, layers = encoder_layers(model)
    k = cfg.method.train_top_layers
    if k > len(layers):
        raise ConfigError(f"method.train_top_layers: the model has {len(layers)} layers, got {k}")
    head = head_parameter_names(model)
    top = {f"{prefix}.{i}." for i in range(len(layers) - k, len(layers))}
    for name, p in model.named_parameters():
        p.requires_grad_(name in head or any(name.startswith(t) for t in top))
    return model


@register("bitfit")
def bitfit(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """Train only bias terms (Ben Zaken et al., 2021) and the head."""
    head = head_parameter_names(model)
    if not any(name.endswith("bias") for name, _ in model.named_parameters() if name not in head):
        # Llama and ModernBERT have no bias terms at all: BitFit would train the head alone
        raise ConfigError(f"method bitfit: model type {model_type(model)!r} has no bias terms in its body; "
                          "use method lora or freeze")
    for name, p in model.named_parameters():
        p.requires_grad_(name in head or name.endswith("bias"))
    return model


# The adapter's shape where the config leaves it unset: fit fills it first from the model's LoRA recipe
# (``pretune.train.defaults``), so this is for a config applied directly (``apply_method``)
PLAIN_LORA = {"r": 8, "alpha": 16, "target_modules": ["auto"]}


@register("lora")
def lora(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """Low-rank adapters through ``peft``; a new head (a classifier's) stays fully trainable, a pretrained one (a
    language model's) stays as it is.

    ``lora.target_modules``: None or ``[auto]`` (the architecture's default, see ``lora_targets``),
    ``[all-linear]`` (every Linear layer of the body) or explicit module names.
    """
    from peft import LoraConfig, TaskType

    lc = replace(cfg.lora, **{k: v for k, v in PLAIN_LORA.items() if getattr(cfg.lora, k) is None})
    targets = lora_targets(model, lc.target_modules)
    own_head = tasks.get(getattr(model.config, "pretune_task", None) or "classification").pretrained_head
    peft_cfg = LoraConfig(task_type=TaskType.CAUSAL_LM if own_head else TaskType.SEQ_CLS, r=lc.r,
                          lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=targets, use_dora=lc.use_dora,
                          modules_to_save=None if own_head else _head_modules(model))
    try:
        return wrap_peft(model, peft_cfg)
    except ValueError as e:
        raise ConfigError(f"lora: {str(e).splitlines()[0]}; available Linear names: "
                          f"{', '.join(sorted(linear_module_names(model)))}") from None


def wrap_peft(model: nn.Module, peft_cfg) -> nn.Module:
    """``peft.get_peft_model``, without the FutureWarning it makes transformers 5 raise on every call (peft reads
    the deprecated ``is_gradient_checkpointing``): noise a user can do nothing about."""
    import warnings

    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
        return get_peft_model(model, peft_cfg)


@register("qlora")
def qlora(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """LoRA on a base whose Linear weights were loaded as 4-bit NF4 with double quantization (Dettmers et al.,
    2023; ``load_for_task(..., four_bit_on=device)``): the frozen base takes about a quarter of its bf16 memory
    and the adapters and a new head train in full precision (``prepare_model_for_kbit_training`` freezes the
    base, norms included, and casts the norms to fp32). ``check_qlora`` refuses it before
    anything loads where it cannot run."""
    from peft import prepare_model_for_kbit_training

    if not getattr(model, "is_loaded_in_4bit", False):
        raise ConfigError("method qlora: the model was not loaded in 4 bits; load it with "
                          "load_for_task(..., four_bit_on=device)")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    return lora(model, cfg)


def check_qlora(device, distributed: str = "ddp") -> None:
    """Raise a one-line ``ConfigError`` unless method qlora can run on ``device`` (a ``torch.device``)."""
    import importlib.util

    if device.type != "cuda":
        raise ConfigError(f"method qlora: a 4-bit base (bitsandbytes) needs a CUDA GPU and this run is on "
                          f"{device.type}; use method lora, the same adapters on an unquantized base")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("method qlora needs the bitsandbytes package (pip install bitsandbytes); "
                          "or use method lora")
    if distributed == "fsdp":
        raise ConfigError("method qlora does not shard: 4-bit weights cannot be split by FSDP here; "
                          "use train.distributed=ddp")


AUTO, ALL_LINEAR = "auto", "all-linear"


def lora_targets(model: nn.Module, wanted: Optional[list[str]] = None) -> list[str]:
    """The module names LoRA adapts.

    Args:
        wanted: ``lora.target_modules``. None or ``[auto]``: peft's per-architecture list (e.g. BERT's
            query/value, Llama's q_proj/v_proj) when this model has those layers, else every Linear of
            the body; ``[all-linear]``: every Linear of the body; otherwise the names as given.

    Raises:
        ConfigError: explicit names that match no Linear layer (the message lists the available ones).
    """
    available = linear_module_names(model)
    if wanted and list(wanted) not in ([AUTO], [ALL_LINEAR]):
        if not any(t in available for t in wanted):
            raise ConfigError(f"lora.target_modules: {list(wanted)} match no Linear layer; available Linear names: "
                              f"{', '.join(sorted(available))}")
        return list(wanted)
    if not wanted or list(wanted) == [AUTO]:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

        known = PEFT_DEFAULTS.get(model_type(model))
        if known and all(t in available for t in known):
            return list(known)
    return _body_linears(model)


def _body_linears(model: nn.Module) -> list[str]:
    """Every Linear of the body as peft target names: short names, or the full name where a head Linear
    shares the short name (BERT's ``dense`` is also its pooler's), since peft matches name suffixes."""
    head = _head_module_names(model)
    linears = [name for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    head_short = {n.rsplit(".", 1)[-1] for n in linears if n in head}
    body = [n for n in linears if n not in head]
    return sorted({n.rsplit(".", 1)[-1] if n.rsplit(".", 1)[-1] not in head_short else n for n in body})


def model_type(model: nn.Module) -> str:
    """``config.model_type`` of a model (bare or inside a peft wrapper), else its class name."""
    return getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__


def _head_module_names(model: nn.Module) -> set[str]:
    """Modules of the head, the language-model head included: ``named_parameters`` lists a weight tied to the
    input embeddings (SmolLM2's ``lm_head``) once, under the embeddings' name, so it is found by identity."""
    head = {n.rsplit(".", 1)[0] for n in head_parameter_names(model)}
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None:
        head |= {name for name, mod in model.named_modules() if mod is out}
    return head


def linear_module_names(model: nn.Module) -> set[str]:
    """Short names of the Linear layers in the body (what ``target_modules`` can match)."""
    head = _head_module_names(model)
    return {name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and name not in head}


def _head_modules(model: nn.Module) -> list[str]:
    prefix = getattr(model, "base_model_prefix", "")
    return sorted({n.split(".")[0] for n, _ in model.named_parameters()
                   if not (prefix and n.startswith(prefix + "."))})


def unwrap_for_saving(model: nn.Module, merge: bool = True,
                      full_precision_base: Optional[Callable[[], nn.Module]] = None) -> nn.Module:
    """A plain ``transformers`` model: LoRA merged into the weights when ``merge``.

    A 4-bit base (qlora) is not merged into: merging would round the sum back to 4 bits and the folder would load
    only on a GPU with bitsandbytes. The adapter goes instead onto ``full_precision_base()``, the same pretrained
    weights loaded unquantized, and is merged there: the usual way QLoRA adapters ship as a plain model.
    """
    if not (hasattr(model, "merge_and_unload") and merge):
        return model
    if getattr(model, "is_loaded_in_4bit", False):
        if full_precision_base is None:
            raise ConfigError("merging a 4-bit (qlora) adapter needs the unquantized base; or set lora.merge=false")
        return transplant_adapter(model, full_precision_base()).merge_and_unload()
    return model.merge_and_unload()


def transplant_adapter(peft_model: nn.Module, base: nn.Module) -> nn.Module:
    """``base`` wrapped with ``peft_model``'s adapter config and trained adapter (and saved head) weights."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    name = peft_model.active_adapter
    state = {k: v.detach().to("cpu", dtype=next(base.parameters()).dtype)
             for k, v in get_peft_model_state_dict(peft_model, adapter_name=name).items()}
    target = wrap_peft(base, peft_model.peft_config[name])
    result = set_peft_model_state_dict(target, state)
    if result.unexpected_keys:
        raise ConfigError(f"the trained adapter does not fit the unquantized base ({result.unexpected_keys[0]})")
    return target


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
