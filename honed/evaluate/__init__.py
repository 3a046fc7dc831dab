"""The evaluate stage: the tuned model against the base model, prompting, the constant answer and other
systems on the same holdout, scored by task metrics with paired-bootstrap intervals and a plain verdict
(`honed eval`, `honed compare`). Module map: docs/architecture.md.
"""
