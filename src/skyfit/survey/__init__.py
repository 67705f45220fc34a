"""Survey scale: one model fitted to many objects in batches, and sharded over Dask workers."""

from .catalogue import CatalogueError, default_chunk_size, fit_catalogue, fit_chunk
from .objects import ManyObjects, stack_ragged
from .padded import PaddedPhotometry

__all__ = ["ManyObjects", "PaddedPhotometry", "stack_ragged", "fit_catalogue", "fit_chunk",
           "default_chunk_size", "CatalogueError"]
