"""On a CUDA GPU: placement, bf16 and fp16, exact resume, a CPU checkpoint resumed on the GPU, torchrun (DDP's
path and FSDP's), FSDP2 over NCCL, estimate.

Every test here is marked ``gpu`` and skips where torch sees no CUDA device; ``benchmarks/gpu_check.sh`` runs
them (``pytest -m gpu``) on a machine that has one. Each takes a few seconds there: the tiny BERT of
``conftest``, a few dozen steps.

Exact resume on the GPU needs deterministic kernels: cuBLAS picks its reduction order by workspace unless
``CUBLAS_WORKSPACE_CONFIG`` fixes it (read when the first cuBLAS handle is made, so it is set at import, before
any test touches the GPU), and the embedding's backward adds with atomics unless
``torch.use_deterministic_algorithms`` asks for the sorted version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_bert, tiny_config
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_post_hook

import pretune
from pretune import files
from pretune.config import config_from_dict
from pretune.jobs.fit import prepare
from pretune.train import train
from pretune.train.checkpoint import list_checkpoints

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before the first cuBLAS handle (see above)

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU (torch.cuda.is_available() is False); "
                                        "benchmarks/gpu_check.sh runs these on one")]


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory):
    """The tiny BERT without dropout: CPU and GPU draw different dropout masks from the same seed."""
    folder = make_tiny_bert(tmp_path_factory.mktemp("m") / "bert", seed=1)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.fixture
def deterministic():
    """Deterministic CUDA kernels for the test, as they were afterwards."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # an op without one warns; torch.equal then decides
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _setup(model_dir, data_csv, tmp_path, model=None, **train_kw):
    cfg = tiny_config(model_dir, data_csv, tmp_path / "run", train=train_kw)
    cfg["model"].update(model or {})
    cfg = config_from_dict(cfg)
    tok, data, net = prepare(cfg)
    return cfg, tok, data, net


def _weights(model):
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters()}


def test_fit_on_cuda_records_the_gpu_and_bf16(tiny_bert, sentiment_csv, tmp_path):
    """precision auto is bf16 on a GPU that runs it natively (an H100, an H200), fp32 on one that does not."""
    cfg = tiny_config(tiny_bert, sentiment_csv, tmp_path / "run", train={"device": "cuda", "precision": "auto",
                                                                         "max_steps": 4})
    result = pretune.fit(cfg)
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert saved["device"].startswith("cuda")
    assert saved["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert saved["environment"]["gpus"] == [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def test_weights_batches_and_optimizer_state_live_on_the_gpu(tiny_bert, sentiment_csv, tmp_path):
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, device="cuda", precision="bf16", max_steps=3)
    seen = {"inputs": set(), "params": set(), "state": set()}

    def after_step(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            seen["params"] |= {p.device.type for p in group["params"]}
        for state in optimizer.state.values():  # exp_avg, exp_avg_sq (and step, for the fused kernel)
            seen["state"] |= {v.device.type for k, v in state.items() if torch.is_tensor(v) and k != "step"}

    inputs = model.register_forward_pre_hook(
        lambda m, args, kwargs: seen["inputs"].update(v.device.type for v in kwargs.values() if torch.is_tensor(v)),
        with_kwargs=True)
    hook = register_optimizer_step_post_hook(after_step)
    try:
        result = train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id)
    finally:
        hook.remove()
        inputs.remove()
    assert result.step == 3
    assert seen == {"inputs": {"cuda"}, "params": {"cuda"}, "state": {"cuda"}}, seen


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_overfits_a_batch_on_the_gpu(precision, tiny_bert, sentiment_csv, tmp_path, monkeypatch):
    """bf16 autocast, and fp16 autocast whose every step goes through the gradient scaler."""
    scaled = []
    step = torch.amp.GradScaler.step
    monkeypatch.setattr(torch.amp.GradScaler, "step", lambda self, *a, **k: scaled.append(1) or step(self, *a, **k))
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, device="cuda", precision=precision,
                                   batch_size=16, max_steps=60, lr=3e-3, warmup=0, schedule="constant")
    dtypes = []
    model.classifier.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    one = data.train.select(list(range(16)))
    result = train(model, one, one, data.spec, cfg.train, pad_id=tok.pad_token_id)
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert last < 0.2 * first and result.history[-1]["accuracy"] == 1.0, result.history
    assert set(dtypes) == {torch.bfloat16 if precision == "bf16" else torch.float16}
    assert len(scaled) == (60 if precision == "fp16" else 0)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_resume_on_the_gpu_matches_the_uninterrupted_run_exactly(precision, tiny_bert, sentiment_csv, tmp_path,
                                                                 deterministic):
    """tests/train/test_loop.py's in-process kill and resume, on the GPU, bit for bit. Eager attention: torch's
    fused sdpa kernels (memory-efficient, flash) have no deterministic backward to ask for."""
    kw = dict(device="cuda", precision=precision, epochs=3, eval_every=4, checkpoint_every=4, restore_best=False)
    eager = {"attn_implementation": "eager"}
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, eager, **kw)
    train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id)
    expected = _weights(model)

    class Kill(Exception):
        pass

    def kill(step, metrics):
        if step == 16:
            raise Kill

    run = tmp_path / "resumed"
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, eager, **kw)
    with pytest.raises(Kill):
        train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id, run_dir=run,
              callback=kill)
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-00000008", "step-00000012"]
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, eager, **kw)
    result = train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id, run_dir=run,
                   resume=True)
    assert result.step == 42
    for name, value in _weights(model).items():
        assert torch.equal(value, expected[name]), (name, float((value - expected[name]).abs().max()))


def test_a_checkpoint_written_on_the_cpu_resumes_on_the_gpu(no_dropout_bert, sentiment_csv, tmp_path):
    """Steps 1-12 on the CPU, 13-42 on the GPU, against all 42 on the CPU; fp32 without TF32 on both.

    Not bit for bit: the GPU's kernels sum in another order (about 1e-7 relative per operation), and AdamW's
    update m / sqrt(v) turns a rounding-sized gradient into a step of up to lr. So the check is that the
    GPU's 30 steps moved the weights where the CPU's did: the distance between the two final weights is under
    1% of the distance they travelled from the checkpoint, and the last evaluation's loss agrees to 1e-3.
    """
    kw = dict(precision="fp32", tf32=False, epochs=3, eval_every=4, checkpoint_every=4, restore_best=False)
    cfg, tok, data, model = _setup(no_dropout_bert, sentiment_csv, tmp_path, device="cpu", **kw)
    expected_result = train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id)
    expected = _weights(model)

    class Kill(Exception):
        pass

    def kill(step, metrics):
        if step == 16:
            raise Kill

    run = tmp_path / "resumed"
    cfg, tok, data, model = _setup(no_dropout_bert, sentiment_csv, tmp_path, device="cpu", **kw)
    with pytest.raises(Kill):
        train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id, run_dir=run,
              callback=kill)
    at_checkpoint = load_file(str(list_checkpoints(run / "checkpoints")[-1] / files.CKPT_TRAINABLE))
    cfg, tok, data, model = _setup(no_dropout_bert, sentiment_csv, tmp_path, device="cuda", **kw)
    result = train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id, run_dir=run,
                   resume=True)
    assert next(model.parameters()).device.type == "cuda"
    assert result.step == expected_result.step == 42
    assert [h["step"] for h in result.history] == [h["step"] for h in expected_result.history]
    got = _weights(model)
    names = sorted(at_checkpoint)
    apart = torch.cat([(got[n] - expected[n]).flatten() for n in names]).norm()
    travelled = torch.cat([(expected[n] - at_checkpoint[n]).flatten() for n in names]).norm()
    assert travelled > 0 and apart < 0.01 * travelled, (float(apart), float(travelled))
    assert result.history[-1]["loss"] == pytest.approx(expected_result.history[-1]["loss"], rel=1e-3)


def test_torchrun_with_one_process_fits_on_the_gpu(tiny_bert, sentiment_csv, tmp_path):
    """The data-parallel path at world size 1: torchrun's LOCAL_RANK picks the GPU."""
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                           "-m", "pretune.cli", "fit", "--model", str(tiny_bert), "--train", str(sentiment_csv),
                           "--output", str(out), "--device", "cuda", "--epochs", "1", "train.threads=2",
                           "train.progress=false", "data.max_length=32"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((out / "results.json").read_text())
    assert saved["world_size"] == 1 and saved["device"].startswith("cuda") and saved["steps"] > 0


def test_estimate_on_cuda_reports_the_gpu_and_its_peak_allocated_memory(tiny_bert, sentiment_csv, tmp_path):
    from pretune.jobs.estimate import estimate

    cfg = tiny_config(tiny_bert, sentiment_csv, tmp_path / "run", train={"device": "cuda", "precision": "auto"})
    est = estimate(cfg, steps=3)  # in a fresh process: the peak is the probe's own
    assert est.device.startswith("cuda") and torch.cuda.get_device_name(0) in est.device, est.device
    total_mb = torch.cuda.get_device_properties(0).total_memory / 2**20
    assert 0 < est.peak_memory_mb < total_mb, est.peak_memory_mb
    assert est.probe_steps == 3 and est.step_s > 0


def test_torchrun_with_one_process_and_fsdp_fits_on_the_gpu(tiny_bert, sentiment_csv, tmp_path):
    """train.distributed=fsdp at world size 1: a single process on torchrun's GPU, in bf16, with sharded
    checkpoints (the format a run under fsdp writes at any world size)."""
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                           "-m", "pretune.cli", "fit", "--model", str(tiny_bert), "--train", str(sentiment_csv),
                           "--output", str(out), "--device", "cuda", "--epochs", "1", "train.threads=2",
                           "train.progress=false", "data.max_length=32", "train.distributed=fsdp",
                           "train.precision=bf16", "train.eval_every=5"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((out / "results.json").read_text())
    assert saved["world_size"] == 1 and saved["device"].startswith("cuda") and saved["steps"] > 0
    assert "training as a single process" in proc.stderr
    assert (list_checkpoints(out / files.CHECKPOINTS)[-1] / files.CKPT_SHARDS).is_dir()


def fsdp_one_rank(model_dir, data_csv, tmp_path, device: str, backend: str) -> None:
    """FSDP2 over a one-rank process group (one GPU cannot hold two NCCL ranks): ``distributed.shard``, the step,
    a sharded checkpoint and ``distributed.unshard`` against the same steps on the plain model. Written for any
    device so that it can be checked on the CPU with gloo; tests/train/test_fsdp.py shards over two gloo ranks."""
    import socket

    import torch.distributed as dist

    from pretune import tasks
    from pretune.data import epoch_batches
    from pretune.runtime import resolve
    from pretune.train import build_optimizer, build_scheduler, default_loss, distributed, optimizer_step
    from pretune.train.checkpoint import load_checkpoint, save_sharded_checkpoint

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kw = dict(device=device, precision="fp32", tf32=False, max_grad_norm=0.05, distributed="fsdp", batch_size=8)
    cfg, tok, data, plain = _setup(model_dir, data_csv, tmp_path, **kw)
    rt = resolve(device, "fp32", tf32=False)
    if rt.device.type == "cuda":
        torch.cuda.set_device(rt.device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        models = [plain.to(rt.device)] + [_setup(model_dir, data_csv, tmp_path, **kw)[3].to(rt.device)
                                          for _ in range(2)]
        for model in models[1:]:
            distributed.shard(model, rt.device)
        assert all(distributed.is_sharded(p) for p in models[1].parameters())
        optimizers = [build_optimizer(m, cfg.train) for m in models]
        schedulers = [build_scheduler(o, cfg.train, 10) for o in optimizers]
        batches = epoch_batches(data.train.lengths, 8, 0, 0, True)
        kwargs = dict(loss_fn=default_loss(data.spec), pad_id=tok.pad_token_id, cfg=cfg.train,
                      collate=tasks.get(data.spec.task).collate, runtime=rt)

        def step(i: int, which: list[int]) -> None:
            group = batches[2 * i:2 * i + 2]
            for k in which:
                params = [p for g in optimizers[k].param_groups for p in g["params"]]
                optimizer_step(models[k], optimizers[k], data.train, group, sum(len(b) for b in group),
                               params=params, step=i + 1, passes=2 if k else 0, **kwargs)
                schedulers[k].step()

        def whole(model) -> dict:
            return {n: (p.full_tensor() if distributed.is_sharded(p) else p).detach().cpu()
                    for n, p in model.named_parameters()}

        for i in range(3):
            step(i, [0, 1])
        save_sharded_checkpoint(tmp_path / "ckpt", 3, models[1], optimizers[1], schedulers[1], {"step": 3}, keep=2)
        assert load_checkpoint(tmp_path / "ckpt" / "step-00000003", models[2], optimizers[2], schedulers[2]) \
            == {"step": 3}
        loaded, saved = whole(models[2]), whole(models[1])
        assert all(torch.equal(loaded[n], saved[n]) for n in saved)
        step(3, [0, 1, 2])  # the restored optimizer state takes the same step
        after = [whole(m) for m in models]
        for name, value in after[0].items():
            assert torch.equal(after[1][name], after[2][name]), name
            assert torch.allclose(after[1][name], value, atol=1e-5, rtol=0), name
        distributed.unshard(models[1])
        assert type(models[1]).__name__ == type(plain).__name__
        assert not any(distributed.is_sharded(p) for p in models[1].parameters())
        assert all(p.device.type == rt.device.type for p in models[1].parameters())
        with torch.no_grad():
            batch = rt.to_device(tasks.get(data.spec.task).collate(data.eval, list(range(4)), tok.pad_token_id))
            kwargs["loss_fn"](models[1], batch)  # a plain forward pass, no collective
    finally:
        dist.destroy_process_group()


def test_fsdp_over_nccl_makes_the_plain_update_and_round_trips_its_checkpoint(no_dropout_bert, sentiment_csv,
                                                                              tmp_path):
    fsdp_one_rank(no_dropout_bert, sentiment_csv, tmp_path, "cuda", "nccl")


# DDP under NCCL (torchrun --nproc-per-node 1, the update against one plain process) goes here once the
# data-parallel code is replaced by torch's engines (issue 15, item 3).


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("bitsandbytes") is None,
                    reason="method qlora needs bitsandbytes (pip install bitsandbytes)")
def test_qlora_fit_trains_on_a_4bit_base_and_saves_a_plain_model(family_dir, tmp_path):
    """SFT with method qlora on a tiny Llama: the base's Linear layers are 4-bit on the GPU while training, the
    loss falls, and model/ is a plain full-precision causal LM (the adapter merged into the unquantized base)."""
    from sft import alpaca_rows, make_causal_lm, write_jsonl
    from transformers import AutoModelForCausalLM

    lm = make_causal_lm(family_dir("llama"), tmp_path / "lm")
    train = write_jsonl(tmp_path / "train.jsonl", alpaca_rows(64, 1))
    result = pretune.fit({"model": {"path": str(lm)}, "data": {"train": str(train), "task": "causal_lm",
                                                               "max_length": 64},
                          "method": {"name": "qlora"}, "lora": {"target_modules": ["all-linear"]},
                          "train": {"device": "cuda", "epochs": 3, "lr": 1e-2, "batch_size": 8, "progress": False},
                          "output": str(tmp_path / "run")})
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert losses[-1] < losses[0]
    saved = AutoModelForCausalLM.from_pretrained(str(result.model_dir))
    assert not getattr(saved, "is_loaded_in_4bit", False) and "quantization_config" not in saved.config.to_dict()
    assert all(p.dtype == torch.float32 for p in saved.parameters())
