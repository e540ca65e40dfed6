"""`wb tui`: a Textual app over an engine or a saved session (diff, detail, timeline, tokens)."""
