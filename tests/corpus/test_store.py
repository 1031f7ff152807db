"""vocabopt.corpus.store: each stored piece finds its own ids, through hash collisions and after the store
forgets pieces; a batch's counts are the weighted sum of its pieces' ids (against a dict reference)."""

from __future__ import annotations

import numpy as np

from vocabopt.corpus import store as store_module
from vocabopt.corpus.chunks import Chunks
from vocabopt.corpus.store import IdStore, add_distinct


def test_pair_store_finds_every_pair_through_hash_collisions(monkeypatch):
    """Pairs are looked up by a 64-bit hash and checked on the pair itself: with a hash that collides for every
    pair, each stored pair still finds its own row and no other pair finds one."""
    rng = np.random.default_rng(0)
    pairs = np.unique(rng.integers(0, 50, size=(400, 2), dtype=np.uint64), axis=0)
    for collide in (False, True):
        if collide:
            monkeypatch.setattr(store_module, "_pair_hash", lambda p: p[:, 0] % np.uint64(3))
        store = IdStore()
        stored, unseen = pairs[::2], pairs[1::2]
        for part in np.array_split(np.arange(len(stored)), 3):  # added over several batches
            ids = np.arange(part.size, dtype=np.int32)
            rows = store.add("pair", stored[part], ids, np.arange(part.size), np.ones(part.size, np.int64))
            assert store.rows_of("pair", stored[part]).tolist() == rows.tolist()
        got = store.rows_of("pair", stored)
        assert sorted(got.tolist()) == list(range(len(stored)))
        assert (store.rows_of("pair", unseen) == -1).all()


def _ids_of(text: str) -> list[int]:
    """A made-up tokenizer: one id per character (its code point mod 50)."""
    return [ord(c) % 50 for c in text]


def _tokenize(calls: list[list[str]]):
    def tokenize(texts: Chunks):
        strings = texts.strings()
        calls.append(strings)
        pieces = [_ids_of(t) for t in strings]
        lengths = np.array([len(p) for p in pieces], np.int64)
        ids = np.array([i for p in pieces for i in p], np.int32)
        return ids, np.cumsum(lengths) - lengths, lengths

    return tokenize


def test_forgetting_keeps_the_pieces_seen_most_and_stays_exact():
    """With a store far smaller than the pieces, every batch's counts equal a brute-force count; when full, the
    pieces seen at least KEEP_SEEN times stay (not tokenized again) and the others are tokenized again."""
    common = [f"common{k}" for k in range(20)]
    store, calls = IdStore(limit=120), []
    for batch in range(12):
        rare = [f"rare{batch}-{k}" for k in range(60)]  # seen once, never again
        pieces = {**{p: 2 for p in common}, **{p: 1 for p in rare}}
        groups = [("exact", list(pieces), np.array(list(pieces.values()), np.int64))]
        counts = np.zeros(50, np.int64)
        add_distinct(store, groups, counts, _tokenize(calls))
        expected = np.zeros(50, np.int64)
        for p, n in pieces.items():
            np.add.at(expected, _ids_of(p), n)
        np.testing.assert_array_equal(counts, expected)
        tokenized = set(calls[-1])
        assert tokenized == set(rare) | (set(common) if batch == 0 else set())  # the common ones stayed
    assert store.n_rows <= store.limit


def test_forgetting_keeps_at_most_half_the_limit():
    """Pieces seen often enough that they would fill the store: the most seen half stay."""
    store = IdStore(limit=100)
    lengths = np.ones(90, np.int64)
    store.add("raw", [f"p{k}" for k in range(90)], np.arange(90, dtype=np.int32), np.arange(90), lengths)
    store.weighted_counts(np.arange(90), np.arange(90, dtype=np.int64) + 2, 100)  # piece k seen k + 2 times
    store.forget_least_seen()
    rows = store.rows_of("raw", [f"p{k}" for k in range(90)])
    assert (rows[:40] == -1).all() and (rows[40:] >= 0).all()  # p40..p89: the 50 most seen
    assert store.ids[rows[40:]].tolist() == list(range(40, 90))
    tied = IdStore(limit=100)  # all 90 seen twice: any 50 of them stay, not none
    tied.add("raw", [f"p{k}" for k in range(90)], np.arange(90, dtype=np.int32), np.arange(90), lengths)
    tied.weighted_counts(np.arange(90), np.full(90, 2, np.int64), 100)
    tied.forget_least_seen()
    assert tied.n_rows == 50 and (tied.rows_of("raw", [f"p{k}" for k in range(90)]) >= 0).sum() == 50
    none = IdStore(limit=1)  # half the limit is nothing
    none.add("raw", ["a", "b"], np.arange(2, dtype=np.int32), np.arange(2), np.ones(2, np.int64))
    none.weighted_counts(np.arange(2), np.full(2, 5, np.int64), 2)
    none.forget_least_seen()
    assert none.n_rows == 0


def test_room_is_made_for_the_new_pieces_only():
    """A batch that brings back the pieces a full store keeps tokenizes only its new ones: the room it needs is
    for those, not for all its pieces."""
    store, calls = IdStore(limit=100), []
    common, others = [f"c{k}" for k in range(50)], [f"o{k}" for k in range(40)]
    counts = np.zeros(50, np.int64)
    first = [("exact", common + others, np.array([3] * 50 + [1] * 40, np.int64))]
    add_distinct(store, first, counts, _tokenize(calls))
    new = [f"n{k}" for k in range(20)]
    second = [("exact", common + new, np.ones(70, np.int64))]
    add_distinct(store, second, counts, _tokenize(calls))
    assert sorted(calls[-1]) == sorted(new)


def test_forgetting_renumbers_every_kind_of_key():
    """After the store forgets rows, each kept key of every kind ("key", "pair", dict kinds) finds a row holding
    its own ids, and each forgotten key finds none."""
    store = IdStore(limit=1000)
    keys = np.arange(1, 41, dtype=np.uint64) * np.uint64(7)
    pairs = np.stack([np.arange(40, dtype=np.uint64), np.arange(40, dtype=np.uint64) * np.uint64(3)], axis=1)
    strings = [f"s{k}" for k in range(40)]
    own = {}
    for kind, group in (("key", keys), ("pair", pairs), ("raw", strings)):
        lengths = np.arange(40, dtype=np.int64) % 3  # 0-2 ids each
        ids = np.arange(int(lengths.sum()), dtype=np.int32) + 1000 * len(own)
        store.add(kind, group, ids, np.cumsum(lengths) - lengths, lengths)
        for k in range(40):
            own[(kind, k)] = ids[int(lengths[:k].sum()) : int(lengths[: k + 1].sum())].tolist()
    keep = np.zeros(store.n_rows, bool)
    keep[::3] = True
    old_rows = np.flatnonzero(keep)
    store._keep(keep)
    assert store.n_rows == old_rows.size
    for kind, group, base in (("key", keys, 0), ("pair", pairs, 40), ("raw", strings, 80)):
        rows = store.rows_of(kind, group)
        for k, r in enumerate(rows.tolist()):
            if (base + k) % 3:
                assert r == -1
            else:
                got = store.ids[store.starts[r] : store.starts[r] + store.lengths[r]].tolist()
                assert got == own[(kind, k)]
    # pieces added after forgetting find their own rows, next to the kept ones
    more = {
        "key": np.arange(41, 51, dtype=np.uint64) * np.uint64(7),
        "pair": np.stack([np.arange(40, 50, dtype=np.uint64), np.arange(40, 50, dtype=np.uint64) * np.uint64(3)], 1),
        "raw": [f"s{k}" for k in range(40, 50)],
    }
    for kind, group in more.items():
        ids = np.arange(10, dtype=np.int32) + 5000
        store.add(kind, group, ids, np.arange(10), np.ones(10, np.int64))
        assert store.ids[store.starts[store.rows_of(kind, group)]].tolist() == ids.tolist()
    for kind, group, base in (("key", keys, 0), ("pair", pairs, 40), ("raw", strings, 80)):  # the kept ones still
        for k, r in enumerate(store.rows_of(kind, group).tolist()):
            if not (base + k) % 3:
                assert store.ids[store.starts[r] : store.starts[r] + store.lengths[r]].tolist() == own[(kind, k)]
