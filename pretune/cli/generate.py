"""``pretune generate MODEL --prompt TEXT`` (or ``--input FILE``): text from a causal LM, streamed to the terminal;
the job is ``pretune.jobs.generate``."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", metavar="MODEL", help="a causal LM: a folder pretune fit wrote (merged or adapter), "
                   "a base model folder, a .gguf file, a Hub id, or smollm2")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt (through the model's chat template when it has one)")
    src.add_argument("--input", help="a file of prompts: messages, prompt, instruction (Alpaca) or text column")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (the default); > 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling, with --temperature")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw", action="store_true", help="text prompts as they are, without the chat template")
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else the CPU), cpu, cuda, cuda:N")
    p.add_argument("--output", help="also write one JSON line per prompt (prompt, generated) to this file")
    p.add_argument("--no-stream", action="store_true", help="print each generation when done, not as it comes")


def run(args: argparse.Namespace) -> int:
    from ..files import write_text
    from ..jobs.generate import generate, read_prompts

    def streamer(tokenizer):
        from transformers import TextStreamer

        return TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

    prompts = [args.prompt] if args.prompt is not None else read_prompts(args.input)
    rows = generate(args.model_dir, prompts, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    top_p=args.top_p, seed=args.seed, raw=args.raw, threads=args.threads, device=args.device,
                    streamer=None if args.no_stream else streamer)
    if args.no_stream:
        for row in rows:
            print(row["generated"])
    if args.output:
        write_text(args.output, "".join(json.dumps(r) + "\n" for r in rows))
    return 0
