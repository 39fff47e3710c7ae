"""``pretune serve``'s refusals before it serves: each a one-line error with exit status 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pretune.cli import main


def test_without_the_serve_extra_it_fails_with_one_line_naming_it(tmp_path, classifier):
    import pretune

    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class NoServe:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('fastapi', 'uvicorn'):\n"
        "            raise ImportError(f'{name} is made unimportable for this test')\n"
        "sys.meta_path.insert(0, NoServe())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(Path(pretune.__file__).parents[1])])}
    out = subprocess.run([sys.executable, "-m", "pretune", "serve", str(classifier)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]  # one line, no traceback
    assert "pretune[serve]" in out.stderr and out.stderr.startswith("pretune serve: error:")


def refusal(capsys, *argv) -> str:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    assert main(["serve", *map(str, argv)]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("listening on")]
    assert len(err) == 1 and err[0].startswith("pretune serve: error: "), err
    return err[0]


def test_a_path_without_a_model_is_refused(tmp_path, capsys):
    assert "no such file or folder" in refusal(capsys, tmp_path / "nowhere")
    assert "not a Hugging Face model folder (no config.json), nor a run folder" in refusal(capsys, tmp_path)


def test_bad_settings_are_refused_together(classifier, capsys):
    line = refusal(capsys, classifier, "--max-batch-size", "0", "--max-texts", "0", "--token", " ")
    assert "--max-batch-size must be >= 1, got 0" in line and "--max-texts" in line and "--token" in line
    assert "the model has 64 positions" in refusal(capsys, classifier, "--max-length", "100")


def test_a_taken_port_is_refused(classifier, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert "cannot listen there" in refusal(capsys, classifier, "--port", taken.getsockname()[1])


def test_a_model_that_writes_text_is_refused(tmp_path, capsys):
    from transformers import BertConfig

    cfg = BertConfig()
    cfg.pretune_task = "causal_lm"
    cfg.save_pretrained(str(tmp_path / "lm"))
    assert "pretune generate" in refusal(capsys, tmp_path / "lm")


def test_a_model_that_fails_to_load_stops_the_server_with_one_line(classifier, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(classifier, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")  # config.json is fine: it fails only loading
    line = refusal(capsys, broken, "--port", 0)
    assert "cannot load as a fine-tuned model" in line and str(broken) in line and "header" in line


def test_the_socket_sends_small_answers_at_once():
    """TCP_NODELAY on the listening socket (connections inherit it): without, each answer waited for the client's
    delayed ACK, 40 ms on Linux."""
    from pretune.cli.serve import listen

    with listen("127.0.0.1", 0) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        sock.listen()
        with socket.create_connection(sock.getsockname()) as client, sock.accept()[0] as accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) and client
