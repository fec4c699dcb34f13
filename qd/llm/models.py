"""Names of the models qd knows without loading anything: the embedded model's alias."""
from __future__ import annotations

__all__ = ["MODEL_ALIAS"]

#: Name under which the embedded server exposes its model (use it as ``LLMClient(model=...)``).
MODEL_ALIAS = "gemma-3-270m"
