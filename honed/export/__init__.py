"""`honed export`: ship a run's tuned model (merged weights, a portable adapter, or GGUF with an Ollama
Modelfile, each with a model card), and check that what ships answers like what was evaluated (parity).
Module map: docs/architecture.md.
"""
