"""Training throughput: pretune against the transformers Trainer at its best settings.

Same model (the packaged all-MiniLM-L6-v2, or ``--model``: a folder, a ``.gguf`` file, ``minilm`` or
``smollm2``, loaded the same way for both with ``pretune.models.load_for_task``), same SST-2 subset and
tokens, same hyperparameters and threads. The Trainer uses length-grouped batches
(``train_sampling_strategy="group_by_length"``) and its fused AdamW. Runs
alternate (pretune, Trainer, pretune, Trainer, ...) in one invocation, each in
its own process so peak memory is its own, and the report gives ratios.

Model FLOPs utilisation = 6 x non-embedding parameters x real tokens / time, against a matmul
rate measured in this same invocation. On the CPU (``--device cpu``, the default) that is the fp32
rate of a MiniLM-FFN-shaped product, also for bf16 runs, so their MFU reads as "fraction of what fp32
could do". On a GPU (``--device cuda``) each arm is held against the rate in its own precision
(``--matmul-dtype arm``, the default there: bf16 for bf16 arms, fp32 with TF32 as configured for fp32
ones), of an 8192x8192x8192 product that fills the GPU. There both arms run on the GPU: pretune with
``train.device=cuda``, the Trainer with ``use_cpu=False``, ``dataloader_pin_memory=True`` and TF32,
besides grouped batches, fused AdamW, sdpa attention and ``bf16=True`` in bf16.

``--ablate-first-token`` adds pretune arms with ``train.first_token_only=false`` (the last layer
computes every position), to show what that fast path contributes.

``--precisions fp32,bf16`` adds bf16-autocast arms of both (pretune's
``train.precision=bf16``, the Trainer's ``bf16=True``); each precision is compared like
for like, and pretune bf16 against the Trainer fp32 as well.

    python benchmarks/train_throughput.py --train-samples 4000 --repeats 2 --threads 2 --precisions fp32,bf16
    python benchmarks/train_throughput.py --device cuda --precisions bf16 --train-samples 16000
    python benchmarks/train_throughput.py --device cuda --precisions bf16 --model smollm2 --max-length 256
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


def matmul_rate(threads: int, seconds: float = 3.0, device: str = "cpu", dtype: str = "fp32") -> float:
    """FLOP/s of a matrix product: on the CPU fp32 (1024 x 384) @ (384 x 1536), the shape of a MiniLM FFN on a
    batch of tokens; on a GPU (8192 x 8192) @ (8192 x 8192) in ``dtype``, a shape that fills it."""
    import torch

    torch.set_num_threads(threads)
    if device != "cpu":
        return gpu_matmul_rate(device, dtype, seconds)
    kind = torch.bfloat16 if dtype == "bf16" else torch.float32
    a, b = torch.randn(1024, 384, dtype=kind), torch.randn(384, 1536, dtype=kind)
    for _ in range(20):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            a @ b
        n += 20
    return 2 * 1024 * 384 * 1536 * n / (time.perf_counter() - t0)


def gpu_matmul_rate(device: str, dtype: str, seconds: float, n: int = 8192) -> float:
    """FLOP/s of (n x n) @ (n x n) on ``device`` in ``dtype`` (fp32 runs as TF32 where torch allows it), timed
    with the device's events over about ``seconds``, random inputs (zeros run faster than real data)."""
    import torch

    kind = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a = torch.randn(n, n, device=device, dtype=kind)
    b = torch.randn(n, n, device=device, dtype=kind)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    a @ b
    end.record()
    torch.cuda.synchronize(device)
    reps = max(3, int(seconds * 1000 / max(start.elapsed_time(end), 1e-3)))
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    torch.cuda.synchronize(device)
    return 2 * n ** 3 * reps / (start.elapsed_time(end) / 1000)


def load_data(args):
    from pretune.config import DataConfig
    from pretune.models import load_tokenizer, resolve_model_path
    from pretune.tasks import load_task_data

    folder = resolve_model_path(args.model or "minilm")  # a packaged name (minilm, smollm2), folder or .gguf
    tok = load_tokenizer(folder)
    cfg = DataConfig(train=str(DATA / "sst2" / "train.tsv"), eval=str(DATA / "sst2" / "dev.tsv"), text="sentence",
                     max_train_samples=args.train_samples, max_eval_samples=args.eval_samples,
                     max_length=args.max_length)
    return folder, tok, load_task_data(cfg, tok, seed=args.seed)


def non_embedding_params(model) -> int:
    """Parameters outside the token and position tables: BERT's ``embeddings.*`` (its tables and their LayerNorm),
    a Llama's ``embed_tokens``, and any other ``nn.Embedding``."""
    from torch import nn

    tables = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for n, p in model.named_parameters() if id(p) not in tables and "embeddings." not in n)


def worker_pretune(args) -> dict:
    from pretune.config import config_from_dict
    from pretune.jobs.fit import fit

    folder, _, _ = load_data(args)
    out = Path(args.workdir) / f"pretune-{time.time_ns()}"
    cfg = config_from_dict({
        "model": {"path": folder},
        "data": {"train": str(DATA / "sst2" / "train.tsv"), "eval": str(DATA / "sst2" / "dev.tsv"),
                 "text": "sentence", "max_train_samples": args.train_samples,
                 "max_eval_samples": args.eval_samples, "max_length": args.max_length},
        "train": {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "warmup": args.warmup,
                  "weight_decay": 0.01, "threads": args.threads, "seed": args.seed, "progress": False,
                  "restore_best": False, "precision": args.precision, "device": args.device,
                  "first_token_only": args.worker != "pretune-allpos"},
        "output": str(out)})
    r = fit(cfg)
    res = json.loads((out / "results.json").read_text())
    from transformers import AutoModelForSequenceClassification
    nonemb = non_embedding_params(AutoModelForSequenceClassification.from_pretrained(r.model_dir))
    return {"samples_per_s": res["train_samples"] / res["train_seconds"], "train_seconds": res["train_seconds"],
            "samples": res["train_samples"], "tokens": res["train_tokens"], "accuracy": res["eval"]["accuracy"],
            "nonemb_params": nonemb, **_gpu_peak(args.device)}


def _gpu_peak(device: str) -> dict:
    """On a GPU, the process's peak allocated memory there (the CPU's RSS is reported for every arm)."""
    if device == "cpu":
        return {}
    import torch

    return {"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20}


def trainer_arguments(args, output_dir: str, steps: int):
    """The Trainer at its best settings on ``args.device``. Fields renamed across transformers releases are set
    by whichever name this one has (grouped batches were ``group_by_length=True`` before
    ``train_sampling_strategy``)."""
    import dataclasses

    import numpy as np
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    kw = dict(output_dir=output_dir, per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
              num_train_epochs=args.epochs, warmup_steps=int(np.ceil(args.warmup * steps)), weight_decay=0.01,
              lr_scheduler_type="linear", optim="adamw_torch_fused", save_strategy="no", eval_strategy="no",
              report_to="none", logging_steps=10_000, disable_tqdm=True, seed=args.seed, dataloader_num_workers=0,
              bf16=args.precision == "bf16")
    if "train_sampling_strategy" in names:
        kw["train_sampling_strategy"] = "group_by_length"
    else:
        kw["group_by_length"] = True
    if args.device == "cpu":
        kw["use_cpu"] = True
    else:  # the batches pinned for asynchronous copies, fp32 matmuls in TF32 (pretune's train.tf32 default)
        kw.update(use_cpu=False, dataloader_pin_memory=True, tf32=True)
    return TrainingArguments(**{k: v for k, v in kw.items() if k in names})


def worker_trainer(args) -> dict:
    import numpy as np
    import torch
    from transformers import DataCollatorWithPadding, Trainer

    from pretune.config import ModelConfig
    from pretune.models import load_for_task
    from pretune.runtime import resolve
    from pretune.train import evaluate

    torch.set_num_threads(args.threads)
    folder, tok, data = load_data(args)
    enc = data.train

    class Rows(torch.utils.data.Dataset):  # the very same tokens pretune trains on
        def __len__(self):
            return len(enc)

        def __getitem__(self, i):
            a, b = enc.offsets[i], enc.offsets[i + 1]
            row = {"input_ids": enc.ids[a:b].tolist(), "labels": int(enc.labels[i])}
            if enc.type_ids is not None:
                row["token_type_ids"] = enc.type_ids[a:b].tolist()
            return row

    torch.manual_seed(args.seed)
    model, _ = load_for_task(ModelConfig(path=folder, attn_implementation="sdpa"), data.spec)
    steps = int(np.ceil(len(enc) / args.batch_size) * args.epochs)
    targs = trainer_arguments(args, str(Path(args.workdir) / f"trainer-{time.time_ns()}"), steps)
    trainer = Trainer(model=model, args=targs, train_dataset=Rows(), data_collator=DataCollatorWithPadding(tok))
    t0 = time.perf_counter()
    trainer.train()
    if args.device != "cpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    rt = resolve(args.device, args.precision)
    acc = evaluate(model, data.eval, data.spec, 128, tok.pad_token_id, rt)["accuracy"]
    return {"samples_per_s": len(enc) * args.epochs / seconds, "train_seconds": seconds,
            "samples": int(len(enc) * args.epochs), "tokens": int(enc.lengths.sum() * args.epochs),
            "accuracy": acc, "nonemb_params": non_embedding_params(model), **_gpu_peak(args.device)}


def run_worker(kind: str, precision: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--precision", precision, *sys.argv[1:]]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def model_flops_utilisation(nonemb_params: int, tokens_per_s: float, matmul_flops: float) -> float:
    """6 x non-embedding parameters x real tokens per second (forward 2, backward 4 FLOPs per parameter and
    token; attention's own T^2 products and padding left out) over the matmul rate."""
    return 6 * nonemb_params * tokens_per_s / matmul_flops


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-samples", type=int, default=4000)
    p.add_argument("--eval-samples", type=int, help="dev rows to evaluate (default: all 872)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128, help="tokens per sentence at most (default 128)")
    p.add_argument("--warmup", type=float, default=0.06)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--model", help="model folder, .gguf file, or a packaged name: minilm (the default), smollm2")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where both arms train (default cpu; cuda: the first GPU)")
    p.add_argument("--matmul-dtype", choices=("fp32", "bf16", "arm"),
                   help="precision of the matmul rate MFU is held against: arm, each arm's own (the default on "
                        "cuda), or fp32 for every arm (the default on cpu)")
    p.add_argument("--workdir", default="bench-out/train_throughput")
    p.add_argument("--json", default="bench-out/train_throughput.json")
    p.add_argument("--precisions", default="fp32", help="comma list of fp32, bf16 (bf16 autocast)")
    p.add_argument("--ablate-first-token", action="store_true",
                   help="add pretune arms with train.first_token_only=false (every position in the last layer)")
    p.add_argument("--worker", choices=("pretune", "pretune-allpos", "trainer"), help=argparse.SUPPRESS)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.matmul_dtype = args.matmul_dtype or ("fp32" if args.device == "cpu" else "arm")
    args.precision_list = [x.strip() for x in args.precisions.split(",") if x.strip()]
    if not args.worker and (not args.precision_list or set(args.precision_list) - {"fp32", "bf16"}):
        p.error(f"--precisions: {args.precisions!r}; use fp32, bf16 or fp32,bf16")
    return args


def matmul_dtypes(args) -> list[str]:
    """The matmul precisions this invocation measures: the one named, or every arm's."""
    return args.precision_list if args.matmul_dtype == "arm" else [args.matmul_dtype]


def measure_rates(args, rates: dict[str, list[float]]) -> None:
    for dtype in matmul_dtypes(args):
        rates.setdefault(dtype, []).append(matmul_rate(args.threads, device=args.device, dtype=dtype,
                                                       seconds=3.0 if args.device == "cpu" else 2.0))


def summarise(args, runs: dict[str, list[dict]], rates: dict[str, list[float]]) -> dict[str, dict]:
    """Medians per arm; MFU against the median matmul rate in the arm's precision (or the one named)."""
    summary = {}
    for arm, rs in runs.items():
        precision = arm.rsplit("-", 1)[1]
        dtype = precision if args.matmul_dtype == "arm" else args.matmul_dtype
        sps = statistics.median(r["samples_per_s"] for r in rs)
        tok_s = statistics.median(r["tokens"] / r["train_seconds"] for r in rs)
        summary[arm] = {"samples_per_s": sps, "tokens_per_s": tok_s,
                        "accuracy": statistics.mean(r["accuracy"] for r in rs),
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                        "mfu": model_flops_utilisation(rs[0]["nonemb_params"], tok_s,
                                                       statistics.median(rates[dtype])),
                        "nonemb_params": rs[0]["nonemb_params"]}
        if "peak_gpu_mb" in rs[0]:
            summary[arm].update(peak_gpu_mb=max(r["peak_gpu_mb"] for r in rs), mfu_against=dtype)
    return summary


def print_rates(args, rates: dict[str, list[float]]) -> None:
    if args.device == "cpu" and list(rates) == ["fp32"]:  # the format docs/benchmarks.md records
        fp32 = rates["fp32"]
        print(f"\nmatmul rate {statistics.median(fp32) / 1e9:.1f} GFLOP/s fp32 on {args.threads} threads "
              f"(min {min(fp32) / 1e9:.1f}, max {max(fp32) / 1e9:.1f})")
        return
    import torch

    where = torch.cuda.get_device_name() if args.device != "cpu" else f"{args.threads} CPU threads"
    shape = "8192x8192x8192" if args.device != "cpu" else "1024x384x1536"
    print()
    for dtype, rs in rates.items():
        print(f"matmul rate {statistics.median(rs) / 1e12:.1f} TFLOP/s {dtype} ({shape}) on {where} "
              f"(min {min(rs) / 1e12:.1f}, max {max(rs) / 1e12:.1f})")
    print("MFU: each arm against the matmul rate in " + ("its own precision" if args.matmul_dtype == "arm"
                                                          else args.matmul_dtype))


def print_table(args, summary: dict[str, dict]) -> None:
    gpu = args.device != "cpu"
    print(f"{'':20s} {'samples/s':>10s} {'tokens/s':>9s} {'MFU':>6s} {'dev acc':>8s} {'peak MB':>8s}"
          + (f" {'GPU MB':>8s}" if gpu else ""))
    for arm, s in summary.items():
        print(f"{arm:20s} {s['samples_per_s']:10.1f} {s['tokens_per_s']:9.0f} {s['mfu']:6.1%} "
              f"{s['accuracy']:8.4f} {s['peak_rss_mb']:8.0f}" + (f" {s['peak_gpu_mb']:8.0f}" if gpu else ""))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    if args.worker:
        result = (worker_trainer if args.worker == "trainer" else worker_pretune)(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    precisions = args.precision_list
    kinds = ("pretune", "trainer") + (("pretune-allpos",) if args.ablate_first_token else ())
    arms = [(kind, prec) for prec in precisions for kind in kinds]
    runs: dict[str, list[dict]] = {f"{k}-{pr}": [] for k, pr in arms}
    rates: dict[str, list[float]] = {}
    measure_rates(args, rates)
    for i in range(args.repeats):
        for kind, prec in arms:
            r = run_worker(kind, prec)
            runs[f"{kind}-{prec}"].append(r)
            print(f"[{i + 1}/{args.repeats}] {kind + ' ' + prec:19s} {r['samples_per_s']:6.1f} samples/s  "
                  f"acc {r['accuracy']:.4f}  peak {r['peak_rss_mb']:.0f} MB", flush=True)
        measure_rates(args, rates)
    summary = summarise(args, runs, rates)
    print_rates(args, rates)
    print_table(args, summary)
    ratios = {}
    pairs = [(f"pretune-{pr}", f"trainer-{pr}") for pr in precisions]
    if "bf16" in precisions and "fp32" in precisions:
        pairs.append(("pretune-bf16", "trainer-fp32"))
    if args.ablate_first_token:
        pairs += [(f"pretune-{pr}", f"pretune-allpos-{pr}") for pr in precisions]
    for a, b in pairs:
        ratios[f"{a} / {b}"] = r = summary[a]["samples_per_s"] / summary[b]["samples_per_s"]
        print(f"{a} / {b} samples/s: {r:.2f}x; accuracy difference "
              f"{100 * (summary[a]['accuracy'] - summary[b]['accuracy']):+.2f} points")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k != "precision_list"}
    Path(args.json).write_text(json.dumps({"args": settings, "matmul_flops": rates.get(args.matmul_dtype, []),
                                           "matmul_flops_by_dtype": rates, "runs": runs, "summary": summary,
                                           "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
