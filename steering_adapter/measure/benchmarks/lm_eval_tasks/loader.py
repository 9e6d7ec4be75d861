"""The loader lm-eval imports for the offline MMLU tasks (``custom_dataset: !function loader.mmlu_dataset``)."""

from steering_adapter.measure.benchmarks.mmlu import mmlu_dataset

__all__ = ["mmlu_dataset"]
