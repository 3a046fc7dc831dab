"""`honed serve`: an OpenAI-compatible HTTP server for tuned runs and exported models: one base model in
memory with one LoRA adapter per run, continuous batching, OpenAI's errors and limits, and the request log;
vLLM or llama.cpp can decode behind the same front. Module map: docs/architecture.md.
"""
