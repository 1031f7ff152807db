"""The torch floor: every torch API the package calls exists in the torch version pyproject.toml declares.

Inputs: the sources of vocabopt/ (read with `ast`, never imported), pyproject.toml's `torch>=X`, README.md.
Checks: each torch API used — `torch.a.b`, `nn.X`, `F.y` (aliases resolved from the file's imports), each keyword
passed to them, and, in the exported file vocabopt/adaptive_head.py, each Tensor / dtype / Module attribute it
reads — is classified in a table below with the release it exists by; an unclassified API fails (a new call must
be classified), and so does any API newer than the declared floor unless the same file tests for it with
`hasattr`/`getattr(obj, "name")` (an optional feature). The floor must also be tight: it equals the newest API the
exported file needs unguarded, and README.md states it.

Versions, and the evidence for the ones that set or approach the floor:
- 2.4: `torch.is_autocast_enabled(device_type)` and `torch.get_autocast_dtype(device_type)` (adaptive_head.py's
  `_LinearNLL.forward`): before 2.4 `is_autocast_enabled` takes no argument (TypeError on 2.2/2.3:
  huggingface/transformers#43509 "introduced in PyTorch 2.4"); `get_autocast_dtype` came with the device-generic
  autocast API of pytorch/pytorch#125103 (Apr 2024, in 2.4). `torch.library.custom_op`: first documented in the 2.4
  docs (library.rst), guarded by getattr anyway.
- 2.3: `torch.compiler.is_compiling` (absent in 2.2.2: NVIDIA/apex#1857, docling#654); guarded by getattr.
- 2.1: `dtype.itemsize` ("itemsize is torch>=2.1", huggingface/peft#1630); the `torch.compiler` namespace.
- 2.0: `torch.compile`, `Tensor.untyped_storage`.
- 1.13: `torch.load(weights_only=)`, `torch.argsort(stable=)`.
- 2.13: `F.linear_cross_entropy` (pytorch/pytorch#172286, Apr 2026; present in the 2.13.0 wheel used here, the first
  release holding it not checked) and `nn.LinearCrossEntropyOptions` (#175039), used by vocabopt/bench.py only
  behind `getattr(torch.nn, "LinearCrossEntropyOptions", None)` (GUARDED_WITH).
- "1.10": long-standing APIs (tensor creation, math, nn layers, torch.cuda timing and memory, torch.autocast,
  torch.linalg, torch.cov, saved_tensors_hooks), all in the torch 1.10 documentation; the exact first release does
  not matter to a floor of 2.4. Where unsure, an entry names a later release than the truth, never an earlier one
  (a later one can only make this test stricter).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
HEAD_FILE = ROOT / "vocabopt" / "adaptive_head.py"
OWN_OPS = "torch.ops.vocabopt_head"  # the custom op adaptive_head.py registers itself (behind the custom_op guard)

OLD = "1.10"
# Module-level torch APIs ("name(kw=)" = that keyword argument) -> the release they exist by.
API: dict[str, str] = {
    # adaptive_head.py
    "torch.is_autocast_enabled": "2.4",  # called with device_type: the 2.4 form (no-argument form is older)
    "torch.get_autocast_dtype": "2.4",
    "torch.library.custom_op": "2.4",
    "torch.compiler.is_compiling": "2.3",
    # Int8Linear: private CPU (and MPS) weight-only int8 matmul, "since pytorch 2.3" (huggingface/optimum-quanto#219;
    # pytorch/pytorch#118056); used only behind getattr, for bf16 inputs on CPU (see adaptive_head.int8_path)
    "torch._weight_int8pack_mm": "2.3",
    "torch.compiler": "2.1",
    "torch.compile": "2.0",
    "torch.library": "2.0",
    "torch._C._storage_Use_Count": "2.13",  # private; only checked in the installed 2.13.0, guarded by getattr
    "torch._C": OLD,
    "torch.load(weights_only=)": "1.13",
    "torch.argsort(stable=)": "1.13",
    "torch.autocast": OLD,
    "torch.autocast(enabled=)": OLD,
    "torch.autocast(dtype=)": OLD,
    "torch.cuda.get_sync_debug_mode": OLD,
    "torch.cuda.set_sync_debug_mode": OLD,
    "torch.cuda.is_current_stream_capturing": OLD,
    "torch.ops": OLD,
    "torch.Generator": OLD,
    "torch.Tensor": OLD,
    "torch.Tensor.numel": OLD,
    "torch.arange": OLD,
    "torch.arange(device=)": OLD,
    "torch.argsort": OLD,
    "torch.as_tensor": OLD,
    "torch.as_tensor(dtype=)": OLD,
    "torch.as_tensor(device=)": OLD,
    "torch.autograd.Function": OLD,
    "torch.bincount": OLD,
    "torch.bincount(minlength=)": OLD,
    "torch.bool": OLD,
    "torch.bfloat16": OLD,
    "torch.round": OLD,
    "torch.bucketize": OLD,
    "torch.bucketize(right=)": OLD,
    "torch.cat": OLD,
    "torch.cat(dim=)": OLD,
    "torch.cumsum": OLD,
    "torch.device": OLD,
    "torch.dtype": OLD,
    "torch.empty": OLD,
    "torch.empty(device=)": OLD,
    "torch.empty(dtype=)": OLD,
    "torch.empty_like": OLD,
    "torch.equal": OLD,
    "torch.exp": OLD,
    "torch.exp(out=)": OLD,
    "torch.finfo": OLD,
    "torch.float32": OLD,
    "torch.float64": OLD,
    "torch.full": OLD,
    "torch.full(device=)": OLD,
    "torch.full(dtype=)": OLD,
    "torch.int8": OLD,
    "torch.int16": OLD,
    "torch.int32": OLD,
    "torch.int64": OLD,
    "torch.load": OLD,
    "torch.log_softmax": OLD,
    "torch.log_softmax(dim=)": OLD,
    "torch.log_softmax(out=)": OLD,
    "torch.logaddexp": OLD,
    "torch.long": OLD,
    "torch.maximum": OLD,
    "torch.mm": OLD,
    "torch.mm(out=)": OLD,
    "torch.mul": OLD,
    "torch.mul(out=)": OLD,
    "torch.multinomial": OLD,
    "torch.multinomial(generator=)": OLD,
    "torch.nn.Dropout": OLD,
    "torch.nn.Linear": OLD,
    "torch.nn.Linear(bias=)": OLD,
    "torch.nn.Linear(device=)": OLD,
    "torch.nn.Linear(dtype=)": OLD,
    "torch.nn.Module": OLD,
    "torch.nn.ModuleList": OLD,
    "torch.nn.functional.linear": OLD,
    "torch.no_grad": OLD,
    "torch.ones": OLD,
    "torch.ones(device=)": OLD,
    "torch.ones(dtype=)": OLD,
    "torch.ones_like": OLD,
    "torch.promote_types": OLD,
    "torch.softmax": OLD,
    "torch.softmax(dim=)": OLD,
    "torch.sort": OLD,
    "torch.stack": OLD,
    "torch.tensor": OLD,
    "torch.tensor(device=)": OLD,
    "torch.tensor(dtype=)": OLD,
    "torch.uint8": OLD,
    "torch.where": OLD,
    "torch.zeros": OLD,
    "torch.zeros(device=)": OLD,
    "torch.zeros(dtype=)": OLD,
    "torch.zeros_like": OLD,
    # the rest of the package
    "torch.nn.functional.linear_cross_entropy": "2.13",
    "torch.nn.functional.linear_cross_entropy(linear_bias=)": "2.13",
    "torch.nn.functional.linear_cross_entropy(options=)": "2.13",
    "torch.nn.LinearCrossEntropyOptions": "2.13",  # pytorch/pytorch#175039 (Feb 2026); present in 2.13.0
    "torch.cuda.mem_get_info": "1.11",  # upper bound
    "torch.nn": OLD,
    "torch.nn.AdaptiveLogSoftmaxWithLoss(head_bias=)": OLD,
    "torch.nn.Transformer.generate_square_subsequent_mask": "2.1",  # static with device=: by 2.1 (upper bound)
    "torch.nn.Transformer.generate_square_subsequent_mask(device=)": "2.1",
    "torch.mps.synchronize": "2.0",
    "torch.backends.mps.is_available": "1.12",
    "torch.backends.mps": "1.12",
    "torch.backends": OLD,
    "torch.get_float32_matmul_precision": "1.12",
    "torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction": "2.0",  # upper bound
    "torch.nn.TransformerEncoder(enable_nested_tensor=)": "1.12",
    "torch.__version__": OLD,
    "torch.allclose": OLD,
    "torch.allclose(atol=)": OLD,
    "torch.autograd.graph.saved_tensors_hooks": OLD,
    "torch.backends.cuda.matmul.allow_tf32": OLD,
    "torch.cov": OLD,
    "torch.cuda.Event": OLD,
    "torch.cuda.Event(enable_timing=)": OLD,
    "torch.cuda.get_device_name": OLD,
    "torch.cuda.is_available": OLD,
    "torch.cuda.max_memory_allocated": OLD,
    "torch.cuda.memory_allocated": OLD,
    "torch.cuda.reset_peak_memory_stats": OLD,
    "torch.cuda.synchronize": OLD,
    "torch.eye": OLD,
    "torch.eye(dtype=)": OLD,
    "torch.from_numpy": OLD,
    "torch.Generator(device=)": OLD,
    "torch.get_num_threads": OLD,
    "torch.linalg.cholesky": OLD,
    "torch.linalg.eigh": OLD,
    "torch.linalg.lstsq": OLD,
    "torch.linalg.lstsq(driver=)": OLD,
    "torch.linalg.lstsq(rcond=)": OLD,
    "torch.linalg.norm": OLD,
    "torch.linalg.svd": OLD,
    "torch.linalg.svd(full_matrices=)": OLD,
    "torch.load(map_location=)": OLD,
    "torch.logsumexp": OLD,
    "torch.logsumexp(dim=)": OLD,
    "torch.manual_seed": OLD,
    "torch.nn.AdaptiveLogSoftmaxWithLoss": OLD,
    "torch.nn.AdaptiveLogSoftmaxWithLoss(div_value=)": OLD,
    "torch.nn.Embedding": OLD,
    "torch.nn.LSTM": OLD,
    "torch.nn.LSTM(batch_first=)": OLD,
    "torch.nn.LayerNorm": OLD,
    "torch.nn.Parameter": OLD,
    "torch.nn.TransformerEncoder": OLD,
    "torch.nn.TransformerEncoder(num_layers=)": OLD,
    "torch.nn.TransformerEncoderLayer": OLD,
    "torch.nn.TransformerEncoderLayer(batch_first=)": OLD,
    "torch.nn.TransformerEncoderLayer(dim_feedforward=)": OLD,
    "torch.nn.TransformerEncoderLayer(dropout=)": OLD,
    "torch.nn.TransformerEncoderLayer(nhead=)": OLD,
    "torch.nn.TransformerEncoderLayer(norm_first=)": OLD,
    "torch.nn.functional.cross_entropy": OLD,
    "torch.nn.functional.cross_entropy(reduction=)": OLD,
    "torch.nn.utils.clip_grad_norm_": OLD,
    "torch.optim.AdamW": OLD,
    "torch.optim.AdamW(lr=)": OLD,
    "torch.rand": OLD,
    "torch.rand(device=)": OLD,
    "torch.rand(dtype=)": OLD,
    "torch.rand(generator=)": OLD,
    "torch.randint": OLD,
    "torch.randint(device=)": OLD,
    "torch.randn": OLD,
    "torch.randn(device=)": OLD,
    "torch.randn(dtype=)": OLD,
    "torch.randn(generator=)": OLD,
    "torch.randn(requires_grad=)": OLD,
    "torch.save": OLD,
    "torch.addmm": OLD,
    "torch.addcmul": OLD,
    "torch.is_grad_enabled": OLD,
    "torch.full_like": OLD,
    "torch.nn.functional.kl_div": OLD,
    "torch.nn.functional.kl_div(log_target=)": OLD,
    "torch.nn.functional.kl_div(reduction=)": OLD,
    "torch.nn.functional.pad": OLD,
    "torch.nn.functional.pad(value=)": OLD,
    "torch.optim.Adam": OLD,
    "torch.optim.Adam(lr=)": OLD,
    "torch.randint(generator=)": OLD,
    "torch.version.cuda": OLD,
}

# Attributes the exported file reads on tensors, dtypes, devices, generators and modules (any attribute access in
# the file whose name torch.Tensor, torch.dtype, nn.Module, ... has: a same-named method of a list or dict counts
# too, which only makes the check stricter).
OBJECT_ATTRS: dict[str, str] = {
    "itemsize": "2.1",  # dtype.itemsize
    "untyped_storage": "2.0",
    "_cdata": OLD,  # private, on every storage; read only where the guarded _storage_Use_Count exists
    "_version": OLD,  # private in-place version counter
    "_parameters": OLD,  # nn.Module's own parameter and buffer dicts (read directly: cheaper than the generators)
    "_buffers": OLD,
    "_load_from_state_dict": OLD,  # nn.Module's per-module loading hook (Int8Linear quantises an fp weight on load)
    # Int8Linear's own `dequantize` / `matmul` methods share names with Tensor methods (counted here, stricter)
    **dict.fromkeys(
        "__init__ abs add_ all amax any apply argmax argsort as_strided buffers ceil chunk clamp clamp_ clone "
        "contiguous copy_ cumsum data "
        "data_ptr dequantize detach device dim double dtype element_size eval exp exp_ float forward gather index_add "
        "index_select is_floating_point log logsumexp long masked_fill matmul max mean min minimum mul_ new_full "
        "new_zeros nonzero norm numel parameters prod "
        "register_buffer requires_grad reshape save_for_backward saved_tensors scatter_ scatter_add_ shape sort split "
        "sqrt "
        "squeeze stride sub_ sum t to tolist topk "
        "train type unique unsqueeze values view".split(),
        OLD,
    ),
}


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def declared_floor() -> str:
    m = re.search(r'"torch>=([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    assert m, 'pyproject.toml: no "torch>=X" dependency'
    return m.group(1)


def scan(source: str) -> tuple[set[str], set[str], set[str]]:
    """Return (torch APIs used, the subset tested with hasattr/getattr, other attribute names read) of a source."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> torch module path
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "torch":
                    aliases[a.asname or "torch"] = a.name if a.asname else "torch"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "torch":
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def chain(n: ast.AST) -> str | None:
        parts = []
        while isinstance(n, ast.Attribute):
            parts.append(n.attr)
            n = n.value
        if isinstance(n, ast.Name) and n.id in aliases:
            return ".".join([aliases[n.id], *reversed(parts)])
        return None

    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}  # keep only whole chains
    used, guarded, others = set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            c = chain(node)
            if c is None:
                others.add(node.attr)
            elif id(node) not in inner:
                used.add(c)
        if isinstance(node, ast.Call):
            c = chain(node.func)
            if c:
                used.update(f"{c}({kw.arg}=)" for kw in node.keywords if kw.arg)
            fn = node.func
            if isinstance(fn, ast.Name) and fn.id in ("getattr", "hasattr") and len(node.args) >= 2:
                obj, name = chain(node.args[0]), node.args[1]
                if obj and isinstance(name, ast.Constant) and isinstance(name.value, str):
                    used.add(f"{obj}.{name.value}")
                    guarded.add(f"{obj}.{name.value}")
    return {u for u in used if not u.startswith(OWN_OPS)}, guarded, others


# An API that a test for another one covers: every release with the key has the value (same release, 2.13).
GUARDED_WITH = {"torch.nn.functional.linear_cross_entropy": "torch.nn.LinearCrossEntropyOptions"}


def too_new(used: set[str], guarded: set[str], floor: str) -> list[str]:
    """APIs newer than `floor` that the file does not test for (a keyword counts as guarded with its function)."""

    def is_guarded(u: str) -> bool:
        base = u.split("(")[0]
        return base in guarded or GUARDED_WITH.get(base) in guarded

    return sorted(u for u in used if u in API and _version(API[u]) > _version(floor) and not is_guarded(u))


def test_scanner_finds_calls_keywords_and_guards():
    src = (
        "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
        "a = torch.is_autocast_enabled('cpu')\nb = F.linear_cross_entropy(x, w, y, linear_bias=c)\n"
        "c = getattr(torch.library, 'custom_op', None)\nd = nn.Linear(2, 3).weight.untyped_storage()\n"
        "if hasattr(F, 'linear_cross_entropy'): pass\n"
    )
    used, guarded, others = scan(src)
    assert {
        "torch.is_autocast_enabled",
        "torch.nn.functional.linear_cross_entropy(linear_bias=)",
        "torch.library.custom_op",
        "torch.nn.Linear",
    } <= used
    assert guarded == {"torch.library.custom_op", "torch.nn.functional.linear_cross_entropy"}
    assert {"weight", "untyped_storage"} <= others
    assert too_new(used, guarded, "2.1") == ["torch.is_autocast_enabled"]
    assert too_new(used, guarded, "2.4") == []


def test_exported_file_uses_only_classified_torch_apis_within_the_floor():
    floor = declared_floor()
    used, guarded, others = scan(HEAD_FILE.read_text())
    unknown = sorted(used - API.keys())
    assert not unknown, f"adaptive_head.py uses torch APIs not classified in API (add each with its release): {unknown}"
    assert not too_new(used, guarded, floor), f"newer than the declared torch>={floor}: {too_new(used, guarded, floor)}"

    torch_attrs = set()
    for obj in (torch.Tensor, torch.dtype, torch.device, torch.Generator, nn.Module, torch.autograd.Function):
        torch_attrs |= set(dir(obj))
    attrs = others & torch_attrs
    unknown = sorted(attrs - OBJECT_ATTRS.keys())
    assert not unknown, f"adaptive_head.py reads tensor/module attributes not classified in OBJECT_ATTRS: {unknown}"
    newer = sorted(a for a in attrs if _version(OBJECT_ATTRS[a]) > _version(floor))
    assert not newer, f"adaptive_head.py reads attributes newer than torch>={floor}: {newer}"


def test_floor_is_tight_for_the_exported_file():
    """The declared floor is the newest release an unguarded API of the exported file needs: not lower (it would
    break), not higher (it would turn users away for nothing)."""
    used, guarded, others = scan(HEAD_FILE.read_text())
    needed = [API[u] for u in used - guarded if u in API] + [OBJECT_ATTRS[a] for a in others if a in OBJECT_ATTRS]
    assert declared_floor() == max(needed, key=_version)


@pytest.mark.parametrize("path", sorted((ROOT / "vocabopt").rglob("*.py")), ids=lambda p: p.name)
def test_package_uses_only_classified_torch_apis_within_the_floor(path):
    floor = declared_floor()
    used, guarded, _ = scan(path.read_text())
    unknown = sorted(used - API.keys())
    assert not unknown, f"{path.name} uses torch APIs not classified in API (add each with its release): {unknown}"
    newer = too_new(used, guarded, floor)
    assert not newer, f"{path.name}: newer than torch>={floor} without a hasattr/getattr guard: {newer}"


def test_readme_states_the_declared_floor():
    readme = (ROOT / "README.md").read_text()
    floor = declared_floor()
    stated = set(re.findall(r"torch ?(?:>=|≥) ?([0-9]+\.[0-9]+)", readme))
    assert stated == {floor}, f"README.md states torch >= {sorted(stated)}; pyproject.toml declares {floor}"
