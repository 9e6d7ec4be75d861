"""The models shipped with the package, addressed by ids no Hub repo can have (``steering-adapter:organism``,
``steering-adapter:smollm2-censored``): the 4M-parameter organism and SmolLM2-135M-Instruct with its censorship
overlay. Their training code lives in :mod:`steering_adapter.training`, never imported at run time."""

from steering_adapter.models.embedded import (
    EMBEDDED_ID_PREFIX,
    EMBEDDED_MODELS,
    canonical_name,
    embedded_config_dir,
    embedded_folder,
    embedded_id,
    is_embedded,
    load_embedded,
    resolve_embedded,
)
from steering_adapter.models.organism import ORGANISM_DIR, ORGANISM_ID, load_organism
from steering_adapter.models.smollm2 import load_smollm2

__all__ = [
    "EMBEDDED_ID_PREFIX",
    "EMBEDDED_MODELS",
    "ORGANISM_DIR",
    "ORGANISM_ID",
    "canonical_name",
    "embedded_config_dir",
    "embedded_folder",
    "embedded_id",
    "is_embedded",
    "load_embedded",
    "load_organism",
    "load_smollm2",
    "resolve_embedded",
]
