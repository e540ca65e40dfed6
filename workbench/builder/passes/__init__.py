"""Build passes: pure Network -> Network functions."""

from workbench.builder.passes.dce import eliminate_dead_code
from workbench.builder.passes.mark_outputs import mark_outputs

__all__ = ["eliminate_dead_code", "mark_outputs"]
