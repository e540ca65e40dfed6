"""workbench: an LLM inference engine and a workbench to debug and profile it."""

__version__ = "0.1.0"
