"""The model layer every stage asks: loading (base, adapter, tokenizer source), the chat template by
family, the end of turn, prompt rendering and decoding (generate, the running batch, constraints).
No stage derives any of these on its own. Module map: docs/architecture.md."""
