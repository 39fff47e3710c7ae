"""Tiny randomly initialised models of every family pretune supports, each saved with a word-level tokenizer.

``make_tiny(family, folder)`` writes a 2-layer, 32-wide base model (no head: ``pretune`` attaches the
task's) and a tokenizer over the words of ``conftest.WORDS``. Nothing is downloaded. The decoders'
tokenizers have no pad token, as Llama's and Qwen2's ship, so ``load_tokenizer`` must set one.
"""

from __future__ import annotations

from pathlib import Path

from conftest import WORDS

FAMILIES = ("bert", "roberta", "distilbert", "deberta-v2", "modernbert", "llama", "qwen2")
DECODERS = ("llama", "qwen2")

# Special tokens in vocabulary order (ids 0..), the single and pair templates, and the inputs the model takes.
_SPECIALS = {
    "bert": (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1"),
    "roberta": (["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<s> $A </s>", "<s> $A </s> </s> $B </s>"),
    "deberta-v2": (["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], "[CLS] $A [SEP]", "[CLS] $A [SEP] $B [SEP]"),
    "modernbert": (["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"], "[CLS] $A [SEP]", "[CLS] $A [SEP] $B [SEP]"),
    # decoders: a BOS, an EOS, no pad token (Llama ships without one)
    "llama": (["<unk>", "<s>", "</s>"], "<s> $A", "<s> $A <s> $B"),
}
_SPECIALS["distilbert"] = _SPECIALS["bert"]
_ROLES = {"[PAD]": "pad_token", "<pad>": "pad_token", "[UNK]": "unk_token", "<unk>": "unk_token",
          "[CLS]": "cls_token", "[SEP]": "sep_token", "[MASK]": "mask_token", "<mask>": "mask_token",
          "<s>": "bos_token", "</s>": "eos_token"}


def _qwen2_tokenizer():
    """A byte-level BPE trained on the word list: AutoTokenizer always builds Qwen2's own class for qwen2."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([" ".join(WORDS)] * 3 + WORDS, trainer)
    spec = json.loads(bpe.to_str())["model"]
    return Qwen2Tokenizer(vocab=spec["vocab"], merges=[tuple(m) for m in spec["merges"]]), spec["vocab"]


def _tokenizer(family: str):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if family == "qwen2":  # ships with pad = eos = <|endoftext|>, as Qwen2's tokenizers do
        return _qwen2_tokenizer()
    specials, single, pair = _SPECIALS[family]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    unk = next((s for s in specials if _ROLES.get(s) == "unk_token"), specials[0])
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(s, vocab[s]) for s in specials if s in single + pair])
    roles = {_ROLES[s]: s for s in specials if s in _ROLES}
    if family == "roberta":
        roles["cls_token"], roles["sep_token"] = "<s>", "</s>"
    names = ["input_ids", "token_type_ids", "attention_mask"] if family == "bert" else ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_input_names=names, **roles), vocab


def _config(family: str, vocab: dict, hidden: int):
    import transformers as t

    n = len(vocab)
    common = dict(vocab_size=n, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=2 * hidden, max_position_embeddings=64)
    if family == "bert":
        return t.BertConfig(**common, pad_token_id=vocab["[PAD]"])
    if family == "roberta":  # positions start after the pad id, as RoBERTa's do
        return t.RobertaConfig(**{**common, "max_position_embeddings": 66}, pad_token_id=1, bos_token_id=0,
                               eos_token_id=2, type_vocab_size=1)
    if family == "distilbert":
        return t.DistilBertConfig(vocab_size=n, dim=hidden, n_layers=2, n_heads=2, hidden_dim=2 * hidden,
                                  max_position_embeddings=64, pad_token_id=0)
    if family == "deberta-v2":  # DeBERTa-v3's settings: relative attention, no absolute positions, no segments
        return t.DebertaV2Config(**common, relative_attention=True, position_buckets=16, max_relative_positions=-1,
                                 pos_att_type=["p2c", "c2p"], position_biased_input=False, type_vocab_size=0,
                                 norm_rel_ebd="layer_norm", pad_token_id=vocab["[PAD]"])
    if family == "modernbert":  # one global and one local layer (every 2nd is global), a window of 8 tokens
        return t.ModernBertConfig(**common, global_attn_every_n_layers=2, local_attention=8,
                                  pad_token_id=vocab["[PAD]"], cls_token_id=vocab["[CLS]"], bos_token_id=vocab["[CLS]"],
                                  sep_token_id=vocab["[SEP]"], eos_token_id=vocab["[SEP]"])
    if family == "llama":
        return t.LlamaConfig(**common, num_key_value_heads=1, bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"],
                             pad_token_id=None, tie_word_embeddings=False)
    if family == "qwen2":
        return t.Qwen2Config(**common, num_key_value_heads=1, eos_token_id=vocab["<|endoftext|>"],
                             bos_token_id=None, pad_token_id=None, tie_word_embeddings=False)
    raise ValueError(f"unknown family {family!r}")


def make_tiny(family: str, folder: Path, hidden: int = 32, seed: int = 0) -> Path:
    """Save a random 2-layer ``family`` base model and its word-level tokenizer into ``folder``."""
    import torch
    from transformers import AutoModel

    folder.mkdir(parents=True, exist_ok=True)
    tok, vocab = _tokenizer(family)
    torch.manual_seed(seed)
    AutoModel.from_config(_config(family, vocab, hidden)).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder
