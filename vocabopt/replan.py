"""Re-planning a trained head: move its weights to new cutoffs (a Plan made on drifted data) without retraining.

Inputs: a trained head's state dict and its Plan, a new Plan over the same vocabulary and hidden size (from
`vocabopt.optimize` on the new data's stats), and sample hidden states (n, d) from the model (held-out text).
Outputs: `Replan`: the state dict of the layer built from the new plan, and a report of the fit.

The migration (docs/layer.md, "Living vocabularies"):
- every token's old weights as one d-space row: a head token's row w; a tail-i token's u through its projection,
  P_i^T u (its tail logit is h . P_i^T u). Its bias moves to one scale, the log-prob scale: b + o_c, where
  o_0 = -mean_h log Z_head(h) and o_i = mean_h [log p(cluster i | h) - log Z_i(h)] over the sample hidden states.
- a token in the new head gets its exact row (so a token moving from a tail into the head keeps its logit
  h . P_i^T u exactly, up to the constant offset);
- a new tail j is the best rank-d_j fit of its tokens' rows E_j (least squares, Eckart-Young): the SVD
  E_j = U S V^T gives P_j = sqrt(S[:d_j]) V[:, :d_j]^T and the rows U[:, :d_j] sqrt(S[:d_j]); the squared fit
  error is the sum of the discarded squared singular values (exact when the rows span d_j dimensions or fewer);
- the new head's cluster logits are refitted by least squares on the sample hidden states, to
  log p_old(cluster | h) - log p_old(shortlist | h) + logsumexp of the new shortlist's logits (truncated-SVD
  least squares: hidden states after a LayerNorm are rank-deficient, see RCOND).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError, MismatchError
from .expand import check_state
from .plan import Plan

RCOND = 1e-5  # cluster-logit fit: singular values of [hidden, 1] below this share of the largest are dropped


@dataclass
class Replan:
    """The migrated state dict and how well each new cluster was fitted."""

    plan: Plan
    state: dict[str, Any]
    tails: list[dict[str, Any]] = field(default_factory=list)  # per new tail: tokens, fit error, moved in
    cluster_logit_rmse: float = 0.0  # nats, on the sample hidden states
    heldout: dict[str, float] = field(default_factory=dict)  # mean NLL (nats) old vs migrated, when given

    def summary(self) -> dict[str, Any]:
        return {
            "cutoffs": self.plan.cutoffs,
            "proj_dims": self.plan.proj_dims,
            "tails": self.tails,
            "cluster_logit_rmse": round(self.cluster_logit_rmse, 6),
            "heldout": self.heldout,
        }


def all_rows(state: dict[str, Any], plan: Plan) -> tuple[Any, Any]:
    """(V, d) d-space rows and (V,) biases of every token, by the plan's rank, fp64 (see the module docstring)."""
    import torch

    J, S = len(plan.cutoffs), plan.cutoffs[0]
    rows = [state["head.weight"][:S].double()]
    hb = state.get("head.bias")
    bias = [hb[:S].double() if hb is not None else torch.zeros(S, dtype=torch.float64)]
    for i in range(J):
        u = state[f"out.{i}.weight"].double()  # (n_i, p_i)
        rows.append(u @ state[f"proj.{i}.weight"].double())  # (n_i, d)
        b = state.get(f"out.{i}.bias")
        bias.append(b.double() if b is not None else torch.zeros(u.shape[0], dtype=torch.float64))
    return torch.cat(rows), torch.cat(bias)


def _logits(state: dict[str, Any], plan: Plan, x: Any) -> list[Any]:
    """fp64 logits of each cluster on (n, d) hidden states: the head's (n, S + J), then each tail's (n, n_i)."""
    hb = state.get("head.bias")
    out = [x @ state["head.weight"].double().T + (0.0 if hb is None else hb.double())]
    for i in range(len(plan.cutoffs)):
        b = state.get(f"out.{i}.bias")
        z = x @ state[f"proj.{i}.weight"].double().T  # (n, p_i)
        out.append(z @ state[f"out.{i}.weight"].double().T + (0.0 if b is None else b.double()))
    return out


def log_probs_by_rank(state: dict[str, Any], plan: Plan, x: Any) -> Any:
    """(n, V) fp64 log-probs in the plan's rank order (the layer's definition, computed from its weights)."""
    import torch

    S = plan.cutoffs[0]
    head, *tails = _logits(state, plan, x.double())
    head_lp = torch.log_softmax(head, -1)
    parts = [head_lp[:, :S]]
    parts += [torch.log_softmax(t, -1) + head_lp[:, S + i, None] for i, t in enumerate(tails)]
    return torch.cat(parts, 1)


def log_offsets(state: dict[str, Any], plan: Plan, hidden: Any) -> Any:
    """(J + 1,) o_c: the constant that puts cluster c's logits on the log-prob scale, averaged over `hidden`."""
    import torch

    head, *tails = _logits(state, plan, hidden.double())
    head_lp = torch.log_softmax(head, -1)
    out = [-torch.logsumexp(head, -1).mean()]
    out += [(head_lp[:, plan.cutoffs[0] + i] - torch.logsumexp(t, -1)).mean() for i, t in enumerate(tails)]
    return torch.stack(out)


def factor_tail(E: Any, p: int) -> tuple[Any, Any, dict[str, float]]:
    """Best rank-p fit of the (n, d) block E (fp64): projection (p, d), output rows (n, p), and the fit (the error
    relative to E's norm and the norm of the discarded singular values: Eckart-Young). Used by replan and convert.

    The factors are balanced, rows = U sqrt(S) and projection = sqrt(S) V^T (same product as U S and V^T): with
    all the scale on one side an optimizer's step moves the logits far more through the other, and fine-tuning
    diverges. Directions beyond the rank keep nonzero projection rows (a small floor), so they still get gradients.

    A tall block (n > 2d, every large tail) is factored through its (d, d) Gram matrix, so memory stays O(n p):
    E^T E = V S^2 V^T and U_k S_k = E V_k. A short one takes the SVD with a full (d, d) V^T, so p may exceed n.
    """
    import torch

    n, d = E.shape
    if n > 2 * d:
        evals, evecs = torch.linalg.eigh(E.T @ E)  # ascending, (d,), (d, d)
        S2, Vt = evals.flip(0).clamp(min=0.0), evecs.flip(1).T  # (d,), (d, d) descending
        S = S2.sqrt()
    else:
        U, S, Vt = torch.linalg.svd(E, full_matrices=n < d)  # (n, k'), (k',), (d, d)
        S2 = S.square()
    k = min(p, S.numel())
    s_all = torch.zeros(p, dtype=E.dtype)
    s_all[:k] = S[:k]
    floor = 1e-2 * float(S[0].sqrt()) if S.numel() and float(S[0]) > 0 else 1.0
    scale = s_all.sqrt().clamp(min=floor)  # (p,) projection row norms
    proj = Vt[:p] * scale[:, None]  # (p, d)
    rows = torch.zeros(n, p, dtype=E.dtype)
    if n > 2 * d:
        rows[:, :k] = (E @ Vt[:k].T) / scale[:k]  # (n, k) = U_k S_k / s
    else:
        rows[:, :k] = U[:, :k] * (S[:k] / scale[:k])  # (n, p): rows @ proj = U_k S_k V_k^T
    norm = float(torch.linalg.norm(E))
    discarded = float(S2[k:].sum().sqrt())
    return proj, rows, {"relative_error": discarded / norm if norm else 0.0, "discarded_singular_norm": discarded}


def _check_plans(plan: Plan, new_plan: Plan) -> None:
    if (new_plan.vocab_size, new_plan.hidden) != (plan.vocab_size, plan.hidden):
        raise MismatchError(
            f"the new plan has V={new_plan.vocab_size}, d={new_plan.hidden}; the head V={plan.vocab_size}, "
            f"d={plan.hidden}: re-plan with the same tokenizer and hidden size (vocabopt expand adds tokens)"
        )


def replan_head(
    head_state: dict[str, Any],
    plan: Plan,
    new_plan: Plan,
    *,
    hidden: Any,
    heldout: tuple[Any, Any] | None = None,
) -> Replan:
    """Migrate a trained head to `new_plan`'s cutoffs and projection sizes (see the module docstring).

    Args:
        head_state: the trained layer's `state_dict()`.
        plan: the plan it was built from.
        new_plan: the new design over the same vocabulary and hidden size.
        hidden: (n, d) sample hidden states of the model (n >= d + 1 for a determined cluster-logit fit).
        heldout: optional (hidden (N, d), targets (N,)) to report the mean NLL of the old and the migrated head.

    Example:
        >>> new_plan = vocabopt.optimize(new_stats, hidden=512, profile=prof, batch_tokens=2048)
        >>> r = vocabopt.replan_head(layer.state_dict(), plan, new_plan, hidden=h_sample)
        >>> layer2 = vocabopt.build_layer(new_plan); layer2.load_state_dict(r.state)
    """
    import torch

    _check_plans(plan, new_plan)
    check_state(head_state, plan)
    hidden = torch.as_tensor(hidden)
    if hidden.ndim != 2 or hidden.shape[1] != plan.hidden or hidden.shape[0] < 1:
        raise InputError(f"hidden must be (n, {plan.hidden}) sample hidden states, got {tuple(hidden.shape)}")
    E, b = all_rows(head_state, plan)  # by old rank
    offsets = log_offsets(head_state, plan, hidden)
    edges = np.array([0, *plan.cutoffs])
    cluster_of_rank = np.searchsorted(edges, np.arange(plan.vocab_size), side="right") - 1
    b = b + offsets[torch.from_numpy(cluster_of_rank)]  # log-prob scale
    old_rank = torch.from_numpy(plan.rank_of[new_plan.order])  # new rank -> old rank
    E, b = E[old_rank], b[old_rank]  # by new rank
    dtype = head_state["head.weight"].dtype
    state: dict[str, Any] = {
        k: v.clone() for k, v in head_state.items() if not k.startswith(("head.", "proj.", "out."))
    }
    state["order"], state["rank_of"] = torch.from_numpy(new_plan.order.copy()), torch.from_numpy(new_plan.rank_of)
    S = new_plan.cutoffs[0]
    tails = []
    for j, ((lo, hi), p) in enumerate(zip(new_plan.bounds[1:], new_plan.proj_dims, strict=True)):
        proj, rows, fit = factor_tail(E[lo:hi], p)
        fit["fit_error"] = float(torch.linalg.norm(E[lo:hi] - rows @ proj))
        fit["norm"] = float(torch.linalg.norm(E[lo:hi]))
        state[f"proj.{j}.weight"], state[f"out.{j}.weight"] = proj.to(dtype), rows.to(dtype)
        if "out.0.bias" in head_state:
            state[f"out.{j}.bias"] = b[lo:hi].to(dtype)
        came = np.bincount(cluster_of_rank[old_rank[lo:hi].numpy()], minlength=len(plan.cutoffs) + 1)
        tails.append({"tail": j, "tokens": hi - lo, "proj_dim": p, "from_clusters": came.tolist(), **fit})
    cluster_w, cluster_b, rmse = _fit_cluster_logits(head_state, plan, new_plan, hidden, E[:S], b[:S])
    state["head.weight"] = torch.cat([E[:S], cluster_w]).to(dtype)
    if "head.bias" in head_state:
        state["head.bias"] = torch.cat([b[:S], cluster_b]).to(dtype)
    result = Replan(new_plan, state, tails, rmse)
    if heldout is not None:
        result.heldout = {"old": _nll(head_state, plan, heldout), "migrated": _nll(state, new_plan, heldout)}
    return result


def _fit_cluster_logits(
    old: dict[str, Any], plan: Plan, new_plan: Plan, hidden: Any, W: Any, b: Any
) -> tuple[Any, Any, float]:
    """(J', d) rows and (J',) biases of the new head's cluster logits, least squares on `hidden`; RMSE (nats)."""
    import torch

    x = hidden.double()
    lp = log_probs_by_rank(old, plan, x)  # (n, V) by the old plan's rank
    ids_of = [torch.from_numpy(plan.rank_of[new_plan.order[lo:hi]]) for lo, hi in new_plan.bounds]
    short_lse = torch.logsumexp(x @ W.T + b, -1)  # (n,) the new shortlist's logits
    log_short = torch.logsumexp(lp[:, ids_of[0]], -1)
    target = torch.stack([torch.logsumexp(lp[:, ids], -1) for ids in ids_of[1:]], 1)  # (n, J')
    target = target - log_short[:, None] + short_lse[:, None]
    A = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)  # (n, d + 1)
    # truncated-SVD least squares (min norm): hidden states after a LayerNorm lie on a hyperplane, so A is
    # rank-deficient up to fp32 rounding (~1e-7), and keeping those singular values gives weights of norm 1e4 that wreck
    # fine-tuning
    sol = torch.linalg.lstsq(A, target, rcond=RCOND, driver="gelsd").solution  # (d + 1, J')
    rmse = float((A @ sol - target).square().mean().sqrt())
    return sol[:-1].T.contiguous(), sol[-1].contiguous(), rmse


def _nll(state: dict[str, Any], plan: Plan, heldout: tuple[Any, Any]) -> float:
    """Mean NLL (nats) of the head in `state` on held-out (hidden (N, d), targets (N,) original ids)."""
    import torch

    x, t = (torch.as_tensor(a) for a in heldout)
    rank = torch.from_numpy(plan.rank_of)[t.long()]
    return float(-log_probs_by_rank(state, plan, x).gather(1, rank[:, None]).mean())


def read_hidden(path: str) -> np.ndarray:
    """(n, d) float sample hidden states from a .npy file (never unpickled)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; save sample hidden states with np.save(path, h)") from None
    except ValueError as e:
        raise InputError(f"{path}: not a plain .npy array ({e}); save it with np.save(path, h)") from None
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{path}: need an (n, d) float array of hidden states, got {arr.dtype} {arr.shape}")
    return arr
