"""Contract tests shipped with qd: pytest base classes for your own domains, operators and other extensions.

Subclass one in a test module (its name starting with ``Test``) and provide the object under
test as a fixture; pytest then runs every ``test_*`` method of the contract on it::

    import pytest
    from qd.testing import DomainContract

    class TestMyDomain(DomainContract):
        @pytest.fixture
        def domain(self):
            return MyDomain()

- :class:`OperatorContract`: children validate against the space, are deterministic given the
  rng, and leave the parents untouched.
- :class:`DomainContract`: ``evaluate`` returns a well-formed :class:`~qd.result.EvalResult`,
  the domain survives pickling for Ray, its measures are finite, its space round-trips.
- :class:`EvaluatorContract`: every key comes back once with its own result; exceptions and
  deadlines become ``"error"`` and ``"timeout"`` results; ``close`` returns with work in flight.
- :class:`ListenerContract`: the listener takes every hook and changes nothing the search does.
- :class:`DescriptorContract`: finite, repeatable values that leave their inputs untouched and do
  not depend on the order of a trace's spans.

Importing this package needs pytest (``pip install 'qd[test]'``).
"""
from qd.testing.descriptors import DescriptorContract
from qd.testing.domains import DomainContract
from qd.testing.evaluators import EvaluatorContract
from qd.testing.listeners import ListenerContract
from qd.testing.operators import OperatorContract

__all__ = ["DomainContract", "OperatorContract", "EvaluatorContract", "ListenerContract", "DescriptorContract"]
