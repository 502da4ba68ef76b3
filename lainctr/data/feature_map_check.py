"""Feature encoders of a feature map, checked before FuxiCTR ``eval``s them.

FuxiCTR builds each feature's ``feature_encoder`` (a string, or a list of strings chained in
``nn.Sequential``) with ``eval``; the strings come from a dataset's ``feature_map.json`` and from an expid's
``feature_specs``. Only expressions of one form pass: a call of a ``torch.nn`` class (``nn.X`` or
``torch.nn.X``) or a FuxiCTR layer class (``layers.X``) whose arguments are numbers, booleans or None, e.g.
``layers.MaskedAveragePooling()`` or ``nn.Linear(64, 64, bias=False)``. They are parsed with :mod:`ast`,
never evaluated.
"""
from __future__ import annotations

import ast
from typing import Any, Mapping, Optional, Sequence

import fuxictr.pytorch.layers as fuxictr_layers
from torch import nn

from ..errors import InputFileError

MODULES = {("nn",): nn, ("torch", "nn"): nn, ("layers",): fuxictr_layers}
EXAMPLES = "e.g. 'layers.MaskedAveragePooling()' or 'nn.Linear(64, 64, bias=False)'"


class FeatureEncoderError(InputFileError):
    """A ``feature_encoder`` outside the allowed form; the message names where (file or expid), the feature
    and the value. An :class:`InputFileError`, so the entry points report it as one line."""


def _dotted(node: ast.AST) -> Optional[tuple]:
    if isinstance(node, ast.Name):
        return (node.id,)
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return head + (node.attr,) if head else None
    return None


def _literal(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
        return isinstance(node, ast.Constant) and type(node.value) in (int, float)
    return isinstance(node, ast.Constant) and (node.value is None or type(node.value) in (int, float, bool))


def encoder_problem(expression: object) -> Optional[str]:
    """Why ``expression`` is not an allowed encoder expression, or None when it is."""
    if not isinstance(expression, str):
        return f"a {type(expression).__name__}, not a string"
    try:
        call = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        return "not a Python expression"
    if not isinstance(call, ast.Call):
        return "not a call of a layer class"
    name = _dotted(call.func)
    module = MODULES.get(name[:-1]) if name else None
    layer = getattr(module, name[-1], None) if module and name else None
    if not (isinstance(layer, type) and issubclass(layer, nn.Module)):
        return "not a class of torch.nn (nn.X) or of fuxictr's layers (layers.X)"
    if not all(_literal(a) for a in call.args) or not all(k.arg and _literal(k.value) for k in call.keywords):
        return "arguments must be numbers, booleans or None"
    return None


def check_encoder(value: object, where: str, feature: str) -> None:
    """Raise :class:`FeatureEncoderError` unless ``value`` (string, list of strings, or empty) is allowed."""
    if not value:
        return
    for expression in value if isinstance(value, list) else [value]:
        problem = encoder_problem(expression)
        if problem:
            raise FeatureEncoderError(f"{where}: feature '{feature}': feature_encoder {expression!r} is not "
                                      f"allowed ({problem}); use a layer class with literal arguments, {EXAMPLES}")


def check_feature_map(feature_map_json: Mapping[str, Any], path: str) -> None:
    """Check every feature's ``feature_encoder`` of a ``feature_map.json`` content read from ``path``."""
    for entry in feature_map_json.get("features") or []:
        for feature, spec in dict(entry).items():
            if isinstance(spec, Mapping):
                check_encoder(spec.get("feature_encoder"), path, feature)


def check_feature_specs(feature_specs: Optional[Sequence[Mapping[str, Any]]], where: str) -> None:
    """Check an expid's ``feature_specs`` (FuxiCTR: a list of ``{name: str | [str], key: value}``); ``where``
    names the source, e.g. ``"expid DIN_kuaivideo: feature_specs"``."""
    for spec in feature_specs or []:
        names = spec.get("name")
        check_encoder(spec.get("feature_encoder"), where, names if isinstance(names, str) else str(names))
