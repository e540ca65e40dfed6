"""The widgets of `wb tui`, one area per file."""
