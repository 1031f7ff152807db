"""The id store: the token ids of every distinct piece a counter has seen, and a batch's counts from them.

Job: the remembering step of the fast counting paths (vocabopt.corpus.counters). Inputs: a batch's distinct pieces
by kind of key with their counts (`chunks.Groups`), and a function that tokenizes pieces (`Tokenize`). Outputs:
counts[id] += n for the ids of each piece (`add_distinct`), tokenizing only the pieces not seen before. `IdStore`
holds the ids in numpy rows (no Python list per piece), up to CACHE_LIMIT pieces per counter: when a batch's new
pieces would pass it, the pieces seen most often stay and the rest are forgotten (`IdStore.forget_least_seen`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .chunks import CHUNKS_OF, Chunks, Groups, _spans

# Distinct chunks/pre-tokens remembered per counter: bounds memory on huge corpora (~60 bytes per piece).
CACHE_LIMIT = 500_000
# When a batch's new pieces would pass the limit, the pieces seen at least KEEP_SEEN times stay (at most half the
# limit: the most seen), the rest are forgotten. Most distinct pieces of a Zipfian corpus are seen once; a piece
# seen twice is likely to come again, and forgetting it costs tokenizing it again. An ad-hoc simulation on
# benchmarks/analyze_throughput.py's Heaps corpus (1 MB batches, its chunks cut before spaces, one store of 500K,
# room counted for all of a batch's pieces): forgetting everything tokenized 1.57M pieces, keeping those seen 2+
# times 1.33M, 3+ 1.40M, 5+ 1.47M; with no limit 1.15M.
KEEP_SEEN = 2

Tokenize = Callable[[Chunks], tuple[np.ndarray, np.ndarray, np.ndarray]]  # texts -> (ids, starts, lengths)


# Odd 64-bit multiplier (2**64 / golden ratio) mixing a pair's first half into the hash `IdStore` sorts pairs by.
_PAIR_MIX = np.uint64(0x9E3779B97F4A7C15)


def _pair_hash(pairs: np.ndarray) -> np.ndarray:
    return (pairs[:, 0] * _PAIR_MIX) ^ pairs[:, 1]  # uint64 arithmetic wraps


class IdStore:
    """Token ids of distinct pieces, laid end to end in one growing array: row r's ids are
    ids[starts[r]:starts[r] + lengths[r]]. Numpy rows instead of one Python list per piece: weighting the ids of a
    batch's pieces is a few vector operations.

    Pieces are found by kind: "key" (`_short_keys` uint64, in a sorted array), "pair" (`_Pieces.pairs` rows, in
    an array sorted by `_pair_hash`, each match checked on the pair itself), "raw" (raw split forms), "exact"
    (chunks cut by the regex), "piece" (pre-tokens): one dict each.
    """

    def __init__(self, limit: int = CACHE_LIMIT) -> None:
        self.limit = limit
        self.clear()

    def clear(self) -> None:
        self.tables: dict[str, dict] = {}
        self.keys = np.zeros(0, np.uint64)  # sorted "key" keys ...
        self.key_rows = np.zeros(0, np.int64)  # ... and their rows
        self.pair_hashes = np.zeros(0, np.uint64)  # sorted `_pair_hash` of the stored pairs ...
        self.pairs = np.zeros((0, 2), np.uint64)  # ... the pairs and their rows in that order
        self.pair_rows = np.zeros(0, np.int64)
        self.n_rows, self.n_ids = 0, 0
        # Buffers with room to grow: appending a batch's new pieces costs O(new), not O(stored).
        self.starts = np.zeros(1 << 12, np.int64)
        self.lengths = np.zeros(1 << 12, np.int64)
        self.ids = np.zeros(1 << 14, np.int32)
        self.seen = np.zeros(1 << 12, np.int64)  # occurrences of each row's piece so far

    def full(self, n_new: int) -> bool:
        return self.n_rows + n_new > self.limit

    def forget_least_seen(self) -> None:
        """Keep the pieces seen KEEP_SEEN times or more (at most half the limit: the most seen; ties cut anywhere)
        and forget the rest."""
        seen = self.seen[: self.n_rows]
        keep = seen >= KEEP_SEEN
        half = self.limit // 2
        if np.count_nonzero(keep) > half:
            keep = np.zeros(seen.size, bool)
            if half:
                keep[np.argpartition(seen, seen.size - half)[seen.size - half :]] = True
        self._keep(keep)

    def _keep(self, keep: np.ndarray) -> None:
        """Forget the rows where `keep` ((n_rows,) bool) is False; the others are renumbered in order."""
        new_row = np.cumsum(keep) - 1
        stays = keep[self.key_rows]
        self.keys, self.key_rows = self.keys[stays], new_row[self.key_rows[stays]]
        stays = keep[self.pair_rows]
        self.pair_hashes, self.pairs = self.pair_hashes[stays], self.pairs[stays]
        self.pair_rows = new_row[self.pair_rows[stays]]
        for kind, table in self.tables.items():
            rows = np.fromiter(table.values(), dtype=np.int64, count=len(table))
            self.tables[kind] = {k: r for k, r, s in zip(table, new_row[rows].tolist(), keep[rows].tolist()) if s}
        kept = np.flatnonzero(keep)
        lengths = self.lengths[kept]
        self.ids = self.ids[_spans(self.starts[kept], lengths)]
        self.starts, self.lengths, self.seen = np.cumsum(lengths) - lengths, lengths, self.seen[kept]
        self.n_rows, self.n_ids = kept.size, self.ids.size

    def rows_of(self, kind: str, keys) -> np.ndarray:
        """(len(keys),) int64: each key's row, -1 for keys not stored."""
        if kind == "key":
            if not self.keys.size:
                return np.full(len(keys), -1, np.int64)
            at = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
            return np.where(self.keys[at] == keys, self.key_rows[at], -1)
        if kind == "pair":
            return self._pair_rows(keys)
        get = self.tables.setdefault(kind, {}).get
        return np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def add(self, kind: str, keys, ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Store keys[j] with ids[starts[j]:starts[j] + lengths[j]]; returns their rows."""
        rows = np.arange(self.n_rows, self.n_rows + len(keys))
        if kind == "key":  # merged into the sorted keys: O(stored) memory traffic, no sort of the stored keys
            order = np.argsort(keys)
            at = np.searchsorted(self.keys, keys[order])
            self.keys, self.key_rows = np.insert(self.keys, at, keys[order]), np.insert(self.key_rows, at, rows[order])
        elif kind == "pair":
            hashes = _pair_hash(keys)
            order = np.argsort(hashes)
            at = np.searchsorted(self.pair_hashes, hashes[order])
            self.pair_hashes = np.insert(self.pair_hashes, at, hashes[order])
            self.pairs = np.insert(self.pairs, at, keys[order], axis=0)
            self.pair_rows = np.insert(self.pair_rows, at, rows[order])
        else:
            self.tables.setdefault(kind, {}).update(zip(keys, rows.tolist()))
        mine = ids[_spans(starts, lengths)]
        self.starts = _append(self.starts, self.n_rows, self.n_ids + np.cumsum(lengths) - lengths)
        self.lengths = _append(self.lengths, self.n_rows, lengths)
        self.seen = _append(self.seen, self.n_rows, np.zeros(len(keys), np.int64))
        self.ids = _append(self.ids, self.n_ids, mine)
        self.n_rows += len(keys)
        self.n_ids += mine.size
        return rows

    def _pair_rows(self, pairs: np.ndarray) -> np.ndarray:
        """(P,) int64: each pair's row, -1 for pairs not stored. Pairs with equal hashes sit side by side: a hash
        match on another pair (a collision, ~P * stored / 2**64 per batch) walks that run."""
        size = self.pair_hashes.size
        if not size or not len(pairs):
            return np.full(len(pairs), -1, np.int64)
        hashes = _pair_hash(pairs)
        at = np.minimum(np.searchsorted(self.pair_hashes, hashes), size - 1)
        same_hash = self.pair_hashes[at] == hashes
        same = same_hash & (self.pairs[at] == pairs).all(axis=1)
        rows = np.where(same, self.pair_rows[at], -1)
        for j in np.flatnonzero(same_hash & ~same).tolist():
            k = int(at[j]) + 1
            while k < size and self.pair_hashes[k] == hashes[j]:
                if (self.pairs[k] == pairs[j]).all():
                    rows[j] = self.pair_rows[k]
                    break
                k += 1
        return rows

    def weighted_counts(self, rows: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
        """(size,) int64: sum over k of weights[k] at each id of row rows[k] (distinct rows), which are counted as
        seen weights[k] more times."""
        self.seen[rows] += weights
        lengths = self.lengths[rows]
        if not lengths.sum():
            return np.zeros(size, np.int64)
        ids = self.ids[_spans(self.starts[rows], lengths)]
        # float64 weights are exact below 2**53 tokens per batch
        return np.rint(np.bincount(ids, weights=np.repeat(weights, lengths), minlength=size)).astype(np.int64)


def _append(buf: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    """buf[:n] followed by values: in buf when it has room, else in a new buffer twice as large (amortised O(1))."""
    if n + values.size > buf.size:
        grown = np.empty(max(2 * buf.size, n + values.size), buf.dtype)
        grown[:n] = buf[:n]
        buf = grown
    buf[n : n + values.size] = values
    return buf


def add_distinct(store: IdStore, groups: Groups, counts: np.ndarray, tokenize: Tokenize) -> None:
    """counts[id] += n for the ids of each distinct piece of each group, tokenizing (once, in one call) only the
    pieces the store has not seen."""
    rows = [store.rows_of(kind, keys) for kind, keys, _ in groups]
    if store.full(sum(int(np.count_nonzero(r < 0)) for r in rows)):  # no room for the new pieces: make some
        store.forget_least_seen()
        rows = [store.rows_of(kind, keys) for kind, keys, _ in groups]
        if store.full(sum(int(np.count_nonzero(r < 0)) for r in rows)):
            store.clear()
            rows = [store.rows_of(kind, keys) for kind, keys, _ in groups]
    todo = [np.flatnonzero(r < 0) for r in rows]
    missing = [
        keys[t] if isinstance(keys, np.ndarray) else [keys[k] for k in t.tolist()]
        for (_, keys, _), t in zip(groups, todo)
    ]
    texts = Chunks.concat([CHUNKS_OF[kind](m) for (kind, _, _), m in zip(groups, missing)])
    if len(texts):
        ids, starts, lengths = tokenize(texts)
        at = 0
        for (kind, _, _), r, t, m in zip(groups, rows, todo, missing):
            r[t] = store.add(kind, m, ids, starts[at : at + t.size], lengths[at : at + t.size])
            at += t.size
    weights = np.concatenate([w for _, _, w in groups])
    counts += store.weighted_counts(np.concatenate(rows), weights, counts.size)
