"""The validate stage: a Plan + a corpus -> does the plan's layer train as well as the full softmax, and faster?

Inputs: a `Plan`, corpus sources, the tokenizer the plan was made for. Outputs: `ValidationResult`, one
`ValidationRun` per output layer — (a) the plan's, (b) the full softmax, optionally (c) a folklore design — each
training the same small language model (LSTM or causal transformer) with the same seed, initial body weights,
batches in the same order, steps and optimizer, trained in lockstep so that every run sees the machine
alike. Reported: held-out perplexity, median step time, tokens/s,
memory, and the learning curves (`vocabopt.plots.curves_png` draws them).

Data: the corpus is tokenized into one id stream; its last `heldout` fraction is the held-out split and no
training window ever reaches into it. torch is imported lazily.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import artifacts, design, tradeoff
from .corpus.files import source_list
from .device import DTYPES, device_name, resolve_device, saved_bytes
from .errors import ArtifactError, InputError, MismatchError, TokenizerError
from .plan import Plan
from .quality import CHUNK_WINDOWS, heldout_quality
from .training import (
    EMA,
    MODELS,
    Batches,
    TokenStream,
    Trainer,
    TrainSettings,
    cuda_step_peak,
    curve_point,
    heldout_windows,
    train_lockstep,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ARTIFACT = "vocabopt.ValidationResult"


@dataclass
class ValidationRun:
    """One output layer trained for `steps` steps: held-out quality, speed and memory, learning curves."""

    name: str  # "vocabopt" | "full softmax" | "folklore"
    cutoffs: list[int]  # [] for the full softmax
    proj_dims: list[int]
    layer_params: int
    heldout_loss: float  # mean NLL per held-out token, nats
    heldout_ppl: float
    step_ms: float  # median wall time of one optimizer step (fwd + bwd + update), after 2 warm-up steps
    tokens_per_s: float
    saved_bytes: int  # activation bytes autograd keeps for backward in one training step (whole model)
    peak_bytes: int | None  # CUDA: weights + grads + AdamW state + one step's peak above them; None elsewhere
    train_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss)
    # (step, held-out loss on every CURVE_STRIDE-th held-out window: `training.curve_point`), the last at the end
    eval_curve: list[tuple[int, float]] = field(default_factory=list)
    # What an adaptive softmax can lose (vocabopt.quality): held-out perplexity per frequency band (the plan's head
    # cluster and each tail, for every run alike), top-label ECE (15 bins), the NLL-minimising temperature
    bands: list[dict[str, Any]] = field(default_factory=list)  # {"ranks": [lo, hi], "tokens", "loss", "ppl"}
    accuracy: float | None = None
    ece: float | None = None
    temperature: float | None = None


@dataclass
class ValidationResult:
    """Every run of one `validate` call and the settings they shared. `runs[0]` is the plan's layer."""

    runs: list[ValidationRun]
    settings: dict[str, Any]  # model, sizes, steps, lr, seed, device, dtype, split sizes
    schema_version: int = SCHEMA_VERSION
    quantized: dict[str, Any] | None = None  # `validate(quantize=)`: a QuantizedComparison of runs[0]'s head

    def run(self, name: str) -> ValidationRun | None:
        return next((r for r in self.runs if r.name == name), None)

    def summary(self) -> dict[str, Any]:
        """Against the full softmax: perplexity gap and step-time speed-up of each other run, and (when the runs
        recorded held-out curves, `eval_every`) the gap at equal wall time, measured within the run: this layer at
        the end against the full softmax after the same wall time (`tradeoff.penalty_at_equal_time`)."""
        full = self.run("full softmax")
        out = {}
        for r in self.runs:
            if full is not None and r is not full:
                speedup = full.step_ms / r.step_ms
                out[r.name] = {"ppl_gap": r.heldout_ppl / full.heldout_ppl - 1.0, "speedup": speedup}
                curves = [r.eval_curve], [full.eval_curve]  # each ends on its windows' final loss (`_finish`)
                recorded = len(full.eval_curve) > 1  # more than the final point: eval_every > 0
                gap = tradeoff.penalty_at_equal_time(*curves, speedup) if recorded else None
                out[r.name]["equal_time_ppl_gap"] = gap
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": ARTIFACT,
            "schema_version": self.schema_version,
            "settings": self.settings,
            "summary": self.summary(),
            "runs": [asdict(r) for r in self.runs],
            **({"quantized": self.quantized} if self.quantized is not None else {}),
        }

    def save(self, path: str | Path) -> None:
        """Write the result as JSON, atomically."""
        artifacts.write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> ValidationResult:
        """Read a ValidationResult written by `save`; ArtifactError if it is not one."""
        obj = artifacts.read_json(Path(path), ARTIFACT, SCHEMA_VERSION)
        try:
            runs = [_run_from_json(r) for r in obj["runs"]]
            q = obj.get("quantized")
            return cls(
                runs=runs,
                settings=dict(obj["settings"]),
                schema_version=obj["schema_version"],
                quantized=None if q is None else asdict(QuantizedComparison(**q)),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise ArtifactError(
                f"{path}: malformed ValidationResult ({type(e).__name__}: {e}); re-run validate"
            ) from None


def _run_from_json(obj: dict[str, Any]) -> ValidationRun:
    run = ValidationRun(**obj)
    run.train_curve = [(int(step), float(loss)) for step, loss in run.train_curve]
    run.eval_curve = [(int(step), float(loss)) for step, loss in run.eval_curve]
    return run


def validate(
    plan: Plan,
    sources: str | list[str],
    tokenizer: str,
    *,
    steps: int = 300,
    model: str = "lstm",
    seq_len: int = 64,
    batch_size: int = 32,
    lr: float = 3e-3,
    heldout: float = 0.05,
    eval_tokens: int = 32768,
    eval_every: int = 0,
    folklore: list[int] | None = None,
    full_softmax: bool = True,
    max_tokens: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 0,
    quantize: str | None = None,
    progress: Callable[[str, int, int, float], None] | None = None,
) -> ValidationResult:
    """Train one small LM per output layer (plan, full softmax, folklore) identically; compare held-out quality.

    Args:
        plan: the design; its `hidden` is the model width and its vocabulary must be the tokenizer's.
        sources: corpus files (any source `vocabopt analyze` reads).
        tokenizer: the tokenizer.json the plan's stats were counted with (or "bytes").
        steps: optimizer steps per run (AdamW, constant `lr`, gradient norm clipped to 1); evaluations score the
            weights' moving average (`training.EMA`).
        model: "lstm" (one layer) or "transformer" (2 pre-norm causal layers, 4 heads).
        seq_len, batch_size: each step trains on batch_size windows of seq_len next-token predictions.
        heldout: fraction of the token stream (its end) held out; never trained on.
        eval_tokens: held-out tokens scored at the end (and every `eval_every` steps if > 0).
        folklore: cutoffs of a hand-typed design to train too (d/4^i projections); those >= V are dropped.
        full_softmax: train the full-softmax baseline (b).
        max_tokens: use only the first max_tokens tokens of the corpus.
        device, dtype: where and in what precision (autocast) to train; "cuda" with "bfloat16" for a real GPU.
        seed: one seed for the body's initial weights, the batch order and dropout; every run reuses it.
        quantize: "int8-tails" or "int8": after training, also compare the plan's trained head with its
            weight-only int8 copy on the held-out stream (`QuantizedComparison`: KL, top-1 agreement, ppl change).
        progress: called as progress(run_name, step, steps, training_loss).

    Example:
        >>> result = vocabopt.validate(vocabopt.Plan.load("plan.json"), ["corpora/kjv.txt"],
        ...                            "corpora/kjv-bpe-8k/tokenizer.json", steps=300)
        >>> result.summary()["vocabopt"]   # {'ppl_gap': ..., 'speedup': ...}
    """
    import torch

    _check_args(plan, steps, model, seq_len, batch_size, heldout, dtype, DTYPES)
    if quantize not in (None, "int8-tails", "int8"):
        raise InputError(f"quantize={quantize!r} is not one of None, 'int8-tails', 'int8'")
    dev = torch.device(resolve_device(device))
    data = load_tokens(plan, sources, tokenizer, heldout=heldout, seq_len=seq_len, max_tokens=max_tokens)
    layers = _designs(plan, folklore, full_softmax)
    offsets = batch_offsets(data.split, seq_len, batch_size, steps, seed)  # shared by every run
    settings = {
        "model": model,
        "hidden": plan.hidden,
        "vocab_size": plan.vocab_size,
        "steps": steps,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "tokens_per_step": seq_len * batch_size,
        "lr": lr,
        "optimizer": "AdamW",
        "evaluated": f"moving average of the weights, decay {EMA}",
        "seed": seed,
        "device": device_name(dev.type),
        "dtype": dtype,
        "torch": torch.__version__,
        "train_tokens": int(data.split),
        "heldout_tokens": int(data.ids.size - data.split),
        "eval_tokens": int(min(eval_tokens, data.ids.size - data.split)),
        "tokenizer": str(tokenizer),
        "sources": source_list(sources),
    }
    train = TrainSettings(model, seq_len, batch_size, steps, lr, eval_tokens, eval_every, seed)
    trainers, batches = train_lockstep(
        layers, plan, data, offsets, train, dev=dev, tdtype=getattr(torch, dtype), progress=progress
    )
    quantized = asdict(quantize_comparison(trainers[0], batches, quantize)) if quantize else None  # before _finish
    runs = [_finish(tr, batches, offsets, plan) for tr in trainers]
    return ValidationResult(runs=runs, settings=settings, quantized=quantized)


def _check_args(plan, steps, model, seq_len, batch_size, heldout, dtype, dtypes) -> None:
    if not isinstance(plan, Plan):
        raise InputError(f"expected a vocabopt.Plan, got {type(plan).__name__}; load one with Plan.load(path)")
    if model not in MODELS:
        raise InputError(f"model {model!r} is not one of {MODELS}")
    if steps < 1 or seq_len < 2 or batch_size < 1:
        raise InputError(
            f"steps={steps}, seq_len={seq_len}, batch_size={batch_size}: need steps >= 1, seq_len >= 2, batch_size >= 1"
        )
    if not 0 < heldout < 0.5:
        raise InputError(f"heldout={heldout}: pass a fraction in (0, 0.5), e.g. 0.05")
    if dtype not in dtypes:
        raise InputError(f"dtype {dtype!r} is not one of {dtypes}")


# --- data ---------------------------------------------------------------------------------------------------


def load_tokens(
    plan: Plan,
    sources: str | list[str],
    tokenizer: str,
    *,
    heldout: float = 0.05,
    seq_len: int = 64,
    max_tokens: int | None = None,
    sequence: str | None = None,
) -> TokenStream:
    """Tokenize `sources` into one id stream and split off its end as the held-out part.

    Sequences are read as `analyze` counted the plan's stats (`sequence`: default the mode the plan records, else
    "document", which keeps each document's newlines; "line" encodes each line alone), so the held-out tokens are
    the tokens the plan was counted on.

    Raises MismatchError when the tokenizer is not the plan's (hash or vocabulary size), InputError when the
    corpus is too small for one training window and one held-out window.
    """
    from .corpus import files as src_files
    from .corpus import reader as src
    from .corpus.tokenizer import load_spec, shared_tokenizer
    from .corpus.vocab import hf_vocab_size

    spec = load_spec(tokenizer)
    sequence = sequence or (plan.provenance.get("tokenizer") or {}).get("sequence")
    if spec.kind == "word":
        raise TokenizerError(
            "validate needs a fixed tokenizer: pass the tokenizer.json written by "
            "`vocabopt analyze -t word --save-tokenizer`, not 'word'"
        )
    want = (plan.provenance.get("tokenizer") or {}).get("sha256")
    if want and want != spec.sha256:
        name = (plan.provenance.get("tokenizer") or {}).get("name", "?")
        raise MismatchError(
            f"tokenizer {tokenizer} (sha256 {spec.sha256[:12]}) is not the plan's ({name}, "
            f"sha256 {want[:12]}); pass the tokenizer the plan's stats were counted with"
        )
    if spec.kind == "hf":
        tok = shared_tokenizer(spec)  # as analyze encodes: never truncating or padding, whatever the file says
        size = hf_vocab_size(tok)
        encode = lambda lines: [e.ids for e in tok.encode_batch(lines, add_special_tokens=False)]  # noqa: E731
    elif spec.kind == "spm":  # a SentencePiece .model: its own encoder
        from .corpus.spm import processor

        sp = processor(spec.blob, spec.name)
        size, encode = sp.get_piece_size(), sp.encode
    else:  # bytes
        size = 256
        encode = lambda lines: [list(s.encode("utf-8")) for s in lines]  # noqa: E731
    if size != plan.vocab_size:
        raise MismatchError(
            f"tokenizer {tokenizer} has {size} ids but the plan's vocabulary has {plan.vocab_size}; "
            "optimize the plan from stats counted with this tokenizer"
        )
    reader = src.Reader(
        src_files.resolve(src_files.source_list(sources)),
        src.SourceOptions(sequence=sequence),
    )
    pieces, total = [], 0
    for item in reader:  # a Block: whole lines (line mode); a Text: one document, newlines kept
        texts = [ln for ln in item.text.split("\n") if ln.strip()] if isinstance(item, src.Block) else [item.text]
        ids = [i for seq in encode(texts) for i in seq]
        pieces.append(np.asarray(ids, dtype=np.int64))
        total += len(ids)
        if max_tokens is not None and total >= max_tokens:
            break
    ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    ids = ids[:max_tokens] if max_tokens is not None else ids
    split = int(ids.size * (1.0 - heldout))
    if split < seq_len + 1 or ids.size - split < seq_len + 1:
        raise InputError(
            f"corpus has {ids.size} tokens: too few for a {seq_len}-token window in both the "
            f"training and held-out ({heldout:.0%}) parts; pass more text or a smaller --seq-len"
        )
    return TokenStream(ids=ids, split=split)


def batch_offsets(split: int, seq_len: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """(steps, batch_size) window starts; every window [o, o + seq_len + 1) lies inside the training part."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, split - seq_len, size=(steps, batch_size))  # o + seq_len <= split - 1


def _designs(plan: Plan, folklore: list[int] | None, full: bool) -> dict[str, Plan | None]:
    """run name -> the Plan of its output layer (None: full softmax)."""
    out: dict[str, Plan | None] = {"vocabopt": plan}
    if full:
        out["full softmax"] = None
    if folklore:
        design.check_cutoffs(folklore, None, what="folklore cutoffs")  # before clipping: [9000, 100] is an error
        cuts = design.clip_cutoffs(folklore, plan.vocab_size)
        if not cuts:
            raise InputError(f"folklore cutoffs {folklore} all lie outside (0, {plan.vocab_size}); pass smaller ones")
        out["folklore"] = Plan.from_cutoffs(
            plan.counts_by_id, hidden=plan.hidden, cutoffs=cuts, provenance={"name": f"folklore {cuts}"}
        )
    return out


def _finish(tr: Trainer, batches: Batches, offsets: np.ndarray, plan: Plan) -> ValidationRun:
    """A trained run's final held-out quality (bands: `plan`'s clusters), median step time and memory. On CUDA its
    memory probe takes one more optimizer step: nothing may score the run's weights after this."""
    t = batches.train
    quality = heldout_quality(
        tr.body,
        tr.head,
        batches.data,
        seq_len=t.seq_len,
        eval_tokens=t.eval_tokens,
        dev=batches.dev,
        autocast=batches.autocast,
        band_edges=[0, *plan.cutoffs, plan.vocab_size],
        rank_of=plan.rank_of,
    )
    final = quality.loss
    tr.eval_curve.append((len(offsets), curve_point(quality.window_losses)))  # on the curve's windows
    one_more_step = lambda: batches.step(tr, offsets[-1])  # noqa: E731
    peak = cuda_step_peak(tr, one_more_step) if batches.dev.type == "cuda" else None
    timed = tr.step_ms[2:] if len(tr.step_ms) > 4 else tr.step_ms  # the first steps warm up allocator, caches
    med = statistics.median(timed)
    return ValidationRun(
        name=tr.name,
        cutoffs=[] if tr.design is None else list(tr.design.cutoffs),
        proj_dims=[] if tr.design is None else list(tr.design.proj_dims),
        layer_params=sum(p.numel() for p in tr.head.parameters()),
        heldout_loss=final,
        heldout_ppl=math.exp(min(final, 700.0)),
        step_ms=med,
        tokens_per_s=offsets.shape[1] * batches.train.seq_len / med * 1e3,
        saved_bytes=saved_bytes(lambda: batches.loss(tr, offsets[0])),
        peak_bytes=peak,
        train_curve=tr.train_curve,
        eval_curve=tr.eval_curve,
        bands=quality.bands,
        accuracy=quality.accuracy,
        ece=quality.ece,
        temperature=quality.temperature,
    )


# --- quantized head vs fp32 -----------------------------------------------------------------------------------


@dataclass
class QuantizedComparison:
    """A trained adaptive head next to its weight-only int8 copy (`AdaptiveSoftmax.quantize_`), scored on the
    same held-out hidden states: the full distribution of both, every cluster evaluated."""

    mode: str  # "int8-tails" | "int8"
    tokens: int  # held-out tokens scored
    kl: float  # mean KL(fp32 || quantized) of the full distribution, nats/token
    top1_agreement: float  # share of tokens whose most likely id is the same
    loss_fp32: float  # mean NLL of the held-out targets, nats/token
    loss_quantized: float
    ppl_change: float  # ppl_quantized / ppl_fp32 - 1
    bytes_fp32: dict[str, int]  # {"head", "tails"}: weights, scales and biases (AdaptiveSoftmax.weight_bytes)
    bytes_quantized: dict[str, int]
    matmul: str  # the int8 matmul that ran (adaptive_head.int8_path): torch's kernel or dequantise per call


def compare_quantized(reference: Any, quantized: Any, chunks: Any, mode: str = "") -> QuantizedComparison:
    """Score `quantized` against `reference` on an iterable of (hidden (n, d), target ids (n,)) chunks.

    Only one chunk of (n, V) log-probabilities per head exists at a time. Both heads are put in eval mode.
    """
    import torch

    from .adaptive_head import Int8Linear, int8_path

    reference.eval(), quantized.eval()
    kl = agree = nll_ref = nll_q = 0.0
    tokens, dtype, device = 0, None, None
    with torch.no_grad():
        for hidden, target in chunks:
            lp_r = reference.log_prob(hidden).reshape(-1, reference.config.vocab_size).float()  # (n, V)
            lp_q = quantized.log_prob(hidden).reshape(-1, reference.config.vocab_size).float()  # (n, V)
            t = target.reshape(-1, 1)  # (n, 1)
            kl += float((lp_r.exp() * (lp_r - lp_q)).sum(1, dtype=torch.float64).sum())
            agree += float((lp_r.argmax(1) == lp_q.argmax(1)).sum())
            nll_ref -= float(lp_r.gather(1, t).double().sum())
            nll_q -= float(lp_q.gather(1, t).double().sum())
            tokens += t.shape[0]
            dtype, device = hidden.dtype, hidden.device
    if not tokens:
        raise InputError("compare_quantized: no held-out tokens to score; pass at least one (hidden, targets) chunk")
    first = next((m for m in quantized.modules() if isinstance(m, Int8Linear)), None)
    n = tokens
    return QuantizedComparison(
        mode=mode or str(quantized.config.quantize),
        tokens=n,
        kl=kl / n,
        top1_agreement=agree / n,
        loss_fp32=nll_ref / n,
        loss_quantized=nll_q / n,
        ppl_change=math.expm1(min((nll_q - nll_ref) / n, 700.0)),
        bytes_fp32=reference.weight_bytes(),
        bytes_quantized=quantized.weight_bytes(),
        matmul="none" if first is None else int8_path(device, dtype, first.in_features),
    )


def quantize_comparison(tr: Trainer, batches: Batches, mode: str = "int8-tails") -> QuantizedComparison:
    """Quantize a copy of a trained run's adaptive head (`mode`) and compare it with the trained head on the
    held-out windows `heldout_quality` scores (the same hidden states from the run's body)."""
    import copy

    import torch

    if tr.design is None:
        raise InputError("--quantize compares an adaptive head; the full-softmax run has none")
    t = batches.train
    q = copy.deepcopy(tr.head).quantize_(mode)
    inp, tgt = heldout_windows(batches.data, t.seq_len, t.eval_tokens, batches.dev)  # (W, T)
    n_win = len(inp)
    was = tr.body.training, tr.head.training
    tr.body.eval()

    def chunks():
        for i in range(0, n_win, CHUNK_WINDOWS):
            with torch.no_grad(), batches.autocast:
                hidden = tr.body(inp[i : i + CHUNK_WINDOWS])  # (w, T, d)
            yield hidden.reshape(-1, hidden.shape[-1]).float(), tgt[i : i + CHUNK_WINDOWS].reshape(-1)

    try:
        return compare_quantized(tr.head, q, chunks(), mode)
    finally:
        tr.body.train(was[0]), tr.head.train(was[1])
