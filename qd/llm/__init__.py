"""LLM access for qd.

An OpenAI-compatible client with cache, retries and accounting, and the embedded local model.

``LLMClient`` is cheap to import and construct; the embedded server (``qd.llm.local``) and the
``openai`` package are loaded only when a request is made.
"""
from qd.llm.cache import RequestCache, request_key
from qd.llm.client import LLMClient, LLMError, LLMResponse, Usage
from qd.llm.prices import DEFAULT_PRICES

__all__ = [
    "DEFAULT_PRICES",
    "LLMClient",
    "LLMError",
    "LLMResponse",
    "RequestCache",
    "Usage",
    "ensure_local_server",
    "request_key",
]


def ensure_local_server() -> str:
    """Start (once per process) the embedded gemma-3-270m server and return its base URL."""
    from qd.llm.local import ensure_local_server as _ensure

    return _ensure()
