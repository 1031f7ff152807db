"""Vocabulary expansion: add tokens to a trained adaptive head without disturbing what it learned.

Inputs: a trained head's state dict (from `vocabopt.build_layer(plan)` or the exported module), its Plan, the old and
new tokenizers' token strings (by id), optionally CorpusStats of new data counted with the new tokenizer.
Outputs: `Expansion`: a new Plan (vocabulary V + K) and a state dict that the layer built from it (or its export)
loads, plus where each new token went.

Rules (docs/layer.md, "Living vocabularies"):
- compatibility: the new tokenizer must hold every old token string at its old id (ids 0..V-1); new ids are V..V'-1.
- placement: a new token goes into the cluster that holds, in the old plan, the rank its count in the new data has
  among the old tokens' counts in the same data; without counts, into the last tail.
- init "mean" (HF `resize_token_embeddings(mean_resizing=True)` per cluster): row ~ N(mean, cov_scale * cov) of the
  cluster's rows (`cov_scale=0` gives the mean itself); bias = mean bias + log(mass / K). With the exact mean, by
  Jensen, exp(mean row . h + mean bias) <= Z / n for every hidden state h, so the K new tokens take at most `mass`
  of their cluster's probability, hence at most `mass` in total.
- init "subword": row = mean of the effective d-space rows of the pieces the old tokenizer splits the token's text
  into (head row w; tail-i row P_i^T u), mapped into the cluster's space by least squares; bias = the cluster's
  mean bias. No mass bound.
Old rows are copied, never recomputed: every old weight is bit-identical in the new state dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import artifacts, design
from .errors import ArtifactError, InputError, MismatchError
from .plan import Plan

INITS = ("mean", "subword")
HF_COV_SCALE = 1e-9  # transformers' mean_resizing samples new rows from N(mean, 1e-9 * covariance)


@dataclass
class Expansion:
    """The expanded design and weights, and where each new token went."""

    plan: Plan
    state: dict[str, Any]  # the new state dict (torch tensors)
    added: list[int]  # new token ids (V..V'-1)
    cluster_of: dict[int, int]  # new id -> cluster (0 = head shortlist, i + 1 = tail i)
    init: str
    mass: float  # upper bound of the new tokens' total probability (init "mean" with cov_scale=0), else nan
    fallback: list[int] = field(default_factory=list)  # subword init: ids with no old pieces (got the mean rule)

    def summary(self) -> dict[str, Any]:
        per = np.bincount(list(self.cluster_of.values()), minlength=len(self.plan.cutoffs) + 1)
        return {
            "added": len(self.added),
            "vocab_size": self.plan.vocab_size,
            "cutoffs": self.plan.cutoffs,
            "added_per_cluster": per.tolist(),
            "init": self.init,
            "mass_bound": None if math.isnan(self.mass) else self.mass,
            "subword_fallback": len(self.fallback),
        }


def check_extends(old_tokens: Sequence[str], new_tokens: Sequence[str]) -> list[int]:
    """The new ids (V..V'-1) if `new_tokens` keeps every old token string at its old id; else MismatchError."""
    V = len(old_tokens)
    if len(new_tokens) < V:
        raise MismatchError(
            f"the new tokenizer has {len(new_tokens)} ids, fewer than the old one's {V}: it drops tokens; "
            "extend the old tokenizer (add_tokens) instead of replacing it"
        )
    bad = [i for i in range(V) if new_tokens[i] != old_tokens[i]]
    if bad:
        where = {s: i for i, s in enumerate(new_tokens)}
        i = bad[0]
        how = f"renumbers it to id {where[old_tokens[i]]}" if old_tokens[i] in where else "drops it"
        raise MismatchError(
            f"the new tokenizer changes {len(bad)} old token(s): old id {i} {old_tokens[i]!r} -> the new tokenizer "
            f"{how}; a trained head can only grow: add tokens after id {V - 1} (tokenizer.add_tokens) "
            "and keep the old ids"
        )
    return list(range(V, len(new_tokens)))


def place(plan: Plan, added: Sequence[int], new_counts: np.ndarray | None) -> dict[int, int]:
    """New id -> cluster: the cluster holding, in the old plan, the rank its count has among the old tokens' counts
    in the same (new) data (ties go behind the old tokens); the last tail without counts."""
    last = len(plan.cutoffs)
    if new_counts is None:
        return dict.fromkeys((int(t) for t in added), last)
    V = plan.vocab_size
    old_desc = np.sort(np.asarray(new_counts[:V]))[::-1]  # old tokens' counts in the new data, decreasing
    edges = [lo for lo, _ in design.bounds(plan.cutoffs, V)]
    out = {}
    for t in added:
        rank = int(np.sum(old_desc >= new_counts[t]))  # old tokens at least as frequent go first
        out[int(t)] = int(np.searchsorted(edges, rank, side="right") - 1)
    return out


def expanded_plan(plan: Plan, cluster_of: dict[int, int], new_counts: np.ndarray | None) -> Plan:
    """The old plan with each new id appended at the end of its cluster (old ranks keep their relative order)."""
    V, J = plan.vocab_size, len(plan.cutoffs)
    scale = 0.0
    if new_counts is not None:  # new tokens' counts, rescaled to the plan's corpus size
        scale = plan.counts_by_rank.sum() / max(1, int(np.sum(new_counts)))
    order, counts, cut = [], [], []
    for c, (lo, hi) in enumerate(design.bounds(plan.cutoffs, V)):
        ids = sorted(t for t, k in cluster_of.items() if k == c)
        order += [*plan.order[lo:hi].tolist(), *ids]
        add = [round(float(new_counts[t]) * scale) if new_counts is not None else 0 for t in ids]
        counts += [*plan.counts_by_rank[lo:hi].tolist(), *add]
        if c < J:
            cut.append(len(order))
    prov = {**plan.provenance, "expanded_from": {"vocab_size": V, "cutoffs": plan.cutoffs, "added": len(cluster_of)}}
    return Plan(
        vocab_size=V + len(cluster_of),
        hidden=plan.hidden,
        order=np.array(order, dtype=np.int64),
        cutoffs=cut,
        proj_dims=list(plan.proj_dims),
        counts_by_rank=np.array(counts, dtype=np.int64),
        mode=plan.mode,
        batch_tokens=plan.batch_tokens,
        provenance=prov,
    )


def check_state(state: dict[str, Any], plan: Plan) -> None:
    """InputError unless `state` is the state dict of a layer built from `plan`."""
    import torch

    J = len(plan.cutoffs)
    need = ["order", "head.weight", *(f"proj.{i}.weight" for i in range(J)), *(f"out.{i}.weight" for i in range(J))]
    missing = [k for k in need if k not in state]
    if missing:
        raise InputError(
            f"head state lacks {missing[:3]}: pass the state_dict() of the layer built from this plan "
            "(vocabopt.build_layer(plan) or the exported module's build_head())"
        )
    if not torch.equal(state["order"].cpu(), torch.from_numpy(plan.order)):
        raise MismatchError("the head state's frequency order differs from the plan's; pass the plan it was built from")
    sizes = [hi - lo for lo, hi in plan.bounds]
    got = [state["head.weight"].shape[0], *(state[f"out.{i}.weight"].shape[0] for i in range(J))]
    want = [sizes[0] + J, *sizes[1:]]
    if got != want or state["head.weight"].shape[1] != plan.hidden:
        raise MismatchError(f"head state has cluster rows {got}, the plan {want}; pass the plan it was built from")


def effective_rows(state: dict[str, Any], plan: Plan, ranks: np.ndarray) -> Any:
    """(n, d) d-space rows of the tokens at `ranks`: head row w for the shortlist, P_i^T u for tail i (a tail logit
    is h . P_i^T u), and their (n,) biases (0 where the layer has none). fp64."""
    import torch

    d = plan.hidden
    edges = [0, *plan.cutoffs, plan.vocab_size]
    rows = torch.zeros(len(ranks), d, dtype=torch.float64)
    bias = torch.zeros(len(ranks), dtype=torch.float64)
    for n, r in enumerate(np.asarray(ranks).tolist()):
        c = int(np.searchsorted(edges, r, side="right") - 1)
        if c == 0:
            rows[n] = state["head.weight"][r].double()
            b = state.get("head.bias")
        else:
            u = state[f"out.{c - 1}.weight"][r - edges[c]].double()  # (p_i,)
            rows[n] = u @ state[f"proj.{c - 1}.weight"].double()  # (d,)
            b = state.get(f"out.{c - 1}.bias")
        if b is not None:
            bias[n] = b[r - edges[c]].double()
    return rows, bias


def _cluster_keys(c: int) -> tuple[str, str]:
    return ("head.weight", "head.bias") if c == 0 else (f"out.{c - 1}.weight", f"out.{c - 1}.bias")


def _new_rows(
    state: dict[str, Any],
    plan: Plan,
    c: int,
    ids: list[int],
    *,
    init: str,
    mass: float,
    n_added: int,
    cov_scale: float,
    pieces: dict[int, list[int]],
    gen: Any,
) -> tuple[Any, Any, list[int]]:
    """(k, p_c) rows and (k,) biases for the new ids of cluster c, and the ids that fell back to the mean rule."""
    import torch

    wkey, bkey = _cluster_keys(c)
    n_old = plan.cutoffs[0] if c == 0 else plan.bounds[c][1] - plan.bounds[c][0]
    W = state[wkey][:n_old].double()  # (n, p_c): the cluster's token rows (the head's cluster logits excluded)
    b = state[bkey][:n_old].double() if state.get(bkey) is not None else None
    mu = W.mean(0)
    rows = mu.expand(len(ids), -1).clone()
    if init == "mean" and cov_scale > 0 and n_old > 1:
        cov = torch.cov(W.T) * cov_scale + torch.eye(W.shape[1], dtype=W.dtype) * 1e-30
        z = torch.randn(W.shape[1], len(ids), generator=gen, dtype=W.dtype)  # (p_c, k)
        rows += (torch.linalg.cholesky(cov) @ z).T
    bias = None if b is None else torch.full((len(ids),), float(b.mean()), dtype=torch.float64)
    fallback = []
    if init == "mean" and bias is not None:
        bias += math.log(mass / n_added)
    if init == "subword":
        P = None if c == 0 else state[f"proj.{c - 1}.weight"].double()  # (p_c, d)
        for k, t in enumerate(ids):
            ranks = plan.rank_of[np.asarray(pieces.get(t, []), dtype=np.int64)]
            if ranks.size == 0:
                fallback.append(t)
                continue
            eff, _ = effective_rows(state, plan, ranks)
            v = eff.mean(0)  # (d,)
            rows[k] = v if P is None else torch.linalg.lstsq(P.T, v[:, None]).solution[:, 0]
    return rows, bias, fallback


def expand_head(
    head_state: dict[str, Any],
    plan: Plan,
    new_tokens: Sequence[str],
    *,
    old_tokens: Sequence[str],
    stats: Any = None,
    init: str = "mean",
    mass: float = 1e-3,
    cov_scale: float = 0.0,
    split: Callable[[int], list[int]] | None = None,
    seed: int = 0,
) -> Expansion:
    """Add the new tokenizer's new ids to a trained head: old weights copied exactly, new rows by `init`.

    Args:
        head_state: the trained layer's `state_dict()`.
        plan: the plan the layer was built from.
        new_tokens: token string of every id of the new tokenizer (`old_tokens` at ids 0..V-1, then new ones).
        old_tokens: token string of every id of the old tokenizer (V of them).
        stats: optional CorpusStats (or (V',) counts by new id) of new data: places the new tokens by frequency.
        init: "mean" (per-cluster mean resizing; new tokens take at most `mass` in total when cov_scale=0)
            or "subword" (mean of the old pieces' rows; needs `split`).
        mass: init "mean": the new tokens' total probability bound.
        cov_scale: init "mean": rows ~ N(mean, cov_scale * cov); HF uses 1e-9 (`HF_COV_SCALE`).
        split: init "subword": new id -> the old ids the old tokenizer splits its text into.
        seed: for the cov_scale draw.

    Example:
        >>> ex = vocabopt.expand_head(layer.state_dict(), plan, new_tokens, old_tokens=old_tokens)
        >>> layer2 = vocabopt.build_layer(ex.plan); layer2.load_state_dict(ex.state)
    """
    import torch

    if init not in INITS:
        raise InputError(f"init={init!r} is not one of {INITS}")
    if not 0 < mass < 1:
        raise InputError(f"mass={mass}: the new tokens' probability bound must be in (0, 1), e.g. 1e-3")
    if init == "subword" and split is None:
        raise InputError("init='subword' needs the old tokenizer to split new tokens (split=...); or use init='mean'")
    if len(old_tokens) != plan.vocab_size:
        raise MismatchError(
            f"the old tokenizer has {len(old_tokens)} ids but the plan {plan.vocab_size}; "
            "pass the tokenizer the plan's stats were counted with"
        )
    check_state(head_state, plan)
    added = check_extends(old_tokens, new_tokens)
    if not added:
        raise InputError("the new tokenizer adds no tokens (same vocabulary); nothing to expand")
    counts = None if stats is None else np.asarray(getattr(stats, "counts", stats))
    if counts is not None and counts.shape != (len(new_tokens),):
        raise MismatchError(
            f"stats has {counts.size} ids but the new tokenizer {len(new_tokens)}; count the new data with the new "
            "tokenizer (vocabopt analyze --tokenizer NEW)"
        )
    cluster_of = place(plan, added, counts)
    new_plan = expanded_plan(plan, cluster_of, counts)
    state = {k: v.detach().clone() for k, v in head_state.items()}
    pieces = {t: list(split(t)) for t in added} if init == "subword" else {}
    gen = torch.Generator().manual_seed(seed)
    fallback: list[int] = []
    for c in range(len(plan.cutoffs) + 1):
        ids = sorted(t for t, k in cluster_of.items() if k == c)
        if not ids:
            continue
        kw = dict(init=init, mass=mass, n_added=len(added), cov_scale=cov_scale, pieces=pieces, gen=gen)
        rows, bias, fb = _new_rows(head_state, plan, c, ids, **kw)
        fallback += fb
        _insert(state, plan, c, rows, bias)
    state["order"] = torch.from_numpy(new_plan.order.copy())
    state["rank_of"] = torch.from_numpy(new_plan.rank_of)
    bound = mass if init == "mean" and cov_scale == 0 else math.nan
    return Expansion(new_plan, state, added, cluster_of, init, bound, fallback)


def _insert(state: dict[str, Any], plan: Plan, c: int, rows: Any, bias: Any) -> None:
    """Put the new rows at the end of cluster c's token rows (the head: before its cluster logits)."""
    import torch

    wkey, bkey = _cluster_keys(c)
    at = plan.cutoffs[0] if c == 0 else state[wkey].shape[0]
    W = state[wkey]
    state[wkey] = torch.cat([W[:at], rows.to(W.dtype), W[at:]])
    if state.get(bkey) is not None:
        b = state[bkey]
        state[bkey] = torch.cat([b[:at], bias.to(b.dtype), b[at:]])


def tokenizer_vocab(path: str) -> tuple[list[str], Any]:
    """(token strings by id, the tokenizers.Tokenizer) of a Hugging Face tokenizer.json (or folder)."""
    from .corpus.tokenizer import load_spec, shared_tokenizer
    from .corpus.vocab import token_strings

    spec = load_spec(path)
    if spec.kind != "hf":
        raise InputError(f"{path}: expand needs a Hugging Face tokenizer (tokenizer.json), got a {spec.kind} one")
    return token_strings(spec), shared_tokenizer(spec)


def subword_splitter(old_tok: Any, new_tok: Any) -> Callable[[int], list[int]]:
    """new id -> old ids: the new token's text (`new_tok.decode([id])`) encoded by the old tokenizer."""

    def split(t: int) -> list[int]:
        text = new_tok.decode([t], skip_special_tokens=False)
        return old_tok.encode(text, add_special_tokens=False).ids if text else []

    return split


def read_state(path: str) -> dict[str, Any]:
    """A head state dict saved with torch.save (read with weights_only=True: tensors only, no code)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; save the head with torch.save(layer.state_dict(), path)") from None
    except Exception as e:  # torch raises several types for a file that is not a tensor archive
        raise ArtifactError(
            f"{path}: not a state dict torch can load safely ({type(e).__name__}); re-save it"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(f"{path}: expected a state dict of tensors (torch.save(layer.state_dict(), path))")
    return state


def write_state(state: dict[str, Any], path: str) -> None:
    """Write a state dict atomically (torch.save format)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    artifacts.atomic_write_bytes(path, buf.getvalue())
