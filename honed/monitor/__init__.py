"""Watch a served model: input drift against the training data, output health, canaries, and the request log
turned back into training data (`honed monitor`, `honed data from-traffic`, `honed data review`). Module map:
docs/architecture.md.
"""
