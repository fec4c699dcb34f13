"""The ask/tell scheduler on its own: seeds first, then random samples, then operators; LLM jobs;
declared operator capabilities; add statuses and counters."""
from __future__ import annotations

import math

import numpy as np
import pytest

from qd.archives import AddStatus, GridArchive
from qd.domains.arm import ArmDomain
from qd.operators import Generation, IsoLineDD, Mutation, Operator, Parent
from qd.scheduler import FALLBACK, RANDOM, SEED, GenerationJob, Scheduler, SchedulerOptions

JOINTS = 4


def arm_archive(domain: ArmDomain) -> GridArchive:
    return GridArchive(dims=[10, 10], ranges=domain.default_ranges, measure_names=["x", "y"],
                       qd_score_offset=domain.qd_score_offset)


def evaluate(domain: ArmDomain, config: dict) -> tuple[float, list[float]]:
    result = domain.evaluate(config)
    return result.fitness, [result.measures["x"], result.measures["y"]]


def loop(scheduler: Scheduler, domain: ArmDomain, n: int) -> list:
    asked = []
    for _ in range(n):
        candidate = scheduler.ask()
        scheduler.tell(candidate, *evaluate(domain, candidate.config))
        asked.append(candidate)
    return asked


class Echo(Operator):
    """A classic operator that returns its parent unchanged (every child is a duplicate)."""

    name = "echo"

    def vary(self, parents, rng):
        return [dict(parents[0].config)]


class FakeLLM(Operator):
    """Declares that it waits on a model and accepts archive targets; remembers what it was given."""

    name = "fake_llm"
    uses_llm = True
    accepts_target = True

    def __init__(self, space, result: Generation | None = None):
        self.space, self.result, self.targets = space, result, []

    def generate(self, parents, rng, target=None):
        self.targets.append(target)
        if self.result is not None:
            return self.result
        return Generation([self.space.sample(rng)], tokens=7)


def test_ask_tell_loop_fills_the_archive_and_is_deterministic_given_the_seed():
    domain = ArmDomain(joints=JOINTS)

    def run(seed: int) -> list[str]:
        scheduler = Scheduler(arm_archive(domain), domain.space, {"iso_line_dd": (IsoLineDD(domain.space), 1.0)},
                              SchedulerOptions(seed=seed, init_random=20))
        return [c.hash for c in loop(scheduler, domain, 300)]

    first = run(1)
    assert first == run(1) and first != run(2)
    assert len(set(first)) == 300  # dedup: no configuration asked twice


def test_seeds_come_first_in_order_then_random_samples_then_operators():
    domain = ArmDomain(joints=JOINTS)
    seeds = [domain.default_config(), {"angles": [0.5] * JOINTS}, {"angles": [0.5] * JOINTS},  # a repeat: skipped
             {"angles": [-0.5] * JOINTS}]
    scheduler = Scheduler(arm_archive(domain), domain.space, {"iso_line_dd": (IsoLineDD(domain.space), 1.0)},
                          SchedulerOptions(seeds=seeds, init_random=5))
    asked = loop(scheduler, domain, 30)
    assert [c.operator for c in asked[:3]] == [SEED] * 3
    assert [c.config for c in asked[:3]] == [seeds[0], seeds[1], seeds[3]]
    assert [c.operator for c in asked[3:8]] == [RANDOM] * 5
    assert {c.operator for c in asked[8:]} == {"iso_line_dd"}
    assert scheduler.stats[SEED].duplicates == 1 and scheduler.stats[SEED].evaluated == 3


def test_with_no_random_samples_operators_wait_for_the_seed_result():
    domain = ArmDomain(joints=JOINTS)
    scheduler = Scheduler(arm_archive(domain), domain.space, {"iso_line_dd": (IsoLineDD(domain.space), 1.0)},
                          SchedulerOptions(seeds=[domain.default_config()], init_random=0))
    seed = scheduler.propose()
    assert seed.operator == SEED and seed.config == {"angles": [0.0] * JOINTS}
    assert scheduler.propose() is None and scheduler.in_flight == 1  # no elite to vary yet: wait
    assert scheduler.tell(seed, *evaluate(domain, seed.config)) == AddStatus.NEW
    child = scheduler.propose()
    assert child.operator == "iso_line_dd" and child.parent_ids == [0, 0] and scheduler.stats[RANDOM].offspring == 0


def test_an_invalid_seed_is_refused_naming_its_index():
    domain = ArmDomain(joints=JOINTS)
    with pytest.raises(ValueError, match=r"seed 1 is not a valid configuration: .*angles"):
        Scheduler(arm_archive(domain), domain.space, {"mutation": (Mutation(domain.space), 1.0)},
                  SchedulerOptions(seeds=[domain.default_config(), {"angles": [9.0] * JOINTS}]))


def test_tell_returns_the_add_status_and_counts_evaluations_gains_and_spend():
    domain = ArmDomain(joints=JOINTS)
    scheduler = Scheduler(arm_archive(domain), domain.space, {"mutation": (Mutation(domain.space), 1.0)},
                          SchedulerOptions(init_random=2))
    first, second = scheduler.ask(), scheduler.ask()
    assert scheduler.tell(first, *evaluate(domain, first.config), id=0) == AddStatus.NEW
    assert scheduler.tell(second, None, None, id=1) == AddStatus.NOT_ADDED  # a failed evaluation
    assert isinstance(scheduler.tell(first, -1e9, [0.0, 0.0]), AddStatus)
    stats = scheduler.stats[RANDOM]
    assert stats.evaluated == 3 and stats.spent == 3 and 1 <= stats.gains <= 2
    assert scheduler.told == 3


def test_operators_must_subclass_the_base_class():
    domain = ArmDomain(joints=JOINTS)

    class Duck:
        name, num_parents = "duck", 1

        def vary(self, parents, rng):
            return []

    with pytest.raises(TypeError, match="operator 'duck' is a Duck; operators must subclass qd.operators.Operator"):
        Scheduler(arm_archive(domain), domain.space, {"duck": (Duck(), 1.0)})


def test_base_operator_generate_wraps_vary_and_declares_no_llm_no_target():
    op = Mutation(ArmDomain(joints=JOINTS).space)
    parent = Parent({"angles": [0.1] * JOINTS}, objective=-0.5)
    assert (op.uses_llm, op.accepts_target) == (False, False)
    generation = op.generate([parent], np.random.default_rng(3), target={"x": 1.0})
    assert generation == Generation(op.vary([parent], np.random.default_rng(3)))
    assert parent.fitness == parent.objective == -0.5  # the old name still reads
    with pytest.raises(NotImplementedError, match="implements neither vary"):
        Operator().generate([parent], np.random.default_rng(0))


def test_an_llm_operator_is_a_job_to_run_elsewhere_with_a_target_when_it_accepts_one():
    domain = ArmDomain(joints=JOINTS)
    llm = FakeLLM(domain.space)
    scheduler = Scheduler(arm_archive(domain), domain.space, {"fake_llm": (llm, 1.0)},
                          SchedulerOptions(init_random=3, target_rate=1.0))
    loop(scheduler, domain, 3)
    job = scheduler.propose(llm_free=True)
    assert isinstance(job, GenerationJob) and job.operator == "fake_llm" and len(job.parents) == 1
    assert job.target is None or set(job.target) == {"x", "y"}
    child = scheduler.complete(job, job.run())
    assert child.operator == child.chosen_by == "fake_llm"
    assert llm.targets and scheduler.stats["fake_llm"].tokens == 7


def test_a_failed_generation_is_replaced_by_a_classic_child_charged_to_the_llm_operator():
    domain = ArmDomain(joints=JOINTS)
    llm = FakeLLM(domain.space, Generation([], failed=True))
    scheduler = Scheduler(arm_archive(domain), domain.space, {"fake_llm": (llm, 1.0)}, SchedulerOptions(init_random=3))
    loop(scheduler, domain, 3)
    job = scheduler.propose()
    child = scheduler.complete(job, job.run())
    assert child.operator == FALLBACK and child.chosen_by == "fake_llm"
    scheduler.tell(child, *evaluate(domain, child.config))
    assert scheduler.stats["fake_llm"].llm_failures == 1 and scheduler.stats["fake_llm"].spent == 1
    assert scheduler.stats[FALLBACK].evaluated == 1


def test_a_busy_llm_yields_to_a_classic_operator_unless_wait_for_llm():
    domain = ArmDomain(joints=JOINTS)
    ops = {"fake_llm": (FakeLLM(domain.space), 1.0), "mutation": (Mutation(domain.space), 1e-9)}
    for wait in (False, True):
        scheduler = Scheduler(arm_archive(domain), domain.space, ops,
                              SchedulerOptions(init_random=3, wait_for_llm=wait, seed=5))
        loop(scheduler, domain, 3)
        busy = scheduler.propose(llm_free=False)
        if wait:
            assert busy is None and isinstance(scheduler.propose(llm_free=True), GenerationJob)
        else:
            assert busy.operator == "mutation"


def test_a_job_that_raises_is_a_failed_generation():
    class Broken(FakeLLM):
        def generate(self, parents, rng, target=None):
            raise ConnectionError("model down")

    domain = ArmDomain(joints=JOINTS)
    job = GenerationJob("broken", Broken(domain.space), [Parent(domain.default_config())], np.random.default_rng(0))
    assert job.run() == Generation([], failed=True, error="ConnectionError: model down")


def test_operators_that_only_repeat_configurations_fall_back_to_random_samples():
    domain = ArmDomain(joints=JOINTS)
    scheduler = Scheduler(arm_archive(domain), domain.space, {"echo": (Echo(), 1.0)}, SchedulerOptions(init_random=2))
    asked = loop(scheduler, domain, 10)
    assert [c.operator for c in asked[2:]] == [RANDOM] * 8
    assert scheduler.stats["echo"].duplicates > 0 and scheduler.stats["echo"].evaluated == 0


def test_resume_skips_seeds_already_evaluated_and_restores_counters():
    domain = ArmDomain(joints=JOINTS)
    seeds = [domain.default_config(), {"angles": [0.3] * JOINTS}]
    scheduler = Scheduler(arm_archive(domain), domain.space, {"mutation": (Mutation(domain.space), 1.0)},
                          SchedulerOptions(seeds=seeds, init_random=0))
    scheduler.resume({domain.space.hash(seeds[0])}, {SEED: {"evaluated": 1, "spent": 1, "share": 0.5}})
    assert scheduler.told == 1 and scheduler.stats[SEED].evaluated == 1
    assert scheduler.ask().config == seeds[1]


def test_adaptive_weights_follow_gains_per_evaluation():
    domain = ArmDomain(joints=JOINTS)
    ops = {"echo": (Echo(), 1.0), "iso_line_dd": (IsoLineDD(domain.space), 1.0)}
    scheduler = Scheduler(arm_archive(domain), domain.space, ops,
                          SchedulerOptions(init_random=10, adaptive=True, adapt_every=10))
    loop(scheduler, domain, 200)
    shares = scheduler.shares()
    assert math.isclose(sum(shares.values()), 1.0)
    assert shares["iso_line_dd"] > shares["echo"]


def test_an_operator_that_raises_is_reported_once_with_its_error(capsys):
    class Broken(FakeLLM):
        def generate(self, parents, rng, target=None):
            raise KeyError("no 'prompt' in template")

    domain = ArmDomain(joints=JOINTS)
    scheduler = Scheduler(arm_archive(domain), domain.space, {"broken": (Broken(domain.space), 1.0)},
                          SchedulerOptions(init_random=0))
    for _ in range(3):
        job = GenerationJob("broken", Broken(domain.space), [Parent(domain.default_config())], np.random.default_rng(0))
        scheduler.account(job, job.run())
    err = capsys.readouterr().err
    assert err.count("qd: warning: operator 'broken' raised KeyError: \"no 'prompt' in template\"") == 1
    assert scheduler.stats["broken"].llm_failures == 3


@pytest.mark.parametrize("fill", ["add", "add_single", "add_single_with_id"])
def test_ask_works_on_an_archive_filled_without_qds_extra_fields(fill):
    """A warm start as the README shows: elites added by add/add_single, no feedback (nor id) given."""
    domain = ArmDomain(joints=JOINTS)
    archive = arm_archive(domain)
    rng = np.random.default_rng(0)
    configs = [domain.space.sample(rng) for _ in range(5)]
    scored = [evaluate(domain, c) for c in configs]
    if fill == "add":
        archive.add(configs, [f for f, _ in scored], [m for _, m in scored])
    else:
        for i, (config, (f, m)) in enumerate(zip(configs, scored)):
            archive.add_single(config, f, m, **({"id": 100 + i} if fill == "add_single_with_id" else {}))
    scheduler = Scheduler(archive, domain.space, {"mutation": (Mutation(domain.space), 1.0)},
                          SchedulerOptions(init_random=0))
    child = scheduler.ask()
    assert child.operator == "mutation" and domain.space.is_valid(child.config)
    parents = scheduler._select_parents(2)
    assert all(p.feedback == "" for p in parents)
    if fill == "add_single_with_id":
        assert set(child.parent_ids) <= set(range(100, 105)) and child.parent_ids
    else:
        assert child.parent_ids == [] and all(p.id is None for p in parents)  # no lineage where none was given
