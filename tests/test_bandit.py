"""The honest bandit: operators that do not pay, per evaluation and per 1k tokens, fall to the floor."""
from __future__ import annotations

import json
import math
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qd.bandit import BanditSettings, adapt_shares
from qd.cli import main
from qd.scheduler import OperatorStats

# one result: (operator index, archive gain?, tokens the draw spent)
RESULTS = st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.integers(0, 3000)), max_size=400)
WEIGHTS = st.lists(st.floats(0.05, 10), min_size=1, max_size=4)


def replay(results, n_ops: int) -> dict[str, OperatorStats]:
    stats = {f"op{i}": OperatorStats() for i in range(n_ops)}
    for i, gained, tokens in results:
        s = stats[f"op{i % n_ops}"]
        s.spent += 1
        s.evaluated += 1
        s.gains += gained
        s.tokens += tokens
    return stats


@settings(max_examples=300, deadline=None)
@given(results=RESULTS, weights=WEIGHTS, floor=st.sampled_from([0.01, 0.02, 0.1, 0.3]))
def test_no_share_falls_below_the_floor_and_the_best_operator_pays(results, weights, floor):
    base = {f"op{i}": w for i, w in enumerate(weights)}
    judged = adapt_shares(base, replay(results, len(weights)), BanditSettings(floor=floor))
    shares = {n: j.share for n, j in judged.items()}
    least = min(floor, 1 / len(weights))
    assert math.isclose(sum(shares.values()), 1.0)
    assert all(s >= least - 1e-12 for s in shares.values())  # nobody below the floor
    assert any(j.pays for j in judged.values())  # the best operator always pays
    for j in judged.values():
        if not j.pays:  # held exactly at the floor
            assert j.share == pytest.approx(least)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(40, 400), tokens=st.integers(0, 5000), rate=st.floats(0.3, 1.0))
def test_an_operator_that_never_gains_falls_to_the_floor(n, tokens, rate):
    stats = {"llm": OperatorStats(spent=n, gains=0, tokens=tokens * n),
             "classic": OperatorStats(spent=n, gains=int(rate * n))}
    judged = adapt_shares({"llm": 1.0, "classic": 1.0}, stats)
    assert not judged["llm"].pays and judged["llm"].share == pytest.approx(0.02)
    assert judged["classic"].pays and judged["classic"].share == pytest.approx(0.98)


def test_tokens_count_against_an_operator_that_gains_as_often():
    cheap = OperatorStats(spent=200, gains=60)
    dear = OperatorStats(spent=200, gains=60, tokens=200 * 2000)  # 2k tokens per evaluation: costs 3x
    judged = adapt_shares({"cheap": 1.0, "dear": 1.0}, {"cheap": cheap, "dear": dear})
    assert judged["dear"].value == pytest.approx(judged["cheap"].value / 3)
    assert not judged["dear"].pays
    free = adapt_shares({"cheap": 1.0, "dear": 1.0}, {"cheap": cheap, "dear": dear}, BanditSettings(token_cost=0))
    assert free["dear"].pays and free["dear"].share == pytest.approx(0.5)


def test_an_operator_is_not_judged_before_min_evals_and_untried_ones_keep_their_weight():
    judged = adapt_shares({"a": 1.0, "b": 3.0, "c": 0.0}, {"a": OperatorStats(spent=9, gains=0),
                                                            "b": OperatorStats(spent=9, gains=9)})
    assert judged["a"].pays and judged["c"].share == 0.0  # too early to judge; weight 0 stays 0
    assert judged["b"].share > judged["a"].share > 0.02


def test_a_paying_operator_keeps_a_share_in_proportion_to_its_value():
    stats = {"a": OperatorStats(spent=100, gains=30), "b": OperatorStats(spent=100, gains=27)}
    judged = adapt_shares({"a": 1.0, "b": 1.0}, stats)
    assert judged["a"].pays and judged["b"].pays  # within the noise of a's rate
    assert judged["a"].share / judged["b"].share == pytest.approx(judged["a"].value / judged["b"].value)


NEVER_NEW = '''  # an operator that only ever writes its parent again: every child a duplicate
from qd.operators import Operator


class Echo(Operator):
    name = "echo"

    def __init__(self, space):
        self.space = space

    def vary(self, parents, rng):
        return [dict(parents[0].config)]
'''


def test_qd_status_says_which_operator_does_not_pay(tmp_path, monkeypatch, capsys):
    (tmp_path / "echo_op.py").write_text(NEVER_NEW)
    (tmp_path / "run.toml").write_text(textwrap.dedent("""
        [run]
        evaluations = 150
        init_random = 10
        plot = false
        progress = false
        [domain]
        name = "k-module"
        [archive]
        noise = "none"
        [operators]
        adaptive = true
        mutation = 1.0
        "echo_op:Echo" = 1.0
        [evaluator]
        backend = "serial"
    """))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "run.toml", "--out", "out"]) == 0
    capsys.readouterr()
    assert main(["status", "out"]) == 0
    out = capsys.readouterr().out
    assert "adaptive weights: echo_op:Echo does not pay (0 gains in" in out
    assert "held at the floor, 2% of draws" in out
    assert main(["status", "out", "--json"]) == 0
    operators = json.loads(capsys.readouterr().out)["operators"]
    assert operators["echo_op:Echo"]["pays"] is False and operators["mutation"]["pays"] is True
