"""Errors the user caused: the CLI prints them as one line and exits non-zero."""


class WorkbenchError(Exception):
    """A problem with the user's input (file, argument, model), reported in one line."""

    exit_code = 2


class ConversionError(WorkbenchError):
    """A checkpoint that cannot be converted: missing keys, wrong shapes, bad config."""


class EngineFileError(WorkbenchError):
    """An engine directory that is missing, corrupt, or of another format version."""


class PatternError(WorkbenchError):
    """A layer pattern that matches no name."""
