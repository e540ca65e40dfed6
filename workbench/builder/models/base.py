"""What every model family declares: its config, its module tree, and how its names map to HF."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HFCapture:
    """How to read one canonical name off the HF model with forward hooks.

    `how` is "output" (the module's output, first element of a tuple), "input" (the
    module's first positional input) or "concat_outputs" (the outputs of several
    modules joined on the last dim, as for fused q,k,v).
    """

    how: str
    modules: tuple[str, ...]

    def to_dict(self) -> dict:
        """JSON form."""
        return {"how": self.how, "modules": list(self.modules)}
