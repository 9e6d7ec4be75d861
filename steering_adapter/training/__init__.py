"""Training scripts of the embedded models (run with ``python -m``); nothing at run time imports them.

- ``python -m steering_adapter.training.organism --out DIR``: the 4M-parameter organism;
- ``python -m steering_adapter.training.smollm2_overlay --out DIR``: SmolLM2's censorship overlay (LoRA);
- ``python -m steering_adapter.training.lookalike_ceiling --out DIR``: how well the organism can tell harmful
  prompts from benign look-alikes at all.
"""
