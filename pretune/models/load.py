"""Load a Hugging Face model folder (or GGUF file) safely and attach a task head.

Where the model comes from (a Hub id, a packaged name) is resolved to a local path in ``sources.py``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from safetensors import SafetensorError

from .. import tasks
from ..config import ModelConfig
from ..errors import ConfigError, ModelError
from ..tasks import TaskSpec
from .sources import (PACKAGED, as_plain_model, check_gguf_file, gguf_model_kwargs, is_gguf, packaged_minilm,
                      pretrained_args, resolve_model_path)

__all__ = ["PACKAGED", "auto_class_of", "check_model_folder", "load_finetuned", "load_for_task", "load_tokenizer",
           "packaged_minilm", "resolve_model_path", "spec_of"]

log = logging.getLogger("pretune")

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")


def check_model_folder(path: str | os.PathLike, allow_pickle: bool = False) -> Path:
    """Raise ``ModelError`` unless ``path`` is a model folder whose weights we may load, or a GGUF file.

    A GGUF file holds tensors and metadata only (no pickle, no code), so it needs no allowance.
    """
    p = Path(path)
    if is_gguf(p):
        return check_gguf_file(p)
    if not p.exists():
        raise ModelError(f"{p}: model folder not found")
    if not p.is_dir():
        raise ModelError(f"{p}: not a folder; give a Hugging Face model folder (config.json + weights)")
    if not (p / "config.json").is_file():
        raise ModelError(f"{p}: not a Hugging Face model folder (no config.json); "
                         "save one with model.save_pretrained(folder)")
    try:
        json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{p}/config.json: not valid JSON ({e})") from None
    names = {f.name for f in p.iterdir()}
    if not any(n in names for n in SAFE_WEIGHTS):
        if any(n in names for n in PICKLE_WEIGHTS):
            if not allow_pickle:
                raise ModelError(f"{p}: weights are pickle files (pytorch_model.bin), which can run code when "
                                 "loaded; convert them to safetensors, or pass --allow-pickle if you trust the source")
        else:
            raise ModelError(f"{p}: no weights found (model.safetensors or pytorch_model.bin)")
    return p


def load_tokenizer(path: str | os.PathLike, trust_remote_code: bool = False):
    """The tokenizer of a model folder, or the one a GGUF file describes in its metadata."""
    from transformers import AutoTokenizer

    where, gguf = pretrained_args(path)
    try:
        tok = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code, **gguf)
    except Exception as e:
        raise ModelError(f"{path}: cannot load a tokenizer ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if tok.pad_token is None:  # decoder models (GPT-2, Llama) ship without one
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def check_attention(name: str) -> str:
    """``model.attn_implementation``, checked: flash attention needs a GPU and the flash-attn package.

    Raises:
        ConfigError: flash_attention_2 where it cannot run.
    """
    if name == "flash_attention_2":
        import importlib.util

        import torch

        if not torch.cuda.is_available():
            raise ConfigError("model.attn_implementation=flash_attention_2 needs a CUDA GPU; use sdpa (the default)")
        if importlib.util.find_spec("flash_attn") is None:
            raise ConfigError("model.attn_implementation=flash_attention_2 needs the flash-attn package "
                              "(pip install flash-attn); or use sdpa (the default)")
    return name


def _attention_for(auto_class, hf_cfg, name: str) -> str:
    """``name``, checked; sdpa (the default) falls back to eager, with a log line, for a model without it."""
    name = check_attention(name)
    model_class = getattr(auto_class, "_model_mapping", {}).get(type(hf_cfg), None) if name == "sdpa" else None
    if model_class is not None and not getattr(model_class, "_supports_sdpa", False):
        log.info("attention: %s has no sdpa implementation in this transformers; using eager", model_class.__name__)
        return "eager"
    return name


def _auto_class(task: tasks.Task):
    import transformers

    return getattr(transformers, task.model_class)


def auto_class_of(hf_cfg):
    """The ``transformers`` auto class (``AutoModelFor...``) of the task a saved model's config records."""
    return _auto_class(tasks.get(spec_of(hf_cfg).task))


def load_for_task(cfg: ModelConfig, spec: TaskSpec, four_bit_on=None):
    """Load ``cfg.path`` with the head ``spec``'s task needs; returns (model, tokenizer).

    A head whose shape differs from the task's (e.g. a 3-class checkpoint tuned for 2 classes) is
    replaced by a freshly initialised one.

    Args:
        four_bit_on: a CUDA ``torch.device``: load the body's Linear weights as 4-bit NF4 with double quantization
            (bitsandbytes, for method qlora) straight onto it; the head stays in full precision.
    """
    from transformers import AutoConfig

    if not cfg.path:
        raise ModelError("no model: pass --model DIR (a Hugging Face model folder)")
    folder = check_model_folder(resolve_model_path(cfg.path, cfg.allow_pickle, cfg.trust_remote_code),
                                cfg.allow_pickle)
    where, gguf = pretrained_args(folder)  # a GGUF file: its folder, and gguf_file=its name
    try:
        hf_cfg = AutoConfig.from_pretrained(where, trust_remote_code=cfg.trust_remote_code, **gguf)
    except ValueError as e:
        msg = str(e).splitlines()[0]
        if "trust_remote_code" in str(e) or "custom code" in msg:  # transformers 5 names the flag on a later line
            raise ModelError(f"{folder}: the model needs its own code; pass --trust-remote-code "
                             "only if you trust the source") from None
        raise ModelError(f"{folder}: unsupported model config ({msg})") from None
    task = tasks.get(spec.task)
    attention = _attention_for(_auto_class(task), hf_cfg, cfg.attn_implementation)
    for key, value in task.head(spec).items():
        setattr(hf_cfg, key, value)
    hf_cfg.pretune_task = task.name  # saved in config.json: how predict and bench read the outputs
    if spec.settings:
        hf_cfg.pretune_settings = dict(spec.settings)  # e.g. the tag scheme the outputs are read in
    tokenizer = load_tokenizer(folder, cfg.trust_remote_code)
    if tokenizer.pad_token_id is not None and getattr(hf_cfg, "pad_token_id", None) != tokenizer.pad_token_id:
        # batches are padded with the tokenizer's id; a decoder's head finds each row's last real token by
        # the config's, so they must agree (Llama ships with neither; load_tokenizer sets pad = eos)
        hf_cfg.pad_token_id = tokenizer.pad_token_id
    try:
        model = _auto_class(task).from_pretrained(
            where, config=hf_cfg, use_safetensors=None if cfg.allow_pickle or gguf else True,
            trust_remote_code=cfg.trust_remote_code, ignore_mismatched_sizes=True, attn_implementation=attention,
            **gguf_model_kwargs(gguf), **(_four_bit(four_bit_on) if four_bit_on is not None else {}))
    except ValueError as e:
        raise ModelError(f"{folder}: cannot build a {task.model_class.removeprefix('AutoModelFor')} model for model "
                         f"type {hf_cfg.model_type!r} ({str(e).splitlines()[0][:120]}); task {task.name} needs a "
                         "model of a family that has that head") from None
    except (OSError, SafetensorError) as e:  # a missing file, or a truncated or corrupt safetensors file
        raise ModelError(f"{folder}: cannot load weights ({str(e).splitlines()[0]}); copy or download the model "
                         "again") from None
    return as_plain_model(model), tokenizer


# heads (new or pretrained) stay in full precision under 4-bit loading, as in the QLoRA recipe
FULL_PRECISION_HEADS = ["score", "classifier", "lm_head", "qa_outputs"]


def _four_bit(device) -> dict:
    """``from_pretrained`` arguments that load the body in 4-bit NF4 on ``device`` (method qlora)."""
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"quantization_config": BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=compute, llm_int8_skip_modules=FULL_PRECISION_HEADS),
            "device_map": {"": device}}


def load_finetuned(path: str | os.PathLike, allow_pickle: bool = False, trust_remote_code: bool = False,
                   attn_implementation: str = "sdpa"):
    """Load a folder written by ``pretune fit``; returns (model, tokenizer, TaskSpec)."""
    from transformers import AutoConfig

    folder = check_model_folder(path, allow_pickle)
    try:
        hf_cfg = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        spec = spec_of(hf_cfg)
        auto_class = auto_class_of(hf_cfg)
        model = auto_class.from_pretrained(
            str(folder), use_safetensors=None if allow_pickle else True, trust_remote_code=trust_remote_code,
            attn_implementation=_attention_for(auto_class, hf_cfg, attn_implementation))
    except (ValueError, OSError, SafetensorError) as e:  # SafetensorError: a truncated or corrupt weights file
        raise ModelError(f"{folder}: cannot load as a fine-tuned model ({str(e).splitlines()[0]})") from None
    model.eval()
    return model, load_tokenizer(folder, trust_remote_code), spec


def spec_of(hf_cfg) -> TaskSpec:
    """The ``TaskSpec`` a saved model was trained for, from its config."""
    return tasks.spec_from_config(hf_cfg)
