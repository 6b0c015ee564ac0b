"""One registry for every kind of name; plugins register exactly like built-ins."""

from __future__ import annotations

import importlib.metadata
import textwrap

import pytest

from alignkit import registry
from alignkit.errors import AlignkitError, UnknownNameError
from alignkit.registry import LOSSES, Registry, load_plugin, load_plugins


def test_duplicate_name_is_refused_with_the_current_names():
    reg = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(AlignkitError,
                       match="widget 'a' is already registered by builtin.*registered widgets: a"):
        reg.register("a")(lambda: 2)


def test_unknown_name_lists_close_matches_and_known_names():
    reg = Registry("loss")
    for name in ("sigmoid", "ipo", "hinge"):
        reg.register(name)(object())
    with pytest.raises(UnknownNameError) as info:
        reg.get("sigmod")
    assert str(info.value) == "unknown loss 'sigmod'; did you mean 'sigmoid'? (known: hinge, ipo, sigmoid)"
    assert isinstance(info.value, KeyError)


def test_plugin_file_registers_once_and_records_its_source(tmp_path):
    plugin = tmp_path / "my_loss.py"
    plugin.write_text(textwrap.dedent('''
        from alignkit import register_loss
        from alignkit.losses import LossOutput, log_ratios

        @register_loss("test_plugin_margin")
        def margin_loss(logps, *, beta, margin: float = 1.0):
            """A user's loss."""
            c, r = log_ratios(logps)
            return LossOutput((margin - beta * (c - r)).clamp(min=0), c.detach(), r.detach())
    '''))
    load_plugin(str(plugin))
    load_plugin(str(plugin))  # loading twice is harmless
    entry = LOSSES.entry("test_plugin_margin")
    assert entry.source == f"plugin {plugin.resolve()}"
    assert entry.doc == "A user's loss."


def test_broken_plugin_fails_with_one_line_naming_it(tmp_path):
    plugin = tmp_path / "broken.py"
    plugin.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(AlignkitError, match=r"plugin .*broken.py failed to load: RuntimeError: boom"):
        load_plugin(str(plugin))
    with pytest.raises(AlignkitError, match="plugin module not found: no_such_module_xyz"):
        load_plugin("no_such_module_xyz")


def test_entry_point_plugins_are_discovered(monkeypatch, tmp_path):
    module = tmp_path / "ep_plugin_mod.py"
    module.write_text("from alignkit import register_reward\n"
                      "@register_reward('ep-test-reward')\n"
                      "def build(ws):\n    'From an entry point.'\n    return lambda p, c: [0.0] * len(p)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = importlib.metadata.EntryPoint("ep", "ep_plugin_mod", registry.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [fake] if kw.get("group") == registry.ENTRY_POINT_GROUP else real(**kw))
    load_plugins(scan_default_dirs=False)
    assert registry.REWARDS.entry("ep-test-reward").source == "plugin entry point ep"


def test_repo_plugins_folder_is_scanned():
    load_plugins()
    assert LOSSES.entry("dpop").source.endswith("plugins/dpo_positive.py")
    assert LOSSES.entry("sppo_hard").source == "builtin"
    described = registry.describe()
    assert {"methods", "losses", "rewards", "datasets", "models"} <= set(described)
    assert "dpo" in [e["name"] for e in described["methods"]]
