"""The model registry: versions, lineage, stages, aliases and their append-only history."""

from avops.registry.models import (
    ALIAS_STAGES,
    ALLOWED,
    EVENT_KINDS,
    STAGES,
    HistoryEvent,
    ModelRegistry,
    ModelVersion,
    RegistryError,
)

__all__ = ["ALIAS_STAGES", "ALLOWED", "EVENT_KINDS", "STAGES", "HistoryEvent", "ModelRegistry", "ModelVersion", "RegistryError"]
