"""The screens of `wb tui`, one per file."""
