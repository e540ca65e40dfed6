"""The command palette (ctrl+p): every action of the main screen, and "Go to NAME" for every name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.markup import escape

from workbench.tui.keys import ACTIONS


class WorkbenchCommands(Provider):
    """Commands of the screen the palette was opened over (the main screen)."""

    def _actions(self) -> list[tuple[str, str, Callable]]:
        screen = self.screen
        if not hasattr(screen, "ws"):
            return []
        # titles are markup to the palette: escape the keys ("[", "]")
        return [(escape(f"{a.title}  ({a.shown})"), a.help, partial(screen.run_action, a.action)) for a in ACTIONS]

    def _names(self) -> list[tuple[str, str, Callable]]:
        screen = self.screen
        ws = getattr(screen, "ws", None)
        if ws is None:
            return []
        return [(f"Go to {name}", "Select this name in the diff tab", partial(screen.go_to, name))
                for name in ws.all_names]

    async def discover(self) -> Hits:
        for title, help_text, command in self._actions():
            yield DiscoveryHit(title, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, command in self._actions() + self._names():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), command, help=help_text)
