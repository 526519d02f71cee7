"""How reports name and draw each training method: labels in tables and headlines, plot styles.

Keyed by the method's registered name (`diffmem.diffusion.methods.METHOD_CLASSES`); a method registered
without an entry here is reported under its own name, drawn in gray crosses, so a new method reports
with no change to this file. Plain data: importing it loads neither torch nor matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["MethodLook", "METHOD_LOOKS", "look", "title", "short", "style", "param_label", "method_label"]


@dataclass(frozen=True)
class MethodLook:
    """A method as reports show it."""

    title: str  # label in tables
    short: str  # label in headlines and picture captions
    style: tuple[str, str] = ("gray", "x")  # (matplotlib colour, marker) in plots


METHOD_LOOKS: dict[str, MethodLook] = {
    "edm": MethodLook("baseline (EDM)", "baseline", ("black", "*")),
    "ambient": MethodLook("Algorithm 1 (ambient)", "Algorithm 1", ("tab:red", "o")),
    "masking": MethodLook("masking", "masking", ("tab:blue", "s")),
    "noisy-only": MethodLook("noise only", "noise only", ("tab:green", "^")),
}

# a swept setting as labels name it (`p=0.2`); any other setting by its own name (`blur_sigma=1`)
PARAM_LABELS: dict[str, str] = {"mask_p": "p"}


def look(method: str | None) -> MethodLook:
    """The entry of `method`, or its own name in gray crosses for a method this table does not list."""
    name = str(method)
    return METHOD_LOOKS.get(name) or MethodLook(name, name)


def title(method: str | None) -> str:
    """Label in tables, e.g. `Algorithm 1 (ambient)`."""
    return look(method).title


def short(method: str | None) -> str:
    """Label in headlines and captions, e.g. `Algorithm 1`."""
    return look(method).short


def style(method: str | None) -> tuple[str, str]:
    """(matplotlib colour, marker) of the method's points."""
    return look(method).style


def param_label(field: str) -> str:
    """The name of a swept setting in labels: `sigma_n`, `p` (mask_p)."""
    return PARAM_LABELS.get(field, field)


def method_label(method: str, settings: Mapping[str, Any], param_field: str | None = None,
                 weighting: str = "") -> str:
    """Table label with the swept setting and a weighting other than plain, e.g.
    `Algorithm 1 (ambient), sigma_n 0.5, capped 4` (`weighting`: the weighting's own label, or "")."""
    text = title(method)
    if param_field is not None and settings.get(param_field) is not None:
        text += f", {param_label(param_field)} {settings[param_field]:g}"
    return text + (f", {weighting}" if weighting else "")
