"""Optimizer: the `optimize` stage — cutoffs and projection sizes that minimise the predicted step time.

Inputs: CorpusStats (the target distribution, sorted by frequency), a DeviceProfile, the hidden size and the
tokens per step. Output: a `Plan` whose `predicted` holds the cost of the design, of the full softmax, of the
best design for each number of tail clusters, the Pareto frontier over (time, capacity) and the folklore
designs.

The search itself (dynamic programming over cutoffs, Grave et al. 2017, §4) is `vocabopt.search`; this module
chooses among its designs (the capacity floor — a heuristic, not measured quality — or a tuned plan's measured
penalty model, `from_tune`), compares them with the folklore cutoffs, and records what was predicted and from which
inputs.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from . import cost, design, tradeoff
from .errors import InputError, MismatchError
from .plan import Plan, tokenizer_record
from .search import Design, SearchSpace, pareto, search
from .version import __version__

log = logging.getLogger(__name__)

FOLKLORE: dict[str, list[int]] = {
    "paper/Lua": [2000, 10000],
    "fairseq WT103": [20000, 60000],
    "Transformer-XL": [20000, 40000, 200000],
}


# The default capacity floor: the capacity the paper's own design (REFERENCE_DESIGN, clipped to the vocabulary, same
# projection rule) has on the user's distribution, so the plan is never less expressive than the design a user would
# otherwise type in, only faster. A heuristic that measures no quality: capacity is a proxy for picking candidates.
# `vocabopt tune` measures held-out perplexity, and `optimize --from-tune` chooses on that evidence instead.
REFERENCE_DESIGN = "paper/Lua"
FLOOR_CAVEAT = "a heuristic that measures no quality; `vocabopt tune` / `optimize --from-tune` measure it"


def default_min_capacity(counts_by_rank: np.ndarray, hidden: int, space: SearchSpace) -> tuple[float, str]:
    """(floor, why): the capacity of REFERENCE_DESIGN on `counts_by_rank` under `space`'s projection rule.

    Clipped to the vocabulary; with explicit `proj_dims` it keeps one cutoff per given size. With no cutoff below V
    the reference is the full softmax (capacity 1): the most capacious design faster than it is recommended.
    """
    cut = design.clip_cutoffs(FOLKLORE[REFERENCE_DESIGN], len(counts_by_rank))
    if space.proj_dims is not None:
        cut = cut[: len(space.proj_dims)]
    if not cut:
        return 1.0, f"1.0: {REFERENCE_DESIGN} has no cutoff below V={len(counts_by_rank):,} (the full softmax)"
    dims = space.dims(hidden, len(cut))
    ref = design.capacity(design.cluster_shares(counts_by_rank, cut), hidden, dims)
    return ref, f"{ref:.3f}, the capacity of {REFERENCE_DESIGN} {cut} (proj_dims {dims}) on this corpus"


def recommend(frontier: list[Design], tolerance: float, min_capacity: float = 0.0) -> Design:
    """The highest-capacity design within `tolerance` (relative) of the fastest one with at least `min_capacity`
    (the most capacious design if none reaches it)."""
    _check_tolerance(tolerance)
    eligible = [d for d in frontier if d.capacity >= min_capacity] or [max(frontier, key=lambda d: d.capacity)]
    fastest = min(d.time_ms for d in eligible)
    return max((d for d in eligible if d.time_ms <= fastest * (1 + tolerance)), key=lambda d: d.capacity)


def _check_tolerance(tolerance: float) -> None:
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise InputError(f"tolerance={tolerance}: must be a share >= 0 of the fastest time, e.g. 0.02")


def folklore(
    profile: Any,
    counts_by_rank: np.ndarray,
    hidden: int,
    batch_tokens: int,
    *,
    mode: str,
    decode: str,
    space: SearchSpace,
    full_ms: float | None = None,
) -> list[dict[str, Any]]:
    """The hand-typed designs people copy, clipped to the vocabulary, under the same projection rule (with their
    speed-up over the full softmax's `full_ms` when given)."""
    out = []
    for name, cut in FOLKLORE.items():
        cut = design.clip_cutoffs(cut, len(counts_by_rank))
        if not cut or not space.fits(len(cut)):
            continue
        dims = space.dims(hidden, len(cut))
        p = cost.predict(
            profile,
            counts_by_rank,
            hidden=hidden,
            cutoffs=cut,
            proj_dims=dims,
            batch_tokens=batch_tokens,
            mode=mode,
            decode=decode,
        )
        out.append(
            {
                "name": name,
                "cutoffs": cut,
                "proj_dims": dims,
                "time_ms": p.time_ms,
                "memory_bytes": int(p.memory_bytes),
                "extrapolated": p.extrapolated,
                "capacity": design.capacity(design.cluster_shares(counts_by_rank, cut), hidden, dims),
            }
        )
        if full_ms is not None:
            out[-1]["speedup"] = full_ms / p.time_ms
    return out


def folklore_skipped(plan: Plan) -> list[tuple[str, list[int]]]:
    """The FOLKLORE designs the plan's comparison left out (none of their cutoffs fits its vocabulary)."""
    shown = {f["name"] for f in plan.predicted.get("folklore", [])}
    return [(name, cut) for name, cut in FOLKLORE.items() if name not in shown]


def optimize(
    stats: Any,
    *,
    hidden: int,
    profile: Any,
    batch_tokens: int,
    mode: str = "train",
    decode: str | None = None,
    max_clusters: int = 4,
    div_value: float = design.DIV_VALUE,
    min_proj: int | None = None,
    proj_dims: list[int] | None = None,
    min_head: int | None = None,
    max_head: int | None = None,
    candidates: int = 256,
    min_tail: int | None = None,
    tolerance: float = 0.02,
    min_capacity: float | None = None,
    cutoffs: list[int] | None = None,
    paths: dict[str, str | None] | None = None,
    from_tune: Plan | None = None,
) -> Plan:
    """Recommend an adaptive-softmax design for a corpus, a device and a batch size.

    Args:
        stats: a CorpusStats (or a 1-D array of counts by token id).
        hidden: width d of the hidden states.
        profile: a DeviceProfile (`profile_device` or `DeviceProfile.load`).
        batch_tokens: tokens per step N.
        mode: "train" (forward + backward, a tail runs only for its targets) or "infer".
        decode: for infer, "greedy" (the default: greedy/top-k decoding, a tail for its share of rows) or "full"
            (every cluster for every row: never less memory than the full softmax, so nothing is proposed).
        max_clusters: search 1..max_clusters tail clusters.
        div_value, min_proj, proj_dims: projections hidden // div_value**(i+1), at least min_proj (default
            `search.default_min_proj`: the profile's alignment; 1: no floor); or these sizes.
        min_head, max_head, candidates, min_tail: head-size bounds, cutoff-grid size, smallest tail (in ids): see
            `vocabopt.search.SearchSpace`.
        tolerance: recommend the highest-capacity frontier design within this share of the fastest time.
        min_capacity: recommend only designs with at least this capacity; default `default_min_capacity`, the
            paper's [2000, 10000]'s: a heuristic that measures no quality (`tune`/`from_tune` do). 0: the fastest.
        cutoffs: evaluate this design instead of recommending one (the search still runs, for the comparison).
        paths: where the inputs came from, recorded in the plan's provenance: {"stats": path, "profile": path}.
        from_tune: a plan made by `vocabopt.tune` (same corpus and width): the fastest design whose *measured*
            penalty model keeps the upper bound within tune's tolerance, not the floor (quality is device-free).

    Example:
        >>> plan = vocabopt.optimize(stats, hidden=512, profile=prof, batch_tokens=2048)
        >>> plan.cutoffs, plan.predicted["speedup"]
    """
    t0 = time.perf_counter()
    decode = decode or ("greedy" if mode == "infer" else "full")  # infer + full never beats the full softmax's memory
    order, counts = _distribution(stats)
    space = SearchSpace(max_clusters, div_value, min_proj, proj_dims, min_head, max_head, candidates, min_tail)
    space.check(len(counts), hidden)
    space = space.resolved(profile, len(counts), hidden)  # the profile's defaults: min_proj, min_tail
    min_capacity, floor_reason = _floor(counts, hidden, space, min_capacity)
    found = _search(profile, counts, hidden, batch_tokens, mode, decode, space, from_tune)
    folk = folklore(profile, counts, hidden, batch_tokens, mode=mode, decode=decode, space=space)
    best, measured = _choose(found, counts, hidden, space, tolerance, min_capacity, cutoffs, from_tune, stats, folk)
    options = {
        **asdict(space),  # max_clusters, div_value, min_proj, proj_dims, min_head, max_head, candidates, min_tail
        "tolerance": tolerance,
        "min_capacity": round(min_capacity, 6),
        "min_capacity_rule": floor_reason,
        "cutoffs": list(cutoffs) if cutoffs is not None else None,
        "decode": decode,
    } | ({"from_tune": measured} if measured is not None else {})
    predicted, full_ms = _predicted(
        profile, counts, hidden, batch_tokens, mode=mode, decode=decode, best=best, found=found
    )
    predicted["folklore"] = [{**f, "speedup": full_ms / f["time_ms"]} for f in folk]  # as folklore(full_ms=)
    log.info("optimize: %s in %.2fs", best.cutoffs, time.perf_counter() - t0)
    return Plan(
        vocab_size=len(counts),
        hidden=hidden,
        order=order,
        cutoffs=best.cutoffs,
        proj_dims=best.proj_dims,
        counts_by_rank=counts,
        mode=mode,
        batch_tokens=batch_tokens,
        predicted=predicted,
        provenance=_provenance(stats, profile, options, paths or {}),
    )


def _choose(
    found: dict[str, Any],
    counts: np.ndarray,
    hidden: int,
    space: SearchSpace,
    tolerance: float,
    min_capacity: float,
    cutoffs: list[int] | None,
    from_tune: Plan | None,
    stats: Any,
    folk: list[dict],
) -> tuple[Design, dict | None]:
    """The design the plan holds: given cutoffs, else the measured choice (`from_tune`; the folklore designs tune
    trained are eligible too, as in tune), else `recommend`."""
    if from_tune is not None and cutoffs is not None:
        raise InputError("from_tune and cutoffs both choose the design; pass one of them")
    if cutoffs is not None:
        return _given(counts, hidden, list(cutoffs), space), None
    _check_tolerance(tolerance)
    if not found["frontier"]:  # search keeps only designs faster than the full softmax and no larger in memory
        raise InputError(_no_design(found))
    if from_tune is not None:
        return _recommend_measured(found["frontier"], from_tune, stats, hidden, counts, folk, space)
    return recommend(found["frontier"], tolerance, min_capacity), None


def _no_design(found: dict[str, Any]) -> str:
    """Why no design is proposed: none is faster than the full softmax with no more memory."""
    why = ""
    if found["over_memory"]:
        why = f"; {found['over_memory']} designs need more activation memory than it"
        if found["mode"] == "infer" and found["decode"] == "full":
            why += " (full-distribution inference assembles the (N, V) log-probs from the clusters)"
    return (
        f"no adaptive design is predicted faster than the full softmax ({found['full_ms']:.2f} ms) with no more "
        f"activation memory ({found['full_memory_bytes'] / 2**20:,.1f} MiB) here{why}; keep the full softmax"
        + (", or plan for --decode greedy" if found["mode"] == "infer" and found["decode"] == "full" else "")
    )


def _search(
    profile: Any, counts: np.ndarray, hidden: int, batch_tokens: int, mode: str, decode: str, space, from_tune
) -> dict[str, Any]:
    """`search` over the space; its frontier joined (Pareto) with those of the other projection rules a tuned
    plan's frontier spanned (`_tuned_rules`)."""
    found = search(profile, counts, hidden, batch_tokens, mode=mode, decode=decode, space=space)
    for rule in _tuned_rules(from_tune, space):
        wide = search(
            profile, counts, hidden, batch_tokens, mode=mode, decode=decode, space=replace(space, div_value=rule)
        )
        found = {**found, "frontier": pareto(found["frontier"] + wide["frontier"])}
    return found


def _tuned_rules(from_tune: Plan | None, space: SearchSpace) -> list[float]:
    """The projection rules (div_value) a tuned plan's frontier spanned beyond this space's, when the space leaves
    the projections to a rule (tune: `frontier_rules`)."""
    if from_tune is None or space.proj_dims is not None:
        return []
    evidence = (getattr(from_tune, "provenance", None) or {}).get("tune") or {}
    return [r for r in evidence.get("frontier_rules") or [] if r != space.div_value]


def _recommend_measured(
    frontier: list[Design],
    tuned: Plan,
    stats: Any,
    hidden: int,
    counts: np.ndarray,
    folk: list[dict],
    space: SearchSpace,
) -> tuple[Design, dict]:
    """The fastest eligible design (frontier, or a folklore design tune trained) within the tuned plan's tolerance,
    a trained design judged by its own measured bound, an untrained one by the penalty model."""
    evidence = tuned.provenance.get("tune") if isinstance(tuned, Plan) else None
    if not evidence:
        raise InputError("from_tune: not a plan made by `vocabopt tune` (no provenance['tune']); run tune first")
    if tuned.hidden != hidden:
        raise MismatchError(f"from_tune: tuned at hidden={tuned.hidden}, not {hidden}; tune at this width")
    tok = getattr(stats, "tokenizer", None)
    tuned_tok = tuned.provenance.get("tokenizer") or {}
    if tok is not None and tuned_tok.get("sha256") not in (None, tok.sha256):
        raise MismatchError("from_tune: tuned with another tokenizer than these stats'; tune with this one")
    trained = {tradeoff.design_key(m) for m in evidence.get("measured") or []}
    options = tradeoff.eligible([d.to_json() for d in frontier], [f for f in folk if tradeoff.design_key(f) in trained])
    raced = tradeoff.raced_out(evidence.get("measured") or [], int((evidence.get("proxy") or {}).get("seeds", 1)))
    options = [d for d in options if tradeoff.design_key(d) not in raced]
    try:
        chosen, met = tradeoff.choose(options, evidence["model"], evidence["tolerance"], evidence.get("measured"))
    except ValueError:
        raise InputError(
            "from_tune: no design on this frontier lies in the capacity range tune measured; tune with this profile"
        ) from None
    on = [d for d in frontier if d.cutoffs == chosen["cutoffs"] and d.proj_dims == chosen["proj_dims"]]
    best = on[0] if on else Design.build(counts, hidden, chosen["cutoffs"], chosen["proj_dims"], 0.0)
    keys = ("predicted_penalty", "predicted_high", "bound")
    return best, {"tolerance": evidence["tolerance"], "met": met, "basis": evidence["basis"]} | {
        k: chosen[k] for k in keys
    }


def _distribution(stats: Any) -> tuple[np.ndarray, np.ndarray]:
    """(order, counts by rank) of a CorpusStats or of 1-D integer counts by id; InputError if unusable."""
    raw = np.asarray(getattr(stats, "counts", stats))
    if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer):
        raise InputError(f"stats must be a CorpusStats or 1-D integer counts, got {raw.dtype} {raw.shape}")
    order = design.frequency_order(raw)
    counts = raw.astype(np.int64)[order]
    if counts.sum() == 0:
        raise InputError("stats hold no tokens (all counts are zero); analyze a non-empty corpus")
    return order, counts


def _floor(counts: np.ndarray, hidden: int, space: SearchSpace, given: float | None) -> tuple[float, str]:
    """The capacity floor and the reason for it: `given`, else `default_min_capacity`."""
    if given is None:
        return default_min_capacity(counts, hidden, space)
    if not (math.isfinite(given) and 0 <= given <= 1):
        raise InputError(f"min_capacity={given}: must be a share in [0, 1], e.g. 0.8")
    return given, f"{given} (given)"


def _predicted(
    profile: Any, counts: np.ndarray, hidden: int, n: int, *, mode: str, decode: str, best: Design, found: dict
) -> tuple[dict[str, Any], float]:
    """The cost model's view of the chosen design next to the full softmax, per J and on the frontier; and the full
    softmax's predicted ms (unrounded, for the folklore rows' speed-ups)."""
    pred = cost.predict(
        profile,
        counts,
        hidden=hidden,
        cutoffs=best.cutoffs,
        proj_dims=best.proj_dims,
        batch_tokens=n,
        mode=mode,
        decode=decode,
    )
    full = cost.predict(
        profile, counts, hidden=hidden, cutoffs=[], proj_dims=[], batch_tokens=n, mode=mode, decode=decode
    )
    return {
        "plan": pred.to_json(),
        "full_softmax": full.to_json(),
        "speedup": full.time_ms / pred.time_ms,
        "memory_ratio": full.memory_bytes / max(pred.memory_bytes, 1.0),
        "mode": mode,
        "decode": decode,
        "batch_tokens": n,
        "best_per_clusters": {str(j): d.to_json() for j, d in found["per_clusters"].items()},
        "frontier": [d.to_json() for d in _thin(found["frontier"], 12)],  # search left out the dominated designs
        "search": {"candidates": found["candidates"]},  # no wall time: same inputs, byte-identical plan
    }, full.time_ms


def _provenance(stats: Any, profile: Any, options: dict[str, Any], paths: dict[str, str | None]) -> dict[str, Any]:
    """Which stats, profile and options made the plan; `paths` adds where the stats and profile were read from."""
    tok = getattr(stats, "tokenizer", None)
    tokenizer = tokenizer_record(stats)
    provenance: dict[str, Any] = {
        "method": "vocabopt.optimize",
        "vocabopt": __version__,
        "stats": {"tokenizer": tok.name, "sha256": tok.sha256, "kind": tok.kind} if tok is not None else None,
        "profile": {
            "device": profile.device,
            "device_type": profile.device_type,
            "dtype": profile.dtype,
            "torch": profile.environment.get("torch"),
            "created": profile.created,
        },
        "options": options,
    }
    for key in ("stats", "profile"):
        if key in paths and provenance[key] is not None:
            provenance[key]["path"] = None if paths[key] is None else str(paths[key])
    if tokenizer is not None:
        provenance["tokenizer"] = tokenizer
    return provenance


def planning_profile(path: str | None, device: str | None, dtype: str | None) -> Any:
    """The DeviceProfile to plan with: the one at `path`, else a quick profile of `device` measured now.

    An explicit device or dtype that contradicts the loaded profile is a MismatchError; without them, planning for
    the profiled device (another GPU, say) is the feature.
    """
    from .profile import DeviceProfile, mismatch_warnings
    from .profiler import profile_device

    if path is None:
        return profile_device(device or "auto", dtype or "float32", quick=True)
    prof = DeviceProfile.load(path)
    problems = mismatch_warnings(prof, device if device not in (None, "auto") else None, dtype)
    if problems:
        raise MismatchError(f"{path}: {problems[0]} Drop --device/--dtype to plan for the profiled device.")
    return prof


def _given(counts: np.ndarray, hidden: int, cutoffs: list[int], space: SearchSpace) -> Design:
    cutoffs = design.check_cutoffs(cutoffs, len(counts))
    return Design.build(counts, hidden, cutoffs, space.dims(hidden, len(cutoffs)), 0.0)


def _thin(designs: list[Design], k: int) -> list[Design]:
    if len(designs) <= k:
        return designs
    idx = np.unique(np.round(np.linspace(0, len(designs) - 1, k)).astype(int))
    return [designs[i] for i in idx]
