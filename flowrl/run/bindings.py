"""A run's config as data: ``bindings.json`` beside ``config.gin``, ``{"Configurable.param": value}``.

Tools that compare runs (``tools/plot.py``, ``tools/report.py``) read it instead of scanning ``config.gin`` with
regular expressions. Values are JSON: numbers, strings, booleans, null, lists (gin tuples and lists) and objects;
gin references and macros are kept as gin writes them, as strings: ``"@FlowRLAgent"``, ``"@W2Regularizer()"``,
``"%HIDDEN"``. Keys are ``Configurable.param``, with ``scope/`` in front for scoped bindings. A run folder written
before flowrl kept the file is read by parsing its ``config.gin`` with gin's own parser into the same form.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gin import config_parser

from flowrl.config.files import find_gin
from flowrl.errors import UserError
from flowrl.run import files

FILE = files.BINDINGS


class _Reference(str):
    """A gin ``@reference`` or ``%macro``, kept as its text."""


class _Delegate(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_name: str, evaluate: bool) -> _Reference:
        return _Reference(f"@{scoped_name}{'()' if evaluate else ''}")

    def macro(self, name: str) -> _Reference:
        return _Reference(f"%{name}")


def _json(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return str(value) if isinstance(value, _Reference) else value
    return repr(value)  # gin accepts few other literals (e.g. complex numbers); keep them readable


def _key(statement: config_parser.BindingStatement) -> str:
    scope = f"{statement.scope}/" if statement.scope else ""
    param = f".{statement.arg_name}" if statement.arg_name else ""  # a macro's definition has no parameter
    return f"{scope}{statement.selector}{param}"


def parse(text: str) -> dict[str, Any]:
    """The bindings of gin ``text`` (includes and imports are skipped, not followed) as JSON-able values."""
    found: dict[str, Any] = {}
    for statement in config_parser.ConfigParser(text, _Delegate()):
        if isinstance(statement, config_parser.BindingStatement):
            found[_key(statement)] = _json(statement.value)
    return found


def parse_file(path: Path, _seen: frozenset = frozenset()) -> dict[str, Any]:
    """The bindings of a gin file and of the files it includes (found as the runner finds them), later ones winning;
    a file that cannot be read or parsed contributes nothing."""
    path = Path(path)
    if path.resolve() in _seen:
        return {}
    try:
        statements = list(config_parser.ConfigParser(path.read_text(), _Delegate()))
    except (OSError, SyntaxError, ValueError):
        return {}
    found: dict[str, Any] = {}
    for statement in statements:
        if isinstance(statement, config_parser.IncludeStatement):
            try:
                included = find_gin(statement.filename)
            except UserError:  # a name found twice in the shipped tree
                included = None
            if included is not None and included.is_file():
                found.update(parse_file(included, _seen | {path.resolve()}))
        elif isinstance(statement, config_parser.BindingStatement):
            found[_key(statement)] = _json(statement.value)
    return found


def write(run_dir: Path, config_text: str) -> None:
    """Write ``RUN/bindings.json`` (atomically) from the operative config's text."""
    path = Path(run_dir) / FILE
    tmp = path.with_name(f".{FILE}.tmp")
    tmp.write_text(json.dumps(parse(config_text), indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def read(run_dir: Path) -> dict[str, Any]:
    """A run's bindings: ``bindings.json``, else its parsed ``config.gin`` (older runs), else ``{}``."""
    run_dir = Path(run_dir)
    try:
        data = json.loads((run_dir / FILE).read_text())
        if isinstance(data, dict):
            return data
    except (OSError, ValueError):
        pass
    config = run_dir / files.CONFIG
    if not config.is_file():
        return {}
    try:
        return parse(config.read_text())
    except (SyntaxError, ValueError):
        return {}


def text(value: Any) -> str:
    """A binding's value as gin would write it: ``0.0003``, ``'dmc/cheetah-run'``, ``@W2Regularizer()``."""
    if isinstance(value, str):
        return value if value[:1] in "@%" else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {text(v)}" for k, v in value.items()) + "}"
    return repr(value)
