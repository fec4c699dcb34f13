"""Session-wide fixtures: one Ray runtime and one embedded LLM server per test session."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray runtime shared by every test that needs one (Ray is slow to start)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # "local": a fresh runtime even while a `ray start` cluster of this machine (the multi-host test's
        # head) is named in /tmp/ray/ray_current_cluster, which ray.init would otherwise join
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def local_llm():
    """The embedded gemma-3-270m server, started once; yields its OpenAI-compatible base URL."""
    from qd.llm.local import EmbeddedServer

    server = EmbeddedServer()
    base_url = server.start()
    yield base_url
    server.stop()
