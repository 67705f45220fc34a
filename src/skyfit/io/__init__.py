"""Saving and loading models and results: JSON specs with safetensors, no pickle."""

from .model import build_model, dump_model, load_model, save_model
from .registry import register_function, register_module

__all__ = ["save_model", "load_model", "dump_model", "build_model", "register_module",
           "register_function"]
