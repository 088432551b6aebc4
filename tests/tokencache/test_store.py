"""The token cache's in-process store: bounded, least recently used, a TTL, drops by tag.

``invalidation.Store`` alone, no channel and no database: what the request path relies
on when it keeps a row (the seqlock) and what an invalidation does to what it kept.
"""

import threading

from tests.tokencache.helpers import wait_for
from tokens_app.invalidation import EVERYTHING, MISSING, Store

LONG_TTL = 3600.0


def filled(size: int = 10, ttl: float = LONG_TTL, **entries: list[str]) -> Store:
    """A store of *size* holding ``key -> key.upper()`` for each key, with its tags."""
    store = Store(size, ttl)
    for key, tags in entries.items():
        assert store.put(key, key.upper(), tags, store.generation)
    return store


def held(store: Store, *keys: str) -> set[str]:
    return {key for key in keys if store.get(key) is not MISSING}


# --- the bound: least recently used out first -----------------------------------------------


def test_the_store_never_holds_more_than_its_size():
    store = Store(3, LONG_TTL)
    for number in range(10):
        store.put(f"key-{number}", number, [], store.generation)
        assert len(store) == min(number + 1, 3)
    assert held(store, *(f"key-{n}" for n in range(10))) == {"key-7", "key-8", "key-9"}


def test_a_read_keeps_an_entry_in_the_least_recently_used_order():
    store = filled(3, a=[], b=[], c=[])
    assert store.get("a") == "A"  # now b is the least recently used
    store.put("d", "D", [], store.generation)
    assert held(store, "a", "b", "c", "d") == {"a", "c", "d"}


def test_storing_a_key_again_replaces_it_without_growing():
    store = filled(3, a=[], b=[], c=[])
    assert store.put("a", "new", [], store.generation)
    assert len(store) == 3
    assert store.get("a") == "new"
    store.put("d", "D", [], store.generation)  # "a" was refreshed: "b" goes
    assert held(store, "a", "b", "c", "d") == {"a", "c", "d"}


def test_none_is_a_value_an_unknown_key_is_missing():
    # The request path keeps "no row at all" (an empty table) as None.
    store = Store(10, LONG_TTL)
    assert store.put("empty", None, [], store.generation)
    assert store.get("empty") is None
    assert store.get("never stored") is MISSING


# --- the TTL backstop -----------------------------------------------------------------------


def test_an_entry_is_missing_once_its_ttl_has_passed():
    store = Store(10, 0.05)
    assert store.put("row", "ROW", [], store.generation)
    wait_for(lambda: store.get("row") is MISSING, "the entry to expire", timeout=5)
    assert len(store) == 0  # the expired entry is removed, not only hidden


# --- drops by tag ---------------------------------------------------------------------------


def test_a_drop_removes_every_entry_carrying_one_of_the_tags_and_only_those():
    store = filled(a=["k:1", "o:7"], b=["k:2", "o:7"], c=["k:3", "o:8"], d=[])
    store.drop(["k:1"])
    assert held(store, "a", "b", "c", "d") == {"b", "c", "d"}
    store.drop(["o:7", "k:9"])  # the owner's other token goes; an unknown tag is harmless
    assert held(store, "a", "b", "c", "d") == {"c", "d"}
    store.drop(["k:3"])
    assert held(store, "a", "b", "c", "d") == {"d"}
    assert len(store) == 1


def test_an_entry_stored_again_carries_only_its_new_tags():
    store = filled(a=["k:1"])
    store.put("a", "again", ["k:2"], store.generation)
    store.drop(["k:1"])
    assert store.get("a") == "again"
    store.drop(["k:2"])
    assert store.get("a") is MISSING


def test_an_evicted_entry_leaves_no_tag_behind():
    store = filled(1, a=["k:1"])
    store.put("b", "B", ["k:2"], store.generation)  # evicts "a"
    store.put("a", "back", ["k:3"], store.generation)  # evicts "b"
    store.drop(["k:1"])  # "a"'s old tag: it must not reach the new "a"
    assert store.get("a") == "back"


def test_everything_drops_every_entry():
    store = filled(a=["k:1"], b=["o:2"], c=[])
    store.drop([EVERYTHING])
    assert len(store) == 0
    assert held(store, "a", "b", "c") == set()
    again = filled(a=["k:1"], b=[])
    again.drop(["k:9", EVERYTHING])  # wherever it is among the tags
    assert len(again) == 0


def test_clear_drops_everything():
    store = filled(a=["k:1"], b=[])
    store.clear()
    assert len(store) == 0


# --- the generation: nothing read before an invalidation is stored after it -----------------


def test_every_drop_moves_the_generation_on():
    store = filled(a=["k:1"])
    seen = [store.generation]
    store.drop(["k:1"])
    seen.append(store.generation)
    store.drop(["k:unknown"])  # it may have concerned a row being read right now
    seen.append(store.generation)
    store.clear()
    seen.append(store.generation)
    assert seen == sorted(set(seen))  # strictly increasing


def test_a_put_with_a_generation_older_than_a_drop_is_refused():
    store = Store(10, LONG_TTL)
    ticket = store.generation  # a request notes it, then reads the database...
    store.drop(["k:1"])  # ...while an invalidation is applied
    assert store.put("k1-row", "stale", ["k:1"], ticket) is False
    assert store.get("k1-row") is MISSING
    assert len(store) == 0
    assert store.put("k1-row", "fresh", ["k:1"], store.generation) is True
    assert store.get("k1-row") == "fresh"


def test_a_drop_of_any_tag_refuses_puts_begun_before_it():
    # The store cannot know what a pending read will return, so any drop refuses it.
    store = Store(10, LONG_TTL)
    ticket = store.generation
    store.drop(["o:somebody-else"])
    assert store.put("k1-row", "row", ["k:1"], ticket) is False


def test_no_put_begun_before_a_drop_lands_after_it_under_concurrency():
    store = Store(1000, LONG_TTL)
    stop = threading.Event()
    stale: list[int] = []  # rows found after the drop that names them

    def reader() -> None:
        while not stop.is_set():
            ticket = store.generation
            value = ("row", ticket)
            store.put("k1-row", value, ["k:1"], ticket)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2000):
            store.drop(["k:1"])
            after = store.generation
            found = store.get("k1-row")
            # What is there now was put with the generation current at the drop, or later.
            if found is not MISSING and found[1] < after:
                stale.append(found[1])
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert stale == []
