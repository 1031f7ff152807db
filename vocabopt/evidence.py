"""A trained design's evidence from its proxy-LM runs (`tune`'s records): penalties at the end and at the training
length, the equal-time penalty, step times, band perplexities, per-seed penalties.

Inputs: `runs`, name -> one record per seed ({"step_ms", "curve": [(step, loss)], "quality": a held-out quality with
`window_losses`, `loss`, `bands`, `ece`, `temperature`}), the full softmax's under FULL with the same seeds first.
Outputs: JSON-ready dicts (the Plan's provenance["tune"]["measured"] entries). numpy and `tradeoff` only.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from . import tradeoff

FULL = "full softmax"


def design_record(pick: dict, runs: dict[str, list[dict]], steps_at: float | None, steps: int) -> dict[str, Any]:
    """One trained design: penalty at the end and at the training length, equal-time penalty, step times, bands."""
    mine = runs[pick["name"]]
    full = runs[FULL][: len(mine)]  # the same seeds: a design out of the race trained only the first ones
    windows = [r["quality"].window_losses for r in mine], [r["quality"].window_losses for r in full]
    at_end = tradeoff.penalty_at_end(*windows)
    fit = tradeoff.fit_pair([r["curve"] for r in mine], [r["curve"] for r in full])
    at_length = tradeoff.penalty_at_length(fit, steps_at) if fit is not None else None
    ratio = _median_step(full) / _median_step(mine)  # steps this layer takes in the full softmax's time per step
    # at the real run's length L (fitted curves): the full softmax after L steps vs this layer after L * ratio;
    # else measured within the proxy run: this layer after its steps vs the full softmax after the same time
    if steps_at is not None and fit is not None:
        equal_time, equal_basis = float(np.expm1(np.clip(fit.gap(steps_at * ratio, steps_at)[0], -50, 50))), "fitted"
    else:
        curves = [r["curve"] for r in mine], [r["curve"] for r in full]
        equal_time, equal_basis = tradeoff.penalty_at_equal_time(*curves, ratio), "measured"
    return {
        "name": pick["name"],
        "round": pick.get("round", 0),  # 0: the first round; k: refinement k (the full softmax's runs reused)
        "refined": pick.get("refined"),  # refinement: "interpolated" (the model's choice) or "probe" (`gap_probe`)
        "tie_break": pick.get("tie_break"),  # the round that gave it one more seed (`tradeoff.tie_break`), or None
        "cutoffs": pick["cutoffs"],
        "proj_dims": pick["proj_dims"],
        "capacity": pick["capacity"],
        "predicted_ms": pick["time_ms"],
        "proxy_step_ms": _median_step(mine),
        "proxy_speedup": ratio,
        "heldout_ppl": _mean_ppl(mine),
        "at_end": at_end,
        "at_length": at_length,
        "fitted": fit is not None,
        "equal_time_penalty": equal_time,
        "equal_time_at_steps": steps_at if equal_basis == "fitted" else steps,
        "equal_time_basis": equal_basis,  # "fitted" at the real run's length, or "measured" within the proxy run
        "bands": _mean_bands(mine, full),
        "seeds": len(mine),  # fewer than the proxy's when it left the race (`tradeoff.out_of_race`)
        "seed_swing": tradeoff.seed_swing(*windows),  # largest difference between two seeds' penalties
        "seed_penalties": tradeoff.seed_penalties(*windows),  # each seed's own end-of-run penalty
        "curves": [r["curve"] for r in mine],  # per seed: (step, held-out loss), the same windows as the full's
        "ece": float(np.mean([r["quality"].ece for r in mine])),
        "temperature": float(np.mean([r["quality"].temperature for r in mine])),
    }


def measure(picks: list[dict], runs: dict, steps_at: float | None, steps: int) -> tuple[list[dict], str]:
    """Every trained design's evidence, its decision penalty taken at the training length when every pair of
    curves could be fitted ("length"), else at the end of the run ("end") for all alike."""
    measured = [design_record(d, runs, steps_at, steps) for d in picks]
    basis = "length" if all(m["fitted"] for m in measured) else "end"
    for m in measured:
        m.update(m["at_length"] if basis == "length" else m["at_end"])
    return measured, basis


def full_record(records: list[dict]) -> dict[str, Any]:
    return {
        "heldout_ppl": _mean_ppl(records),
        "curves": [r["curve"] for r in records],
        "proxy_step_ms": _median_step(records),
        "ece": float(np.mean([r["quality"].ece for r in records])),
        "temperature": float(np.mean([r["quality"].temperature for r in records])),
    }


def _median_step(records: list[dict]) -> float:
    return float(statistics.median(r["step_ms"] for r in records))


def _mean_ppl(records: list[dict]) -> float:
    return float(np.exp(np.mean([r["quality"].loss for r in records])))


def _mean_bands(mine: list[dict], full: list[dict]) -> list[dict]:
    """Per quality band: this layer's and the full softmax's perplexity (seeds averaged in log space)."""
    out = []
    for b, band in enumerate(mine[0]["quality"].bands):
        losses = [r["quality"].bands[b]["loss"] for r in mine]
        full_losses = [r["quality"].bands[b]["loss"] for r in full]
        if None in losses or None in full_losses:
            continue
        out.append(
            {
                "ranks": band["ranks"],
                "ppl": float(np.exp(np.mean(losses))),
                "full_ppl": float(np.exp(np.mean(full_losses))),
            }
        )
    return out
