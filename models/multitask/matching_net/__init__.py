"""A PaddleRec-style model folder; the drivers load its dygraph_model.py next to the config."""
