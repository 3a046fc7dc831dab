"""Tiny random-weight models of each family honed supports, built in-process (no download).

Each is the committed tiny tokenizer (tests/assets/tiny-llama: byte-level BPE, vocab 512) with its ChatML
tokens renamed away, the family's own special tokens added and no chat template (a base model, as most
GGUF files and base checkpoints are), and a transformers model of the family's real architecture class
(<= 2 layers, hidden 32), saved with save_pretrained. honed then has to find the template itself.

    >>> folder = build("gemma3", tmp_path / "gemma3")  # doctest: +SKIP
    >>> AutoTokenizer.from_pretrained(folder).chat_template is None  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import TINY

# The tiny tokenizer's three special tokens; renamed so no family but Qwen's has ChatML markers.
TINY_SPECIALS = {"<|endoftext|>": "<|reserved_special_0|>", "<|im_start|>": "<|reserved_special_1|>",
                 "<|im_end|>": "<|reserved_special_2|>"}
SHAPE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
         "num_key_value_heads": 1, "max_position_embeddings": 512, "tie_word_embeddings": True,
         # wide enough that a frozen tied lm_head can express a confident answer (at 0.02 every logit is
         # within +-0.7, so LoRA cannot make any token likely and the tiny model never learns to stop)
         "initializer_range": 0.5}


@dataclass(frozen=True)
class FamilySpec:
    """One family's tokens, its architecture, and what honed must choose for it."""

    name: str
    config: str  # the transformers config class
    model_type: str  # what the saved config.json says
    eos: str
    pad: str
    extra: tuple[str, ...]  # the turn tokens (additional special tokens)
    template: str  # the family template honed must choose
    end_of_turn: str  # what ends an answer
    bos: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # config arguments of this architecture only
    added: tuple[str, ...] = ()  # tokens honed must add itself (no family's turn tokens in the vocabulary)


LLAMA3_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
GEMMA_TOKENS = ("<start_of_turn>", "<end_of_turn>")

FAMILIES: dict[str, FamilySpec] = {f.name: f for f in (
    FamilySpec("llama3", "LlamaConfig", "llama", eos="<|end_of_text|>", pad="<|finetune_right_pad_id|>",
               bos="<|begin_of_text|>", extra=LLAMA3_TOKENS, template="llama3", end_of_turn="<|eot_id|>"),
    FamilySpec("qwen2", "Qwen2Config", "qwen2", eos="<|endoftext|>", pad="<|endoftext|>", extra=CHATML_TOKENS,
               template="chatml", end_of_turn="<|im_end|>"),
    FamilySpec("qwen3", "Qwen3Config", "qwen3", eos="<|endoftext|>", pad="<|endoftext|>", extra=CHATML_TOKENS,
               template="chatml", end_of_turn="<|im_end|>", options={"head_dim": 16}),
    FamilySpec("gemma2", "Gemma2Config", "gemma2", eos="<eos>", pad="<pad>", bos="<bos>", extra=GEMMA_TOKENS,
               template="gemma", end_of_turn="<end_of_turn>", options={"head_dim": 16, "sliding_window": 64}),
    FamilySpec("gemma3", "Gemma3TextConfig", "gemma3_text", eos="<eos>", pad="<pad>", bos="<bos>",
               extra=GEMMA_TOKENS, template="gemma", end_of_turn="<end_of_turn>",
               options={"head_dim": 16, "sliding_window": 64}),
    FamilySpec("phi3", "Phi3Config", "phi3", eos="<|endoftext|>", pad="<|endoftext|>", bos="<s>",
               extra=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"), template="phi3", end_of_turn="<|end|>"),
    # Mistral v0.3 has [INST] and [/INST] as control tokens; its answers end with eos.
    FamilySpec("mistral", "MistralConfig", "mistral", eos="</s>", pad="<unk>", bos="<s>", extra=("[INST]", "[/INST]"),
               template="mistral", end_of_turn="</s>", options={"sliding_window": None}),
    # A base model with no template and no family's turn tokens: honed adds ChatML's as special tokens.
    FamilySpec("none", "LlamaConfig", "llama", eos="<|endoftext|>", pad="<|endoftext|>", extra=(),
               template="chatml", end_of_turn="<|im_end|>", added=CHATML_TOKENS),
)}


def base_tokenizer() -> Any:
    """The tiny tokenizer without its ChatML tokens or template (its three specials renamed)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    data = json.loads((Path(TINY) / "tokenizer.json").read_text(encoding="utf-8"))
    for token in data["added_tokens"]:
        token["content"] = TINY_SPECIALS.get(token["content"], token["content"])
    vocab = data["model"]["vocab"]
    for old, new in TINY_SPECIALS.items():
        vocab[new] = vocab.pop(old)
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(data)))


def family_tokenizer(spec: FamilySpec) -> Any:
    """The base tokenizer with the family's special tokens added and no chat template."""
    tokenizer = base_tokenizer()
    specials: dict[str, Any] = {"eos_token": spec.eos, "pad_token": spec.pad}
    if spec.bos:
        specials["bos_token"] = spec.bos
    if spec.extra:
        specials["additional_special_tokens"] = list(spec.extra)
    tokenizer.add_special_tokens(specials)
    tokenizer.chat_template = None
    return tokenizer


def family_model(spec: FamilySpec, tokenizer: Any) -> Any:
    """A randomly initialised model of the family's architecture class, sized to the tokenizer."""
    import torch
    import transformers

    config = getattr(transformers, spec.config)(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **SHAPE, **spec.options)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    assert model.config.model_type == spec.model_type, model.config.model_type
    return model


def build(name: str, folder: Path) -> Path:
    """Save family `name`'s tiny tokenizer and model to `folder` (a model path honed takes); returns it."""
    spec = FAMILIES[name]
    tokenizer = family_tokenizer(spec)
    model = family_model(spec, tokenizer)
    end = tokenizer.convert_tokens_to_ids(spec.end_of_turn) if spec.end_of_turn in tokenizer.get_vocab() else None
    if end is not None:  # the padding row is initialised to zeros: the end of turn must not be that row
        assert model.get_input_embeddings().weight[end].abs().sum() > 0, f"{name}: end of turn row is zero"
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder
