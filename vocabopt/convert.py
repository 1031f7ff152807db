"""Conversion: a trained full-softmax lm_head (V, d) -> the plan's adaptive head, then a short distillation.

Inputs: the lm_head's weight (V, d) and bias (V,) or None (a tensor, a `torch.nn.Linear`, a state dict, tied or not),
a Plan over the same vocabulary and hidden size (a table padded past the plan's V, e.g. 8064 rows for 8000 ids, is
cut to its first V rows; nonzero padded rows are logged and counted in the report), optionally sample hidden states
(n, d) of the model and held-out (hidden, targets). Outputs: `Conversion`: the layer `vocabopt.build_layer(plan)`
holding the converted weights (a copy: it shares no storage with the lm_head) and a `ConvertReport` (per-tail fit,
KL, top-1 agreement, perplexity).

Method (by the plan's frequency rank; original logit l_j(h) = h . w_j + b_j):
- head shortlist rows and biases: copied exactly;
- tail i: the truncated SVD of its (V_i, d) block E_i = U S V^T at rank p_i (the tail's projection size) gives
  proj_i = s V^T[:p_i] and out_i = U S / s (balanced factors, s = max(sqrt(S), 1e-2 sqrt(S_0)), so a direction with
  S = 0 keeps a live projection row for distillation); out_i's bias is the block's bias, which is exact for the
  within-cluster distribution (softmax ignores a constant). A block of rank <= p_i converts exactly (Eckart-Young:
  the squared error is the sum of the discarded squared singular values);
- cluster logits: the head's logit for tail i should be lse_{j in tail i} l_j(h), which makes every cluster's mass
  and every shortlist probability equal the original's. With hidden states it is fitted by least squares on them
  (truncated-SVD solve, `replan.RCOND`); without, the closed form is its tangent plane at h = 0: row
  sum_j softmax(b)_j w_j, bias lse(b) (a lower bound for every h since lse is convex; exact when the rows are equal);
- distillation (optional, needs hidden states): Adam on the layer's approximated parameters (tails, cluster logits;
  the copied shortlist rows and biases stay exact, so the order among shortlist ids is the original's), minimising
  KL(original || adaptive) of the full distribution on random mini-batches of the hidden states. If it raises the KL
  on the evaluation states it is undone: the report's `after` is then `before` (the head kept) and the discarded
  figures sit in `distillation_discarded`.
torch is imported lazily.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import artifacts
from .errors import ArtifactError, InputError, MismatchError
from .plan import Plan
from .replan import RCOND, factor_tail
from .weights import lm_head_from

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ARTIFACT = "vocabopt.ConvertReport"
MAX_ELEMENTS = 1 << 22  # rows x V logits per chunk of evaluation / fitting (16 MB fp32)
QUALITY_FIELDS = ("before", "after", "distillation_discarded")  # the ConvertReport fields holding a Quality


@dataclass
class Quality:
    """The adaptive head against the original on one set of hidden states (per-token means, nats)."""

    kl: float  # KL(original || adaptive), nats/token
    top1_agreement: float  # share of rows whose most likely id is the same
    rows: int
    nll_original: float | None = None  # on the targets, when given
    nll_adaptive: float | None = None

    @property
    def ppl_change(self) -> float | None:
        """Relative perplexity change exp(nll_adaptive - nll_original) - 1 (0.01 = 1% worse), when targets given."""
        if self.nll_original is None or self.nll_adaptive is None:
            return None
        return math.exp(self.nll_adaptive - self.nll_original) - 1.0


@dataclass
class ConvertReport:
    """How a conversion went: the design, the per-tail SVD fit, the cluster-logit fit, quality before/after."""

    plan: str
    vocab_size: int
    hidden: int
    cutoffs: list[int]
    proj_dims: list[int]
    source: str  # where the weight came from ("tensor", "nn.Linear", a state-dict key)
    tied: bool  # the weight is the input embedding matrix
    tails: list[dict[str, Any]]  # per tail: tokens, proj_dim, relative_error, discarded_singular_norm
    cluster_fit: str  # "least squares on N hidden states" | "tangent at h = 0"
    cluster_logit_rmse: float | None  # nats, on the fitting states (None for the closed form)
    evaluated_on: str  # "held-out states" | "fitting states" | "none"
    before: Quality | None = None  # right after the SVD and cluster fit
    after: Quality | None = None  # of the head returned: distilled, or `before` when distillation was undone
    distil: dict[str, Any] = field(default_factory=dict)  # steps, lr, batch_rows, seconds, first/last loss, kept
    distillation_discarded: Quality | None = None  # the distilled head's quality when it was worse and undone
    padded_rows: int = 0  # lm_head rows past the plan's vocabulary (a padded table), dropped
    padded_rows_nonzero: int = 0  # of those, rows with a nonzero weight or bias (0 for true padding)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        out = {"artifact": ARTIFACT, **asdict(self)}
        for name in QUALITY_FIELDS:
            q = getattr(self, name)
            if q is not None:
                out[name]["ppl_change"] = q.ppl_change
        return out

    def save(self, path: str | Path) -> None:
        """Write the report as JSON, atomically."""
        artifacts.write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> ConvertReport:
        """Read a ConvertReport written by `save`; ArtifactError if it is not one."""
        obj = artifacts.read_json(Path(path), ARTIFACT, SCHEMA_VERSION)
        try:
            obj.pop("artifact", None)
            for name in QUALITY_FIELDS:
                if obj.get(name) is not None:
                    obj[name].pop("ppl_change", None)
                    obj[name] = Quality(**obj[name])
            return cls(**obj)
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise ArtifactError(f"{path}: malformed ConvertReport ({type(e).__name__}: {e}); re-run convert") from None


@dataclass
class Conversion:
    """The converted layer (an `AdaptiveSoftmax` built from the plan) and its report."""

    layer: Any
    report: ConvertReport


def _fit_shapes(w: Any, b: Any, plan: Plan) -> tuple[Any, Any, int, int]:
    """(weight[:V], bias[:V], padded rows dropped, nonzero ones among them) after checking the shapes against the
    plan: a table padded past the plan's V (8064 rows for 8000 ids) is cut to the plan's ids; fewer rows refused."""
    V, d = plan.vocab_size, plan.hidden
    if w.ndim != 2 or w.shape[1] != d or w.shape[0] < V:
        transposed = w.ndim == 2 and w.shape[0] == d and w.shape[1] >= V
        hint = " (it looks transposed: pass weight.T)" if transposed else ""
        raise MismatchError(
            f"the lm_head weight is {tuple(w.shape)} but the plan has V={V}, d={d}{hint}; it needs d columns and at "
            "least V rows: build the plan from stats counted with the model's tokenizer and --hidden set to its width"
        )
    rows = w.shape[0]  # (rows, d), rows >= V
    if b is not None and tuple(b.shape) != (rows,):
        raise MismatchError(f"the lm_head bias is {tuple(b.shape)}; the weight's {rows} rows need ({rows},)")
    nonzero = int(((w[V:] != 0).any(1) | (False if b is None else b[V:] != 0)).sum())  # of the rows - V padded
    if nonzero:
        msg = f"the lm_head has {rows} rows, the plan {V} ids: {nonzero} of the {rows - V} dropped rows are nonzero"
        log.warning("%s (trained ids?); check the plan was built with the model's tokenizer", msg)
    w, b = w[:V], None if b is None else b[:V]
    if not bool(w.isfinite().all()) or (b is not None and not bool(b.isfinite().all())):
        raise InputError("the lm_head weight or bias holds NaN/inf; convert a finite checkpoint")
    return w, b, rows - V, nonzero


def _cluster_targets(x: Any, W: Any, b: Any, blocks: list[Any]) -> Any:
    """(n, J) fp64 lse of the original logits over each tail's ids (`blocks`); W (V, d), b (V,) fp32 by id."""
    import torch

    out, step = [], max(1, MAX_ELEMENTS // W.shape[0])
    for r0 in range(0, x.shape[0], step):
        lg = torch.addmm(b, x[r0 : r0 + step], W.T)  # (c, V) fp32 by id
        out.append(torch.stack([lg[:, ids].double().logsumexp(1) for ids in blocks], 1))
    return torch.cat(out)


def _cluster_logits(W: Any, b: Any, blocks: list[Any], x: Any | None) -> tuple[Any, Any, float | None, str]:
    """(J, d) rows, (J,) biases (fp64) of the head's cluster logits, the fit's RMSE (nats) and how they were chosen."""
    import torch

    if x is None:  # tangent plane of lse_j (h . w_j + b_j) at h = 0
        rows, bias = [], []
        for ids in blocks:
            bb = b[ids].double()
            rows.append(torch.softmax(bb, 0) @ W[ids].double())
            bias.append(bb.logsumexp(0))
        return torch.stack(rows), torch.stack(bias), None, "tangent at h = 0 (no hidden states)"
    target = _cluster_targets(x, W, b, blocks)  # (n, J)
    x = x.double()
    A = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)  # (n, d + 1)
    sol = torch.linalg.lstsq(A, target, rcond=RCOND, driver="gelsd").solution  # (d + 1, J)
    rmse = float((A @ sol - target).square().mean().sqrt())
    return sol[:-1].T.contiguous(), sol[-1].contiguous(), rmse, f"least squares on {x.shape[0]} hidden states"


def _load_into(layer: Any, plan: Plan, W: Any, b: Any, x: Any | None) -> tuple[list[dict], float | None, str]:
    """Set every weight of `layer` from the fp32 (V, d) W and (V,) b by id; returns the tail fits and cluster fit."""
    import torch

    order = torch.from_numpy(plan.order)  # rank -> id
    blocks = [order[lo:hi] for lo, hi in plan.bounds]  # ids of each cluster, head first, in rank order
    tails = []
    with torch.no_grad():
        for i, p in enumerate(plan.proj_dims):
            proj, rows, fit = factor_tail(W[blocks[i + 1]].double(), p)
            layer.proj[i].weight.copy_(proj)
            layer.out[i].weight.copy_(rows)
            layer.out[i].bias.copy_(b[blocks[i + 1]])
            tails.append({"tail": i, "tokens": blocks[i + 1].numel(), "proj_dim": p, **fit})
        cw, cb, rmse, how = _cluster_logits(W, b, blocks[1:], x)
        layer.head.weight.copy_(torch.cat([W[blocks[0]], cw.to(W.dtype)]))
        layer.head.bias.copy_(torch.cat([b[blocks[0]], cb.to(b.dtype)]))
    layer.eval()  # also drops the generation bounds cached for the old weights
    return tails, rmse, how


def _teacher_lp(W: Any, b: Any, x: Any) -> Any:
    """(n, V) fp32 log-probs of the original head by id; W (V, d), b (V,) fp32."""
    import torch

    return torch.log_softmax(torch.addmm(b, x, W.T), dim=-1)


def measure(layer: Any, W: Any, b: Any, x: Any, targets: Any | None = None) -> Quality:
    """KL(original || layer), top-1 agreement and (with targets) both NLLs on hidden states x (n, d), by chunks."""
    import torch
    import torch.nn.functional as F

    kl = agree = nll_o = nll_a = 0.0
    step = max(1, MAX_ELEMENTS // W.shape[0])
    with torch.no_grad():
        for r0 in range(0, x.shape[0], step):
            xc = x[r0 : r0 + step]
            lt, ls = _teacher_lp(W, b, xc), layer.log_prob(xc)  # (c, V) each, by id
            kl += float(F.kl_div(ls, lt, log_target=True, reduction="sum"))
            agree += float((lt.argmax(1) == ls.argmax(1)).sum())
            if targets is not None:
                t = targets[r0 : r0 + step, None]
                nll_o -= float(lt.gather(1, t).sum())
                nll_a -= float(ls.gather(1, t).sum())
    n = x.shape[0]
    if targets is None:
        return Quality(kl / n, agree / n, n)
    return Quality(kl / n, agree / n, n, nll_o / n, nll_a / n)


def distil(
    layer: Any,
    W: Any,
    b: Any,
    x: Any,
    *,
    steps: int,
    lr: float,
    batch_rows: int,
    seed: int = 0,
    frozen_rows: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """Adam on the parameters of `layer` for `steps` mini-batches of x (n, d): KL(original || layer) per row.

    The first `frozen_rows` rows of the head cluster's weight and bias (the copied shortlist) are put back after
    every step: they leave the distillation bit for bit as they entered it.
    Returns the loss (nats/token) of each step. progress(step, steps, loss) after each step.
    """
    import torch
    import torch.nn.functional as F

    if not 0 <= frozen_rows <= layer.shortlist:
        raise InputError(f"frozen_rows={frozen_rows}: must be in [0, the head's shortlist {layer.shortlist}]")
    gen = torch.Generator().manual_seed(seed)
    heads = (layer.head.weight, layer.head.bias) if frozen_rows else ()
    keep = [(p, p[:frozen_rows].detach().clone()) for p in heads if p is not None]
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    layer.train()
    losses = []
    for k in range(steps):
        rows = torch.randint(0, x.shape[0], (min(batch_rows, x.shape[0]),), generator=gen)
        xb = x[rows]  # (B, d)
        with torch.no_grad():
            lt = _teacher_lp(W, b, xb)  # (B, V)
        loss = F.kl_div(layer.log_prob(xb), lt, log_target=True, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # the frozen rows: put back bit for bit after each step
            for p, rows0 in keep:
                p[:frozen_rows] = rows0
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(k + 1, steps, losses[-1])
    layer.eval()
    return losses


def _as_states(hidden: Any, d: int, what: str) -> Any:
    import torch

    x = torch.as_tensor(hidden)
    if x.ndim != 2 or x.shape[1] != d or x.shape[0] < 1 or not x.is_floating_point():
        raise InputError(f"{what} must be a float (n, {d}) array of the model's hidden states, got {tuple(x.shape)}")
    return x


def _as_targets(targets: Any, n: int, V: int) -> Any:
    import torch

    t = torch.as_tensor(targets).reshape(-1)
    if t.is_floating_point() or t.numel() != n:
        raise InputError(f"targets must be {n} integer token ids (one per held-out hidden state), got {t.numel()}")
    if n and (int(t.min()) < 0 or int(t.max()) >= V):
        raise InputError(f"targets hold ids in [{int(t.min())}, {int(t.max())}]; the plan's vocabulary is 0..{V - 1}")
    return t.long()


def convert_head(
    weight: Any,
    bias: Any = None,
    plan: Plan | None = None,
    *,
    key: str | None = None,
    hidden_states: Any = None,
    heldout: tuple[Any, Any] | None = None,
    distil_steps: int = 300,
    lr: float = 1e-3,
    batch_rows: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
) -> Conversion:
    """Convert a trained full-softmax lm_head into `plan`'s adaptive head (see the module docstring).

    Args:
        weight: the lm_head: a (V, d) tensor or array (with `bias`), a `torch.nn.Linear`, a transformers model, or a
            state dict (`key`, else `lm_head.weight`, else a tied model's input embedding).
        bias: (V,) or None (the lm_head has none); only with a tensor weight.
        plan: the design; its vocabulary and hidden size must be the lm_head's.
        key: the state-dict entry holding the weight.
        hidden_states: (n, d) hidden states of the model on the user's text, for the cluster-logit fit and the
            distillation; without them the cluster logits take the closed form and nothing is distilled.
        heldout: (hidden (m, d), targets (m,) ids or None) for the report; default: the fitting states, no targets.
        distil_steps: Adam steps of distillation (0: none).
        lr: Adam's learning rate.
        batch_rows: hidden states per step; default 2**22 / V, clamped to [16, 256] (bounds the (B, V) logits).
        seed: for the mini-batches.
        progress: called as progress(step, steps, KL of the step's batch in nats/token).

    Example:
        >>> conv = vocabopt.convert_head(model.lm_head, None, plan, hidden_states=h)  # h: (n, d) from the corpus
        >>> conv.report.after.top1_agreement, conv.layer.predict(h[:1])
    """
    import torch

    from .layer import build_layer

    if not isinstance(plan, Plan):
        raise InputError(f"expected a vocabopt.Plan, got {type(plan).__name__}; load one with Plan.load(path)")
    if distil_steps < 0 or lr <= 0 or (batch_rows is not None and batch_rows < 1):
        raise InputError(f"need distil_steps >= 0, lr > 0, batch_rows >= 1; got {distil_steps}, {lr}, {batch_rows}")
    w, b, source, tied = lm_head_from(weight, bias, key=key)
    w, b, padded, padded_nonzero = _fit_shapes(w, b, plan)
    # fp32 on the CPU; the layer's parameters are filled by copy, so it never shares the lm_head's storage
    W32 = w.detach().to("cpu", torch.float32)
    b32 = b.detach().to("cpu", torch.float32) if b is not None else torch.zeros(plan.vocab_size)
    x = None if hidden_states is None else _as_states(hidden_states, plan.hidden, "hidden_states").cpu().float()
    layer = build_layer(plan)
    tails, rmse, how = _load_into(layer, plan, W32, b32, x)
    ev_x, ev_t, where = _eval_set(heldout, x, plan, same=heldout is not None and heldout[0] is hidden_states)
    report = ConvertReport(
        plan=str(plan.provenance.get("name", "")) or "plan",
        vocab_size=plan.vocab_size,
        hidden=plan.hidden,
        cutoffs=list(plan.cutoffs),
        proj_dims=list(plan.proj_dims),
        source=source,
        tied=tied,
        tails=tails,
        cluster_fit=how,
        cluster_logit_rmse=rmse,
        evaluated_on=where,
        padded_rows=padded,
        padded_rows_nonzero=padded_nonzero,
    )
    if ev_x is not None:
        report.before = measure(layer, W32, b32, ev_x, ev_t)
    if x is not None and distil_steps:
        rows = batch_rows or min(256, max(16, MAX_ELEMENTS // plan.vocab_size))
        kept = {k: v.clone() for k, v in layer.state_dict().items()}
        t0 = time.perf_counter()
        kw = {"batch_rows": rows, "seed": seed, "progress": progress}
        losses = distil(layer, W32, b32, x, steps=distil_steps, lr=lr, frozen_rows=layer.shortlist, **kw)
        report.distil = {"steps": distil_steps, "lr": lr, "batch_rows": rows, "seconds": time.perf_counter() - t0}
        report.distil |= {"first_loss": losses[0], "last_loss": losses[-1], "kept": "distilled"}
        report.after = measure(layer, W32, b32, ev_x, ev_t)
        if report.after.kl > report.before.kl:  # distillation made it worse on the evaluation set: undo it
            layer.load_state_dict(kept)
            layer.eval()
            report.distillation_discarded, report.after = report.after, report.before  # `after`: the head returned
            report.distil["kept"] = "converted (distillation raised the KL)"
    return Conversion(layer, report)


def _eval_set(heldout: tuple[Any, Any] | None, x: Any, plan: Plan, *, same: bool) -> tuple[Any, Any, str]:
    """(hidden fp32, targets or None, description) of the states the report measures on."""
    if heldout is not None:
        hx, ht = heldout
        hx = _as_states(hx, plan.hidden, "heldout hidden states").cpu().float()
        ht = None if ht is None else _as_targets(ht, hx.shape[0], plan.vocab_size)
        return hx, ht, "fitting states" if same else "held-out states"
    if x is not None:
        return x.float(), None, "fitting states"
    return None, None, "none"


def summary_lines(report: ConvertReport) -> list[str]:
    """A short human summary of a ConvertReport (what `vocabopt convert` prints)."""
    tie = " (tied embedding)" if report.tied else ""
    lines = [f"converted {report.source}{tie}: V={report.vocab_size}, d={report.hidden}, cutoffs {report.cutoffs}"]
    if report.padded_rows:  # nonzero padded rows: trained ids, so the plan may be for another tokenizer
        n, live = report.padded_rows, report.padded_rows_nonzero
        lines.append(f"  dropped {n} padded rows past the plan's {report.vocab_size} ids ({live} of them nonzero)")
    for t in report.tails:
        lines.append(
            f"  tail {t['tail']}: {t['tokens']} tokens at rank {t['proj_dim']}, "
            f"relative SVD error {t['relative_error']:.4f}"
        )
    rmse = "" if report.cluster_logit_rmse is None else f", RMSE {report.cluster_logit_rmse:.4f} nats"
    lines.append(f"cluster logits: {report.cluster_fit}{rmse}")
    discarded = report.distillation_discarded
    after = None if discarded is not None else report.after  # undone: `after` is `before`, not a distilled head
    named = (
        ("before distillation", report.before),
        ("after distillation", after),
        ("distillation discarded (the converted head is kept)", discarded),
    )
    for name, q in named:
        if q is None:
            continue
        ppl = "" if q.ppl_change is None else f", perplexity {q.ppl_change:+.2%}"
        lines.append(
            f"{name}: KL {q.kl:.4f} nats/token, top-1 agreement {q.top1_agreement:.2%}{ppl} "
            f"({q.rows} {report.evaluated_on})"
        )
    if report.distil:
        d = report.distil
        lines.append(f"distillation: {d['steps']} Adam steps in {d['seconds']:.1f} s; kept: {d['kept']}")
    return lines
