"""The command line as a user runs it: fit, eval, predict, validate, bad input, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import make_rows, write_csv
from safetensors.torch import load_file

from pretune.cli import main


def fit_args(model, train, out, *extra):
    return ["fit", "--model", str(model), "--train", str(train), "--output", str(out), "--lr", "5e-3",
            "--batch-size", "16", "--epochs", "3", "--seed", "0", "--threads", "2", "data.max_length=32",
            "train.progress=false", *extra]


def test_fit_writes_a_complete_run_folder(tiny_bert, sentiment_csv, sentiment_eval_csv, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "run"
    assert main(fit_args(tiny_bert, sentiment_csv, out, "--eval", str(sentiment_eval_csv))) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    results = json.loads((out / "results.json").read_text())
    assert printed["eval"] == results["eval"] and results["eval"]["accuracy"] >= 0.9
    assert {"accuracy", "macro_f1", "mcc"} <= set(results["eval"])
    assert (out / "config.yaml").read_text().startswith("model:")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {rec["type"] for rec in lines} == {"train", "eval"}
    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert model.config.id2label == {0: "neg", 1: "pos"}
    assert (out / "model" / "tokenizer_config.json").exists()

    # predict: labels and probabilities as JSONL
    pred_in = write_csv(tmp_path / "new.csv", [("great superb film", "?"), ("awful dull plot", "?")])
    assert main(["predict", str(out / "model"), "--input", str(pred_in), "--output", str(tmp_path / "p.jsonl")]) == 0
    preds = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [p["label"] for p in preds] == ["pos", "neg"]
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-4 for p in preds)

    # eval: the same metrics as the run's final evaluation on the same file
    capsys.readouterr()
    assert main(["eval", str(out / "model"), "--data", str(sentiment_eval_csv), "--max-length", "32"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["accuracy"] == pytest.approx(results["eval"]["accuracy"])


def test_regression_and_lora_with_python_api(tiny_bert, tmp_path):
    import random

    import pretune
    rng = random.Random(0)
    rows = [(t, f"{(t.split().count('good') + t.split().count('great')) * 1.5 + rng.random() * 0.1:.3f}")
            for t, _ in make_rows(200, seed=3)]
    train = write_csv(tmp_path / "sts.csv", rows)
    result = pretune.fit({"model": {"path": str(tiny_bert)}, "data": {"train": str(train), "max_length": 32},
                          "method": {"name": "lora"}, "lora": {"r": 4, "target_modules": ["query", "value", "dense"]},
                          "train": {"epochs": 15, "lr": 5e-3, "batch_size": 16, "progress": False, "seed": 0},
                          "output": str(tmp_path / "reg")})
    assert set(result.eval) == {"mse", "pearson", "spearman", "loss"}
    assert result.eval["pearson"] > 0.5
    assert result.trainable_params < result.total_params / 2
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir)
    assert model.config.problem_type == "regression" and not any("lora" in n for n in model.state_dict())


def _bad_inputs(tmp_path, tiny_bert, train):
    (tmp_path / "latin1.csv").write_bytes(b"text,label\ngood,pos\ncaf\xe9,neg\n")
    (tmp_path / "empty_text.csv").write_text("text,label\ngood,pos\n,neg\nbad,neg\n")
    (tmp_path / "unseen.csv").write_text("text,label\ngood,pos\nbad,meh\n")
    (tmp_path / "nan.csv").write_text("text,label\ngood,0.5\nbad,nan\nok,1.5\n")
    (tmp_path / "words.csv").write_text("text,label\ngood,0.5\nbad,high\nok,1.5\n")
    (tmp_path / "notmodel").mkdir()
    (tmp_path / "sheet.xlsx").write_bytes(b"PK")
    return {
        "missing file": (["--train", str(tmp_path / "nope.csv")], "nope.csv: data file not found"),
        "unknown format": (["--train", str(tmp_path / "sheet.xlsx")], "unknown data format"),
        "missing column": (["--train", str(train), "--text", "review"], "no text column 'review'"),
        "empty text": (["--train", str(tmp_path / "empty_text.csv")],
                       "empty_text.csv, line 3, column 'text': empty text"),
        "not utf-8": (["--train", str(tmp_path / "latin1.csv")], "latin1.csv, line 3: bytes"),
        "unseen eval label": (["--train", str(train), "--eval", str(tmp_path / "unseen.csv")],
                              "unseen.csv, line 3, column 'label': label 'meh' does not occur in the training data"),
        "nan target": (["--train", str(tmp_path / "nan.csv"), "--task", "regression"],
                       "nan.csv, line 3, column 'label': regression target 'nan' is not a finite number"),
        "non-numeric target": (["--train", str(tmp_path / "words.csv"), "--task", "regression"],
                               "regression target 'high' is not a finite number"),
        "not a model": (["--model", str(tmp_path / "notmodel")], "not a Hugging Face model folder"),
        "lora targets": (["--method", "lora", "lora.target_modules=q_proj,v_proj"],
                         "match no Linear layer; available Linear names:"),
        "unknown key": (["train.learning_rate=1e-3"],
                        "unknown key 'train.learning_rate'; valid keys here: train.epochs"),
        "wrong type": (["train.epochs=many"], "train.epochs: expected float, got 'many'"),
    }


def test_bad_input_is_one_line_exit_2_and_leaves_no_run_folder(tiny_bert, sentiment_csv, tmp_path, capsys):
    for name, (args, expected) in _bad_inputs(tmp_path, tiny_bert, sentiment_csv).items():
        out = tmp_path / f"run-{name.replace(' ', '-')}"
        argv = fit_args(tiny_bert, sentiment_csv, out)
        for flag_or_override in args:  # later flags win in argparse; overrides just append
            argv.append(flag_or_override)
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, name
        assert err.count("\n") == 0 and err.startswith("pretune fit: error: "), (name, err)
        assert expected in err, (name, err)
        assert "Traceback" not in err
        assert not out.exists(), f"{name}: left a run folder behind"


def test_validate(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("train:\n  lr: 1.0e-4\nmethod:\n  name: lora\n")
    assert main(["validate", str(good)]) == 0
    assert "lr: 0.0001" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: fast\n  epoch: 3\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "train.lr: expected float, got 'fast'" in err and "unknown key 'train.epoch'" in err


def test_existing_run_folder_is_not_clobbered(tiny_bert, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    assert main(fit_args(tiny_bert, sentiment_csv, out)) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert (out / "precious.txt").exists()


@pytest.mark.parametrize("command", ["fit", "search", "run"])
def test_output_naming_a_file_is_a_one_line_error(command, tiny_bert, sentiment_csv, sentiment_eval_csv, tmp_path,
                                                  capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("not a folder")
    argv = [command, "--model", str(tiny_bert), "--train", str(sentiment_csv), "--eval", str(sentiment_eval_csv),
            "--output", str(taken), "train.progress=false"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"pretune {command}: error: output {taken} is a file, not a folder; choose another --output"
    assert taken.read_text() == "not a folder"


def test_resume_with_another_config_is_a_one_line_error(tiny_bert, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "run"
    argv = fit_args(tiny_bert, sentiment_csv, out)
    assert main([*argv, "train.max_steps=2"]) == 0
    (out / "results.json").unlink()  # as if killed before the end: resume would continue it
    capsys.readouterr()
    assert main([*argv, "train.max_steps=2", "train.lr=0.1", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "was started with another config (train.lr differ)" in err, err
    assert f"resume with --config {out / 'config.yaml'}" in err


def _run_cli(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "pretune.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_weights(tiny_bert, tmp_path):
    train = write_csv(tmp_path / "train.csv", make_rows(1600, seed=5))
    common = ["--epochs", "2", "train.checkpoint_every=10", "train.eval_every=20", "train.restore_best=false",
              "train.keep_checkpoints=2"]
    ref = _run_cli(fit_args(tiny_bert, train, tmp_path / "ref", *common))
    assert ref.wait(timeout=600) == 0, ref.stderr.read()

    out = tmp_path / "killed"
    proc = _run_cli(fit_args(tiny_bert, train, out, *common))
    ckpts = out / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not (ckpts.is_dir() and len(list(ckpts.glob("step-*"))) >= 2):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists(), "the run finished before it could be killed"
    assert not (out / "model").exists()

    resumed = _run_cli(fit_args(tiny_bert, train, out, *common, "--resume"))
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    a = load_file(str(tmp_path / "ref" / "model" / "model.safetensors"))
    b = load_file(str(out / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    ref_results = json.loads((tmp_path / "ref" / "results.json").read_text())
    res = json.loads((out / "results.json").read_text())
    assert [h["step"] for h in res["history"]] == [h["step"] for h in ref_results["history"]]
    assert res["eval"] == ref_results["eval"]
