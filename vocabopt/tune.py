"""The tune stage: a corpus, a tokenizer, a device profile -> the fastest output layer whose *measured* held-out
perplexity is within a tolerance of the full softmax's, on the user's own corpus and width.

Inputs: CorpusStats, the corpus sources and tokenizer they were counted from, the hidden size, the tokens per step
and a DeviceProfile (for the speed side, as `optimize`). Output: a `Plan` whose provenance["tune"] holds the
evidence: every trained design with its penalty and interval, the fitted penalty model, the tolerance, the basis of
the comparison and whether the tolerance was met.

Method:
1. candidates: the optimizer's time-capacity frontier over two projection rules, the space's and tail i of d/2^i
   (the Pareto set of the two searches' whole frontiers; designs slower than the full softmax dropped), a few
   spanning its capacity range, plus the folklore designs
   (unless told not to: a design that passes anchors the refinement);
2. quality: each candidate and the full softmax train the same proxy LM (`vocabopt.training`: same seed, batches,
   optimizer, in lockstep) for several seeds; held-out loss per window and learning curves are recorded;
3. penalty of each design with a 95% interval (`vocabopt.tradeoff`): at the training length the user plans
   (`train_tokens`), else at the fitted asymptote; at the end of the run when the curves cannot be fitted;
4. a penalty model monotone in capacity, interpolated along the frontier; the fastest design (frontier or trained
   folklore) whose upper bound is within the tolerance is chosen: a trained design's own bound, an untrained one's
   from the model (`tradeoff.choose`). If none is, the one with the lowest upper bound, flagged `met: false`;
5. refinement rounds, while the time budget allows: a faster trained design whose penalty passes but whose interval
   straddles the tolerance gets one more seed (`tradeoff.tie_break`); an interpolated choice is trained; a trained
   choice that passed has the gap between it and the most capacious faster design that failed narrowed by
   safeguarded false position (`tradeoff.gap_probe`); the budget's bookkeeping is `vocabopt.budget`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from . import tradeoff
from .budget import Budget
from .device import DTYPES, device_name, resolve_device
from .errors import InputError
from .evidence import FULL, full_record, measure
from .optimize import optimize
from .plan import Plan
from .quality import coverage_band_edges, heldout_quality
from .search import SearchSpace, pareto, search
from .training import MODELS, TokenStream, TrainSettings, curve_point, train_lockstep
from .validate import batch_offsets, load_tokens

Progress = Callable[[str, int, int], None]  # (what, done, total)
# `tradeoff.tie_break`: seeds a design may train beyond the proxy's `seeds`. Evidence: benchmarks/tune_corpora.py at
# commit ba55c18, KJV: [1488, 3096] (5.41x predicted, 1.31x the folklore [2000]) measured +0.03% [-1.06%, +1.07%]
# with 2 seeds, undecided by 0.07 points, and the round went to nothing; a third seed costs one design's and one full
# softmax's training. At commit 52d0d32 its third seed read +1.44%: decided, a failure. Taking more
# seeds only for designs that lean to a pass favours passes (the winner's curse): the independent run (`--confirm`,
# `vocabopt validate --seed`) is the check.
TIE_BREAK_SEEDS = 1
# The second projection rule tune's frontier spans (tail i of width d/2^i beside the space's d/4^i): wider for a small
# predicted cost (Python source, [3016]: 2.91x with 128 vs 2.99x with 64, shipped Xeon profile). Observed in two
# consecutive runs of benchmarks/tune_corpora.py that differ only in this rule, at 52d0d32 and 23cbd1c
# (docs/benchmarks.md "Tune on two corpora", earlier runs): with d/4 only KJV chose the folklore [2000] (1.00x over
# it), with both [824, 1752, 3648] / [128, 64, 32] (-0.51%, confirmed -1.32%, 2.11x the folklore measured); Python's
# [3016] read +0.98% with a 64-wide tail, +0.48% with 128 (overlapping intervals).
WIDE_DIV_VALUE = 2.0


def tune(
    stats: Any,
    *,
    sources: str | list[str],
    tokenizer: str,
    hidden: int,
    batch_tokens: int,
    profile: Any,
    tolerance: float = 0.01,
    seeds: int = 2,
    candidates: int = 2,
    folklore: bool = True,
    train_tokens: int | None = None,
    train: TrainSettings | None = None,
    heldout: float = 0.05,
    max_tokens: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    space: SearchSpace | None = None,
    refine: int = 4,
    budget_minutes: float | None = 15.0,
    race: bool = True,
    confirm: bool = False,
    progress: Progress | None = None,
) -> Plan:
    """The fastest design within `tolerance` of the full softmax's held-out perplexity, measured on `sources`.

    Args:
        stats: CorpusStats of the corpus, counted with `tokenizer`.
        sources, tokenizer: the corpus and tokenizer to train the proxy LM on (as `vocabopt validate` takes them).
        hidden, batch_tokens, profile: the width, the tokens per step and the device the design is for.
        tolerance: allowed perplexity penalty over the full softmax (0.01 = 1%), on the interval's upper end.
        seeds: proxy-LM trainings per design (each with the full softmax beside it); the interval includes
            run-to-run variance only with 2 or more (with 1 it covers the held-out windows alone).
        candidates: frontier designs of the first round (2: its ends); `folklore` adds the folklore designs: likely
            passes (on KJV, scoring the last iterate, the only one), which the refinement's probes need as anchors.
        train_tokens: the length of the real training run, in tokens: penalties are compared there (fitted learning
            curves); None compares at the curves' fitted asymptote.
        train: the proxy LM's settings (model, seq_len, batch_size, steps, lr, eval_tokens; eval_every defaults to
            steps // 8 so that each curve has 8 points).
        heldout, max_tokens, device, dtype: as for `vocabopt.validate`; space: the optimizer's search space (unless
            it fixes `proj_dims`, a search with tails of d/2^i is added: WIDE_DIV_VALUE).
        refine: rounds after the first, each training one design paired with the full softmax's runs: the model's
            interpolated choice (0: keep the interpolation), or a faster design below a trained choice that passed
            (`tradeoff.gap_probe`); or one more seed of a faster undecided design (`tradeoff.tie_break`).
        budget_minutes: a refinement round starts only if it fits in what is left of this wall time; None: no limit.
        race: a design above the tolerance after a seed trains no more seeds (`tradeoff.out_of_race`, `race_margin`);
            confirm: train the chosen design once more beside the full softmax, with a seed no round used.
        progress: called as progress(what, done, total).

    Example:
        >>> plan = vocabopt.tune(stats, sources=["corpora/kjv.txt"], tokenizer="corpora/kjv-bpe-8k/tokenizer.json",
        ...                      hidden=256, batch_tokens=2048, profile=prof)  # plan.provenance["tune"]["chosen"]
    """
    import torch

    started = time.perf_counter()
    space, train = space or SearchSpace(), _train_settings(train)
    _check(tolerance, seeds, candidates, train, dtype, refine, budget_minutes)
    base, frontier, picks = _picks(stats, hidden, profile, batch_tokens, space, candidates, folklore)
    dev = torch.device(resolve_device(device))
    data = load_tokens(base, sources, tokenizer, heldout=heldout, seq_len=train.seq_len, max_tokens=max_tokens)
    race_at, budget = (tolerance if race else None), Budget(started, budget_minutes, confirm)
    rounds = _Rounds(stats, base, data, train, seeds, dev, getattr(torch, dtype), progress, race_at, budget)
    runs = rounds.run(picks)
    steps_at = None if train_tokens is None else train_tokens / (train.seq_len * train.batch_size)
    measured, basis, model, chosen, met = _refine(rounds, frontier, picks, runs, steps_at, tolerance, refine)
    confirmation = rounds.confirm(chosen, tolerance, len(runs[FULL])) if confirm else None
    plan = _final_plan(stats, hidden, profile, batch_tokens, space, chosen, base, frontier)
    plan.provenance["method"] = "vocabopt.tune"
    plan.provenance["options"].update(cutoffs=None, tolerance=tolerance, min_capacity_rule="measured: see tune")
    plan.provenance["tune"] = {
        **_verdict(met, basis, tolerance, train_tokens, train.steps),
        "chosen": chosen,
        "confirmation": confirmation,  # None, or the chosen design's penalty on one more seed (`_Rounds.confirm`)
        "measured": measured,
        "model": model,
        "full_softmax": full_record(runs[FULL][:seeds]),  # the seeds every design trained (tie-breaks add more)
        "proxy": {**asdict(train), "seeds": seeds, "race": race, "device": device_name(dev.type), "dtype": dtype},
        "bands": "ids covering 50%, 90%, 99% of the corpus's tokens, then the rest",
        "budget": rounds.budget.report(),
        "frontier_rules": _rules(space),  # the div_values whose searches make the frontier (optimize --from-tune)
    }
    return plan


def _picks(
    stats: Any, hidden: int, profile: Any, batch_tokens: int, space: SearchSpace, candidates: int, folklore: bool
) -> tuple[Plan, list[dict], list[dict]]:
    """(`optimize`'s plan with the space's rule, the frontier's designs faster than the full softmax, the designs
    to train: candidates and folklore). Unless the space fixes the projections, the frontier spans two projection
    rules, the space's (d/4^i by default) and d/2^i (WIDE_DIV_VALUE): the Pareto set of both searches."""
    base = optimize(stats, hidden=hidden, profile=profile, batch_tokens=batch_tokens, min_capacity=0.0, **asdict(space))
    designs = []
    for rule in _rules(space):  # each search's whole frontier (`optimize`'s own plans keep 12 of it, for display)
        found = search(profile, base.counts_by_rank, hidden, batch_tokens, space=replace(space, div_value=rule))
        designs += [d.to_json() for d in found["frontier"]]
    full_ms = base.predicted["full_softmax"]["time_ms"]
    frontier = [d for d in pareto(designs, dict.get) if d["time_ms"] < full_ms]
    picks = select_candidates(frontier, candidates)
    if folklore:
        picks += [f for f in base.predicted["folklore"] if f["time_ms"] < full_ms]
    return base, frontier, picks


def _rules(space: SearchSpace) -> list[float]:
    """The projection rules (div_value) tune's frontier spans: the space's, and WIDE_DIV_VALUE unless the space fixes
    the projections."""
    wide = space.proj_dims is None and space.div_value != WIDE_DIV_VALUE
    return [space.div_value, *([WIDE_DIV_VALUE] if wide else [])]


def _final_plan(
    stats: Any, hidden: int, profile: Any, batch_tokens: int, space: SearchSpace, chosen: dict, base: Plan, frontier
) -> Plan:
    """The plan of the chosen design, made by `optimize` with the projection rule that gives its projections; its
    folklore rows are those tune trained (the space's rule) and its frontier the one tune searched."""
    kw = dict(hidden=hidden, profile=profile, batch_tokens=batch_tokens, cutoffs=chosen["cutoffs"])
    for rule in _rules(space):
        plan = optimize(stats, **kw, **{**asdict(space), "div_value": rule})
        if list(plan.proj_dims) == list(chosen["proj_dims"]):
            break
    plan.predicted["folklore"] = base.predicted["folklore"]
    plan.predicted["frontier"] = frontier
    return plan


def select_candidates(frontier: list[dict], k: int) -> list[dict]:
    """Up to `k` frontier designs spanning its capacity range: the fastest, the most capacious, and those nearest
    to evenly spaced capacities between them. Each gets a name "d<i>" (by increasing capacity)."""
    if not frontier:
        raise InputError("no design on the frontier is faster than the full softmax; the full softmax is the answer")
    by_cap = sorted(frontier, key=lambda d: d["capacity"])
    caps = np.array([d["capacity"] for d in by_cap])
    picked: set[int] = set()
    for target in np.linspace(caps[0], caps[-1], min(max(k, 1), len(by_cap))):
        free = [i for i in range(len(caps)) if i not in picked]  # the nearest design not already taken
        picked.add(min(free, key=lambda i: abs(caps[i] - target)))
    return [{**by_cap[i], "name": f"d{n}"} for n, i in enumerate(sorted(picked))]


def _train_settings(train: TrainSettings | None) -> TrainSettings:
    train = train or TrainSettings()
    if train.eval_every:
        return train
    return TrainSettings(**{**asdict(train), "eval_every": max(1, train.steps // 8)})


def _check(
    tolerance: float, seeds: int, candidates: int, train: TrainSettings, dtype: str, refine: int, budget: float | None
) -> None:
    if refine < 0:
        raise InputError(f"refine={refine}: the number of refinement rounds must be >= 0")
    if budget is not None and not budget > 0:
        raise InputError(f"budget_minutes={budget}: must be > 0 (no limit: 0 on the command line, None from Python)")
    if not 0 <= tolerance < 1:
        raise InputError(f"tolerance={tolerance}: must be a share in [0, 1), e.g. 0.01 for 1%")
    if seeds < 1 or candidates < 2:
        raise InputError(f"seeds={seeds}, candidates={candidates}: need seeds >= 1 and candidates >= 2")
    if train.model not in MODELS:
        raise InputError(f"model {train.model!r} is not one of {MODELS}")
    if not 0 <= train.ema < 1:
        raise InputError(f"ema={train.ema}: the weights' moving average decay must be in [0, 1) (0: off)")
    if train.steps < 8:
        raise InputError(f"steps={train.steps}: need at least 8 steps to draw a learning curve")
    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r} is not one of {DTYPES}")


@dataclass
class _Rounds:
    """What every training round shares: the corpus, the proxy LM's settings, the seeds, the device."""

    stats: Any
    base: Plan
    data: TokenStream
    train: TrainSettings
    seeds: int
    dev: Any
    tdtype: Any
    progress: Progress | None
    race_tolerance: float | None  # the tolerance designs race against (None: every design trains every seed)
    budget: Budget | None = None

    def run(self, picks: list[dict], full_runs: list[dict] | None = None) -> dict[str, list[dict]]:
        """Train each picked design (and the full softmax unless its runs are given) for every seed it stays in
        the race."""
        hidden = self.base.hidden
        layers = {
            d["name"]: Plan.from_cutoffs(self.stats, hidden=hidden, cutoffs=d["cutoffs"], proj_dims=d["proj_dims"])
            for d in picks
        }
        args = (self.base, self.data, self.train, self.seeds, self.dev, self.tdtype, self.progress)
        start = time.perf_counter()
        runs = _train_seeds(layers, *args, full_runs, self.race_tolerance)
        self._charge(start, runs, [*layers, *([] if full_runs else [FULL])], refined=bool(full_runs))
        return runs

    def extra_seed(self, pick: dict, runs: dict[str, list[dict]]) -> None:
        """One more seed of a trained design (`tradeoff.tie_break`), the one after its last, paired with the full
        softmax's run of that seed: trained beside it unless an earlier extra seed trained it. Appended to `runs`."""
        k = len(runs[pick["name"]])
        train = TrainSettings(**{**asdict(self.train), "seed": self.train.seed + k})
        full = runs[FULL][k : k + 1] or None
        hidden = self.base.hidden
        layer = Plan.from_cutoffs(self.stats, hidden=hidden, cutoffs=pick["cutoffs"], proj_dims=pick["proj_dims"])
        said = self.progress

        def progress(_: str, done: int, total: int) -> None:
            if said:
                said(f"{pick['name']}: one more seed (seed {k + 1})", done, total)

        start = time.perf_counter()
        new = _train_seeds({pick["name"]: layer}, self.base, self.data, train, 1, self.dev, self.tdtype, progress, full)
        self._charge(start, new, [pick["name"], *([] if full else [FULL])], refined=True)
        runs[pick["name"]].append(new[pick["name"]][0])
        if full is None:
            runs[FULL].append(new[FULL][0])

    def _charge(self, start: float, runs: dict[str, list[dict]], trained: list[str], refined: bool) -> None:
        """Book a lockstep call that began at `start` and trained `trained` with the budget."""
        if self.budget is not None:
            times = {n: [r["step_ms"] for r in runs[n]] for n in trained}
            self.budget.add(time.perf_counter() - start, times, full=FULL, refined=refined)

    def confirm(self, design: dict, tolerance: float, used: int) -> dict:
        """The winner's curse check: among several trained designs, one can pass its interval by luck. Train
        `design` once more beside the full softmax with a seed no round used (rounds use train.seed .. + used - 1)
        and take its end-of-run penalty there: "confirmed" when that penalty is within the tolerance (as an
        independent `vocabopt validate --seed` run reads; its interval covers that seed's windows only)."""
        seed = self.train.seed + used
        train = TrainSettings(**{**asdict(self.train), "seed": seed})
        hidden = self.base.hidden
        layer = Plan.from_cutoffs(self.stats, hidden=hidden, cutoffs=design["cutoffs"], proj_dims=design["proj_dims"])
        runs = _train_seeds({"confirm": layer}, self.base, self.data, train, 1, self.dev, self.tdtype, self.progress)
        windows = [runs[name][0]["quality"].window_losses for name in ("confirm", FULL)]
        return _confirmation(*windows, seed, tolerance)


def _refine(rounds: _Rounds, frontier: list[dict], picks: list[dict], runs: dict, steps_at, tolerance, refine: int):
    """(measured, basis, model, chosen, met) after up to `refine` rounds (paired with the full softmax's runs already
    made; `picks` and `runs` grow), each training one design while the budget allows: one more seed of a faster
    undecided design (`tradeoff.tie_break`: at least PROBE_MIN_GAIN faster than the fastest trained design that
    passed, if one did; with 2+ seeds, on the end-of-run basis) when it fits the budget; else the model's
    interpolated choice (the model then narrows around the crossing), or, once the choice is a trained design that
    passed, the probe of the gap below it (`tradeoff.gap_probe`). Rounds spent, the fastest trained design that
    passed."""
    seeds, budget = rounds.seeds, rounds.budget

    def decide():
        return _decide(frontier, picks, runs, steps_at, rounds.train.steps, tolerance, seeds)

    measured, basis, model, chosen, met = decide()
    for r in range(refine):
        # the end-of-run bootstrap over 2+ seeds is what `tie_break` reasons about (not a fitted curve's interval)
        undecided = measured if basis == "end" and seeds >= 2 else []
        trained = None if chosen["measured"] else _trained_choice(frontier, picks, measured, model, tolerance, seeds)
        tie = _tie_break(undecided, chosen, met, trained, tolerance, seeds + TIE_BREAK_SEEDS)
        full = tie is not None and int(len(runs[FULL]) <= tie["seeds"])  # that seed's full softmax is still to train
        if tie is not None:
            if budget is None or budget.fits(1, r + 1, full=full, record=False):  # else a probe may still fit
                at = next(i for i, p in enumerate(picks) if p["name"] == tie["name"])
                picks[at] = {**picks[at], "tie_break": r + 1}  # (a copy: folklore picks are the base plan's dicts)
                rounds.extra_seed(picks[at], runs)
                measured, basis, model, chosen, met = decide()
                continue
        if not chosen["measured"]:
            pick, why = (chosen if met else None), "interpolated"
        else:
            eligible = _eligible(frontier, picks, measured, seeds)
            pick, why = tradeoff.gap_probe(eligible, measured, chosen, tolerance), "probe"
        if pick is None and tie is not None and budget is not None:
            budget.fits(1, r + 1, full=full)  # records the tie-break the budget left out
        if pick is None or (budget is not None and not budget.fits(seeds, r + 1)):
            break
        picks.append({**pick, "name": f"r{r + 1}", "round": r + 1, "refined": why})
        runs.update(rounds.run(picks[-1:], full_runs=runs[FULL]))
        measured, basis, model, chosen, met = decide()
    if refine and not chosen["measured"]:  # rounds spent: keep the fastest design whose own measurement passed
        chosen, met = _trained_choice(frontier, picks, measured, model, tolerance, seeds) or (chosen, met)
    return measured, basis, model, chosen, met


def _tie_break(
    undecided: list[dict], chosen: dict, met: bool, trained: tuple[dict, bool] | None, tolerance: float, max_seeds: int
) -> dict | None:
    """The design to give one more seed (`tradeoff.tie_break`), judged against the fastest trained pass (`trained`,
    from `_trained_choice` when the choice is interpolated), and so first even when the choice is interpolated: the
    whole frontier holds a design every ~2% of capacity, and the model would clear those between an undecided design
    and a pass one round at a time. Against an interpolated choice that met the tolerance, only a design whose pass
    could take that choice (at most PROBE_MIN_GAIN slower than it: `tradeoff.choose`'s rule)."""
    held, held_met = (chosen, met) if chosen["measured"] else (trained or (chosen, False))
    tie = tradeoff.tie_break(undecided, held, held_met, tolerance, max_seeds)
    if tie is not None and not chosen["measured"] and met:
        return tie if tie["predicted_ms"] <= chosen["time_ms"] * (1 + tradeoff.PROBE_MIN_GAIN) else None
    return tie


def _trained_choice(frontier: list[dict], picks: list[dict], measured: list[dict], model: dict, tolerance, seeds: int):
    """(the fastest eligible trained design within the tolerance, True), else (the trained one with the lowest upper
    bound, False): `tradeoff.choose` over the trained designs alone; None when every trained design left the race."""
    eligible = _eligible(frontier, picks, measured, seeds)
    try:
        return tradeoff.choose(eligible, model, tolerance, measured, trained_only=True)
    except ValueError:  # no trained design is eligible
        return None


def _confirmation(design_windows: list[float], full_windows: list[float], seed: int, tolerance: float) -> dict:
    at_end = tradeoff.penalty_at_end([design_windows], [full_windows])
    return {"seed": seed, **at_end, "confirmed": at_end["penalty"] <= tolerance}


def _decide(
    frontier: list[dict],
    picks: list[dict],
    runs: dict,
    steps_at: float | None,
    steps: int,
    tolerance: float,
    seeds: int,
):
    """(measured, basis, penalty model, chosen design, met) from the runs so far (`seeds`: the proxy's per design)."""
    measured, basis = measure(picks, runs, steps_at, steps)
    model = tradeoff.penalty_model(measured)
    eligible = _eligible(frontier, picks, measured, seeds)
    chosen, met = tradeoff.choose(eligible, model, tolerance, measured, min_gain=tradeoff.PROBE_MIN_GAIN)
    return measured, basis, model, chosen, met


def _eligible(frontier: list[dict], picks: list[dict], measured: list[dict], seeds: int) -> list[dict]:
    """The designs the choice may take: `tradeoff.eligible`, less those out of the race (their evidence is fewer
    seeds than the proxy's `seeds`, and it was judged above the tolerance)."""
    raced = tradeoff.raced_out(measured, seeds)
    return [d for d in tradeoff.eligible(frontier, picks) if tradeoff.design_key(d) not in raced]


def _train_seeds(
    layers: dict[str, Plan],
    base: Plan,
    data: TokenStream,
    train: TrainSettings,
    seeds: int,
    dev: Any,
    tdtype: Any,
    progress: Progress | None,
    full_runs: list[dict] | None = None,
    race_tolerance: float | None = None,
) -> dict[str, list[dict]]:
    """name -> one record per seed trained: step times, the held-out curve, the held-out quality at the end.

    The full softmax trains beside the layers unless `full_runs` holds its records from an earlier call: with the
    same seeds and batches (and no dropout) its run would be the same, so the pairing stays exact. With
    `race_tolerance`, a design out of the race after a seed (`tradeoff.out_of_race`) trains no further seeds: its
    records then hold the first seeds only, paired with the full softmax's first ones."""
    runs: dict[str, list[dict]] = {name: [] for name in [*([] if full_runs else [FULL]), *layers]}
    edges = coverage_band_edges(base.counts_by_rank)
    active = dict(layers)  # the designs still in the race
    for s in range(seeds):
        seeded = TrainSettings(**{**asdict(train), "seed": train.seed + s})
        offsets = batch_offsets(data.split, train.seq_len, train.batch_size, train.steps, seeded.seed)
        training = {**({} if full_runs else {FULL: None}), **active}
        if not training:
            break

        def report(name: str, step: int, steps: int, loss: float, s: int = s, round_of: tuple = (*training,)) -> None:
            if progress and name == round_of[-1]:  # once per lockstep round
                progress(f"seed {s + 1}/{seeds}, {len(round_of)} layers", s * steps + step, seeds * steps)

        trainers, batches = train_lockstep(
            training,
            base,
            data,
            offsets,
            seeded,
            dev=dev,
            tdtype=tdtype,
            progress=report,
        )
        for tr in trainers:
            final = heldout_quality(
                tr.body,
                tr.head,
                data,
                seq_len=train.seq_len,
                eval_tokens=train.eval_tokens,
                dev=dev,
                autocast=batches.autocast,
                band_edges=edges,
                rank_of=base.rank_of,
            )
            curve = [*tr.eval_curve, (train.steps, curve_point(final.window_losses))]  # the curve's windows
            runs[tr.name].append(
                {"step_ms": statistics.median(tr.step_ms[2:] or tr.step_ms), "curve": curve, "quality": final}
            )
        if race_tolerance is not None and s + 1 < seeds:  # designs above the tolerance train no more seeds
            full = [r["quality"].window_losses for r in (full_runs or runs[FULL])[: s + 1]]
            active = {
                n: p
                for n, p in active.items()
                if not tradeoff.out_of_race(
                    [r["quality"].window_losses for r in runs[n]], full, race_tolerance, tradeoff.race_margin(seeds)
                )
            }
    if full_runs:
        runs[FULL] = full_runs
    return runs


def _verdict(met: bool, basis: str, tolerance: float, train_tokens: int | None, steps: int) -> dict[str, Any]:
    return {
        "tolerance": tolerance,
        # at the end of the run short-run bias favours small heads: no pass is claimed on that basis
        "met": met and basis == "length",
        "met_at_end_of_run": met if basis == "end" else None,
        "basis": _basis_text(basis, train_tokens, steps),
        "train_tokens": train_tokens,
    }


def _basis_text(basis: str, train_tokens: int | None, steps: int) -> str:
    if basis == "end":
        return (
            f"measured after {steps} proxy steps (learning curves could not be fitted; short runs favour small heads)"
        )
    if train_tokens is None:
        return "fitted asymptote of the held-out learning curves"
    return f"fitted held-out learning curves at {train_tokens:,} training tokens"
