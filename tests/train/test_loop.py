"""Behaviour of the training loop on a tiny BERT: equivalences, convergence, stopping, resume."""

import math

import pytest
import torch
from conftest import make_tiny_bert, tiny_config
from torch.optim.optimizer import register_optimizer_step_post_hook

from pretune.config import config_from_dict
from pretune.errors import PretuneError
from pretune.jobs.fit import prepare
from pretune.train import TrainingDiverged, build_optimizer, build_scheduler, evaluate, param_groups, train
from pretune.train.checkpoint import list_checkpoints


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory):
    import json
    folder = make_tiny_bert(tmp_path_factory.mktemp("m") / "bert", seed=1)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def _setup(model_dir, data_csv, tmp_path, **train):
    cfg = config_from_dict(tiny_config(model_dir, data_csv, tmp_path / "run", train=train))
    tok, data, model = prepare(cfg)
    return cfg, tok, data, model


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_accumulation_gives_the_same_update_as_the_big_batch(no_dropout_bert, sentiment_csv, tmp_path):
    finals = []
    for bs, accum in ((16, 1), (4, 4)):
        cfg, tok, data, model = _setup(no_dropout_bert, sentiment_csv, tmp_path, batch_size=bs, grad_accum=accum,
                                       epochs=1, group_by_length=False, restore_best=False)
        train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id)
        finals.append(_weights(model))
    for name in finals[0]:
        assert torch.allclose(finals[0][name], finals[1][name], atol=2e-5), name


def test_overfitting_one_batch_drives_the_loss_down(tiny_bert, sentiment_csv, tmp_path):
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, batch_size=16, max_steps=60, lr=3e-3,
                                   warmup=0, schedule="constant")
    one = data.train.select(list(range(16)))
    result = train(model, one, one, data.spec, cfg.train, pad_id=tok.pad_token_id)
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert last < 0.1 * first and result.history[-1]["accuracy"] == 1.0


def test_learns_the_task_and_reports_every_evaluation(tiny_bert, sentiment_csv, tmp_path):
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, epochs=4, eval_every=5)
    seen = []
    result = train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id,
                   callback=lambda step, m: seen.append((step, m["accuracy"])))
    assert [s for s, _ in seen] == [h["step"] for h in result.history]
    assert seen[0][0] == 5 and seen[-1][0] == result.step
    assert result.best["accuracy"] >= 0.9


def test_eval_at_adds_an_evaluation_at_the_first_step_at_or_past_each_fraction(tiny_bert, sentiment_csv, tmp_path):
    """A pruner's rung is read where it falls (a search sets its rungs here), besides every eval_every steps."""
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, max_steps=9, eval_every=4, eval_at=[1 / 9, 0.5])
    steps = []
    result = train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id,
                   callback=lambda step, m: steps.append(step))
    assert steps == [1, 4, 5, 8, 9] == [h["step"] for h in result.history]


def test_callback_exception_stops_training(tiny_bert, sentiment_csv, tmp_path):
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, epochs=3, eval_every=2)

    class Pruned(Exception):
        pass

    def prune(step, metrics):
        if step >= 4:
            raise Pruned

    with pytest.raises(Pruned):
        train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id, callback=prune)


def test_early_stopping(tiny_bert, sentiment_csv, tmp_path):
    # lr 0 never improves on the first evaluation: patience 1 stops at the third
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, epochs=10, eval_every=1, lr=1e-12,
                                   early_stopping_patience=1, warmup=0)
    result = train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id)
    assert result.stopped_early and len(result.history) == 3


def test_nan_loss_raises_diverged(tiny_bert, sentiment_csv, tmp_path):
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path)
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="loss became nan at step 1; lower train.lr"):
        train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id)


def test_layer_wise_lr_decay_and_no_decay_groups(tiny_bert, sentiment_csv, tmp_path):
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, layer_lr_decay=0.5, lr=1.0)
    groups = param_groups(model, cfg.train)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    # 2 layers: embeddings 0.5**3, layer.0 0.5**2, layer.1 0.5, head 1
    assert lr_of[id(params["bert.embeddings.word_embeddings.weight"])] == pytest.approx(0.125)
    assert lr_of[id(params["bert.encoder.layer.0.attention.self.query.weight"])] == pytest.approx(0.25)
    assert lr_of[id(params["bert.encoder.layer.1.output.dense.weight"])] == pytest.approx(0.5)
    assert lr_of[id(params["classifier.weight"])] == pytest.approx(1.0)
    assert wd_of[id(params["bert.encoder.layer.0.output.LayerNorm.weight"])] == 0.0
    assert wd_of[id(params["bert.encoder.layer.0.output.dense.bias"])] == 0.0
    assert wd_of[id(params["bert.encoder.layer.0.output.dense.weight"])] == cfg.train.weight_decay


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_schedules_warm_up_then_decay(tiny_bert, sentiment_csv, tmp_path, schedule):
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, schedule=schedule, warmup=10, lr=1.0,
                                      layer_lr_decay=1.0)  # one group at the base lr
    opt = build_optimizer(model, cfg.train)
    sched = build_scheduler(opt, cfg.train, 100)
    lrs = []
    for _ in range(100):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b + 1e-12 for a, b in zip(lrs[:10], lrs[1:10]))
    end = {"linear": 1 / 90, "cosine": 0.5 * (1 + math.cos(math.pi * 89 / 90)), "constant": 1.0}[schedule]
    assert lrs[-1] == pytest.approx(end, abs=1e-6)


@pytest.mark.parametrize("ema_decay, precision", [(0.0, "fp32"), (0.8, "fp32"), (0.0, "bf16"), (0.0, "fp16")])
def test_in_process_resume_matches_uninterrupted(tiny_bert, sentiment_csv, tmp_path, ema_decay, precision):
    """Exact in every precision: fp16's gradient scaler is part of the checkpoint."""
    kw = dict(epochs=3, eval_every=4, checkpoint_every=4, restore_best=False, ema_decay=ema_decay,
              precision=precision)
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, **kw)
    train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id)
    expected = _weights(model)

    class Kill(Exception):
        pass

    def kill(step, metrics):
        if step == 16:
            raise Kill

    run = tmp_path / "resumed"
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, **kw)
    with pytest.raises(Kill):
        train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id, run_dir=run,
              callback=kill)
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-00000008", "step-00000012"]
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, **kw)  # fresh process state
    result = train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id, run_dir=run,
                   resume=True)
    assert result.step == 42 and [h["step"] for h in result.history][:4] == [4, 8, 12, 16]
    for name, value in _weights(model).items():
        assert torch.equal(value, expected[name]), name


def test_resuming_with_a_weight_average_the_run_did_not_have_is_refused(tiny_bert, sentiment_csv, tmp_path):
    kw = dict(epochs=1, eval_every=4, checkpoint_every=4)
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, **kw)
    train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id, run_dir=tmp_path / "r")
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, ema_decay=0.9, **kw)
    with pytest.raises(PretuneError, match=r"holds no weight average because the run started with "
                                           r"train.ema_decay=0"):
        train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id, run_dir=tmp_path / "r",
              resume=True)


def test_checkpoint_every_zero_writes_no_checkpoints_and_keeps_the_best_in_memory(tiny_bert, sentiment_csv,
                                                                                 tmp_path):
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, epochs=2, eval_every=3, checkpoint_every=0)
    result = train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id,
                   run_dir=tmp_path / "r")
    assert not (tmp_path / "r" / "checkpoints").exists() and (tmp_path / "r" / "metrics.jsonl").is_file()
    final = evaluate(model, data.eval, data.spec, 64, tok.pad_token_id)
    assert final["loss"] == pytest.approx(result.best["loss"], rel=1e-6)  # restore_best worked from memory


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_and_gradient_checkpointing_train(precision, tiny_bert, sentiment_csv, tmp_path):
    """bf16 autocast, and fp16 autocast with a gradient scaler, on the CPU."""
    cfg, tok, data, model = _setup(tiny_bert, sentiment_csv, tmp_path, precision=precision,
                                   gradient_checkpointing=True, epochs=4)
    result = train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id)
    assert result.best["accuracy"] >= 0.8


def _train_recording_steps(model_dir, data_csv, tmp_path, **train_kw):
    """Train; return (initial trainable weights, those after every optimizer step, result, model, data, pad)."""
    cfg, tok, data, model = _setup(model_dir, data_csv, tmp_path, **train_kw)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    initial = {n: p.detach().clone() for n, p in trainable.items()}
    steps = []
    handle = register_optimizer_step_post_hook(
        lambda *_: steps.append({n: p.detach().clone() for n, p in trainable.items()}))
    try:
        result = train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id)
    finally:
        handle.remove()
    return initial, steps, result, model, data, tok.pad_token_id


def test_weight_average_is_what_gets_evaluated_and_saved_and_leaves_training_alone(tiny_bert, sentiment_csv,
                                                                                    tmp_path):
    kw = dict(epochs=2, eval_every=3, restore_best=False)
    _, plain_steps, _, _, _, _ = _train_recording_steps(tiny_bert, sentiment_csv, tmp_path, **kw)
    initial, steps, result, model, data, pad = _train_recording_steps(tiny_bert, sentiment_csv, tmp_path,
                                                                      ema_decay=0.95, **kw)
    # The optimizer sees the same weights at every step (dropout included), evaluations notwithstanding.
    assert len(steps) == len(plain_steps) == result.step > 10
    for mine, plain in zip(steps, plain_steps):
        assert all(torch.equal(mine[n], plain[n]) for n in mine)
    # The model ends holding the warmed-up moving average of that trajectory ...
    average = {n: t.clone() for n, t in initial.items()}
    for t, weights in enumerate(steps, start=1):
        d = min(0.95, (1 + t) / (10 + t))
        for n in average:
            average[n] = d * average[n] + (1 - d) * weights[n]
    for n, p in model.named_parameters():
        if n in average:
            assert torch.allclose(p, average[n], atol=1e-6), n
    assert not torch.equal(average["classifier.weight"], steps[-1]["classifier.weight"])
    # ... and the last evaluation measured exactly that model.
    final = evaluate(model, data.eval, data.spec, 64, pad)
    assert final["loss"] == pytest.approx(result.history[-1]["loss"], rel=1e-6)


@pytest.mark.parametrize("max_norm", [0.5, 1e3])  # the norm of these gradients is about 8/7: clipped, then not
def test_clip_gradients_is_bit_for_bit_torchs(max_norm):
    from pretune.train.step import clip_gradients

    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(50, 20)) for _ in range(3)]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    for a, b in zip(ours, theirs):
        a.grad = torch.randn_like(a) / 7
        b.grad = a.grad.clone()
    before = [p.grad.clone() for p in ours]
    clip_gradients(ours, max_norm, "cpu")
    torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, theirs))
    norm = float(torch.nn.utils.get_total_norm([p.grad for p in ours]))
    assert norm == pytest.approx(max_norm, rel=1e-4) if max_norm < 1 else all(
        torch.equal(a.grad, b) for a, b in zip(ours, before))


@pytest.mark.parametrize("restore_best", [True, False])
def test_the_reported_eval_is_the_saved_models(tiny_bert, sentiment_csv, tmp_path, restore_best):
    """fit reports the loop's evaluation of the weights it ends with rather than a second pass over the same
    rows; a fresh load of the saved folder scores the same."""
    import pretune
    from transformers import AutoModelForSequenceClassification

    cfg = tiny_config(tiny_bert, sentiment_csv, tmp_path / "run", train={"epochs": 3, "eval_every": 4,
                                                                       "restore_best": restore_best})
    result = pretune.fit(cfg)
    step = result.best_step if restore_best else result.steps
    record = next(h for h in result.history if h["step"] == step)
    assert {k: record[k] for k in result.eval} == result.eval
    _, data, _ = prepare(config_from_dict(cfg))  # the same held-out rows the run evaluated
    saved = AutoModelForSequenceClassification.from_pretrained(result.model_dir)
    assert evaluate(saved, data.eval, data.spec, 64, 0) == pytest.approx(result.eval, rel=1e-5)


def test_chance_level_is_read_from_the_metrics():
    from pretune.metrics import chance_level, classification_metrics, regression_metrics

    gold = [0, 0, 0, 1, 1, 0, 0, 1]
    majority = classification_metrics([0] * 8, gold, 2)  # one class for every row: 5 of 8 right, MCC 0
    assert majority["accuracy"] == 0.625 and "MCC 0.000 (accuracy 0.6250)" in chance_level(majority)
    assert chance_level(classification_metrics(gold, gold, 2)) is None
    assert chance_level(classification_metrics([0, 0, 0, 1, 1, 0, 1, 0], gold, 2)) is None  # MCC 0.47
    assert "Pearson 0.000" in chance_level(regression_metrics([2.5] * 4, [1.0, 2.0, 3.0, 4.0]))
    assert chance_level(regression_metrics([1.1, 1.9, 3.2, 3.8], [1.0, 2.0, 3.0, 4.0])) is None
    assert "finds no entity" in chance_level({"f1": 0.0, "strict_f1": 0.0, "accuracy": 0.8})
    assert chance_level({"f1": 0.0}) is None and chance_level({"perplexity": 3.0}) is None


def test_a_model_at_chance_level_is_flagged_in_its_results(tiny_bert, sentiment_csv, tmp_path, caplog):
    """A model that answers one class for every row keeps that class's share as its accuracy; fit says so in
    results.json and as a warning, and stays quiet about a model that learned the task."""
    import json

    import pretune

    learned = pretune.fit(tiny_config(tiny_bert, sentiment_csv, tmp_path / "learned", train={"epochs": 3}))
    assert learned.eval["mcc"] > 0.5
    assert json.loads((learned.run_dir / "results.json").read_text())["warning"] is None
    # lr ~0: the random head answers the same class for every row
    with caplog.at_level("WARNING", logger="pretune"):
        idle = pretune.fit(tiny_config(tiny_bert, sentiment_csv, tmp_path / "idle",
                                       train={"epochs": 1, "lr": 1e-12, "restore_best": False}))
    assert idle.eval["mcc"] == 0.0
    warning = json.loads((idle.run_dir / "results.json").read_text())["warning"]
    assert warning.startswith("the model is at chance level: MCC 0.000") and warning in caplog.text
