"""The runtime (alignkit.runtime): made by the entry points and passed on, reused for equal settings, with an
fp32 view for shared artifacts; device names checked before anything runs."""

from __future__ import annotations

import pytest
import torch

from alignkit.errors import AlignkitError
from alignkit.runtime import Runtime, device_problem, resolve_device, start


def test_start_reuses_a_runtime_with_the_same_settings_only():
    first = start("cpu", "fp32")
    assert start("cpu", "fp32", reuse=first) is first
    other = start("cpu", "bf16", reuse=first)
    assert other is not first and (other.precision, first.precision) == ("bf16", "fp32")


def test_fp32_view_trains_in_fp32_and_leaves_the_run_alone():
    runtime = Runtime("cpu", "fp16")
    view = runtime.fp32()
    assert (view.precision, view.scaler) == ("fp32", None)
    assert runtime.precision == "fp16" and runtime.scaler is not None  # not a switch
    assert view.device == runtime.device and view.accelerator is runtime.accelerator
    with view.autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_device_names_are_checked_in_one_line():
    assert device_problem("cpu") is None and resolve_device("cpu") == torch.device("cpu")
    assert "unknown device 'tpu'" in device_problem("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(AlignkitError, match="device: 'cuda:1' requested but CUDA is not available"):
            resolve_device("cuda:1")
