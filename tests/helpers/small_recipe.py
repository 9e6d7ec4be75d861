"""Recipe overrides (``--set``) that make the organism recipe small enough for a test run of the pipeline."""

SMALL = [
    "sampling.k=1",
    "sampling.max_new_tokens=32",
    "prompts.max_train_per_set=48",
    "prompts.max_eval_per_set=12",
    "selection.max_prompts_per_set=8",
    "selection.layer_counts=[3]",
]
