"""The key-value retrieval task: instances, prompts and answer parsing (no LLM, no search).

A record list holds ``n_pairs`` lines ``key: code`` (keys are two-word names such as
``amber-otter``, codes distinct 4-digit numbers). The question asks for the code of one key.
Shared by the real pipeline (:mod:`qd.domains.retrieval`), the simulated model
(:mod:`qd.domains.retrieval_sim`) and the measurement script (``scripts/fit_retrieval_sim.py``), so the
three agree on what a prompt looks like.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Instance", "make_instance", "make_instances", "records_text", "forward_prompt", "reverse_prompt",
    "reverse_prompt_with_example", "chunks", "n_chunks",
    "parse_code", "parse_key", "parse_prompt", "prompt_head", "few_shot_block", "DEFAULT_INSTRUCTION", "KEYS",
]

_ADJ = ("amber", "bold", "calm", "dark", "eager", "faint", "grand", "hazy", "icy", "jolly", "keen", "lucky",
        "merry", "noble", "odd", "pale", "quick", "rapid", "shy", "tidy", "urban", "vivid", "warm", "young",
        "zesty", "brave", "crisp", "dusty", "early", "fuzzy", "giant", "happy", "ivory", "lunar", "misty",
        "neat", "olive", "proud", "quiet", "rusty")
_NOUN = ("otter", "falcon", "maple", "river", "cobalt", "lantern", "pepper", "harbor", "violet", "canyon",
         "walnut", "comet", "garnet", "meadow", "badger", "cactus", "dolphin", "ember", "glacier", "hornet",
         "island", "jaguar", "kettle", "lemon", "marble", "nectar", "orchid", "pebble", "quartz", "raven",
         "saddle", "timber", "tulip", "velvet", "willow", "yarrow", "zephyr", "anchor", "beacon", "cedar")
#: Every key the task can use (1600 two-word names).
KEYS: tuple[str, ...] = tuple(f"{a}-{n}" for a in _ADJ for n in _NOUN)

DEFAULT_INSTRUCTION = "Each record pairs a key with its code. Answer with the code of the asked key, or none."
NONE = "none"

_CODE = re.compile(r"\b(\d{4})\b")
_KEY = re.compile(r"\b([a-z]+-[a-z]+)\b")


@dataclass(frozen=True)
class Instance:
    """One question: the records (in prompt order), the asked key and its code."""

    records: tuple[tuple[str, str], ...]
    key: str
    code: str
    seed: int

    @property
    def n_pairs(self) -> int:
        """Number of records."""
        return len(self.records)


def make_instance(n_pairs: int, seed: int) -> Instance:
    """A seeded instance with ``n_pairs`` distinct keys and distinct codes."""
    if not 1 <= n_pairs <= len(KEYS):
        raise ValueError(f"n_pairs must be in [1, {len(KEYS)}], got {n_pairs}")
    rng = np.random.default_rng(seed)
    keys = rng.choice(len(KEYS), size=n_pairs, replace=False)
    codes = rng.choice(9000, size=n_pairs, replace=False) + 1000
    records = tuple((KEYS[k], str(c)) for k, c in zip(keys, codes))
    target = int(rng.integers(n_pairs))
    return Instance(records, records[target][0], records[target][1], seed)


def make_instances(n_pairs: int, n_instances: int, seed: int) -> list[Instance]:
    """The fixed evaluation set: instance ``i`` uses seed ``seed * 100003 + i``."""
    return [make_instance(n_pairs, seed * 100_003 + i) for i in range(n_instances)]


def records_text(records: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    """Record lines ``key: code``."""
    return "".join(f"{k}: {c}\n" for k, c in records)


def _block(records, question: str, answer: str | None) -> str:
    tail = f" {answer}\n\n" if answer is not None else ""
    return f"Records:\n{records_text(records)}Question: {question}\nAnswer:{tail}"


def forward_question(key: str) -> str:
    return f"What is the code of {key}?"


def reverse_question(code: str) -> str:
    return f"Which key has code {code}?"


def few_shot_block(n: int) -> str:
    """``n`` worked examples (fixed; every second one asks for an absent key and answers none)."""
    out = []
    for i in range(n):
        ex = make_instance(3, 7_000_000 + i)
        if i % 2 == 1:  # an absent key teaches the "none" answer chunk calls need
            absent = KEYS[(KEYS.index(ex.key) + 811) % len(KEYS)]
            out.append(_block(ex.records, forward_question(absent), NONE))
        else:
            out.append(_block(ex.records, forward_question(ex.key), ex.code))
    return "".join(out)


def forward_prompt(records, key: str, *, instruction: str = DEFAULT_INSTRUCTION, few_shot: int = 0) -> str:
    """Completion prompt asking for the code of ``key`` in ``records``."""
    head = f"{instruction.strip()}\n\n" if instruction.strip() else ""
    return head + few_shot_block(few_shot) + _block(records, forward_question(key), None)


def reverse_prompt(records, code: str, *, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """Completion prompt asking which key has ``code`` (the verification call)."""
    head = f"{instruction.strip()}\n\n" if instruction.strip() else ""
    return head + _block(records, reverse_question(code), None)


def reverse_prompt_with_example(records, code: str, *, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """The verification prompt: one worked reverse-lookup example, then "which key has ``code``?".

    Without the example the base model answers reverse questions with a code, not a key.
    """
    head = f"{instruction.strip()}\n\n" if instruction.strip() else ""
    ex = make_instance(3, 7_100_000)
    return head + _block(ex.records, reverse_question(ex.code), ex.key) + _block(records, reverse_question(code), None)


def parse_code(text: str) -> str | None:
    """The first 4-digit code in a completion, or ``None`` (also for "none")."""
    m = _CODE.search(text or "")
    return m.group(1) if m else None


def parse_key(text: str) -> str | None:
    """The first ``word-word`` key in a completion, or ``None``."""
    m = _KEY.search((text or "").lower())
    return m.group(1) if m else None


def parse_prompt(prompt: str) -> tuple[list[tuple[str, str]], str, str]:
    """Read back a prompt's last record block and question: ``(records, kind, target)``.

    ``kind`` is ``"forward"`` (target = key) or ``"reverse"`` (target = code). Used by the
    simulated model, which answers from the prompt alone like a real one.
    """
    block = prompt.rsplit("Records:\n", 1)
    if len(block) != 2 or "\nQuestion: " not in block[1]:
        raise ValueError("prompt has no 'Records:' block followed by a question")
    body, question = block[1].rsplit("Question: ", 1)
    records = [tuple(line.split(": ", 1)) for line in body.splitlines() if ": " in line]
    question = question.split("\n", 1)[0]
    if question.startswith("Which key has code "):
        return records, "reverse", question[len("Which key has code "):].rstrip("?")  # type: ignore[return-value]
    if question.startswith("What is the code of "):
        return records, "forward", question[len("What is the code of "):].rstrip("?")  # type: ignore[return-value]
    raise ValueError(f"unknown question {question!r}")


def prompt_head(prompt: str) -> tuple[str, int]:
    """A prompt's instruction and the number of worked examples before its question's record block.

    The simulated model reads both, as a real one does (the fitted prompt effects,
    :mod:`qd.domains.retrieval_sim`).
    """
    blocks = prompt.split("Records:\n")
    return blocks[0].strip(), max(0, len(blocks) - 2)


def chunks(records, chunk_size: int) -> list[tuple[tuple[str, str], ...]]:
    """Consecutive chunks of at most ``chunk_size`` records."""
    n = len(records)
    return [tuple(records[i:i + chunk_size]) for i in range(0, n, chunk_size)]


def n_chunks(n_pairs: int, chunk_size: int) -> int:
    """Number of chunks of ``n_pairs`` records."""
    return math.ceil(n_pairs / max(1, min(chunk_size, n_pairs)))
