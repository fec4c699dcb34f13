"""Headline topics: a prompt for a small classification task, scored on the real embedded model.

Each evaluation asks the model (gemma-3-270m by default: a *base* model, completions API) for the
topic of ``n_instances`` short news headlines, one call per headline, and scores the share whose
first answered word is the right topic (``sports``, ``food``, ``technology`` or ``weather``). The
prompt is what the search changes::

    {instruction}

    {input_label}: Midfielder signs a new contract with the club
    {output_label}: sports

    ...                                  (few_shot worked examples, in demo_order)
    {input_label}: <the headline>
    {output_label}:

A base model's answer depends on the words of the prompt (README, "Headline topics", has the
measurements): the instruction (a ``Text`` parameter) that names the four topics lets it answer
topics the worked examples do not show, and field names such as ``Headline``/``Topic`` make it
answer with a topic where ``Input``/``Output`` make it continue the headline. ``few_shot`` adds
worked examples (one per topic, sports first) and ``demo_order`` orders them (a base model often
repeats the last answer shown). Decoding is greedy, so a prompt's answer is fixed and the request
cache replays it; the score's noise is which headlines a draw asks about.

The map is ``few_shot`` x ``max_prompt_tokens`` (the largest prompt, from the trace: the cost of
a call). Draw 0 of the search split is a fixed set of headlines (2 per topic); other draws and the
validation split (headlines the search never sees) are seeded subsets, so ``qd.noise`` and
``qd validate`` work. Calls go through :class:`qd.llm.LLMClient` (traced; with ``cache`` they are
replayed from the request cache, which a repeated prompt at a fixed seed hits).
"""
from __future__ import annotations

import contextvars
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from qd.domain import SEARCH, VALIDATION, Domain
from qd.llm.cache import cache_path
from qd.llm.models import MODEL_ALIAS
from qd.result import EvalResult
from qd.space import Categorical, Int, Space, Text

if TYPE_CHECKING:
    from qd.llm.pipeline import PipelineLLM
    from qd.llm.prices import Price

__all__ = ["TopicsDomain", "TOPICS", "SEARCH_HEADLINES", "VALIDATION_HEADLINES", "DEMOS", "build_prompt",
           "parse_topic", "make_space"]

TOPICS = ("sports", "food", "technology", "weather")

#: Worked examples, one per topic; ``few_shot = k`` shows the first k (``demo_order`` may reverse them).
DEMOS = (("Midfielder signs a new contract with the club", "sports"),
         ("Chef opens a pizza place downtown", "food"),
         ("New tablet ships with a brighter screen", "technology"),
         ("Thunderstorms will hit the city on Friday", "weather"))

_SEARCH = {
    "sports": ("The home team won the final in extra time", "A young striker scored twice against the champions",
               "The marathon record fell on Sunday", "Tennis star withdraws from the open with injury",
               "Coach resigns after a losing season", "Cyclists ride through the mountains in stage ten",
               "Goalkeeper saves three penalties in the shootout", "Rookie pitcher throws a perfect game",
               "Swimmers break the relay world record", "Boxing champion defends the title in Tokyo",
               "League fines the club for late wages", "Fans cheer as the captain lifts the cup"),
    "food": ("A new bakery sells sourdough by the river", "Chefs share a recipe for spicy noodle soup",
             "Restaurant owners debate the price of olive oil", "The best way to roast vegetables at home",
             "Street vendors serve tacos until midnight", "A farm market brings fresh cheese to town",
             "Coffee shop adds oat milk to every drink", "Grandmother's apple pie wins the county fair",
             "Sushi bar earns its first star", "Five easy salads for a hot week",
             "Butchers say sausage sales doubled", "Ice cream maker tests a basil flavour"),
    "technology": ("A smartphone update fixes the battery bug", "Engineers unveil a faster computer chip",
                   "The app now lets users edit messages", "Startup builds a robot that sorts packages",
                   "Researchers train software to translate speech", "A laptop maker recalls faulty chargers",
                   "Hackers steal passwords from a shopping site", "Satellite internet reaches remote villages",
                   "Electric car gets a bigger battery", "Search engine adds a privacy mode",
                   "Game console sells out in one hour", "Cloud outage takes websites offline"),
    "weather": ("Heavy rain expected across the coast tonight", "A heatwave pushes temperatures past forty degrees",
                "Snow closes mountain roads for the weekend", "Strong winds knock down trees in the north",
                "Forecasters warn of fog on Monday morning", "A cold front brings frost to the valley",
                "Hurricane season starts early this year", "Drought dries up the village wells",
                "Hail damages cars in the city centre", "Sunny skies return after a wet week",
                "Flood warnings issued for the river towns", "Record cold grips the capital"),
}
_VALIDATION = {
    "sports": ("Olympic sprinter wins gold by a hair", "Club sacks its manager after five defeats",
               "Golfer sinks a hole in one at the masters", "Rugby team tops the table at midseason",
               "Skier crashes out of the downhill race", "Basketball star signs a record deal",
               "Referee sent off two players in the derby", "Jockey wins the derby on an outsider"),
    "food": ("Vegan burger chain opens its tenth shop", "Bakers warn of a flour shortage",
             "Tomato prices fall after a big harvest", "Night market famous for grilled fish",
             "Chocolate maker launches a sugar-free bar", "Cooks swap tips for crispy rice",
             "Wine bar pairs cheese with local reds", "School lunches get more fresh fruit"),
    "technology": ("Phone maker unveils a folding screen", "Software bug delays train tickets",
                   "Robot vacuum learns to avoid socks", "Chipmaker builds a new factory",
                   "Social network tests paid accounts", "Scientists build a quantum computer prototype",
                   "Smartwatch tracks sleep and heart rate", "Browser update blocks pop-up ads"),
    "weather": ("Thick fog grounds flights at the airport", "Heavy snow expected in the hills",
                "Storm brings thunder and lightning overnight", "Temperatures drop below freezing",
                "Monsoon rains arrive a week late", "Tornado warning for the plains",
                "Mild and dry weekend ahead", "Gale force winds batter the coast"),
}
#: Headlines of the search split and of the validation split (disjoint), as (headline, topic).
SEARCH_HEADLINES = tuple((h, t) for t in TOPICS for h in _SEARCH[t])
VALIDATION_HEADLINES = tuple((h, t) for t in TOPICS for h in _VALIDATION[t])

INSTRUCTION_MAX = 200
DEFAULT_INSTRUCTION = "Classify the headline."
_WORD = re.compile(r"[a-z]+")


INPUT_LABELS = ("Input", "Text", "Sentence", "News", "Headline")
OUTPUT_LABELS = ("Output", "Label", "Answer", "Category", "Topic")


def make_space() -> Space:
    """The prompt's parameters (module docstring)."""
    return Space({
        "instruction": Text(INSTRUCTION_MAX, default=DEFAULT_INSTRUCTION),
        "input_label": Categorical(list(INPUT_LABELS)),
        "output_label": Categorical(list(OUTPUT_LABELS)),
        "few_shot": Int(0, len(DEMOS)),
        "demo_order": Categorical(["as_listed", "reversed"]),
    })


def build_prompt(config: Mapping[str, Any], headline: str) -> str:
    """The completion prompt of ``config`` for one headline (the constant part first, for the prompt cache)."""
    demos = list(DEMOS[:int(config["few_shot"])])
    if config["demo_order"] == "reversed":
        demos.reverse()
    inp, out = config["input_label"], config["output_label"]
    head = f"{config['instruction'].strip()}\n\n" if config["instruction"].strip() else ""
    shots = "".join(f"{inp}: {text}\n{out}: {topic}\n\n" for text, topic in demos)
    return f"{head}{shots}{inp}: {headline}\n{out}:"


def parse_topic(text: str) -> str | None:
    """The first word of a completion, lower-cased (``None`` when there is none)."""
    m = _WORD.search((text or "").lower())
    return m.group(0) if m else None


class TopicsDomain(Domain):
    """Topic classification of short headlines by a prompted base model (module docstring).

    Parameters
    ----------
    n_instances : int
        Headlines per evaluation (a multiple of 4 keeps the topics balanced).
    seed : int
        Seed of the search split's fixed set and of every draw.
    base_url, model, api, api_key_env, timeout_s, prices :
        Passed to :class:`qd.llm.LLMClient` (``base_url=None`` is the embedded model); a run gives
        them from ``[llm]`` (:meth:`llm_options`).
    cache : str, bool or None
        Request cache: a SQLite path, ``True`` for qd's shared cache, ``None``/``False`` for none.
    concurrency : int
        Calls in flight at once.
    """

    name = "topics"
    objective_name = "accuracy"
    qd_score_offset = 0.0
    splits = (SEARCH, VALIDATION)
    default_measures = ("few_shot", "max_prompt_tokens")
    default_ranges = ((-0.5, len(DEMOS) + 0.5), (0.0, 160.0))
    default_bins = (len(DEMOS) + 1, 8)

    def __init__(self, n_instances: int = 8, seed: int = 0, base_url: str | None = None, model: str = MODEL_ALIAS,
                 api: str = "completions", api_key_env: str = "OPENAI_API_KEY", cache: str | bool | None = None,
                 timeout_s: float = 60.0, concurrency: int = 4, prices: Mapping[str, Price] | None = None) -> None:
        if not isinstance(n_instances, int) or not 1 <= n_instances <= len(VALIDATION_HEADLINES):
            raise ValueError(f"n_instances must be an integer in [1, {len(VALIDATION_HEADLINES)}], got {n_instances!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        from qd.llm.client import LLMClient

        self.n_instances, self.seed, self.concurrency = n_instances, int(seed), int(concurrency)
        self.space = make_space()
        self.llm = LLMClient(base_url=base_url, model=model, api=api, api_key_env=api_key_env,
                             cache=cache_path(cache), prices=dict(prices or {}), timeout_s=timeout_s,
                             concurrency=concurrency, max_tokens=3)

    @classmethod
    def llm_options(cls, pipeline: PipelineLLM, prices: Mapping[str, Price] | None) -> dict[str, Any]:
        """The options a run's ``[llm]`` gives: the pipeline's endpoint and prices."""
        return {"base_url": pipeline.base_url, "model": pipeline.model, "api_key_env": pipeline.api_key_env,
                "prices": prices}

    def descriptors(self) -> dict:
        """``few_shot``: worked examples in the prompt (static)."""
        return {"few_shot": lambda c, r: float(c["few_shot"])}

    def default_config(self) -> dict:
        """A plain prompt: a short instruction, generic field names, two worked examples."""
        return {"instruction": DEFAULT_INSTRUCTION, "input_label": "Input", "output_label": "Output",
                "few_shot": 2, "demo_order": "as_listed"}

    def instances_for(self, draw: int = 0, split: str = SEARCH) -> list[tuple[str, str]]:
        """The headlines of ``draw`` in ``split``: balanced over topics, seeded by (seed, split, draw)."""
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; the topics domain has {', '.join(self.splits)}")
        pool = SEARCH_HEADLINES if split == SEARCH else VALIDATION_HEADLINES
        rng = np.random.default_rng([self.seed, int(split == VALIDATION), int(draw)])
        by_topic = {t: [h for h in pool if h[1] == t] for t in TOPICS}
        order = {t: rng.permutation(len(v)) for t, v in by_topic.items()}
        chosen = []
        for i in range(self.n_instances):  # topic i % 4, its (i // 4)-th headline in this draw's order
            topic = TOPICS[i % len(TOPICS)]
            chosen.append(by_topic[topic][order[topic][i // len(TOPICS) % len(by_topic[topic])]])
        return [chosen[i] for i in rng.permutation(len(chosen))]

    def evaluate(self, config: dict, *, draw: int = 0, split: str = SEARCH) -> EvalResult:
        """Ask the topic of every headline of ``draw`` in ``split``; fitness = accuracy, ``scores`` per headline."""
        problems = self.space.validate(config)
        if problems:
            return EvalResult.failure("invalid", "; ".join(problems[:5]))
        instances = self.instances_for(draw, split)

        def ask(i: int) -> str:  # greedy: a prompt's answer is a fact of the model, cached once known
            r = self.llm.complete(build_prompt(config, instances[i][0]), stop=["\n"], temperature=0.0,
                                  max_tokens=3, name="classify", seed=0)
            return r.text

        with ThreadPoolExecutor(min(self.concurrency, len(instances))) as pool:
            answers = list(pool.map(lambda i: contextvars.copy_context().run(ask, i), range(len(instances))))
        parsed = [parse_topic(a) for a in answers]
        correct = [p == topic for p, (_, topic) in zip(parsed, instances)]
        accuracy = sum(correct) / len(correct)
        misses = [f"'{h}': answered {a.strip()!r}, expected {t}"
                  for (h, t), a, ok in zip(instances, answers, correct) if not ok]
        feedback = f"accuracy {accuracy:.2f} ({sum(correct)}/{len(correct)})" + (
            "; " + "; ".join(misses[:4]) if misses else "")
        return EvalResult(objective=accuracy, scores=[float(c) for c in correct], feedback=feedback,
                          metrics={"answers": parsed, "accuracy": accuracy})
