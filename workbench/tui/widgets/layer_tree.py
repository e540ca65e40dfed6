"""The layer tree: canonical names grouped per decoder layer, coloured pass/fail, with their share of time."""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from workbench.inspect.diff import DiffRow
from workbench.inspect.divergence import LayerDivergence
from workbench.names import layer_index
from workbench.tui.format import DIM_STYLE, FAIL_STYLE, JUMP_STYLE, PASS_STYLE, pct


class LayerTree(Tree[str]):
    """One leaf per canonical name (data: the name); one collapsible node per layer (data: None)."""

    class NameHighlighted(Message):
        """The cursor moved to a name."""

        def __init__(self, chosen: str) -> None:
            super().__init__()
            self.chosen = chosen

    class MarkRequested(Message):
        """Enter on a name that is not marked: the user wants it diffed."""

        def __init__(self, chosen: str) -> None:
            super().__init__()
            self.chosen = chosen

    def __init__(self, **kwargs) -> None:
        super().__init__("model", **kwargs)
        self.show_root = False
        self.guide_depth = 2
        self._leaves: dict[str, TreeNode[str]] = {}
        self._groups: dict[int, TreeNode[str]] = {}
        self._names: list[str] = []
        self._parts: dict[str, str] = {}  # name -> its label in the tree (the part after `layers.i.`)
        self._diffed: set[str] = set()

    def populate(self, names: list[str]) -> None:
        """Build the nodes for every name (marked or not), in layer order."""
        if names == self._names:
            return
        self._names = list(names)
        with self.prevent(Tree.NodeHighlighted):
            self.clear()
            self._leaves, self._groups, self._parts = {}, {}, {}
            for name in names:
                i = layer_index(name)
                if i is None:
                    self._parts[name] = name
                    self._leaves[name] = self.root.add_leaf(name, data=name)
                    continue
                if i not in self._groups:
                    self._groups[i] = self.root.add(f"layers.{i}", data=None, expand=True)
                self._parts[name] = name[len(f"layers.{i}."):] if name != f"layers.{i}" else name
                self._leaves[name] = self._groups[i].add_leaf(self._parts[name], data=name)

    def show(self, rows: dict[str, DiffRow], shares: dict[str, float], divergence: LayerDivergence | None) -> None:
        """Colour every name by its row (dim when not diffed) and add its share of time."""
        first = (divergence.first_failing or divergence.first_jump) if divergence else None
        self._diffed = set(rows)
        for name, node in self._leaves.items():
            node.set_label(self._label(self._parts[name], rows.get(name), shares.get(name), name == first))
        for i, group in self._groups.items():
            members = [rows[n] for n in self._leaves if layer_index(n) == i and n in rows]
            fails = sum(not r.passed for r in members)
            style = DIM_STYLE if not members else FAIL_STYLE if fails else PASS_STYLE
            text = Text(f"layers.{i}", style=style)
            if fails:
                text.append(f" {fails}✗", style=FAIL_STYLE)
            share = shares.get(f"group:layers.{i}")
            if share is not None:
                text.append(f" {pct(share)}", style=DIM_STYLE)
            group.set_label(text)

    @staticmethod
    def _label(part: str, row: DiffRow | None, share: float | None, first: bool) -> Text:
        if row is None:
            text = Text(f"· {part}", style=DIM_STYLE)
        elif row.passed:
            text = Text(f"✓ {part}", style=PASS_STYLE)
        else:
            text = Text(f"✗ {part}", style=FAIL_STYLE)
        if first:
            text.append(" ◀", style=JUMP_STYLE)
        if share is not None:
            text.append(f" {pct(share)}", style=DIM_STYLE)
        return text

    def select_name(self, name: str) -> None:
        """Move the cursor to a name (expanding its layer) without announcing it."""
        node = self._leaves.get(name)
        if node is None:
            return
        with self.prevent(Tree.NodeHighlighted):
            if node.parent is not None and not node.parent.is_expanded:
                node.parent.expand()
            self.move_cursor(node, animate=False)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        event.stop()
        if event.node.data is not None:
            self.post_message(self.NameHighlighted(event.node.data))

    def on_tree_node_selected(self, event: Tree.NodeSelected) -> None:
        event.stop()
        if event.node.data is not None and event.node.data not in self._diffed:
            self.post_message(self.MarkRequested(event.node.data))
