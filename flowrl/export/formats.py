"""The exported policy's files: ``pt2`` (``torch.export.save``), ``aoti`` (AOTInductor's compiled package) and
``onnx`` (``torch.onnx.export(dynamo=True)``, one file, weights inside), each written with a metadata file beside it.

Each writer writes to a temporary name in the target's folder; the file is then loaded back as a user would load it,
its actions are checked against the eager policy's, and only then the metadata and the file are renamed into place
(the file last: a policy file that exists has its metadata). A failure anywhere removes what was written.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from flowrl.errors import MissingDependencyError, UserError, file_argument, install_hint
from flowrl.export.program import Traced, check

SUFFIX = {"pt2": ".pt2", "aoti": ".pt2", "onnx": ".onnx"}  # torch's loaders insist on .pt2
LOADS_WITH = {"pt2": "torch.export.load(FILE).module()", "aoti": "torch._inductor.aoti_load_package(FILE)",
              "onnx": "onnxruntime.InferenceSession(FILE)"}
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
# AOTInductor's options: matrix-vector products as fused loops, no library call per layer at batch size 1 (as for the
# compiled action path, flowrl/agents/acting.py), and kernels without OpenMP (one thread: the caller's). FlowRL at the
# paper's width: 86 -> 57 -> 56 us an action, and a quarter less compile time; freezing the weights into the graph
# gained nothing (docs/export.md).
AOTI_OPTIONS = {"post_grad_fusion_options": {"decompose_mm_pass": {}}, "cpp.threads": 1}


def metadata_path(out: Path) -> Path:
    """The metadata file of ``out``: ``policy.pt2`` -> ``policy.pt2.json``."""
    return out.with_name(out.name + ".json")


def check_out(out: Path, fmt: str, force: bool) -> None:
    """One line unless ``out`` may be written in ``fmt``: its suffix, a folder in its place, an existing file (or
    metadata file) without ``force``."""
    out = Path(out)
    if out.suffix != SUFFIX[fmt]:
        raise UserError(f"--out '{out}' does not end in {SUFFIX[fmt]}, which --format {fmt} files need; fix: "
                        f"--out {out.with_suffix(SUFFIX[fmt])}")
    file_argument(out, "--out", "policy" + SUFFIX[fmt])
    there = [p for p in (out, metadata_path(out)) if p.exists()]
    if there and not force:
        raise UserError(f"--out '{there[0]}' exists; fix: pass --force to replace it, or name another file")


def require_tools(fmt: str) -> None:
    """One line when ``fmt`` needs what is not installed: ONNX's three packages (the ``export`` extra), AOTInductor's
    C++ compiler."""
    if fmt == "aoti":
        from torch._inductor.cpp_builder import get_cpp_compiler

        try:
            get_cpp_compiler()
        except Exception as e:  # noqa: BLE001 (inductor's InvalidCxxCompiler, or an OSError probing one)
            raise MissingDependencyError(f"--format aoti compiles C++, and no compiler was found ({_first(e)}); fix: "
                                         "install g++ (or set CXX), or export --format pt2") from None
    if fmt != "onnx":
        return
    for name in ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise MissingDependencyError(f"--format onnx needs {name}, which is not installed ({e}); fix: "
                                         f"{install_hint('export')}") from None


def write_pt2(traced: Traced, path: Path) -> None:
    torch.export.save(traced.program, str(path))


def write_aoti(traced: Traced, path: Path) -> None:
    with _quiet():
        torch._inductor.aoti_compile_and_package(traced.program, package_path=str(path),
                                                 inductor_configs=AOTI_OPTIONS)


def write_onnx(traced: Traced, path: Path) -> None:
    names = ["obs", "noise"][: len(traced.inputs)]
    with _quiet():
        torch.onnx.export(traced.program, traced.inputs, str(path), dynamo=True, external_data=False, verbose=False,
                          input_names=names, output_names=["action"])


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Without the exporters' progress lines, the ONNX exporter's notes about torchvision's operators and torch's
    deprecation warnings to itself (stdout, logging, warnings)."""
    import logging
    import warnings

    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def _first(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]


WRITERS: dict[str, Callable[[Traced, Path], None]] = {"pt2": write_pt2, "aoti": write_aoti, "onnx": write_onnx}


def load(path: Path, fmt: str, threads: int = 1) -> Callable[..., np.ndarray]:
    """The written policy as a user loads it (see :data:`LOADS_WITH`): ``act(obs[, noise]) -> (B, act_dim)``
    float64, numpy or torch inputs; ONNX Runtime with ``threads`` intra-op threads."""
    if fmt == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda *xs: session.run(None, {n: np.asarray(x, np.float32) for n, x in zip(names, xs)})[0]
    program = torch.export.load(str(path)).module() if fmt == "pt2" else torch._inductor.aoti_load_package(str(path))
    return lambda *xs: program(*(torch.as_tensor(x, dtype=torch.float32) for x in xs)).numpy()


def metadata(traced: Traced, fmt: str, out: Path, about: dict[str, Any]) -> dict[str, Any]:
    """What the metadata file says: ``about`` (task, run, checkpoint, agent, ...) and the file's inputs and output."""
    (batch, obs_dim), act_dim = traced.inputs[0].shape, traced.expected.shape[1]
    inputs = [{"name": "obs", "shape": [batch, obs_dim], "dtype": "float32"}]
    if traced.draws:
        inputs.append({"name": "noise", "shape": [traced.noise_size], "dtype": "float32"})
    return {
        "file": out.name, "format": fmt, "loads_with": LOADS_WITH[fmt], **about,
        "obs_dim": int(obs_dim), "act_dim": int(act_dim), "batch": int(batch), "batch_dynamic": False,
        "action_low": traced.low, "action_high": traced.high, "inputs": inputs,
        "outputs": [{"name": "action", "shape": [batch, int(act_dim)], "dtype": "float64",
                     "what": "the env's action: the policy's [-1, 1] action clipped and mapped onto "
                             "[action_low, action_high] as flowrl's env adapters map it"}],
        "networks": traced.networks,
        "noise": {"draws": [list(s) for s in traced.draws],
                  "what": "standard normals, one slice per draw of the policy, in order (row-major); "
                          "torch.cat([torch.randn(s).flatten() for s in draws]) after torch.manual_seed(seed) gives "
                          "what tools/evaluate.py --seed seed --episodes batch draws; empty: the policy draws "
                          "nothing (no noise input)"},
        "torch_version": torch.__version__,
    }


def write(traced: Traced, fmt: str, out: Path, about: dict[str, Any]) -> dict[str, Any]:
    """Write ``traced`` as ``out`` in ``fmt`` with its metadata file (see the module docstring); returns the metadata."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_file, tmp_meta = out.with_name(f".{out.stem}.partial{out.suffix}"), out.with_name(f".{out.name}.partial.json")
    info = metadata(traced, fmt, out, about)
    try:
        WRITERS[fmt](traced, tmp_file)
        check(load(tmp_file, fmt)(*traced.inputs), traced, f"the written {fmt} file")
        tmp_meta.write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in info.items()) + "\n}\n")
        os.replace(tmp_meta, metadata_path(out))
        os.replace(tmp_file, out)
    finally:
        tmp_file.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
    return info
