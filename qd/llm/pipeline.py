"""The run's LLM endpoint as the *pipeline* (the user's system under search) sees it.

``[llm]`` in a run config names one OpenAI-compatible endpoint for the whole run. The LLM
operators use it through :class:`qd.llm.LLMClient`; the domain gets it as a
:class:`PipelineLLM` (the runner sets ``domain.pipeline_llm``), and code running inside an
evaluation reads it with :func:`pipeline_llm`, so a user's pipeline needs no endpoint of its own::

    client = qd.pipeline_llm().openai_client()        # openai.OpenAI at the run's endpoint
    lm = qd.pipeline_llm().dspy_lm()                   # dspy.LM at the same endpoint

``[llm] pipeline_model`` (and ``pipeline_base_url``) give the pipeline another model (or
endpoint) than the operators; empty means the same as ``model`` (``base_url``).
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from qd.llm.endpoint import LLMEndpoint
from qd.llm.models import MODEL_ALIAS

__all__ = ["PipelineLLM", "pipeline_llm", "pipeline_scope"]

_CURRENT: contextvars.ContextVar[PipelineLLM | None] = contextvars.ContextVar("qd_pipeline_llm", default=None)


@dataclass
class PipelineLLM(LLMEndpoint):
    """Endpoint, model and key variable of the pipeline's LLM.

    Parameters
    ----------
    base_url : str, optional
        OpenAI-compatible endpoint; ``None`` or ``""`` for the embedded model (started on first
        use; a copy pickled to local Ray workers uses the driver's server when it runs).
    model : str
        Model name sent with each request.
    api_key_env : str
        Environment variable holding the key (read when a client is made, never stored).
    temperature : float, optional
        Default sampling temperature for clients made here (``None``: the SDK's default).
    """

    base_url: str | None = None
    model: str = MODEL_ALIAS
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float | None = None
    _resolved_url: str | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, llm: dict[str, Any]) -> PipelineLLM:
        """The pipeline's settings from a resolved ``[llm]`` section."""
        return cls(base_url=llm.get("pipeline_base_url") or llm.get("base_url") or None,
                   model=llm.get("pipeline_model") or llm.get("model") or MODEL_ALIAS,
                   api_key_env=llm.get("api_key_env") or "OPENAI_API_KEY")

    def litellm_kwargs(self) -> dict[str, Any]:
        """``model``, ``api_base`` and ``api_key`` for ``litellm.completion(**kwargs, messages=...)``."""
        return {"model": "openai/" + self.model, "api_base": self.resolved_base_url(), "api_key": self.api_key()}

    def dspy_lm(self, model: str | None = None, **kwargs: Any) -> Any:
        """A ``dspy.LM`` at this endpoint (``model`` overrides the configured one)."""
        import dspy

        if self.temperature is not None:
            kwargs.setdefault("temperature", self.temperature)
        return dspy.LM("openai/" + (model or self.model), api_base=self.resolved_base_url(), api_key=self.api_key(),
                       **kwargs)

    # Pickled for Ray workers: the embedded server's address travels when it already runs here.
    def __getstate__(self) -> dict[str, Any]:
        return self._pickled_endpoint(dict(self.__dict__), start=False)

    def __setstate__(self, state: dict[str, Any]) -> None:
        same_host = state.get("_resolved_on") == socket.gethostname()
        super().__setstate__(state)
        # Sent from this machine with no embedded model running there: the domain did not declare uses_llm.
        self._unstarted_by_sender = self.is_local and same_host and self._resolved_url is None

    def resolved_base_url(self) -> str:
        """The endpoint to call, starting the embedded server in this process if needed (see the class)."""
        if getattr(self, "_unstarted_by_sender", False) and self._resolved_url is None:
            warnings.warn("qd.pipeline_llm() starts the embedded model in this worker process, because the domain "
                          "does not declare uses_llm=True and the driver started none for its workers to share (each "
                          "worker loads its own): declare uses_llm=True on the domain", stacklevel=2)
        return super().resolved_base_url()


def pipeline_llm() -> PipelineLLM:
    """The pipeline LLM of the running evaluation (its domain's ``pipeline_llm``), else the default.

    The default is the embedded model, or ``QD_LLM_BASE_URL`` / ``QD_LLM_MODEL`` when set.
    Outside an evaluation it warns (once per calling line): a client made at import time would
    ignore the run's ``[llm]``.
    """
    current = _CURRENT.get()
    if current is not None:
        return current
    warnings.warn("qd.pipeline_llm() outside an evaluation gives the default endpoint (the embedded model, or "
                  "QD_LLM_BASE_URL), not a run's [llm]: under qd run, call it inside the score function",
                  stacklevel=2)
    return PipelineLLM(base_url=os.environ.get("QD_LLM_BASE_URL") or None,
                       model=os.environ.get("QD_LLM_MODEL") or MODEL_ALIAS)


@contextlib.contextmanager
def pipeline_scope(settings: PipelineLLM | None) -> Iterator[None]:
    """Within the block (and threads and tasks it starts), :func:`pipeline_llm` returns ``settings``."""
    token = _CURRENT.set(settings)
    try:
        yield
    finally:
        _CURRENT.reset(token)
