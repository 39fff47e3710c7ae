"""``pretune generate``: text from a causal language model (a tuned folder, an adapter folder or a base model) for
prompts or chat messages, greedy or sampled, optionally streamed as it is produced."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from ..data import read_table
from ..errors import DataError
from ..models import load_tokenizer
from ..runtime import resolve, seed_everything, set_threads
from ..tasks.instructions import check_messages, read_dialogues
from .predict import load_as

Prompt = Any  # a string, or a list of {role, content} messages


def read_prompts(path: str) -> list[Prompt]:
    """The prompts of a file: ``messages`` rows (a trailing assistant turn dropped), else the prompt part of
    Alpaca or ``prompt`` rows, else the dialogue before the last assistant turn of HH-RLHF ``chosen`` rows, else
    the ``text`` column.

    Raises:
        DataError: no usable column, or a malformed messages row (naming file and line).
    """
    table = read_table(path)
    if "messages" in table.columns:
        out = []
        for i, value in enumerate(table.columns["messages"]):
            msgs = check_messages(value, table.where(i), need_answer=False)
            out.append(msgs[:-1] if msgs[-1]["role"] == "assistant" else msgs)
        return out
    if "instruction" in table.columns and "output" not in table.columns:
        table.columns["output"] = ["-"] * len(table)  # prompts only: the reader wants a response to check
    if {"instruction", "prompt"} & set(table.columns):
        if "prompt" in table.columns and "completion" not in table.columns:
            return [str(p) for p in table.columns["prompt"]]
        return [prompt for prompt, _ in read_dialogues(table).rows]
    if "chosen" in table.columns:  # HH-RLHF's whole dialogues: the turns before the last assistant answer
        from ..tasks.dpo import split_dialogue

        return [split_dialogue(str(t), table.where(i), "chosen")[0] for i, t in enumerate(table.columns["chosen"])]
    if "text" in table.columns:
        return [str(t) for t in table.columns["text"]]
    raise DataError(f"{path}: no prompts; give a messages, prompt, instruction, chosen or text column")


def load_generator(model_dir: str):
    """(model, tokenizer): an adapter folder (``lora.merge=false``) through peft, else any causal LM."""
    folder = Path(model_dir)
    if (folder / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(folder))
        return model.eval(), load_tokenizer(folder)
    model, tokenizer, _ = load_as(model_dir, "causal_lm")
    return model, tokenizer


def encode_prompt(prompt: Prompt, tokenizer, raw: bool = False) -> list[int]:
    """Token ids to continue: through the chat template when the tokenizer has one (messages need one), else the
    text as it is."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(prompt, list) or (template and not raw):
        if not template:
            raise DataError("messages need a chat template and this model's tokenizer has none; give text prompts")
        msgs = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        out = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(out["input_ids"])
    return tokenizer(prompt)["input_ids"]


def generate(model_dir: str, prompts: list[Prompt], *, max_new_tokens: int = 128, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, raw: bool = False, threads: Optional[int] = None,
             device: str = "auto", streamer: Optional[Callable[[Any], Any]] = None) -> list[dict]:
    """One ``{"prompt", "generated"}`` per prompt, greedy unless ``temperature`` > 0.

    Args:
        raw: text prompts as they are, not through the chat template.
        streamer: ``streamer(tokenizer)`` -> a transformers streamer (e.g. ``TextStreamer``) that receives the
            tokens of each prompt as they come.
    """
    import torch

    set_threads(threads)
    seed_everything(seed)
    rt = resolve(device, "fp32")
    model, tokenizer = load_generator(model_dir)
    model.to(rt.device)
    stream = streamer(tokenizer) if streamer else None
    sample = temperature > 0
    options = dict(max_new_tokens=max_new_tokens, do_sample=sample, pad_token_id=tokenizer.pad_token_id,
                   **({"temperature": temperature, "top_p": top_p} if sample else {"top_p": None, "top_k": None,
                                                                                      "temperature": None}))
    out = []
    for prompt in prompts:
        ids = torch.tensor([encode_prompt(prompt, tokenizer, raw)], device=rt.device)
        with torch.no_grad():
            new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=stream, **options)
        text = tokenizer.decode(new[0, ids.shape[1]:], skip_special_tokens=True)
        out.append({"prompt": prompt, "generated": text})
    return out
