"""Semi-supervised methods: small objects with `training_step`, driven by the one loop in ssl_seg.engine.trainer."""

from .base import Method, MethodBase
from .registry import METHODS, build_method, method_class, method_names

__all__ = ["METHODS", "Method", "MethodBase", "build_method", "method_class", "method_names"]
