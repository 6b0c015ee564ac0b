"""The tags in the shared stages' cache keys are the ones ``runfolder.FORMATS`` lists, each with why."""

from __future__ import annotations

import inspect
import re

import alignkit.stages.keys as keys
from alignkit.runformat import CHANGES


def test_every_tag_in_a_stage_key_is_in_the_format_table():
    source, listed = inspect.getsource(keys), {c.name for c in CHANGES if c.kind == "tag"}
    assert {t for t in listed if f'"{t}"' not in source} == set()  # listed, but no key carries it
    assert set(re.findall(r'"([a-z-]+-\d+)"', source)) - listed == set()  # a versioned tag not listed
    assert all(c.reason for c in CHANGES)
