"""Watch a served model: input drift against the training data, output health, canaries, traffic -> data.

>>> from honed.monitor.report import monitor_run  # doctest: +SKIP
"""
