"""The embedded model at the hardware limit: raw prompt throughput against what the main job gets.

Two measurements in one run, on the same machine state:

**Raw**: the embedded server (gemma-3-270m) prefilling the demo's own pipeline prompts (recorded by
running the demo domain's pipeline on random configurations of its space), ``slots`` requests in
flight, the server's prompt cache off, so every prompt token is computed. Measured for 1 compute
thread and for every core before the job, and again after it with the job's thread count: the
machine's speed drifts over minutes, so the job is compared with the mean of the two. The
prompt-token rate is the server's own count over the wall time.

**Main job**: ``qd run`` with no config (:data:`qd.config.DEMO_CONFIG`) from an empty request cache,
in this process, with ``[llm] server_threads`` as configured (default ``0``: chosen from the run's
measured CPU, :mod:`qd.llm.threads`). Reports the wall time, the prompt tokens the server computed
and the rate it achieved (those tokens over the job's wall time, against the raw rate with the same
thread count), the tokens its prompt cache skipped, and the map (elites, best accuracy, QD score);
then the operators' own LLM calls and the CPU seconds each part of the job used (``/proc``), which
show whether anything takes cores from the model.

**Work**: the prompt cache spares prefill but never decoding, so a job that caches well decodes
more per computed prompt token than the raw measurement does, and a generated token costs the
model several prompt tokens' time. The script measures that cost (:func:`decode_cost`: the same
prompts, cached, asked for 1 and for 17 tokens) and reports the job's work rate (computed prompt
tokens plus weighted generated tokens, per second) against the raw measurement's, weighted alike.

Usage::

    python scripts/bench_llm.py [--prompts 96] [--skip-job] [--job-threads N] [--noise none] [--seed 0]

Needs a quiet machine: anything else running takes cores from the model.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import json
import os
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from qd.config import DEMO_CONFIG, resolve_config
from qd.domains.retrieval import RetrievalDomain
from qd.llm.local import ServerProcess, local_server, stop_local_server, usable_cores
from qd.llm.threads import process_cpu_seconds
from qd.runner import run_search


class _Recorder:
    """Stands in for the pipeline's LLM client and keeps every prompt it is sent."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def complete(self, prompt: str, **_: Any) -> Any:
        self.prompts.append(prompt)
        return type("Reply", (), {"text": "", "span_id": None})()


def demo_prompts(n: int, seed: int) -> list[str]:
    """``n`` pipeline prompts of the demo domain, from random configurations of its space."""
    options = dict(DEMO_CONFIG["domain"]["options"], cache=False)
    domain = RetrievalDomain(**options)
    recorder = _Recorder()
    domain.llm = recorder
    rng = np.random.default_rng(seed)
    while len(recorder.prompts) < n:
        domain.evaluate(domain.space.sample(rng))
    prompts = recorder.prompts[:n]
    rng.shuffle(prompts)
    return prompts


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def server_metrics(base_url: str) -> dict[str, float]:
    """The server's Prometheus counters (``llamacpp:*``) as numbers."""
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics", timeout=10) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("llamacpp:"):
            name, value = line.split()
            out[name.removeprefix("llamacpp:")] = float(value)
    return out


def _ask_all(base_url: str, prompts: list[str], slots: int, **body: Any) -> float:
    """Seconds to complete every prompt (temperature 0.8 and ``body``), ``slots`` requests in flight."""
    def ask(prompt: str) -> dict:
        return _post(base_url + "/completions", {"prompt": prompt, "temperature": 0.8, **body})

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(slots) as pool:
        list(pool.map(ask, prompts))
    return time.perf_counter() - start


def raw_rate(prompts: list[str], threads: int, slots: int = 4) -> dict[str, float]:
    """Prompt tokens/s of a fresh server with ``threads`` threads over ``prompts``, ``slots`` in flight."""
    with ServerProcess(n_threads=threads, n_parallel=slots) as base_url:
        _post(base_url + "/completions", {"prompt": "warm up", "max_tokens": 1})
        before = server_metrics(base_url)
        wall = _ask_all(base_url, prompts, slots, max_tokens=8, stop=["\n"], cache_prompt=False)
        after = server_metrics(base_url)
    tokens = after["prompt_tokens_total"] - before["prompt_tokens_total"]
    predicted = after["tokens_predicted_total"] - before["tokens_predicted_total"]
    return {"threads": threads, "prompts": len(prompts), "tokens": tokens, "predicted": predicted, "wall_s": wall,
            "rate": tokens / wall}


def decode_cost(prompts: list[str], threads: int, slots: int = 4, new_tokens: int = 16) -> float:
    """Seconds of model time per generated token, ``slots`` in flight, prompts already cached.

    Each prompt is computed once, then asked again for 1 and for ``1 + new_tokens`` tokens
    (end of text ignored); the difference of the two rounds is decoding alone.
    """
    with ServerProcess(n_threads=threads, n_parallel=slots) as base_url:
        # the first round computes the prompts; the next two differ only in tokens decoded
        walls = [_ask_all(base_url, prompts, slots, max_tokens=n, ignore_eos=True, cache_prompt=True)
                 for n in (1, 1, 1 + new_tokens)]
    return max(0.0, walls[2] - walls[1]) / (new_tokens * len(prompts))


def _process_group(pid: int) -> str | None:
    """Which part of the job process ``pid`` is (None: it has gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if pid == os.getpid():
        return "driver (scheduler, operators)"
    if "qd.llm.local" in cmd:
        return "model server"
    if cmd.startswith("ray::") or "default_worker.py" in cmd:
        return "Ray workers (evaluations)"
    if "ray" in cmd and ("raylet" in cmd or "gcs_server" in cmd or "/ray/" in cmd):
        return "Ray system processes"
    return "other processes"


class CpuSampler:
    """CPU seconds used during a job, per part of the job, sampled from ``/proc`` every ``interval_s``.

    A process running when the sampler starts counts from then; one started later counts whole.
    A process that ends loses its CPU since the last sample, and one that lives less than an
    interval is not seen; the samplers' own CPU counts as the driver's.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self._group: dict[int, str] = {}
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self, baseline: bool = False) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            seconds = process_cpu_seconds(pid)
            if seconds is None:
                continue
            if pid not in self._group:
                group = _process_group(pid)
                if group is None:
                    continue
                self._group[pid] = group
                self._first[pid] = seconds if baseline else 0.0
            self._last[pid] = seconds

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> CpuSampler:
        self._sample(baseline=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def seconds(self) -> dict[str, float]:
        """CPU seconds per part of the job, most first."""
        out: dict[str, float] = {}
        for pid, group in self._group.items():
            out[group] = out.get(group, 0.0) + self._last[pid] - self._first[pid]
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


class SlotSampler:
    """Samples the embedded server's busy slots and counters every ``interval_s`` while a job runs.

    The counters (``/metrics``) are summed over the server processes of the job: a restart (the
    thread tuner's) starts a process whose counters begin at 0 again.
    """

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s, self.samples = interval_s, []
        self.counters: dict[str, float] = {}  # summed over server processes
        self._last: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        server = local_server()
        if server is None or server.base_url is None:
            return
        try:
            with urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/slots", timeout=2) as r:
                slots = json.loads(r.read())
            metrics = server_metrics(server.base_url)
        except (OSError, ValueError):
            return
        self.samples.append(sum(bool(s.get("is_processing")) for s in slots))
        for name, value in metrics.items():
            last = self._last.get(name, 0.0)
            self.counters[name] = self.counters.get(name, 0.0) + (value - last if value >= last else value)
            self._last[name] = value

    def __enter__(self) -> SlotSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # the job's last counts

    def summary(self, slots: int = 4) -> tuple[float, float]:
        """(share of samples with an idle server, mean busy slots / ``slots``)."""
        if not self.samples:
            return float("nan"), float("nan")
        idle = sum(n == 0 for n in self.samples) / len(self.samples)
        return idle, sum(self.samples) / len(self.samples) / slots


def main_job(seed: int, threads: int, noise: str) -> dict[str, Any]:
    """Run the README's main job from an empty request cache; the server's counts and the map."""
    config = copy.deepcopy(DEMO_CONFIG)
    config.setdefault("run", {}).update(seed=seed, plot=False, progress=False)
    config.setdefault("llm", {})["server_threads"] = threads
    if noise:
        config.setdefault("archive", {})["noise"] = noise
    config = resolve_config(config)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["QD_CACHE_DIR"] = str(Path(tmp) / "cache")
        start = time.perf_counter()
        with SlotSampler() as sampler, CpuSampler() as cpu:
            run = run_search(config, Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - start
        server = local_server()
        metrics = sampler.counters
        used = server.n_threads if server is not None else 0
        stats = run.archive.stats
        best = float(stats.obj_max) if stats.num_elites else float("nan")
        out = {"wall_s": wall, "threads": used, "elites": stats.num_elites, "best": best,
               "qd_score": float(stats.qd_score), "tokens": metrics.get("prompt_tokens_total", 0.0),
               "cached": metrics.get("prompt_tokens_cached_total", 0.0),
               "predicted": metrics.get("tokens_predicted_total", 0.0),
               "noise": config["archive"]["noise"]}
        out["idle"], out["busy"] = sampler.summary(server.n_parallel if server is not None else 4)
        out["cpu"] = cpu.seconds()
        out["operators_llm"] = run.store.counters("llm")
        run.store.close()
    stop_local_server()
    out["rate"] = out["tokens"] / out["wall_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--prompts", type=int, default=96, help="demo prompts for the raw rate")
    ap.add_argument("--skip-job", action="store_true", help="only the raw rates")
    ap.add_argument("--job-threads", type=int, default=0, help="[llm] server_threads of the job (0: auto)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", default="", help="[archive] noise of the job (default: the demo's)")
    args = ap.parse_args()

    prompts = demo_prompts(args.prompts, args.seed)
    cores = usable_cores()
    raws = {t: raw_rate(prompts, t) for t in sorted({1, cores})}
    print(f"Raw prompt throughput on {len(prompts)} demo prompts ({cores} cores, 4 in flight, prompt cache off):")
    print("| threads | prompt tokens | generated tokens | wall s | prompt tokens/s |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in raws.values():
        print(f"| {r['threads']} | {r['tokens']:.0f} | {r['predicted']:.0f} | {r['wall_s']:.1f} | {r['rate']:.0f} |")
    if args.skip_job:
        return
    job = main_job(args.seed, args.job_threads, args.noise)
    # The machine's speed drifts by several percent over minutes: the job is compared with the
    # mean of the raw rate measured just before it and just after it.
    measured_before = job["threads"] in raws  # else (a thread count chosen mid-run) both are after the job
    before = raws[job["threads"]] if measured_before else raw_rate(prompts, job["threads"])
    after = raw_rate(prompts, job["threads"])
    raw = {"rate": (before["rate"] + after["rate"]) / 2}
    when = "before" if measured_before else "also after"
    print(f"\nRaw rate with {job['threads']} threads: {before['rate']:.0f} {when} the job, {after['rate']:.0f} after "
          f"it, mean {raw['rate']:.0f} prompt tokens/s.")
    # Work-equivalent tokens: a generated token weighted by what it costs the model in prompt
    # tokens (the prompt cache spares prefill, never decoding, so the job decodes more per
    # computed prompt token than the raw measurement does).
    decode_s = decode_cost(prompts[:24], job["threads"])
    prefill_s = max(1e-9, after["wall_s"] - after["predicted"] * decode_s) / after["tokens"]
    weight = decode_s / prefill_s
    raw_generated_share = (before["predicted"] + after["predicted"]) / (before["tokens"] + after["tokens"])
    raw_work = raw["rate"] * (1 + weight * raw_generated_share)
    job_work = (job["tokens"] + weight * job["predicted"]) / job["wall_s"]
    print(f"A generated token costs {decode_s * 1e3:.1f} ms of model time against {prefill_s * 1e3:.2f} ms per prompt "
          f"token (4 in flight, as in the raw measurement): it counts as {weight:.1f} prompt tokens of work. "
          f"Raw work rate {raw_work:.0f}/s.")
    print("\nMain job (`qd run`, demo config, empty request cache):")
    sent = (job["tokens"] + job["cached"]) / job["wall_s"]  # every prompt token the job sent, cached or not
    print("| noise | wall s | model threads | prompt tokens computed | skipped by prompt cache | generated tokens "
          "| computed/s (of raw) "
          "| sent/s (of raw) | work/s (of raw) | server idle | slots busy | elites | best accuracy | QD score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {job['noise']} | {job['wall_s']:.0f} | {job['threads']} | {job['tokens']:.0f} | {job['cached']:.0f} | "
          f"{job['predicted']:.0f} | "
          f"{job['rate']:.0f} ({job['rate'] / raw['rate']:.0%}) | {sent:.0f} ({sent / raw['rate']:.0%}) | "
          f"{job_work:.0f} ({job_work / raw_work:.0%}) | "
          f"{job['idle']:.0%} | {job['busy']:.0%} | {job['elites']} | {job['best']:.2f} | {job['qd_score']:.2f} |")
    print("\nThe operators' own LLM calls (pipeline calls are the rest):")
    print("| tag | calls | prompt tokens | generated tokens |\n| --- | ---: | ---: | ---: |")
    for tag, usage in job["operators_llm"].items():
        calls, tokens_in, tokens_out = (usage.get(k, 0.0) for k in ("calls", "tokens_in", "tokens_out"))
        print(f"| {tag} | {calls:.0f} | {tokens_in:.0f} | {tokens_out:.0f} |")
    print(f"\nCPU seconds during the job ({job['wall_s']:.0f} s wall, {usable_cores()} cores):")
    print("| part of the job | CPU s | cores busy on average |\n| --- | ---: | ---: |")
    for group, seconds in job["cpu"].items():
        print(f"| {group} | {seconds:.1f} | {seconds / job['wall_s']:.2f} |")


if __name__ == "__main__":
    main()
