"""Classic (non-LLM) variation operators over a :class:`~qd.space.Space`.

Every operator here returns offspring that pass ``Space.validate`` when its parents do, and
draws all randomness from the ``rng`` it is given (same rng state, same offspring).

- :class:`Gaussian`: Gaussian noise on the Float/Int leaves in unit space.
- :class:`IsoLineDD`: Iso+LineDD (Vassiliades & Mouret, GECCO 2018) on the Float/Int leaves.
- :class:`Mutation`: type-aware mutation of every kind of leaf and of Seq lengths.
- :class:`UniformCrossover`: each leaf (and Seq item) from either parent.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from qd.operators.base import Operator, Parent
from qd.operators.params import COUNT, NON_NEGATIVE, POSITIVE, RATE
from qd.space import Bool, Categorical, Float, Int, Numeric, Param, Seq, Space, Text, UnitTransform, json_copy
from qd.space.units import from_unit, to_unit

__all__ = ["Gaussian", "IsoLineDD", "Mutation", "UniformCrossover", "CLASSIC", "mutate_leaf"]

_TOKEN = re.compile(r"(\S+)(\s*)")
_LEAF_TYPES = (Numeric, Categorical, Bool, Text)


def _config(parent: Any) -> dict:
    """A parent's configuration (operators accept :class:`Parent` objects or bare configs)."""
    return parent.config if hasattr(parent, "config") else parent


def _check_sigma_units(sigma_units: str) -> bool:
    """Whether sigmas are in each parameter's own units (``"value"``) rather than fractions of its range."""
    if sigma_units not in ("unit", "value"):
        raise ValueError(f"sigma_units must be 'unit' or 'value', got {sigma_units!r}")
    return sigma_units == "value"


def _unit_span(param: Numeric) -> float:
    """What one unit of the unit view is worth in ``param``'s own units (natural log units when ``log``)."""
    if isinstance(param, Float) and param.log:
        span = math.log(param.high) - math.log(param.low)
    else:
        span = float(param.high - param.low)
    return span or 1.0


def _has_non_numeric(param: Param) -> bool:
    """Whether the schema holds any leaf other than Float/Int (or a variable-length Seq)."""
    if isinstance(param, Space):
        return any(_has_non_numeric(p) for p in param.params.values())
    if isinstance(param, Seq):
        return _has_non_numeric(param.item)
    return not isinstance(param, Numeric)


# -- leaf mutations ---------------------------------------------------------------------------------
def _mutate_numeric(param: Numeric, value: Any, rng: np.random.Generator, sigma: float, int_step: float) -> Any:
    if isinstance(param, Int):
        k = max(1, int(round(int_step * (param.high - param.low))))
        step = int(rng.integers(1, k + 1)) * (1 if rng.random() < 0.5 else -1)
        child = min(max(int(value) + step, param.low), param.high)
        if child == value:  # pinned at a bound: step the other way
            child = min(max(int(value) - step, param.low), param.high)
        return child
    u = to_unit(param, value)
    delta = sigma * float(rng.standard_normal())
    child = from_unit(param, min(max(u + delta, 0.0), 1.0))
    if child == value:
        child = from_unit(param, min(max(u - delta, 0.0), 1.0))
    return child


def _edit_text(param: Text, text: str, rng: np.random.Generator) -> str:
    """Delete, duplicate or swap words, keeping the whitespace layout and the length bounds."""
    lead = text[: len(text) - len(text.lstrip())]
    tokens = [list(m) for m in _TOKEN.findall(text)]
    if not tokens:
        return text
    for op in rng.permutation(3).tolist():
        new = [t[:] for t in tokens]
        i = int(rng.integers(len(new)))
        if op == 0 and len(new) > 1:  # delete a word, keeping line breaks and the text's ending
            if i > 0 and (i == len(new) - 1 or "\n" in new[i][1]):
                new[i - 1][1] = new[i][1]
            del new[i]
        elif op == 1:  # duplicate a word in place
            if not new[i][1]:
                new[i][1] = " "
            new.insert(i + 1, [new[i][0], " " if i + 1 < len(new) else tokens[i][1]])
        elif op == 2 and len(new) > 1:  # swap two adjacent words, whitespace stays put
            j = i + 1 if i + 1 < len(new) else i - 1
            new[i][0], new[j][0] = new[j][0], new[i][0]
        else:
            continue
        child = lead + "".join(w + s for w, s in new)
        if child != text and param.min_len <= len(child) <= param.max_len:
            return child
    return text


def mutate_leaf(param: Param, value: Any, rng: np.random.Generator, sigma: float = 0.1,
                int_step: float = 0.1) -> Any:
    """A different valid value for one leaf where there is one (type-aware).

    Float: Gaussian in unit space (``sigma``); Int: a step of 1..``int_step`` × range;
    Categorical: another choice; Bool: flipped; Text: a word deleted, duplicated or swapped.
    """
    if isinstance(param, Numeric):
        if not param.is_valid(value):
            return param.sample(rng)
        return _mutate_numeric(param, value, rng, sigma, int_step)
    if isinstance(param, Categorical):
        i = param.index(value)
        n = len(param.choices)
        if i is None:
            return param.sample(rng)
        if n == 1:
            return param.choices[0]
        j = int(rng.integers(n - 1))
        return param.choices[j + 1 if j >= i else j]
    if isinstance(param, Bool):
        return not bool(value)
    if isinstance(param, Text):
        return _edit_text(param, value, rng) if param.is_valid(value) else param.default()
    return param.sample(rng)  # a whole Space or Seq (not reached by the walkers below)


class _Walker:
    """Type-aware mutation of a whole configuration; ``pick()`` says whether each site mutates.

    Sites are the leaves (Float/Int only when ``numeric``) and, when ``structure``, the
    variable-length Seqs (insert or delete an item), visited in a fixed order.
    """

    def __init__(self, sigma: float, int_step: float, value_units: bool = False):
        self.sigma, self.int_step, self.value_units = sigma, int_step, value_units

    def count(self, param: Param, value: Any, numeric: bool, structure: bool) -> int:
        """The number of sites :meth:`walk` visits (one ``pick()`` each)."""
        # a recursion rather than Space.walk: a Seq of numbers counts in one step (the arm's hot path)
        if isinstance(param, Space):
            if not isinstance(value, dict):
                return 0
            return sum(self.count(p, value[k], numeric, structure) for k, p in param.params.items() if k in value)
        if isinstance(param, Seq):
            if not isinstance(value, list):
                return 0
            if isinstance(param.item, Numeric):
                n = len(value) if numeric else 0
            else:
                n = sum(self.count(param.item, x, numeric, structure) for x in value)
            return n + (1 if structure and param.min_len < param.max_len else 0)
        return 1 if numeric or not isinstance(param, Numeric) else 0

    def walk(self, param: Param, value: Any, rng: np.random.Generator, pick: Callable[[], bool],
             numeric: bool, structure: bool) -> Any:
        if isinstance(param, Space):
            if not isinstance(value, dict):
                return json_copy(value)
            return {k: self.walk(p, value[k], rng, pick, numeric, structure)
                    for k, p in param.params.items() if k in value}
        if isinstance(param, Seq):
            if not isinstance(value, list):
                return json_copy(value)
            restructure = structure and param.min_len < param.max_len and pick()
            items = [self.walk(param.item, x, rng, pick, numeric, structure) for x in value]
            if restructure:
                self._restructure(param, items, rng)
            return items
        if isinstance(param, Numeric) and not numeric:
            return value
        if pick():
            sigma = self.sigma / _unit_span(param) if self.value_units and isinstance(param, Numeric) else self.sigma
            return mutate_leaf(param, value, rng, sigma, self.int_step)
        return value

    @staticmethod
    def _restructure(param: Seq, items: list, rng: np.random.Generator) -> None:
        ops = ([0] if len(items) < param.max_len else []) + ([1] if len(items) > param.min_len else [])
        if not ops:
            return
        if ops[int(rng.integers(len(ops)))] == 0:
            # insert a copy of an existing item half the time: stacking "another layer like this" is a
            # common useful move, and a fresh sample explores
            position = int(rng.integers(len(items) + 1))
            if items and rng.random() < 0.5:
                new = json_copy(items[int(rng.integers(len(items)))])
            else:
                new = param.item.sample(rng)
            items.insert(position, new)
        else:
            del items[int(rng.integers(len(items)))]

    def mutate_all(self, space: Space, config: dict, rng: np.random.Generator, rate: float | None) -> dict:
        """Each site mutates with probability ``rate`` (default 1/sites); at least one always does."""
        n = self.count(space, config, True, True)
        if n == 0:
            return json_copy(config)
        mask = rng.random(n) < (1.0 / n if rate is None else rate)
        if not mask.any():
            mask[int(rng.integers(n))] = True
        pick = iter(mask.tolist()).__next__
        return self.walk(space, config, rng, pick, True, True)

    def mutate_non_numeric(self, space: Space, config: dict, rng: np.random.Generator, rate: float | None) -> dict:
        """Categorical/Bool/Text leaves mutate with probability ``rate`` (default 1/leaves); none forced."""
        if rate is None:
            rate = 1.0 / max(1, self.count(space, config, True, False))
        if rate <= 0:
            return config
        n = self.count(space, config, False, False)
        if n == 0:
            return config
        mask = rng.random(n) < rate
        if not mask.any():
            return config
        return self.walk(space, config, rng, iter(mask.tolist()).__next__, False, False)


def _check_space(space: Any) -> Space:
    if not isinstance(space, Space):
        raise ValueError(f"expected a qd.space.Space, got {type(space).__name__}")
    return space


class Mutation(Operator):
    """Type-aware mutation.

    Each site mutates with probability ``rate`` (default: one site on average), and at least one
    site always does: Float leaves get Gaussian noise in unit space (``sigma``), Int leaves step by
    ±1..k (k = ``int_step`` × range, at least 1), Categoricals take another choice, Bools flip,
    Text gets a word deleted, duplicated or swapped (within its length bounds), and
    variable-length Seqs gain (a sampled item or a copy of one) or lose an item.

    Parameters
    ----------
    space : Space
    rate : float or None
        Per-site mutation probability; None means 1 / number of sites.
    sigma : float
        Standard deviation of Float noise: a fraction of each parameter's range, or (``sigma_units
        = "value"``) in the parameter's own units.
    int_step : float
        Largest Int step as a fraction of the range.
    children : int
        Offspring per :meth:`vary` call.
    sigma_units : {"unit", "value"}
        What ``sigma`` is measured in.
    """

    name = "mutation"
    num_parents = 1
    parameters = {"sigma": POSITIVE, "int_step": POSITIVE, "rate": RATE, "children": COUNT}

    def __init__(self, space: Space, rate: float | None = None, sigma: float = 0.1, int_step: float = 0.1,
                 children: int = 1, sigma_units: str = "unit"):
        self.space = _check_space(space)
        Mutation.check_parameters({"sigma": sigma, "int_step": int_step, "rate": rate, "children": children})
        self.rate = rate
        self.sigma, self.int_step = float(sigma), float(int_step)
        self.children = children
        self.sigma_units = sigma_units
        self._walker = _Walker(self.sigma, self.int_step, _check_sigma_units(sigma_units))

    def vary(self, parents: Sequence[Parent], rng: np.random.Generator) -> list[dict]:
        """Mutants of the first parent."""
        config = _config(parents[0])
        return [self._walker.mutate_all(self.space, config, rng, self.rate) for _ in range(self.children)]


class IsoLineDD(Operator):
    """Iso+LineDD on the Float/Int leaves in unit space.

    From Vassiliades & Mouret, "Discovering the elite hypervolume by leveraging interspecies
    correlation", GECCO 2018.

    ``child = x1 + iso_sigma * N(0, I) + line_sigma * N(0, 1) * (x2 - x1)``, clamped to the bounds
    (ints rounded). When the parents' structures differ (Seq lengths), the child keeps the first
    parent's structure and gets the isotropic term only. Non-numeric leaves come from the first
    parent and mutate like :class:`Mutation` with probability ``rate`` each (default: 1 / number
    of leaves). A configuration without numeric leaves gets a :class:`Mutation` instead.

    Parameters
    ----------
    space : Space
    iso_sigma : float
        Isotropic standard deviation: a fraction of each parameter's range (pyribs's ``iso_sigma``
        divided by the range), or (``sigma_units = "value"``) in each parameter's own units, as
        pyribs takes it.
    line_sigma : float
        Standard deviation along the line between the parents.
    rate : float or None
        Per-leaf mutation probability of the non-numeric leaves.
    children : int
        Offspring per :meth:`vary` call.
    sigma_units : {"unit", "value"}
        What ``iso_sigma`` is measured in. In ``"value"`` units a log-scaled Float's sigma is in
        natural-log units of its value.
    """

    name = "iso_line_dd"
    num_parents = 2
    parameters = {"iso_sigma": NON_NEGATIVE, "line_sigma": NON_NEGATIVE, "rate": RATE, "children": COUNT}

    def __init__(self, space: Space, iso_sigma: float = 0.01, line_sigma: float = 0.2, rate: float | None = None,
                 children: int = 1, sigma_units: str = "unit"):
        self.space = _check_space(space)
        IsoLineDD.check_parameters({"iso_sigma": iso_sigma, "line_sigma": line_sigma, "rate": rate,
                                    "children": children})
        self.iso_sigma, self.line_sigma = float(iso_sigma), float(line_sigma)
        self.rate = rate
        self.children = children
        self._walker = _Walker(0.1, 0.1)
        self._mixed = _has_non_numeric(space)
        self._units = UnitTransform(self.space)
        self.sigma_units = sigma_units
        self._value_units = _check_sigma_units(sigma_units)
        self._iso_by_key: dict[tuple, np.ndarray] = {}

    @classmethod
    def check_parameters(cls, values: Mapping[str, Any], where: str = "") -> None:
        """As :meth:`Operator.check_parameters`, and ``iso_sigma`` and ``line_sigma`` not both 0."""
        super().check_parameters(values, where)
        if values.get("iso_sigma", 1) == 0 and values.get("line_sigma", 1) == 0:
            raise ValueError(f"{where + ': ' if where else ''}iso_sigma and line_sigma cannot both be 0")

    def vary(self, parents: Sequence[Parent], rng: np.random.Generator) -> list[dict]:
        """Children of the first two parents (one parent: isotropic noise only)."""
        c1 = _config(parents[0])
        x1, key1 = self._units.unit_view(c1)
        if not x1.size:
            return [self._walker.mutate_all(self.space, c1, rng, None) for _ in range(self.children)]
        direction = None
        if len(parents) > 1:
            x2, key2 = self._units.unit_view(_config(parents[1]))
            if key2 == key1 and x2.size == x1.size:
                direction = x2 - x1
        out = []
        for _ in range(self.children):
            child = x1 + self._iso(c1, key1) * rng.standard_normal(x1.size)
            if direction is not None:
                child += (self.line_sigma * rng.standard_normal()) * direction
            config = self._units.with_units(c1, child, key1)  # clamps to the bounds
            if self._mixed:
                config = self._walker.mutate_non_numeric(self.space, config, rng, self.rate)
            out.append(config)
        return out


    def generate_many(self, parent_groups: Sequence[Sequence[Parent]], rng: np.random.Generator) -> list[list[dict]]:
        """Children of many parent groups in one numpy step when their numeric leaves line up.

        Configurations whose every leaf is numeric and share one structure, one child each: the
        formula of :meth:`vary` on a matrix of parents; anything else goes group by group.
        """
        if self._mixed or self.children != 1 or not parent_groups:
            return super().generate_many(parent_groups, rng)
        firsts = [_config(g[0]) for g in parent_groups]
        view = self._units.unit_views(firsts)
        if view is None or not view[0].shape[1]:
            return super().generate_many(parent_groups, rng)
        x1, key = view
        direction = np.zeros_like(x1)
        pairs = [i for i, group in enumerate(parent_groups) if len(group) > 1]
        seconds = self._units.unit_views([_config(parent_groups[i][1]) for i in pairs]) if pairs else None
        if seconds is not None and seconds[1] == key:
            direction[pairs] = seconds[0] - x1[pairs]
        else:  # second parents of other structures get the isotropic term only
            for i in pairs:
                x2, key2 = self._units.unit_view(_config(parent_groups[i][1]))
                if key2 == key and x2.size == x1.shape[1]:
                    direction[i] = x2 - x1[i]
        children = x1 + self._iso(firsts[0], key) * rng.standard_normal(x1.shape)
        children += (self.line_sigma * rng.standard_normal((len(x1), 1))) * direction
        return [[c] for c in self._units.with_units_many(firsts, children, key)]  # clamps to the bounds

    def _iso(self, config: dict, key: tuple) -> float | np.ndarray:
        """The isotropic sigma in unit space: one number, or one per numeric leaf (value units)."""
        if not self._value_units:
            return self.iso_sigma
        iso = self._iso_by_key.get(key)
        if iso is None:
            spans = [_unit_span(p) for _, p, _ in self.space.walk(config) if isinstance(p, Numeric)]
            iso = self._iso_by_key[key] = self.iso_sigma / np.array(spans)
        return iso


class Gaussian(IsoLineDD):
    """Gaussian noise on every Float/Int leaf in unit space, clamped to the bounds (ints rounded).

    Other leaves (Categorical, Bool, Text) mutate like :class:`Mutation` with probability
    ``rate`` each (default: 1 / number of leaves). A configuration without numeric leaves gets a
    :class:`Mutation` instead. This is :class:`IsoLineDD` with one parent and no line term.

    Parameters
    ----------
    space : Space
    sigma : float
        Standard deviation: a fraction of each parameter's range, or (``sigma_units = "value"``)
        in each parameter's own units.
    rate : float or None
        Per-leaf mutation probability of the non-numeric leaves.
    children : int
        Offspring per :meth:`vary` call.
    sigma_units : {"unit", "value"}
        What ``sigma`` is measured in.
    """

    name = "gaussian"
    num_parents = 1
    parameters = {"sigma": POSITIVE, "rate": RATE, "children": COUNT}

    def __init__(self, space: Space, sigma: float = 0.1, rate: float | None = None, children: int = 1,
                 sigma_units: str = "unit"):
        Gaussian.check_parameters({"sigma": sigma})  # the rest IsoLineDD checks
        super().__init__(space, iso_sigma=sigma, line_sigma=0.0, rate=rate, children=children,
                         sigma_units=sigma_units)
        self.sigma = float(sigma)
        self._walker = _Walker(self.sigma, 0.1, self._value_units)

    def vary(self, parents: Sequence[Parent], rng: np.random.Generator) -> list[dict]:
        """Noisy copies of the first parent."""
        return super().vary(parents[:1], rng)


class UniformCrossover(Operator):
    """Each leaf from either parent with equal probability.

    Nested Spaces cross key by key; a Seq takes its length from a random parent and crosses
    item by item where both parents have an item (the rest comes from that parent). With a
    single parent it falls back to :class:`Mutation`.
    """

    name = "uniform_crossover"
    num_parents = 2
    parameters = {"children": COUNT}

    def __init__(self, space: Space, children: int = 1):
        self.space = _check_space(space)
        UniformCrossover.check_parameters({"children": children})
        self.children = children
        self._walker = _Walker(0.1, 0.1)

    def vary(self, parents: Sequence[Parent], rng: np.random.Generator) -> list[dict]:
        """Crosses of the first two parents."""
        a = _config(parents[0])
        if len(parents) < 2:
            return [self._walker.mutate_all(self.space, a, rng, None) for _ in range(self.children)]
        b = _config(parents[1])
        return [self._cross(self.space, a, b, rng) for _ in range(self.children)]

    def _cross(self, param: Param, a: Any, b: Any, rng: np.random.Generator) -> Any:
        if isinstance(param, Space):
            if not (isinstance(a, dict) and isinstance(b, dict)):
                return json_copy(a)
            # one draw for the whole dict: a per-leaf rng call costs more than the rest of the work
            coins = (rng.random(len(param.params)) < 0.5).tolist()
            out = {}
            for (k, p), take_a in zip(param.params.items(), coins):
                if k not in a:
                    continue
                if k not in b:
                    out[k] = json_copy(a[k])
                elif isinstance(p, _LEAF_TYPES):
                    out[k] = json_copy(a[k] if take_a else b[k])
                else:
                    out[k] = self._cross(p, a[k], b[k], rng)
            return out
        if isinstance(param, Seq):
            if not (isinstance(a, list) and isinstance(b, list)):
                return json_copy(a)
            base = a if rng.random() < 0.5 else b
            common = min(len(a), len(b))
            if isinstance(param.item, _LEAF_TYPES):
                take_a = (rng.random(common) < 0.5).tolist()
                head = [x if t else y for x, y, t in zip(a, b, take_a)]
            else:
                head = [self._cross(param.item, a[i], b[i], rng) for i in range(common)]
            return head + json_copy(base[common:])
        return json_copy(a if rng.random() < 0.5 else b)


CLASSIC: dict[str, type] = {
    "gaussian": Gaussian,
    "iso_line_dd": IsoLineDD,
    "mutation": Mutation,
    "uniform_crossover": UniformCrossover,
}
