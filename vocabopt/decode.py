"""The decode bench (`vocabopt bench --mode infer`): a Plan -> measured per-token latency of generation.

Inputs: a `Plan` (or a built layer), a device, batch sizes, decodes. Outputs: `DecodeResult`, one row per
(decode, batch, method): the plan's adaptive head (`predict` / `topk` / `sample` / `sample(top_p=)`, which skip
tails that cannot change the answer) and the full lm_head (nn.Linear(d, V) + the same decode on full logits; its
rows are the adaptive head's where they correspond: shortlist rows copied, tail rows out_i.W @ proj_i.W).
Each adaptive row records the tails evaluated and skipped per call and whether its output was checked exact
against its own full `log_prob` in this run (greedy = argmax, top-k = topk values, draws inside the support).

Time: median of interleaved calls after a warm-up round, ms per call and per token (call / batch). Hidden
states are standard normal unless given; an untrained layer has unigram-initialised biases, a trained one skips
more or less depending on how peaked its distributions are. torch is imported lazily.
"""

from __future__ import annotations

import datetime
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import artifacts
from .device import device_name, interleaved_ms, resolve_device
from .errors import ArtifactError, InputError, VocabOptError
from .plan import Plan

SCHEMA_VERSION = 1
ARTIFACT = "vocabopt.DecodeResult"
DECODES = ("greedy", "topk", "sample", "topp")
LAYOUTS = ("row-major", "column-major")  # weight layouts timed: nn.Linear's, and `decode_layout_()`'s


@dataclass
class DecodeRow:
    """One (decode, batch, method) measurement."""

    decode: str  # e.g. "greedy", "top-50", "sample T=0.7", "sample T=1.0 top-50", "top-p 0.9"
    batch: int  # rows per call (one new token each)
    method: str  # "vocabopt" | "full lm_head"
    ms_per_call: float  # median
    ms_per_token: float  # ms_per_call / batch
    p20_ms: float
    p80_ms: float
    samples: int
    tails_evaluated: int | None = None  # (row, tail) pairs evaluated in one call; None for the full lm_head
    tails_skipped: int | None = None
    exact: bool | None = None  # checked against the layer's own full log_prob in this run
    layout: str = "row-major"  # of the weights: "row-major" (nn.Linear's) or "column-major" (decode_layout_)


@dataclass
class DecodeResult:
    """Measured decode latency of one plan's head next to the full lm_head."""

    plan: str
    vocab_size: int
    hidden: int
    device: str
    rows: list[DecodeRow]
    environment: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def row(self, decode: str, batch: int, method: str = "vocabopt") -> DecodeRow | None:
        """The method's fastest row for this decode and batch, over the weight layouts timed (its best
        configuration); None if there is none."""
        rows = [r for r in self.rows if (r.decode, r.batch, r.method) == (decode, batch, method)]
        return min(rows, key=lambda r: r.ms_per_call) if rows else None

    def speedup(self, decode: str, batch: int) -> float | None:
        """Full lm_head time / adaptive head time for one decode and batch, each in its fastest layout (None if
        either is missing)."""
        ours, full = self.row(decode, batch), self.row(decode, batch, "full lm_head")
        return None if ours is None or full is None else full.ms_per_call / ours.ms_per_call

    def speedup_in(self, layout: str, decode: str, batch: int) -> float | None:
        """The speed-up with both heads' weights in one layout (None if either was not timed in it)."""
        rows = {r.method: r for r in self.rows if (r.decode, r.batch, r.layout) == (decode, batch, layout)}
        ours, full = rows.get("vocabopt"), rows.get("full lm_head")
        return None if ours is None or full is None else full.ms_per_call / ours.ms_per_call

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": ARTIFACT,
            "schema_version": self.schema_version,
            "plan": self.plan,
            "vocab_size": self.vocab_size,
            "hidden": self.hidden,
            "device": self.device,
            "environment": self.environment,
            "rows": [asdict(r) for r in self.rows],
        }

    def save(self, path: str | Path) -> None:
        """Write the result as JSON, atomically."""
        artifacts.write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> DecodeResult:
        """Read a DecodeResult written by `save`; ArtifactError if it is not one."""
        obj = artifacts.read_json(Path(path), ARTIFACT, SCHEMA_VERSION)
        try:
            rows = [DecodeRow(**r) for r in obj["rows"]]
            keys = ("plan", "vocab_size", "hidden", "device", "schema_version")
            return cls(**{k: obj[k] for k in keys}, rows=rows, environment=dict(obj["environment"]))
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise ArtifactError(f"{path}: malformed DecodeResult ({type(e).__name__}: {e}); re-run bench") from None


def bench_decode(
    plan: Plan,
    *,
    device: str = "auto",
    batches: tuple[int, ...] | list[int] = (1, 8, 64),
    decodes: tuple[str, ...] | list[str] = ("greedy", "topk", "sample"),
    k: int = 50,
    top_p: float = 0.9,
    reps: int = 7,
    full: bool = True,
    layer: Any = None,
    seed: int = 0,
    layouts: tuple[str, ...] | list[str] = LAYOUTS,
    progress: Callable[[str, int, int], None] | None = None,
) -> DecodeResult:
    """Measure per-token decode latency of the plan's head, exactness checked, next to the full lm_head.

    Args:
        plan: the design (`Plan.load("plan.json")`).
        device: "auto", "cpu", "cuda" or "mps".
        batches: rows per call (sequences decoding one token each).
        decodes: any of "greedy", "topk" (top-k values), "sample" (temperature 0.7 and 1.0, each with and without
            top-k) and "topp" (nucleus top_p at temperature 1).
        k: the k of "topk" and of top-k sampling.
        top_p: the nucleus mass of "topp".
        reps: timed calls per row (after one warm-up round).
        full: also time the full lm_head (nn.Linear(d, V) with the same decode on full logits).
        layer: a built (e.g. trained) layer for this plan; default `build_layer(plan)`, untrained.
        seed: for the hidden states and the draws.
        layouts: weight layouts to time, each for both heads: "row-major" (nn.Linear's (out, in)) and
            "column-major" (the transpose contiguous: `AdaptiveSoftmax.decode_layout_()` for the adaptive head,
            the same for the lm_head's weight); each method's speed-up uses its fastest layout.
        progress: called as progress(row name, round done, rounds).

    Example:
        >>> res = vocabopt.bench_decode(vocabopt.Plan.load("plan.json"), batches=[1], decodes=["greedy"])
        >>> res.speedup("greedy", 1)
    """
    import torch

    if not isinstance(plan, Plan):
        raise InputError(f"expected a vocabopt.Plan, got {type(plan).__name__}; load one with Plan.load(path)")
    bad = sorted(set(decodes) - set(DECODES))
    if bad or not decodes:
        raise InputError(f"decode(s) {bad or list(decodes)} not known; choose from {list(DECODES)}")
    if not batches or any(int(b) < 1 for b in batches) or reps < 1 or not 1 <= k <= plan.vocab_size:
        raise InputError(f"need batches >= 1 (got {list(batches)}), reps >= 1 (got {reps}), 1 <= k <= V (got {k})")
    if not 0 < top_p <= 1:
        raise InputError(f"top_p must be in (0, 1], got {top_p}")
    if not layouts or set(layouts) - set(LAYOUTS):
        raise InputError(f"layouts {list(layouts)}: choose one or more of {list(LAYOUTS)}")
    dev = torch.device(resolve_device(device))
    torch.manual_seed(seed)
    if layer is None:
        from .layer import build_layer

        layer = build_layer(plan)
    layer = layer.to(dev).eval()
    rows: list[DecodeRow] = []
    with torch.no_grad():
        heads = _layouts(layer, _full_head(layer) if full else None, layouts)  # layout -> (layer, lm_head)
        for b in batches:
            x = torch.randn(int(b), plan.hidden, device=dev)  # (B, d)
            gen = torch.Generator(device=dev).manual_seed(seed)
            cases = [
                (lay, ours, *case)
                for lay, (ours, lin) in heads.items()
                for case in _cases(ours, lin, x, gen, decodes, k, top_p)
            ]
            rows += _time_cases(x, cases, dev, reps, progress, k, top_p)
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "reps": reps, "seed": seed}
    env["date"] = datetime.date.today().isoformat()
    return DecodeResult(
        plan=str(plan.provenance.get("name", "")) or "plan",
        vocab_size=plan.vocab_size,
        hidden=plan.hidden,
        device=device_name(dev.type),
        rows=rows,
        environment=env,
    )


def _full_head(layer: Any) -> Any:
    """nn.Linear(d, V) by original id with the adaptive head's rows: shortlist rows and biases copied, tail rows
    out_i.W @ proj_i.W (the rank-p_i rows the adaptive head scores with), tail biases copied. An int8 layer's
    weights enter dequantised (the values it computes with): the lm_head it is timed against stays float."""
    import torch

    def weight(m):  # (out, in) float weight of an nn.Linear or an Int8Linear
        return m.dequantize() if hasattr(m, "qweight") else m.weight

    cfg, S = layer.config, layer.shortlist
    w, b = [weight(layer.head)[:S]], [layer.head.bias[:S] if layer.head.bias is not None else None]
    for i in range(layer.n_tails):
        w.append(weight(layer.out[i]) @ weight(layer.proj[i]))  # (size_i, d)
        size = layer.edges[i + 2] - layer.edges[i + 1]
        b.append(layer.out[i].bias if layer.out[i].bias is not None else torch.zeros(size, device=w[0].device))
    lin = torch.nn.Linear(cfg.hidden, cfg.vocab_size, device=w[0].device, dtype=w[0].dtype)
    head_bias = b[0] if b[0] is not None else torch.zeros(S, device=w[0].device)
    lin.weight.copy_(torch.cat(w)[layer.rank_of])  # row of token id t = its row by rank
    lin.bias.copy_(torch.cat([head_bias, *b[1:]])[layer.rank_of])
    return lin


def _layouts(layer: Any, lin: Any, layouts) -> dict[str, tuple[Any, Any]]:
    """layout -> (adaptive head or None, full lm_head or None) with their float weights stored in that layout
    (copies where the given layer's layout differs: the caller's layer is never changed; the copies double the
    heads' memory while the bench runs). None for the adaptive head where the layout would change nothing."""
    import copy

    out = {}
    floats = any(getattr(m, "weight", None) is not None for m in [layer.head, *layer.proj, *layer.out])  # int8: none
    for lay in layouts:
        col = lay == "column-major"
        if col and not floats:  # an all-int8 head has no float weight to re-lay: timed once, as it is
            ours = None
        else:
            ours = layer if layer.decode_layout == col else copy.deepcopy(layer).decode_layout_(col).eval()
        full = lin
        if lin is not None and col:
            full = copy.deepcopy(lin)
            full.weight.data = full.weight.data.t().contiguous().t()  # (V, d) stored as its (d, V) transpose
        out[lay] = (ours, full)
    return out


def _cases(layer: Any, lin: Any, x: Any, gen: Any, decodes, k: int, top_p: float) -> list[tuple[str, Any, Any]]:
    """(decode name, adaptive call, full lm_head call or None) for every requested decode."""
    import torch

    def full_sample(t: float, kk: int | None = None, p: float | None = None):
        def run():
            logits = lin(x).float() / t  # (B, V)
            if kk is not None:
                vals, ids = logits.topk(kk, dim=1)
                return ids.gather(1, torch.multinomial(torch.softmax(vals, 1), 1, generator=gen))
            if p is not None:
                sv, si = logits.sort(1, descending=True)
                probs = torch.softmax(sv, 1)
                keep = (probs.cumsum(1) - probs) < p  # the shortest prefix reaching p
                probs = probs * keep
                return si.gather(1, torch.multinomial(probs, 1, generator=gen))
            return torch.multinomial(torch.softmax(logits, 1), 1, generator=gen)

        return run if lin is not None else None

    cases = []
    if "greedy" in decodes:
        cases.append(("greedy", lambda: layer.predict(x), (lambda: lin(x).argmax(-1)) if lin is not None else None))
    if "topk" in decodes:
        cases.append(
            (f"top-{k}", lambda: layer.topk(x, k), (lambda: lin(x).topk(k, dim=1)) if lin is not None else None)
        )
    if "sample" in decodes:
        for t in (0.7, 1.0):
            cases.append((f"sample T={t}", lambda t=t: layer.sample(x, t, generator=gen), full_sample(t)))
            cases.append(
                (f"sample T={t} top-{k}", lambda t=t: layer.sample(x, t, top_k=k, generator=gen), full_sample(t, k))
            )
    if "topp" in decodes:
        cases.append((f"top-p {top_p}", lambda: layer.sample(x, top_p=top_p, generator=gen), full_sample(1.0, p=top_p)))
    return cases


def _time_cases(x, cases, dev, reps, progress, k, top_p) -> list[DecodeRow]:
    """Time every case's adaptive and full calls interleaved; check each adaptive decode exact."""
    steps, names = [], []
    for layout, layer, name, ours, full in cases:
        if layer is not None:
            steps.append(ours)
            names.append((name, "vocabopt", layout, layer))
        if full is not None:
            steps.append(full)
            names.append((name, "full lm_head", layout, None))
    samples = interleaved_ms(
        steps,
        dev,
        rounds=reps,
        warmup_rounds=1,
        on_sample=(lambda i, rnd, _s: progress(f"{names[i][0]} B={len(x)} {names[i][2]}", rnd, reps + 1))
        if progress
        else None,
    )
    rows = []
    for (name, method, layout, layer), step, times in zip(names, steps, samples, strict=True):
        evals, exact = {}, None
        if method == "vocabopt":
            step()
            evals = dict(layer.last_tail_evals)
            exact = _check_exact(layer, x, name, k, top_p)
        q = np.percentile(times, [20, 80])
        ms = float(statistics.median(times))
        rows.append(
            DecodeRow(
                decode=name,
                batch=int(x.shape[0]),
                method=method,
                ms_per_call=ms,
                ms_per_token=ms / x.shape[0],
                p20_ms=float(q[0]),
                p80_ms=float(q[1]),
                samples=len(times),
                tails_evaluated=evals.get("evaluated"),
                tails_skipped=evals.get("skipped"),
                exact=exact,
                layout=layout,
            )
        )
    return rows


def _check_exact(layer: Any, x: Any, name: str, k: int, top_p: float) -> bool:
    """The adaptive decode against the layer's own full log_prob; raises VocabOptError (a bug) when it differs."""
    import torch

    lp = layer.log_prob(x)  # (B, V)
    gen = torch.Generator(device=x.device).manual_seed(1)
    if name == "greedy":
        ok = torch.equal(lp.gather(1, layer.predict(x)[:, None]).squeeze(1), lp.amax(1))
    elif name.startswith("top-p"):
        ids = layer.sample(x, top_p=top_p, generator=gen)  # (B,)
        sv = lp.sort(1, descending=True).values
        cut = sv.gather(1, _cut_index(sv.exp(), top_p)[:, None]).squeeze(1)  # (B,) smallest nucleus log-prob
        ok = bool((lp.gather(1, ids[:, None]).squeeze(1) >= cut - 1e-4).all())
    elif "top-" in name:  # top-k values, and top-k sampling (which draws among them)
        vals, ids = layer.topk(x, k)
        ok = torch.allclose(vals, lp.topk(k, dim=1).values, atol=1e-4) and torch.allclose(
            lp.gather(1, ids), vals, atol=1e-4
        )
    else:  # plain sampling: every draw has positive probability (its distribution is tested in tests/)
        ok = bool((lp.gather(1, layer.sample(x, generator=gen)[:, None]) > -float("inf")).all())
    if not ok:
        raise VocabOptError(f"bench infer: {name} of the adaptive head differs from its own log_prob (a bug)")
    return True


def _cut_index(probs: Any, top_p: float) -> Any:
    """(B, V) probabilities sorted descending -> (B,) index of the last nucleus token."""
    return ((probs.cumsum(1) < top_p).sum(1)).clamp(max=probs.shape[1] - 1)
