"""Survey scale: one model fitted to many objects in batches, and sharded over Dask workers."""

from .objects import ManyObjects, stack_ragged

__all__ = ["ManyObjects", "stack_ragged"]
