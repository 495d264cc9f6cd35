"""The small library under every model: config options and their checks
(config.py), episode metrics (metrics.py), checkpoint I/O (checkpoint.py).
It imports nothing of the project; models, their shared code and the drivers
in tools/ import it."""
