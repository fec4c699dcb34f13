"""RequestCache: keys, persistence, thread safety, pickling."""
from __future__ import annotations

import concurrent.futures as cf
import pickle
import sqlite3

from hypothesis import given
from hypothesis import strategies as st

from qd.llm.cache import RequestCache, cache_path, request_key

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_key_ignores_key_order(request):
    reordered = dict(reversed(list(request.items())))
    assert request_key(request) == request_key(reordered)
    assert len(request_key(request)) == 64


def test_key_changes_with_any_field():
    base = {"model": "m", "prompt": "p", "temperature": 0.8, "max_tokens": 10, "seed": 1, "sample": 0}
    keys = {request_key(base)}
    for field, value in [("model", "n"), ("prompt", "q"), ("temperature", 0.7), ("max_tokens", 11),
                         ("seed", 2), ("sample", 1), ("stop", ["\n"])]:
        keys.add(request_key({**base, field: value}))
    assert len(keys) == 8


def test_roundtrip_persistence_and_wal(tmp_path):
    path = tmp_path / "sub" / "cache.sqlite"
    cache = RequestCache(path)
    assert cache.get("k") is None and "k" not in cache
    cache.put("k", {"text": "héllo", "tokens_in": 3})
    assert cache.get("k") == {"text": "héllo", "tokens_in": 3} and "k" in cache and len(cache) == 1
    again = RequestCache(path)  # another process would see the same rows
    assert again.get("k")["text"] == "héllo"
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    cache.clear()
    assert len(again) == 0


def test_threads_share_one_cache(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")

    def work(i):
        for j in range(20):
            cache.put(f"{i}-{j}", {"v": j})
            assert cache.get(f"{i}-{j}") == {"v": j}
        return i

    with cf.ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(work, range(8))) == list(range(8))
    assert len(cache) == 160


def test_pickle_keeps_only_the_path(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    cache.put("a", {"x": 1})
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.path == cache.path and clone.get("a") == {"x": 1}


def test_cache_path_resolves_the_shared_cache_and_turns_off(tmp_path, monkeypatch):
    monkeypatch.setenv("QD_CACHE_DIR", str(tmp_path / "c"))
    assert cache_path(True) == tmp_path / "c" / "llm-cache.sqlite"
    assert cache_path(str(tmp_path / "own.sqlite")) == tmp_path / "own.sqlite"
    assert cache_path(False) is None and cache_path(None) is None and cache_path("") is None
