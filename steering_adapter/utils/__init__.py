"""What every stage leans on: crash-safe records, ``torch.distributed`` helpers, thread settings, version checks,
the shared-datasets folder and lazy package exports."""

from steering_adapter.utils.records import JsonlLog, atomic_write_json, atomic_write_text, json_safe, stable_key
from steering_adapter.utils.shared_datasets import DATASETS_ENV, default_datasets_dir
from steering_adapter.utils.threads import THREADS_ENV, configure_threads

__all__ = [
    "DATASETS_ENV",
    "THREADS_ENV",
    "JsonlLog",
    "atomic_write_json",
    "atomic_write_text",
    "configure_threads",
    "default_datasets_dir",
    "json_safe",
    "stable_key",
]
