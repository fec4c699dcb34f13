"""The headline-topics domain: its prompts, its instances, and its score on the embedded model."""
from __future__ import annotations

import pytest

from qd.domains import available_domains, get_domain
from qd.domains.topics import (
    DEMOS,
    SEARCH_HEADLINES,
    TOPICS,
    VALIDATION_HEADLINES,
    TopicsDomain,
    build_prompt,
    parse_topic,
)
from qd.evaluation import evaluate_config, with_draw


def test_prompt_shows_instruction_labels_and_demos_in_order():
    config = {"instruction": "Name the topic.", "input_label": "Headline", "output_label": "Topic", "few_shot": 2,
              "demo_order": "reversed"}
    prompt = build_prompt(config, "Rain all week")
    assert prompt.startswith("Name the topic.\n\nHeadline: Chef opens a pizza place downtown\nTopic: food\n\n")
    assert prompt.index("food") < prompt.index("sports") and prompt.endswith("Headline: Rain all week\nTopic:")
    bare = build_prompt({**config, "instruction": "  ", "few_shot": 0}, "x")
    assert bare == "Headline: x\nTopic:"
    assert parse_topic(" Sports, of course") == "sports" and parse_topic(" 42") is None and parse_topic("") is None


def test_instances_are_balanced_seeded_and_splits_are_disjoint():
    domain = TopicsDomain(n_instances=8)
    draw0 = domain.instances_for(0)
    assert draw0 == TopicsDomain(n_instances=8).instances_for(0) != domain.instances_for(1)
    assert sorted(t for _, t in draw0) == sorted(TOPICS * 2)
    assert {h for h, _ in SEARCH_HEADLINES}.isdisjoint(h for h, _ in VALIDATION_HEADLINES)
    assert {h for h, _ in DEMOS}.isdisjoint(h for h, _ in SEARCH_HEADLINES + VALIDATION_HEADLINES)
    assert set(domain.instances_for(3, "validation")) <= set(VALIDATION_HEADLINES)
    assert TopicsDomain(seed=1).instances_for(0) != draw0
    assert "topics" in available_domains()
    with pytest.raises(ValueError, match="n_instances"):
        TopicsDomain(n_instances=0)


def test_prompt_text_moves_the_score_on_the_embedded_model(local_llm):
    # The README's measurement in small: the default prompt against one whose instruction names the
    # topics and whose field names ask for one; the same worked examples, the same headlines.
    domain = get_domain("topics", base_url=local_llm, n_instances=8)
    plain = domain.default_config()
    named = {**plain, "instruction": "Classify each headline by its topic: sports, food, technology or weather.",
             "input_label": "Headline", "output_label": "Topic"}
    worst = {**plain, "instruction": "Write a short story about a dragon.", "few_shot": 0}
    scores = {name: evaluate_config(domain, c) for name, c in (("plain", plain), ("named", named), ("worst", worst))}
    for result in scores.values():
        assert result.status == "ok" and len(result.scores) == 8
        assert sum(s["kind"] == "llm" for s in result.trace) == 8
    assert scores["named"].fitness >= scores["plain"].fitness + 0.25
    assert scores["worst"].fitness <= 0.25
    assert "expected" in scores["worst"].feedback
    held_out = evaluate_config(domain, with_draw(named, 0, "validation"))
    assert held_out.status == "ok" and held_out.fitness >= 0.5
