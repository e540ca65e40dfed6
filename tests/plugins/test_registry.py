"""Every registered plugin loads, with a reference beside it."""

from __future__ import annotations

import pytest

from workbench.plugins import PLUGINS


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_plugin_and_reference_load(name):
    kernel, reference = PLUGINS[name].load()
    assert callable(kernel) and callable(reference) and kernel is not reference
