"""`honed serve`: an OpenAI-compatible HTTP server for tuned runs and exported models.

    app.py         routes, limits, auth, errors in OpenAI's JSON shape, SSE streaming
    schemas.py     request validation and response bodies
    engine.py      the models served (one base model, one LoRA adapter per run) and the scheduler thread
    batch.py       continuous batching: a running batch that new requests join between decode steps
    textstream.py  incremental detokenization and `stop` strings
    requestlog.py  the request log (docs/request-log.md)
    metrics.py     Prometheus metrics
    vllm.py        `--engine vllm`: start vLLM's own server with the runs' adapters, behind honed's front
"""
