"""What :class:`qd.llm.LLMClient` and :class:`qd.llm.pipeline.PipelineLLM` share: one endpoint.

An endpoint is a ``base_url`` (empty: the embedded model, started on first use), the name of
the environment variable holding its key, and, for the embedded model, the address its server
got in this process. Pickled copies (Ray workers) keep that address when they are unpickled on
the same machine, so local workers share the driver's model rather than each loading its own;
on another machine the address (``127.0.0.1`` of the sender) is dropped and a server starts there.
"""
from __future__ import annotations

import os
import socket
from typing import Any

__all__ = ["LOCAL_KEY", "LLMEndpoint"]

LOCAL_KEY = "sk-local-no-key"  # servers without auth ignore the key; openai insists on one


class LLMEndpoint:
    """Base of classes that call one OpenAI-compatible endpoint.

    Subclasses set ``base_url`` (``None`` or ``""`` for the embedded model), ``api_key_env`` and
    ``_resolved_url`` (``None`` until the embedded server's address is known), and pickle
    through :meth:`_pickled_endpoint` and :meth:`__setstate__`.
    """

    base_url: str | None
    api_key_env: str
    _resolved_url: str | None

    @property
    def is_local(self) -> bool:
        """True when requests go to the embedded model (which costs nothing)."""
        return not self.base_url

    def resolved_base_url(self) -> str:
        """The endpoint to call, starting the embedded server in this process if needed."""
        if self.base_url:
            return self.base_url
        if self._resolved_url is None:
            from qd.llm.local import ensure_local_server  # the server module only when a request needs it

            self._resolved_url = ensure_local_server()
        return self._resolved_url

    def api_key(self) -> str:
        """The key from ``api_key_env`` (a placeholder when unset: local servers need none).

        Read on each call and never stored, so it cannot leak through ``repr``, pickling or logs.
        """
        return os.environ.get(self.api_key_env, "") or LOCAL_KEY

    def openai_client(self, **kwargs: Any) -> Any:
        """An ``openai.OpenAI`` client at this endpoint (``kwargs`` go to the constructor)."""
        import openai

        return openai.OpenAI(base_url=self.resolved_base_url(), api_key=self.api_key(), **kwargs)

    def async_openai_client(self, **kwargs: Any) -> Any:
        """An ``openai.AsyncOpenAI`` client at this endpoint."""
        import openai

        return openai.AsyncOpenAI(base_url=self.resolved_base_url(), api_key=self.api_key(), **kwargs)

    def _pickled_endpoint(self, state: dict[str, Any], *, start: bool) -> dict[str, Any]:
        """``state`` with the embedded server's address and this host, for :meth:`__setstate__`.

        ``start`` starts the server here when it is not running yet; otherwise a copy pickled
        before it runs starts its own wherever it is unpickled.
        """
        if self.is_local:
            if start:
                state["_resolved_url"] = self.resolved_base_url()
            elif state.get("_resolved_url") is None:
                from qd.llm.local import local_server

                server = local_server()
                state["_resolved_url"] = server.base_url if server is not None else None
            state["_resolved_on"] = socket.gethostname()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        resolved_on = state.pop("_resolved_on", None)
        if resolved_on is not None and resolved_on != socket.gethostname():
            state["_resolved_url"] = None  # 127.0.0.1 of another machine: start a server here
        self.__dict__.update(state)
