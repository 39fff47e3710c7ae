"""LLM tuning throughput: pretune SFT and DPO against TRL's ``SFTTrainer`` and ``DPOTrainer`` at their best settings.

Same model (SmolLM2-135M-Instruct, the packaged ``smollm2`` GGUF, or ``--model``), loaded for both by
``pretune.models.load_for_task`` so the weights are identical; LoRA r=16, alpha 32, dropout 0 on every Linear of
the body for both; the same rows, optimizer steps, learning rate (linear decay, no warmup, no weight decay,
clipping at 1.0), batch size, max length, seed, threads and fp32 (this CPU has no AVX512-BF16/AMX; ``--bf16``
turns on bf16 autocast for both where it does).

LoRA targets are named explicitly (``--lora-targets``, default the seven projections of a Llama block, what
both tools' ``all-linear`` picks) for both, so that both train the very same adapter (4.88M parameters).

- SFT rows: a seeded split of ``instructions/alpaca_small`` (``--eval-rows`` held out, then ``--train-rows``,
  default steps x batch size: one epoch). pretune: ``--task causal_lm``, responses scored, length-grouped batches
  (``--pretune-packing``: packed rows, batched at random: pretune does not group packed rows by
  length). TRL: the very token ids and response labels pretune encodes (a
  pre-tokenized dataset with ``input_ids``/``labels``), ``padding_free=True`` (each batch one row, no padding,
  positions restarting), fused AdamW, gradient checkpointing off; its fused LM head scores only labelled tokens.
- DPO rows: a seeded split of ``preferences/hh_rlhf_harmless_base_test`` (``test.prompt_chosen_rejected.jsonl``).
  pretune: ``--task dpo``, sigmoid loss, beta 0.1, the reference being the same weights with the adapter off.
  TRL: the same prompt/chosen/rejected text (TRL tokenizes it itself; ``truncation_mode="keep_end"`` cuts the
  prompt side, as pretune does), the adapter-off reference too; ``--trl-precompute`` adds an arm with
  ``precompute_ref_log_probs=True`` whose precompute pass counts as training time (it runs in the trainer's
  constructor). pretune's ``dpo.precompute_reference`` is not an arm: with LoRA pretune always uses the
  adapter-off reference.

Eval is the same for every arm: the tuned model with its adapter merged, scored by ``pretune.train.evaluate`` on
the same held-out rows as pretune encodes them (SFT: mean NLL per response token; DPO: reward accuracy against the
base model's log-probs, computed in the same process). Each arm runs in its own process, arms alternate over
``--repeats``. Reported per arm: response tokens/s and all tokens/s (real tokens, no padding; a DPO pair's prompt
counts twice, once per sequence, for both tools), training seconds (the optimizer steps, plus TRL's reference
precompute), peak RSS after training (``ru_maxrss`` of the arm's process: model load, data, training; not eval).

    python benchmarks/llm_throughput.py --task sft --pretune-packing --steps 12 --batch-size 8 --max-length 256 \
        --eval-rows 50 --repeats 2                                           # docs/benchmarks.md
    python benchmarks/llm_throughput.py --task dpo --steps 10 --batch-size 4 --max-length 256 --eval-rows 50 \
        --repeats 1                                                          # docs/benchmarks.md
    python benchmarks/llm_throughput.py --task both --steps 50 --batch-size 8 --max-length 512 --repeats 2
    python benchmarks/llm_throughput.py --task dpo --steps 50 --batch-size 4 --trl-precompute
    python benchmarks/llm_throughput.py --task both --steps 2 --eval-rows 8 --max-length 128 --repeats 1   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("PRETUNE_DATA", HERE.parent.parent / "shared" / "data"))
SFT_SOURCE = DATA / "instructions" / "alpaca_small" / "alpaca_small.json"
DPO_SOURCE = DATA / "preferences" / "hh_rlhf_harmless_base_test" / "test.prompt_chosen_rejected.jsonl"
LR = {"sft": 2e-4, "dpo": 5e-5}
BETA = 0.1
TASK = {"sft": "causal_lm", "dpo": "dpo"}


# ----------------------------------------------------------------------------- rows


def files(args, task: str) -> tuple[Path, Path]:
    ext = "json" if task == "sft" else "jsonl"
    return Path(args.workdir) / f"{task}_train.{ext}", Path(args.workdir) / f"{task}_eval.{ext}"


def write_rows(args, task: str) -> tuple[int, int]:
    """A seeded split of the source: ``--eval-rows`` held out, then ``--train-rows`` (default steps x batch size)
    for training, written as files both arms read."""
    import numpy as np

    if task == "sft":
        rows = json.loads(SFT_SOURCE.read_text())
    else:
        rows = [json.loads(line) for line in DPO_SOURCE.read_text().splitlines() if line.strip()]
        rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]
    order = np.random.default_rng(args.seed).permutation(len(rows))
    n_train = args.train_rows or args.steps * args.batch_size
    ev = [rows[i] for i in order[:args.eval_rows]]
    tr = [rows[i] for i in order[args.eval_rows:args.eval_rows + n_train]]
    train, eval_ = files(args, task)
    if task == "sft":
        train.write_text(json.dumps(tr))
        eval_.write_text(json.dumps(ev))
    else:
        train.write_text("".join(json.dumps(r) + "\n" for r in tr))
        eval_.write_text("".join(json.dumps(r) + "\n" for r in ev))
    return len(tr), len(ev)


def model_path(args) -> str:
    from pretune.models import resolve_model_path

    return str(resolve_model_path(args.model))


def encoded(args, task: str, which: str):
    """pretune's encoding of the train or eval file (what both arms are scored on)."""
    from pretune.config import DataConfig
    from pretune.models import load_tokenizer
    from pretune.tasks import load_task_data

    tok = load_tokenizer(model_path(args))
    path = str(files(args, task)[0 if which == "train" else 1])
    cfg = DataConfig(train=path, eval=path, task=TASK[task], max_length=args.max_length, cache_dir=None)
    data = load_task_data(cfg, tok, seed=args.seed)
    return (data.train if which == "train" else data.eval), data.spec, tok


# ----------------------------------------------------------------------------- arms


def lora_settings(args) -> dict:
    return {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": args.targets, "merge": True}


def worker_pretune(args, task: str) -> dict:
    import numpy as np

    import pretune.train.loop as loop
    from pretune.config import config_from_dict
    from pretune.data import IGNORE
    from pretune.jobs.fit import fit
    from pretune.models import load_finetuned

    train, eval_ = files(args, task)
    seen: list = []
    batches = loop.epoch_batches

    def recording(*a, **kw):  # the batches the loop draws, to count the response tokens it trained on
        out = batches(*a, **kw)
        seen.append(out)
        return out

    loop.epoch_batches = recording
    out = Path(args.workdir) / f"pretune-{task}-{time.time_ns()}"
    cfg = config_from_dict({
        "model": {"path": model_path(args)},
        "data": {"train": str(train), "eval": str(eval_), "task": TASK[task], "max_length": args.max_length,
                 "packing": bool(args.pretune_packing and task == "sft")},
        "method": {"name": "lora"}, "lora": lora_settings(args),
        "dpo": {"loss_type": "sigmoid", "beta": BETA, "label_smoothing": 0.0},
        "train": {"max_steps": args.steps, "lr": args.lr_of[task], "batch_size": args.batch_size,
                  "eval_batch_size": args.batch_size, "warmup": 0, "weight_decay": 0.0, "schedule": "linear",
                  "max_grad_norm": 1.0, "threads": args.threads, "seed": args.seed, "progress": False,
                  "restore_best": False, "precision": "bf16" if args.bf16 else "fp32", "device": "cpu",
                  "checkpoint_every": 0, "eval_every": args.steps, "group_by_length": True},
        "output": str(out)})
    r = fit(cfg)
    peak_train = _rss_mb()
    res = json.loads((out / "results.json").read_text())
    enc, _, _ = encoded(args, task, "train")
    rows = np.concatenate([np.asarray(b) for b in seen[0][:args.steps]]) if seen else np.zeros(0, int)
    response = sum(int((enc.labels[enc.offsets[i]:enc.offsets[i + 1]] != IGNORE).sum()) for i in rows)
    model, _, _ = load_finetuned(r.model_dir)
    return {"train_seconds": res["train_seconds"], "tokens": res["train_tokens"],
            "response_tokens": response, "rows": res["train_samples"], "steps": res["steps"],
            "trainable_params": res.get("trainable_params", 0), "peak_train_mb": peak_train,
            **score(args, task, model)}


class Counter:
    """Wraps a collator and counts the real and the scored tokens of the batches it makes."""

    def __init__(self, collate, task: str):
        self.collate, self.task, self.tokens, self.response = collate, task, 0, 0

    def __call__(self, examples):
        b = self.collate(examples)
        if self.task == "sft":  # padding-free: one row, every token real; or padded with an attention mask
            self.tokens += int(b["attention_mask"].sum()) if "attention_mask" in b else int(b["input_ids"].numel())
            self.response += int((b["labels"] != -100).sum())
        else:
            self.tokens += int(b["attention_mask"].sum())
            self.response += int(b["completion_mask"].sum())
        return b


def trl_common(args, task: str, out: str) -> dict:
    return dict(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                learning_rate=args.lr_of[task], warmup_steps=0, weight_decay=0.0, lr_scheduler_type="linear",
                max_grad_norm=1.0, optim="adamw_torch_fused", gradient_checkpointing=False, use_cpu=True,
                bf16=args.bf16, save_strategy="no", eval_strategy="no", report_to="none", logging_steps=10_000,
                disable_tqdm=True, seed=args.seed, dataloader_num_workers=0)


def worker_trl(args, task: str, precompute: bool = False) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig

    from pretune.config import ModelConfig
    from pretune.models import load_for_task
    from pretune.tasks import TaskSpec

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, tok = load_for_task(ModelConfig(path=model_path(args), attn_implementation="sdpa"),
                               TaskSpec(TASK[task], []))
    peft_cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=args.targets,
                         task_type="CAUSAL_LM")
    out = str(Path(args.workdir) / f"trl-{task}-{time.time_ns()}")
    extra = 0.0
    if task == "sft":
        from trl import SFTConfig, SFTTrainer

        enc, _, _ = encoded(args, task, "train")  # the very tokens and labels pretune trains on
        ds = Dataset.from_dict({"input_ids": [enc.ids[enc.offsets[i]:enc.offsets[i + 1]].tolist()
                                              for i in range(len(enc))],
                                "labels": [enc.labels[enc.offsets[i]:enc.offsets[i + 1]].tolist()
                                           for i in range(len(enc))]})
        targs = SFTConfig(**trl_common(args, task, out), max_length=None, padding_free=True, packing=False)
        trainer = SFTTrainer(model=model, args=targs, train_dataset=ds, processing_class=tok, peft_config=peft_cfg)
    else:
        from trl import DPOConfig, DPOTrainer

        import pretune.tasks.dpo as dpo_task
        from pretune.config import DataConfig
        from pretune.data import read_table

        pairs = dpo_task.read(read_table(str(files(args, task)[0])), DataConfig(task="dpo"))
        ds = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in pairs.rows])
        timing = {"seconds": 0.0}
        original = DPOTrainer._precompute_ref_logps

        def timed(self, dataset, name, batch_size):
            t0 = time.perf_counter()
            try:
                return original(self, dataset, name, batch_size)
            finally:
                if name == "train":
                    timing["seconds"] += time.perf_counter() - t0

        DPOTrainer._precompute_ref_logps = timed
        targs = DPOConfig(**trl_common(args, task, out), max_length=args.max_length, truncation_mode="keep_end",
                          precompute_ref_log_probs=precompute, precompute_ref_batch_size=args.batch_size,
                          beta=BETA, loss_type=["sigmoid"], label_smoothing=0.0)
        trainer = DPOTrainer(model=model, args=targs, train_dataset=ds, processing_class=tok, peft_config=peft_cfg)
        extra = timing["seconds"]
    from transformers import TrainerCallback

    steps: list[float] = []

    class StepTimes(TrainerCallback):  # each optimizer step's seconds: the first one's warm-up shows
        def on_step_begin(self, *a, **kw):
            steps.append(time.perf_counter())

        def on_step_end(self, *a, **kw):
            steps[-1] = time.perf_counter() - steps[-1]

    trainer.add_callback(StepTimes())
    counter = Counter(trainer.data_collator, task)
    trainer.data_collator = counter
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0 + extra
    peak_train = _rss_mb()
    merged = trainer.model.merge_and_unload().eval()
    return {"train_seconds": seconds, "tokens": counter.tokens, "response_tokens": counter.response,
            "rows": args.steps * args.batch_size, "steps": trainer.state.global_step, "trainable_params": trainable,
            "precompute_seconds": extra, "step_seconds": steps, "peak_train_mb": peak_train,
            **score(args, task, merged)}


def score(args, task: str, model) -> dict:
    """The tuned (merged) model on the held-out rows, the same way for every arm."""
    from pretune.config import ModelConfig
    from pretune.models import load_for_task
    from pretune.train import evaluate

    enc, spec, tok = encoded(args, task, "eval")
    if task == "dpo":  # the base model's log-probs: the reference of every arm
        import pretune.tasks.dpo as dpo_task

        base, _ = load_for_task(ModelConfig(path=model_path(args), attn_implementation="sdpa"), spec)
        enc = dpo_task.with_reference(enc, base.eval(), args.batch_size, tok.pad_token_id)
        del base
    m = evaluate(model, enc, spec, args.batch_size, tok.pad_token_id)
    keep = ("loss", "perplexity") if task == "sft" else ("loss", "reward_accuracy", "reward_margin")
    return {f"eval_{k}": m[k] for k in keep}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- driver


def run_worker(arm: str, task: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", arm, "--worker-task", task, *sys.argv[1:]]
    cache = Path(parse_args(sys.argv[1:]).workdir).resolve() / f"hf-datasets-{time.time_ns()}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(cache),  # no precompute cache reused
           "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{arm} {task} worker failed:\n{out.stderr[-4000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["process_seconds"] = time.perf_counter() - t0
    return r


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("sft", "dpo", "both"), default="both")
    p.add_argument("--steps", type=int, default=50, help="optimizer steps, the same for every arm")
    p.add_argument("--batch-size", type=int, default=8, help="rows (DPO: pairs) per step")
    p.add_argument("--max-length", type=int, default=512, help="tokens per sequence at most")
    p.add_argument("--lr", type=float, help=f"learning rate (default: SFT {LR['sft']}, DPO {LR['dpo']})")
    p.add_argument("--train-rows", type=int, help="training rows (default steps x batch size: one epoch)")
    p.add_argument("--eval-rows", type=int, default=100, help="held-out rows scored after training")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--model", default="smollm2", help="a packaged name, a .gguf file or a model folder")
    p.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                   help="LoRA target modules for both (default: every Linear of a Llama body, what peft's "
                        "all-linear picks; not lm_head)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for both (only where the CPU has it)")
    p.add_argument("--pretune-packing", action="store_true", help="SFT: pretune packs rows (data.packing)")
    p.add_argument("--trl-precompute", action="store_true",
                   help="DPO: add a TRL arm with precompute_ref_log_probs=True")
    p.add_argument("--workdir", default="bench-out/llm_throughput")
    p.add_argument("--json", default="bench-out/llm_throughput.json")
    p.add_argument("--worker", choices=("pretune", "trl", "trl-precompute"), help=argparse.SUPPRESS)
    p.add_argument("--worker-task", choices=("sft", "dpo"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.lr_of = {t: args.lr or LR[t] for t in LR}
    args.targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
    return args


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict]:
    out = {}
    for arm, rs in runs.items():
        s = {"response_tokens_per_s": statistics.median(r["response_tokens"] / r["train_seconds"] for r in rs),
             "tokens_per_s": statistics.median(r["tokens"] / r["train_seconds"] for r in rs),
             "train_seconds": statistics.median(r["train_seconds"] for r in rs),
             "peak_train_mb": max(r["peak_train_mb"] for r in rs),
             "trainable_params": rs[0]["trainable_params"]}
        for k in rs[0]:
            if k.startswith("eval_"):
                s[k] = statistics.mean(r[k] for r in rs)
        out[arm] = s
    return out


def print_table(task: str, summary: dict[str, dict]) -> None:
    metric = "eval_loss" if task == "sft" else "eval_reward_accuracy"
    print(f"\n{task.upper()}\n\n| arm | response tok/s | all tok/s | train s | peak MB | {metric} | trainable |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for arm, s in summary.items():
        print(f"| {arm} | {s['response_tokens_per_s']:.0f} | {s['tokens_per_s']:.0f} | {s['train_seconds']:.1f} | "
              f"{s['peak_train_mb']:.0f} | {s[metric]:.4f} | {s['trainable_params']:,} |")


def ratios(task: str, summary: dict[str, dict]) -> dict[str, dict]:
    out = {}
    for other in [a for a in summary if a.startswith("trl")]:
        a, b = summary["pretune"], summary[other]
        r = {"response_tokens_per_s": a["response_tokens_per_s"] / b["response_tokens_per_s"],
             "tokens_per_s": a["tokens_per_s"] / b["tokens_per_s"], "peak_train_mb": a["peak_train_mb"] / b[
                 "peak_train_mb"]}
        if task == "sft":
            r["eval_loss_relative"] = a["eval_loss"] / b["eval_loss"] - 1
            what = f"eval loss {100 * r['eval_loss_relative']:+.2f}%"
        else:
            r["reward_accuracy_points"] = 100 * (a["eval_reward_accuracy"] - b["eval_reward_accuracy"])
            what = f"reward accuracy {r['reward_accuracy_points']:+.1f} points"
        print(f"pretune / {other}: response tokens/s {r['response_tokens_per_s']:.2f}x, all tokens/s "
              f"{r['tokens_per_s']:.2f}x, peak memory {r['peak_train_mb']:.2f}x; {what}")
        out[f"pretune / {other}"] = r
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    if args.worker:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
        if args.worker == "pretune":
            result = worker_pretune(args, args.worker_task)
        else:
            result = worker_trl(args, args.worker_task, precompute=args.worker == "trl-precompute")
        result["peak_rss_mb"] = _rss_mb()
        print(json.dumps(result))
        return

    tasks = ("sft", "dpo") if args.task == "both" else (args.task,)
    sizes = {t: write_rows(args, t) for t in tasks}
    arms = {t: ["pretune", "trl"] + (["trl-precompute"] if t == "dpo" and args.trl_precompute else []) for t in tasks}
    runs = {t: {a: [] for a in arms[t]} for t in tasks}
    for i in range(args.repeats):
        for t in tasks:
            for arm in arms[t]:
                r = run_worker(arm, t)
                runs[t][arm].append(r)
                metric = (f"eval loss {r['eval_loss']:.4f}" if t == "sft"
                          else f"reward acc {r['eval_reward_accuracy']:.3f}")
                print(f"[{i + 1}/{args.repeats}] {t} {arm:15s} {r['response_tokens'] / r['train_seconds']:7.0f} resp "
                      f"tok/s {r['tokens'] / r['train_seconds']:7.0f} tok/s  {r['train_seconds']:6.1f} s  {metric}  "
                      f"peak {r['peak_train_mb']:.0f} MB", flush=True)
    report = {"args": {k: v for k, v in vars(args).items()}, "rows": {t: dict(zip(("train", "eval"), sizes[t]))
                                                                     for t in tasks}}
    for t in tasks:
        summary = summarise(runs[t])
        print_table(t, summary)
        report[t] = {"runs": runs[t], "summary": summary, "ratios": ratios(t, summary)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
