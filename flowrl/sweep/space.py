"""The search space of a study (``tools/sweep.py --search N --space SPACE``): gin bindings and overlay choices.

A space is a Python-style dict, inline or in a file, mapping a gin binding (``Configurable.param``, scoped names
too) or an overlay slot (``overlay``, ``overlay:NAME``) to a distribution::

    {'FlowRLAgent.expectile': uniform(0.7, 0.95),       # float in [low, high]; uniform(lo, hi, step) on a grid
     'W2Regularizer.lam': log_uniform(1e-3, 1),          # float, uniform in log space
     'Trainer.batch_size': int_uniform(64, 256, 64),      # integer (log_int(lo, hi): uniform in log space)
     'overlay': choice(None, 'gin/ablations/reg_kl.gin')} # one of the listed values; None = no overlay

A trial's overlays follow the base configs (as ``--vary`` overlays do) and its bindings follow ``--bind``. Strings in a
binding's ``choice`` are gin references when they start with ``@`` or ``%`` (``'@KLRegularizer()'``), else gin strings.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowrl.errors import UserError

OVERLAY = "overlay"
# What a search may not vary: each has its own flag, or all trials must share it so that pruning compares like with
# like (evaluations at the same env steps of the same budget).
_FIXED = {"make_env.task": "--tasks", "Trainer.seed": "--seeds", "Trainer.num_threads": "--threads",
          "Trainer.total_steps": "--bind (one budget for every trial)",
          "Trainer.eval_every": "--bind (pruning compares trials at the same evaluation steps)"}
_KINDS = {"uniform": (2, 3), "log_uniform": (2, 2), "int_uniform": (2, 3), "log_int": (2, 2), "choice": (2, None)}
_EXAMPLE = "{'FlowRLAgent.expectile': uniform(0.7, 0.95), 'W2Regularizer.lam': log_uniform(1e-3, 1)}"


@dataclass(frozen=True)
class Param:
    """One dimension: ``name`` (a binding or an overlay slot), ``kind`` (a key of ``_KINDS``) and its arguments."""

    name: str
    kind: str
    args: tuple

    @property
    def overlay(self) -> bool:
        return self.name == OVERLAY or self.name.startswith(OVERLAY + ":")

    def text(self) -> str:
        return f"{self.kind}({', '.join(map(repr, self.args))})"

    def suggest(self, trial) -> Any:
        """Ask an Optuna trial for this dimension's value (a re-attached trial answers with the value it has)."""
        a = self.args
        if self.kind in ("uniform", "log_uniform"):
            step = a[2] if len(a) > 2 else None
            return trial.suggest_float(self.name, float(a[0]), float(a[1]), log=self.kind == "log_uniform", step=step)
        if self.kind in ("int_uniform", "log_int"):
            return trial.suggest_int(self.name, a[0], a[1], step=a[2] if len(a) > 2 else 1, log=self.kind == "log_int")
        return trial.suggest_categorical(self.name, list(a))

    def extremes(self) -> list:
        """The values that a config check should try: both ends of a range, every choice."""
        return list(self.args) if self.kind == "choice" else [self.args[0], self.args[1]]

    def grid(self) -> list:
        """Every value, for the grid sampler (a finite space only)."""
        if self.kind == "choice":
            return list(self.args)
        if self.kind in ("int_uniform", "uniform") and len(self.args) == 3:
            lo, hi, step = self.args
            n = int(math.floor((hi - lo) / step + 1e-9)) + 1
            return [lo + i * step if self.kind == "int_uniform" else round(lo + i * step, 12)
                    for i in range(n)]
        raise UserError(f"--sampler grid needs a finite space but '{self.name}' is {self.text()}; fix: write "
                        f"choice(...) or a step, e.g. uniform(0.7, 0.95, 0.05)")


def binding(name: str, value: Any) -> str:
    """The gin binding that sets ``name`` to ``value``."""
    if isinstance(value, str) and value[:1] in ("@", "%"):
        return f"{name} = {value}"
    return f"{name} = {value!r}"


def load(text: str) -> list[Param]:
    """Parse a space (inline text, or the path of a file holding it); each mistake is a one-line UserError."""
    if Path(text).is_file():
        text = Path(text).read_text()
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise UserError(f"malformed --space ({e.msg}); fix: a dict such as {_EXAMPLE}") from None
    if not isinstance(tree, ast.Dict) or not tree.keys:
        raise UserError(f"--space is not a dict of distributions; fix: a dict such as {_EXAMPLE}")
    params = []
    for key, value in zip(tree.keys, tree.values):
        if not isinstance(key, ast.Constant) or not isinstance(key.value, str):
            raise UserError(f"--space key {ast.unparse(key) if key else '**'} is not a quoted name; fix: quote it, "
                            f"e.g. 'FlowRLAgent.expectile'")
        params.append(_param(key.value.strip(), value))
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise UserError("--space names a binding twice; fix: keep one distribution per name")
    return params


def _param(name: str, node: ast.expr) -> Param:
    where = f"--space '{name}'"
    if not (name == OVERLAY or name.startswith(OVERLAY + ":")):
        short = name.rsplit("/", 1)[-1]
        if "." not in short or not all(part.isidentifier() for part in short.split(".")):
            raise UserError(f"{where} is neither a gin binding (Configurable.param) nor an overlay slot; fix: a name "
                            f"such as 'FlowRLAgent.expectile' or 'overlay'")
        if short in _FIXED:
            raise UserError(f"{where} cannot be searched (every trial shares it); fix: set it with {_FIXED[short]}")
    text = ast.unparse(node)
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.func.id not in _KINDS:
        raise UserError(f"{where}: '{text}' is not a distribution; fix: one of {', '.join(_KINDS)}, e.g. "
                        f"uniform(0.7, 0.95)")
    kind, (least, most) = node.func.id, _KINDS[node.func.id]
    try:
        args = tuple(ast.literal_eval(a) for a in node.args)
        keywords = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except ValueError:
        raise UserError(f"{where}: '{text}' has an argument that is not a literal; fix: plain numbers or "
                        f"strings") from None
    if keywords and kind != "choice" and set(keywords) <= {"step"} and len(args) == 2:
        args = (*args, keywords.pop("step"))
    if keywords or len(args) < least or (most is not None and len(args) > most):
        count = f"{least}" if least == most else f"{least} to {most}" if most else f"at least {least}"
        raise UserError(f"{where}: '{text}' takes {count} positional values; fix: e.g. "
                        + {"choice": "choice(0.8, 0.9)", "uniform": "uniform(0.7, 0.95)",
                           "log_uniform": "log_uniform(1e-3, 1)", "int_uniform": "int_uniform(64, 256)",
                           "log_int": "log_int(64, 512)"}[kind])
    if kind == "choice":
        _check_choices(where, text, args, overlay=name == OVERLAY or name.startswith(OVERLAY + ":"))
    else:
        _check_range(where, text, kind, args)
    return Param(name, kind, args)


def _check_range(where: str, text: str, kind: str, args: tuple) -> None:
    ints = kind in ("int_uniform", "log_int")
    if not all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in args) or (
            ints and not all(isinstance(a, int) for a in args)):
        raise UserError(f"{where}: '{text}' needs finite {'integers' if ints else 'numbers'}; fix: e.g. "
                        + ("int_uniform(64, 256)" if ints else "uniform(0.7, 0.95)"))
    lo, hi = args[0], args[1]
    if not lo < hi:
        raise UserError(f"{where}: '{text}' needs low < high; fix: {kind}({min(lo, hi)!r}, {max(lo, hi)!r})"
                        if lo != hi else f"{where}: '{text}' is one value; fix: bind it with --bind instead")
    if kind in ("log_uniform", "log_int") and lo <= 0:
        raise UserError(f"{where}: '{text}' is in log space, so low must be above 0; fix: e.g. {kind}"
                        f"({'1' if ints else '1e-4'}, {hi!r})")
    if len(args) == 3 and not 0 < args[2] <= hi - lo:
        raise UserError(f"{where}: '{text}' has a step outside (0, high - low]; fix: e.g. a step of {(hi - lo) / 4!r}")


def _check_choices(where: str, text: str, values: tuple, overlay: bool) -> None:
    if len(set(map(repr, values))) != len(values):
        raise UserError(f"{where}: '{text}' lists a value twice; fix: list each choice once")
    for v in values:
        if not isinstance(v, (str, int, float, bool, type(None))):
            raise UserError(f"{where}: '{text}' holds {v!r}, not a number, string, bool or None; fix: plain values")
        if overlay and v is not None and (not isinstance(v, str) or not v.endswith(".gin")):
            raise UserError(f"{where}: overlay choice {v!r} is not a .gin file; fix: overlay files or None "
                            f"(no overlay)")


def canonical(params: list[Param]) -> dict[str, str]:
    """``{name: 'kind(args)'}``: what a study records of its space, to refuse a changed one on a later run."""
    return {p.name: p.text() for p in params}


def apply(params: list[Param], values: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(overlay files, bindings) of one point of the space, in the space's order."""
    overlays = [values[p.name] for p in params if p.overlay and values[p.name] is not None]
    binds = [binding(p.name, values[p.name]) for p in params if not p.overlay]
    return overlays, binds


def probes(params: list[Param]) -> list[dict[str, Any]]:
    """Points of the space that together touch every end of every range and every choice (one dimension moved from
    the first point at a time): parsing and checking each finds an unknown name or an out-of-range end up front."""
    first = {p.name: p.extremes()[0] for p in params}
    points = [first]
    for p in params:
        points += [{**first, p.name: v} for v in p.extremes()[1:]]
    return points
