"""A conversion plan: which source tensors become which Llama tensors, and how.

Layout modules (baichuan, yi, llama, gptq) build a plan from the source config and tensor
names; the converter then executes it rule by rule. Every rule maps a few source tensors to a
few output tensors, so memory stays bounded by one rule's tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from adapters.checkpoint.errors import ConversionError
from adapters.checkpoint.io import SourceCheckpoint, TensorInfo

# (inputs) -> outputs, or (inputs, output dtype) -> outputs for rules with takes_dtype.
Transform = Callable[..., list[torch.Tensor]]


def identity(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return tensors


@dataclass
class Rule:
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    # Output dtypes before the final cast (the cast applies to floating outputs only).
    dtypes: tuple[torch.dtype, ...]
    transform: Transform = identity
    # Transforms that compute in float32 get the output dtype as a second argument, so they
    # can round chunk by chunk instead of holding a float32 copy of a whole large tensor.
    takes_dtype: bool = False
    # The transform returns contiguous views of its single input (identity, row blocks): such
    # outputs are byte ranges of the source file, copied file to file by the kernel.
    views: bool = False


@dataclass
class Plan:
    layout: str
    llama_config: dict
    rules: list[Rule]
    # Human-readable list of every transformation applied (goes into conversion.json).
    transformations: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    quantization: dict | None = None


def copy_rule(info: TensorInfo, out_name: str | None = None) -> Rule:
    return Rule((info.name,), (out_name or info.name,), (info.shape,), (info.dtype,),
                views=True)


def check_consumed(source: SourceCheckpoint, rules: list[Rule], dropped: list[str],
                   layout: str) -> None:
    """Every source tensor must be used or deliberately dropped: a stray one means a layout
    we do not understand, and silently losing weights would give a wrong model."""
    used = {name for rule in rules for name in rule.inputs} | set(dropped)
    unknown = [name for name in source.tensors if name not in used]
    if unknown:
        first = source.tensors[unknown[0]]
        raise ConversionError(
            f"{first.file}: tensor {first.name!r} (and {len(unknown) - 1} more) is not part of "
            f"the {layout} layout this converter knows; refusing to drop weights silently."
        )


def check_shapes(rules: list[Rule], expected: dict[str, tuple[int, ...]],
                 source: SourceCheckpoint) -> None:
    """Compare every planned output with the shape the Llama config implies."""
    produced = {}
    for rule in rules:
        for name, shape in zip(rule.outputs, rule.shapes, strict=True):
            produced[name] = (shape, rule)
    for name, want in expected.items():
        if name not in produced:
            raise ConversionError(
                f"{source.directory}: the checkpoint has no tensor for {name!r} "
                "(missing weight file or tensor?)."
            )
        got, rule = produced[name]
        if tuple(got) != tuple(want):
            info = source.tensors[rule.inputs[0]]
            raise ConversionError(
                f"{info.file}: tensor {info.name!r} gives {name!r} of shape {list(got)}, but "
                f"config.json implies {list(want)}."
            )
