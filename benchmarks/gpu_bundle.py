"""What ``benchmarks/gpu_check.sh`` needs on a GPU machine that reaches no package registry, in one folder
small enough to travel with the call (this workplace's device machine: 64 MiB a call, the repository included).

    python benchmarks/gpu_bundle.py .gpu        # then, there: bash benchmarks/gpu_check.sh --bundle .gpu OUT

writes

    .gpu/data/sst2/{train,dev}.tsv   the SST-2 files the benchmark reads (4 MB)
    .gpu/minilm/                     the packaged MiniLM with its weights stored in fp16 (45 MB instead of 91);
                                     config.json says float32, so they load as fp32, rounded to fp16's 11 bits
    .gpu/smollm2/                    SmolLM2-135M's config and tokenizer, read from the packaged GGUF, and no
                                     weights: the 98 MB file cannot travel. gpu_check.sh gives it seeded random
                                     weights of that shape there, which take the same time per step as the real
                                     ones; its accuracy then says nothing about SmolLM2's (both arms start from the
                                     same weights, so they still compare like for like)

Everything else the check needs (torch, transformers, peft, safetensors, pytest, pyyaml, scipy, pyarrow) is in
that machine's image; pretune itself runs from the checkout (``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
MINILM_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def bundle_data(data: Path, out: Path) -> None:
    (out / "sst2").mkdir(parents=True, exist_ok=True)
    for name in ("train.tsv", "dev.tsv"):
        shutil.copyfile(data / "sst2" / name, out / "sst2" / name)


def bundle_minilm(src: Path, out: Path) -> None:
    """The MiniLM folder with fp16 weights that load as fp32 (transformers loads a checkpoint in its stored
    dtype unless the config names one)."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for name in MINILM_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    weights = load_file(str(src / "model.safetensors"))
    save_file({k: v.half() for k, v in weights.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((out / "config.json").read_text())
    cfg["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(cfg, indent=2))


def bundle_smollm2(gguf: Path, out: Path) -> None:
    """Config and tokenizer of a GGUF model, without its weights."""
    from transformers import AutoConfig

    from pretune.models import load_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(out))
    load_tokenizer(str(gguf)).save_pretrained(str(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the folder to write (ignore it in git and carry it)")
    p.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"), help="folder holding sst2/")
    args = p.parse_args()
    from pretune.models import resolve_model_path

    out = Path(args.out)
    bundle_data(Path(args.data), out / "data")
    bundle_minilm(Path(resolve_model_path("minilm")), out / "minilm")
    bundle_smollm2(Path(resolve_model_path("smollm2")), out / "smollm2")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
