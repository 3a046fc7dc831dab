"""Answer holdout prompts with llama.cpp itself (the `llama-cpp-python` bindings), for GGUF parity.

The prompt is rendered by the artifact's chat template exactly as honed renders it, then tokenized by
llama.cpp's own tokenizer from the GGUF (special tokens parsed), so parity covers what a llama.cpp server
would see: the GGUF's vocabulary and pre-tokenizer, its weights and its end-of-generation tokens.
Decoding is greedy (temperature 0, top-k 1) and stops at the GGUF's end-of-generation tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from honed.model.prompt import render_prompt
from honed.data.types import Conversation
from honed.export.llamacpp_buffers import plain_weight_buffers
from honed.export.parity import Answerer


def answer_with_llama_cpp(path: Path, tokenizer: Any, *, threads: int | None = None) -> Answerer:
    """An Answerer backed by llama.cpp on the GGUF at `path` (loaded on first use).

    Usage: `answer_with_llama_cpp(Path("out/model-q8_0.gguf"), tokenizer)(holdout[:2], 32)` gives one answer
    per conversation (needs a GGUF and llama-cpp-python: the GGUF parity of tests/e2e/test_export_cli.py).
    """
    loaded: list[Any] = []

    def answer(holdout: Sequence[Conversation], max_new_tokens: int) -> list[str]:
        import logging

        import torch
        from llama_cpp import Llama

        if not loaded:
            # llama.cpp prints its loading chatter (e.g. "using full-size SWA cache") until verbose=False takes
            # effect; its logger at ERROR keeps it out of honed's output from the start
            logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
            with plain_weight_buffers():  # AMX repacking crashes llama.cpp (see llamacpp_buffers)
                loaded.append(Llama(model_path=str(path), n_ctx=0, n_threads=threads or torch.get_num_threads(),
                                    seed=0, verbose=False))
        llm = loaded[0]
        outputs = []
        for conversation in holdout:
            text = tokenizer.decode(render_prompt(conversation, tokenizer))
            ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            llm.reset()
            result = llm.create_completion(ids, max_tokens=max_new_tokens, temperature=0.0, top_k=1, top_p=1.0)
            outputs.append(result["choices"][0]["text"].strip())
        return outputs

    return answer
