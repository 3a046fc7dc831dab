"""`honed export`: ship a run's tuned model, and check that what ships answers like what was evaluated.

    run_export.py  options, paths, the all-or-nothing export folder      (export_run, ExportSettings)
    merged.py      merged weights in the base dtype; portable adapters
    gguf.py        GGUF through llama.cpp's converter/quantiser; Ollama Modelfile
    tools.py       installs llama.cpp's converter from the llama-cpp-python sdist (make gguf-tools)
    _convert.py    runs that converter in a child process
    parity.py      the artifact vs the tuned model on the holdout (eval's metrics, paired bootstrap)
    llamacpp.py    answers from llama.cpp itself, for GGUF parity when llama-cpp-python is installed
    card.py        the model card (README.md)
"""
