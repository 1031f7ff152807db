"""The exporter: a standalone torch-only file (tested in a fresh process without vocabopt), config and ALSWL
formats, and the CLI verb."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vocabopt.cli import main
from vocabopt.errors import InputError
from vocabopt.export import export_layer
from vocabopt.plan import Plan

TEMPLATE = Path(__file__).resolve().parents[1] / "vocabopt" / "adaptive_head.py"


@pytest.fixture()
def plan() -> Plan:
    counts = np.random.default_rng(0).permutation(np.round(1e4 / np.arange(1, 201)).astype(np.int64))
    return Plan.from_cutoffs(counts, hidden=16, cutoffs=[10, 50], provenance={"name": "toy-plan"})


def test_exported_module_is_the_template_plus_the_plan(plan, tmp_path):
    sidecar, out = export_layer(plan, tmp_path / "adaptive_head.py")
    assert re.fullmatch(r"adaptive_head\.order\.[0-9a-f]{16}\.pt", sidecar.name)
    exported, template = out.read_text().splitlines(), TEMPLATE.read_text().splitlines()
    changed = [line for line in exported if line not in template]
    assert "Plan: toy-plan (V=200, d=16, cutoffs=[10, 50], proj_dims=[4, 1])." in changed
    assert all(("PLAN_CONFIG" in c or "SIDECAR" in c or c.startswith(("    '", "Plan:", "}"))) for c in changed)
    assert "import vocabopt" not in out.read_text() and "from vocabopt" not in out.read_text()


def test_exported_module_trains_in_a_fresh_process_without_vocabopt(plan, tmp_path):
    export_layer(plan, tmp_path / "adaptive_head.py", dropout=0.1)
    script = textwrap.dedent(
        """
        import sys
        sys.modules["vocabopt"] = None  # importing vocabopt now fails: the file must not need it
        sys.path.insert(0, ".")
        import torch
        from adaptive_head import build_head

        torch.manual_seed(0)
        head = build_head()
        assert head.config.dropout == 0.1 and head.config.plan == "toy-plan"
        emb = torch.nn.Embedding(200, 16)
        opt = torch.optim.Adam([*emb.parameters(), *head.parameters()], lr=1e-2)
        ids = torch.randint(0, 200, (8, 33))
        losses = []
        for _ in range(30):
            loss = head(emb(ids[:, :-1]), ids[:, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        print(losses[0], losses[-1])
        assert losses[-1] < losses[0] - 0.5, losses
        assert head.predict(emb(ids[:, :2])).shape == (8, 2)
        """
    )
    res = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr


def test_exported_head_matches_build_layer(plan, tmp_path):
    import importlib.util

    from vocabopt.layer import build_layer

    export_layer(plan, tmp_path / "head.py")
    spec = importlib.util.spec_from_file_location("exported_head", tmp_path / "head.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    head, ref = mod.build_head(), build_layer(plan)
    head.load_state_dict(ref.state_dict())
    x, ids = torch.randn(20, 16), torch.randint(0, 200, (20,))
    torch.testing.assert_close(head(x, ids), ref(x, ids))
    assert torch.equal(head.order, ref.order)


def test_torch_format_builds_alswl_with_remap(plan, tmp_path):
    export_layer(plan, tmp_path / "alswl.py", format="torch")
    ns: dict = {"__file__": str(tmp_path / "alswl.py"), "__name__": "alswl"}
    exec((tmp_path / "alswl.py").read_text(), ns)
    alswl, rank_of, order = ns["build_alswl"]()
    assert isinstance(alswl, torch.nn.AdaptiveLogSoftmaxWithLoss) and alswl.cutoffs == [10, 50, 200]
    assert torch.equal(order[rank_of], torch.arange(200))
    odd = Plan.from_cutoffs(plan.counts_by_rank, hidden=16, cutoffs=[10, 50], proj_dims=[5, 3])
    with pytest.raises(InputError, match="only supports projections"):
        export_layer(odd, tmp_path / "bad.py", format="torch")


def test_cli_export(plan, tmp_path):
    plan.save(tmp_path / "plan.json")
    runner = CliRunner()
    res = runner.invoke(main, ["export", str(tmp_path / "plan.json"), "-o", str(tmp_path / "h.py")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "h.py").exists() and len(list(tmp_path.glob("h.order.*.pt"))) == 1
    res = runner.invoke(
        main,
        [
            "export",
            str(tmp_path / "plan.json"),
            "-o",
            str(tmp_path / "c.json"),
            "--format",
            "config",
            "--json",
        ],
    )
    assert res.exit_code == 0 and json.loads((tmp_path / "c.json").read_text())["config"]["cutoffs"] == [
        10,
        50,
    ]
    (tmp_path / "notplan.json").write_text(json.dumps({"artifact": "vocabopt.CorpusStats", "schema_version": 1}))
    res = runner.invoke(main, ["export", str(tmp_path / "notplan.json"), "-o", str(tmp_path / "x.py")])
    assert res.exit_code == 1 and "not a vocabopt.Plan" in res.output and "Traceback" not in res.output
