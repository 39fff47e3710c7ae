"""The ranks' side of tests/train/test_fsdp.py, run under ``torchrun`` with two gloo ranks.

    python -m torch.distributed.run --standalone --nproc-per-node 2 fsdp_ranks.py MODE MODEL DATA OUT

MODE ``update``: the same training with ``train.distributed=ddp`` and ``fsdp`` (no dropout); rank 0 writes each
one's final weights (``ddp.safetensors``, ``fsdp.safetensors``) and what it saw (``ddp.json``, ``fsdp.json``).

MODE ``resume`` (``train.distributed=fsdp``, dropout on): a run uninterrupted (``whole.safetensors``), one
killed at step 10 after checkpoints at steps 4 and 8 (the whole weights at step 8 in ``at8.safetensors``, the
checkpoint copied to ``step-00000008/``; before the kill, ``best.safetensors`` is loaded into the sharded model
and gathered back), and that one resumed (``resumed.safetensors``); ``resume.json`` holds
the checkpoints and what the resumed run did.

This process starts the process group itself, so the fits inside hold it without destroying it between them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: conftest's tiny_config

from conftest import tiny_config  # noqa: E402

from pretune import files  # noqa: E402
from pretune.config import config_from_dict  # noqa: E402
from pretune.jobs.fit import prepare  # noqa: E402
from pretune.train import distributed, train  # noqa: E402
from pretune.train.checkpoint import list_checkpoints, load_trainable, trainable_state  # noqa: E402


class Kill(Exception):
    pass


def setup(model: str, data: str, out: Path, **kw):
    cfg = config_from_dict(tiny_config(Path(model), Path(data), out, train={"threads": 1, **kw}))
    tok, task_data, net = prepare(cfg)
    return cfg, tok, task_data, net


def weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone().contiguous() for n, p in net.named_parameters()}


def is_plain(net: torch.nn.Module) -> bool:
    return not any(distributed.is_sharded(p) for p in net.parameters()) \
        and not any(type(m).__name__.startswith("FSDP") for m in net.modules())


def update(model: str, data: str, out: Path, rank: int) -> None:
    # grad_accum 2 (accumulation), 81 rows in 27 micro-batches of 3 (a last step of 3: rank 0 runs 2, rank 1
    # runs 1 and a pass that counts zero), a clipping norm below every step's gradient norm (0.044 to 0.41 in
    # one process) and a weight average, which is what the model ends with (not the best evaluation's weights,
    # which would leave the later steps out of the comparison).
    kw = dict(epochs=2, batch_size=3, grad_accum=2, lr=3e-3, max_grad_norm=0.03, ema_decay=0.9, eval_every=3,
              restore_best=False, group_by_length=False)
    for mode in ("ddp", "fsdp"):
        cfg, tok, task_data, net = setup(model, data, out / mode, distributed=mode, **kw)
        total = sum(p.numel() for p in net.parameters())
        seen: dict = {}

        def callback(step: int, metrics: dict, net=net, seen=seen, total=total) -> None:
            local = [p.to_local() if distributed.is_sharded(p) else p for p in net.parameters()]
            seen.setdefault("sharded_while_training", all(distributed.is_sharded(p) for p in net.parameters()))
            seen.setdefault("local_fraction", sum(t.numel() for t in local) / total)

        result = train(net, task_data.train, task_data.eval, task_data.spec, cfg.train, pad_id=tok.pad_token_id,
                       callback=callback)
        if rank == 0:
            save_file(weights(net), str(out / f"{mode}.safetensors"))
            seen.update(plain_after=is_plain(net), steps=result.step, samples=result.samples,
                        tokens=result.tokens, losses=[h["loss"] for h in result.history],
                        best_step=result.best_step, cls=type(net).__name__)
            (out / f"{mode}.json").write_text(json.dumps(seen))


def resume(model: str, data: str, out: Path, rank: int) -> None:
    kw = dict(epochs=2, batch_size=4, lr=3e-3, eval_every=2, checkpoint_every=4, restore_best=False,
              ema_decay=0.9, distributed="fsdp")
    cfg, tok, task_data, net = setup(model, data, out / "whole", **kw)
    train(net, task_data.train, task_data.eval, task_data.spec, cfg.train, pad_id=tok.pad_token_id,
          run_dir=out / "whole")
    if rank == 0:
        save_file(weights(net), str(out / "whole.safetensors"))

    run = out / "killed"
    cfg, tok, task_data, net = setup(model, data, run, **kw)
    seen = {}

    def kill(step: int, metrics: dict) -> None:
        if step == 8:  # the weights the step-8 checkpoint is about to hold (it is written after the callback)
            whole = distributed.full_tensors(trainable_state(net))  # every rank gathers
            if rank == 0:
                save_file({k: v.contiguous() for k, v in whole.items()}, str(out / "at8.safetensors"))
        if step == 10:
            # best.safetensors (whole tensors, as a resume reads it) into the shards, and gathered back
            best = load_file(str(run / "checkpoints" / files.BEST_WEIGHTS))
            load_trainable(net, best)
            back = distributed.full_tensors(trainable_state(net))
            seen["best_round_trip"] = best.keys() == back.keys() and all(torch.equal(best[k], back[k]) for k in best)
            raise Kill

    try:
        train(net, task_data.train, task_data.eval, task_data.spec, cfg.train, pad_id=tok.pad_token_id,
              run_dir=run, callback=kill)
        raise AssertionError("the kill did not happen")
    except Kill:
        pass
    checkpoints = [p.name for p in list_checkpoints(run / "checkpoints")]
    step8 = sorted(p.name for p in (run / "checkpoints" / "step-00000008").iterdir())
    if rank == 0:  # kept for the test to load in one process (the resumed run deletes it as it goes on)
        shutil.copytree(run / "checkpoints" / "step-00000008", out / "step-00000008")
    dist.barrier()

    cfg, tok, task_data, net = setup(model, data, run, **kw)  # a fresh model, optimizer and generators
    result = train(net, task_data.train, task_data.eval, task_data.spec, cfg.train, pad_id=tok.pad_token_id,
                   run_dir=run, resume=True)
    if rank == 0:
        save_file(weights(net), str(out / "resumed.safetensors"))
        leftovers = sorted(p.name for p in (run / "checkpoints").iterdir())
        (out / "resume.json").write_text(json.dumps({
            "checkpoints_when_killed": checkpoints, "step8_files": step8, "after": leftovers,
            "steps": result.step, "history_steps": [h["step"] for h in result.history],
            "best_round_trip": seen["best_round_trip"],
            "plain_after": is_plain(net)}))


def main() -> None:
    mode, model, data, out = sys.argv[1:5]
    dist.init_process_group("gloo")
    try:
        {"update": update, "resume": resume}[mode](model, data, Path(out), dist.get_rank())
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
