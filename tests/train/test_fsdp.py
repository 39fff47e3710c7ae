"""``train.distributed=fsdp``: FSDP2 over two gloo ranks makes DDP's update, its sharded checkpoints resume
exactly (and in one process), and in one process it trains as a single process.

The two-rank parts run ``fsdp_ranks.py`` under ``torchrun`` (see there); each launch takes about 10-15 s on
two cores, most of it starting the processes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_rows, make_tiny_bert, tiny_config, write_csv
from safetensors.torch import load_file

from pretune import files
from pretune.config import config_from_dict
from pretune.errors import ConfigError
from pretune.jobs.fit import prepare
from pretune.train import build_optimizer, build_scheduler, distributed, train
from pretune.train.checkpoint import list_checkpoints, load_checkpoint

REPO = Path(__file__).resolve().parents[2]
RANKS = Path(__file__).with_name("fsdp_ranks.py")


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("m") / "bert", seed=1)


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory) -> Path:
    """Dropout draws differ across ranks (each seeds its own), and DDP and FSDP runs compare one update."""
    folder = make_tiny_bert(tmp_path_factory.mktemp("m") / "bert", seed=1)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("d") / "train.csv", make_rows(90, seed=3))  # 81 training rows


def _ranks(mode: str, model: Path, data: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(RANKS), mode, str(model), str(data), str(out)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


@pytest.mark.slow
def test_fsdp_makes_the_update_ddp_makes(no_dropout_bert, rows, tmp_path):
    """Two ranks, 2 accumulated micro-batches each, clipping every step, a weight average and a short last step
    (14 optimizer steps): the final weights agree to 1e-5 (the float summation order may differ: the norm over
    shards, reduce-scatter against all-reduce; measured at most 1.2e-7) while training moved them by up to 2e-2."""
    _ranks("update", no_dropout_bert, rows, tmp_path)
    ddp, fsdp = (json.loads((tmp_path / f"{m}.json").read_text()) for m in ("ddp", "fsdp"))
    assert fsdp["sharded_while_training"] and not ddp["sharded_while_training"]
    assert fsdp["local_fraction"] < 0.6  # each rank held about half of every parameter
    assert fsdp["plain_after"] and fsdp["cls"] == "BertForSequenceClassification"
    for key in ("steps", "samples", "tokens", "best_step"):
        assert fsdp[key] == ddp[key], key
    assert fsdp["losses"] == pytest.approx(ddp["losses"], rel=1e-5)

    w_ddp = load_file(str(tmp_path / "ddp.safetensors"))
    w_fsdp = load_file(str(tmp_path / "fsdp.safetensors"))
    initial = load_file(str(no_dropout_bert / "model.safetensors"))
    assert w_ddp.keys() == w_fsdp.keys()
    moved = max(float((w_ddp[n] - initial[n.removeprefix("bert.")]).abs().max())
                for n in w_ddp if n.removeprefix("bert.") in initial)
    assert moved > 1e-3, "training changed nothing: the comparison would be vacuous"
    for name in w_ddp:
        assert torch.allclose(w_ddp[name], w_fsdp[name], atol=1e-5, rtol=0), name


@pytest.mark.slow
def test_sharded_checkpoints_resume_exactly_and_in_one_process(bert, rows, tmp_path):
    """Dropout on: each rank's generators are part of the checkpoint, so the resumed run is bit for bit the
    uninterrupted one. The two-rank checkpoint then loads into one process (DCP reshards it) exactly."""
    _ranks("resume", bert, rows, tmp_path)
    seen = json.loads((tmp_path / "resume.json").read_text())
    assert seen["checkpoints_when_killed"] == ["step-00000004", "step-00000008"]
    assert seen["step8_files"] == sorted([files.CKPT_POSITION, files.CKPT_STATE, files.CKPT_SHARDS,
                                          files.checkpoint_rng(0), files.checkpoint_rng(1)])
    assert all(not name.startswith(".") for name in seen["after"]), seen["after"]  # no temporary folder left
    assert seen["steps"] == 22 and seen["history_steps"][:5] == [2, 4, 6, 8, 10] and seen["plain_after"]
    assert seen["best_round_trip"]  # whole best weights load into the shards as they were saved
    whole = load_file(str(tmp_path / "whole.safetensors"))
    resumed = load_file(str(tmp_path / "resumed.safetensors"))
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name

    # One process reads the two ranks' shards.
    at8 = load_file(str(tmp_path / "at8.safetensors"))
    cfg = config_from_dict(tiny_config(bert, rows, tmp_path / "one", train={
        "epochs": 2, "batch_size": 4, "lr": 3e-3, "ema_decay": 0.9, "distributed": "fsdp"}))
    _, _, model = prepare(cfg)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, 22)
    from pretune.train.average import WeightAverage

    average = WeightAverage(model, 0.9)
    position = load_checkpoint(tmp_path / "step-00000008", model, optimizer, scheduler, average)
    assert position["step"] == 8 and scheduler.last_epoch == 8
    params = dict(model.named_parameters())
    assert at8.keys() == params.keys()
    for name, value in at8.items():
        assert torch.equal(params[name].detach(), value), name
    assert all(float(s["step"]) == 8 for s in optimizer.state.values()) and len(optimizer.state) == len(params)


def test_fsdp_in_one_process_trains_as_one_process(no_dropout_bert, rows, tmp_path, caplog):
    """Nothing to shard: the same weights as ddp bit for bit, a note in the log, and checkpoints in the sharded
    format (so the run could resume under torchrun) that resume here exactly."""
    assert distributed.world_size() == 1
    kw = dict(epochs=1, batch_size=8, eval_every=3, checkpoint_every=3, restore_best=False, threads=1)
    finals = {}
    for mode in ("ddp", "fsdp"):
        cfg = config_from_dict(tiny_config(no_dropout_bert, rows, tmp_path / mode, train={"distributed": mode, **kw}))
        tok, data, model = prepare(cfg)
        with caplog.at_level(logging.INFO, logger="pretune"):
            train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id, run_dir=tmp_path / mode)
        finals[mode] = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name, value in finals["ddp"].items():
        assert torch.equal(value, finals["fsdp"][name]), name
    notes = [r.getMessage() for r in caplog.records if "train.distributed=fsdp in one process" in r.getMessage()]
    assert len(notes) == 1 and "training as a single process" in notes[0]
    last = list_checkpoints(tmp_path / "fsdp" / "checkpoints")[-1]
    assert (last / files.CKPT_SHARDS).is_dir() and not (last / files.CKPT_TRAINABLE).exists()
    assert (list_checkpoints(tmp_path / "ddp" / "checkpoints")[-1] / files.CKPT_TRAINABLE).is_file()

    cfg = config_from_dict(tiny_config(no_dropout_bert, rows, tmp_path / "fsdp", train={"distributed": "fsdp", **kw}))
    tok, data, model = prepare(cfg)
    train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id, run_dir=tmp_path / "fsdp",
          resume=True)
    for name, value in finals["fsdp"].items():
        assert torch.equal(model.get_parameter(name).detach(), value), name


def test_fsdp_settings_are_checked(no_dropout_bert, rows, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"train.distributed: expected one of ddp, fsdp, got 'zero3'"):
        config_from_dict(tiny_config(no_dropout_bert, rows, tmp_path, train={"distributed": "zero3"}))
    cfg = config_from_dict(tiny_config(no_dropout_bert, rows, tmp_path, train={"distributed": "fsdp",
                                                                               "precision": "fp16"}))
    tok, data, model = prepare(cfg)
    monkeypatch.setattr(distributed, "acquire", lambda: (0, 2))  # as under torchrun, before any message
    with pytest.raises(ConfigError, match=r"train.distributed=fsdp does not train in fp16"):
        train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id)
