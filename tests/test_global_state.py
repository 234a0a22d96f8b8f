"""The library leaves the caller's process as it found it (issue 22): after `import stm_probe`,
`stm_probe.create_model` and `stm_probe.run` (erf with an init copy, which flushes denormals and
builds models, figures drawn), the TF32 flags, float32 matmul precision, flush-denormal mode,
Python / numpy / torch RNG states, matplotlib backend, ``sys.meta_path`` and umask are unchanged.

Each check runs in a fresh interpreter (a notebook's situation: the state is set before stm_probe
is imported), so nothing another test did can hide or cause a change.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import json, os, random, sys
    import matplotlib
    import numpy as np
    import torch

    matplotlib.use("svg")  # a user's backend choice (not Agg, not the default)
    torch.backends.cuda.matmul.allow_tf32 = True  # a user who wants TF32 matmuls ...
    torch.backends.cudnn.allow_tf32 = False  # ... but strict convolutions
    random.seed(11); np.random.seed(12); torch.manual_seed(13)
    os.umask(0o027)

    def flushed():
        return torch.tensor([1e-39]).mul(1.0).item() == 0.0

    def state():
        return {"tf32": [torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                         torch.get_float32_matmul_precision()],
                "denormals_flushed": flushed(),
                "random": repr(random.getstate()), "numpy": repr(np.random.get_state()),
                "torch": torch.get_rng_state().tolist(),
                "backend": dict.__getitem__(matplotlib.rcParams, "backend"),
                "pyplot_imported": "matplotlib.pyplot" in sys.modules,
                "meta_path": [repr(f) for f in sys.meta_path],
                "umask": os.umask(os.umask(0))}

    out = {"before": state()}
    import stm_probe
    out["after_import"] = state()
    mode, folder = sys.argv[1], sys.argv[2]
    if mode == "run":
        model = stm_probe.create_model("unified_convnext_micro", input_size=64)
        torch.save({"model": model.state_dict()}, folder + "/w.pth")
        del model
        out["before_run"] = state()  # create_model drew its init from torch's generator, as any module does
        stm_probe.run("erf", models="unified_convnext_micro", checkpoint=folder + "/w.pth", compare_init=True,
                      input_size=64, num_images=2, stages=[4], bootstrap=10, quiet=True, out=folder + "/run")
        out["figures"] = sorted(p for p in os.listdir(folder + "/run") if p.endswith(".png"))
    else:  # create_model: the init draws from the caller's torch generator and reseeds nothing
        torch.manual_seed(1)
        a = stm_probe.create_model("unified_convnext_micro", input_size=64).head.weight.detach().clone()
        torch.manual_seed(2)
        b = stm_probe.create_model("unified_convnext_micro", input_size=64).head.weight.detach().clone()
        torch.manual_seed(1)
        c = stm_probe.create_model("unified_convnext_micro", input_size=64).head.weight.detach().clone()
        out["seeded_by_caller"] = [bool(torch.equal(a, c)), bool(not torch.equal(a, b))]
        torch.set_rng_state(torch.tensor(out["before"]["torch"], dtype=torch.uint8))
    out["after"] = state()
    print(json.dumps(out))
''')


def _run(mode: str, folder: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": ""}
    env.pop("MPLBACKEND")
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(folder)], capture_output=True, text=True,
                          env=env, cwd=folder, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_same(a: dict, b: dict, when: str) -> None:
    for key in a:
        assert a[key] == b[key], f"{when}: {key} changed: {str(a[key])[:200]} -> {str(b[key])[:200]}"


def test_import_and_run_leave_global_state_alone(tmp_path: Path) -> None:
    out = _run("run", tmp_path)
    assert out["before"]["tf32"] == [True, False, "high"] and out["before"]["backend"] == "svg"
    assert not out["before"]["denormals_flushed"]
    _assert_same(out["before"], out["after_import"], "import stm_probe")
    _assert_same(out["before_run"], out["after"], "stm_probe.run('erf', ...)")
    assert out["figures"], "the run drew no figure, so the backend check checked nothing"


def test_create_model_draws_from_the_callers_generator_and_leaves_the_rest(tmp_path: Path) -> None:
    out = _run("create_model", tmp_path)
    assert out["seeded_by_caller"] == [True, True]  # same caller seed, same weights; another seed, others
    _assert_same(out["before"], out["after"], "stm_probe.create_model")


@pytest.mark.slow  # a fresh interpreter: the full suite
def test_timm_registration_without_an_import_hook() -> None:
    """``import timm, stm_probe`` registers the unified models at once; ``import stm_probe`` first loads
    neither torch nor timm and hooks nothing, and ``import stm_probe.models.registry`` registers them."""
    code = textwrap.dedent('''
        import sys
        hooks = list(sys.meta_path)
        import stm_probe
        light = [m for m in ("torch", "timm") if m in sys.modules]
        import timm
        late = timm.is_model("unified_swin_tiny")
        import stm_probe.models.registry
        print(light, sys.meta_path == hooks, late, timm.is_model("unified_swin_tiny"))
    ''')
    first_timm = "import timm, stm_probe; print(timm.is_model('unified_pvt_micro'))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outs = [subprocess.run([sys.executable, "-c", c], capture_output=True, text=True, env=env, timeout=300)
            for c in (code, first_timm)]
    assert all(o.returncode == 0 for o in outs), [o.stderr[-2000:] for o in outs]
    assert outs[0].stdout.split() == ["[]", "True", "False", "True"]
    assert outs[1].stdout.strip() == "True"
