"""``train.compile``: the trained networks' training forward passes through ``torch.compile``.

``torch.compile`` (Ansel et al. 2024, "PyTorch 2: Faster Machine Learning Through Dynamic
Python Bytecode Transformation and Graph Compilation", ASPLOS) captures a module's forward as
graphs (TorchDynamo) and compiles them (TorchInductor: C++/OpenMP kernels on the CPU, Triton
kernels on CUDA); the backward is compiled with it (AOTAutograd). The first steps pay the
compilation (tens of seconds on a small CPU); a new input shape (a short last batch)
compiles once more.

What is compiled, and what is not:

- Each trained network's forward as the :class:`~distillscope.train.step.Step` runs it (its
  DDP wrapper in a data-parallel run, PyTorch's recommended order). The network object itself
  is never replaced, so checkpoints and model files hold its plain keys (never
  ``_orig_mod.``-prefixed ones) and a resumed run compiles afresh.
- Not the frozen teacher (its cache is built once; a live teacher's no-grad pass would be a
  separate option), not validation, the probes or a term's training stages: they run eagerly.

Compiled kernels fuse operations, so results agree with eager mode to float rounding, not bit
for bit (a test bounds a small network's weights after training). Random operations (dropout)
draw from Inductor's own generator, seeded from torch's, so they differ from eager draws but
repeat from run to run and on resume.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import torch
from torch import nn

from distillscope.errors import ConfigError

__all__ = ["COMPILE_MODES", "check_compile", "compile_mode", "compiled"]

#: ``torch.compile``'s modes, as ``train.compile`` names them.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
#: C++ compilers Inductor looks for on the CPU (besides ``$CXX``).
CPU_COMPILERS = ("g++", "clang++")


def compile_mode(setting: bool | str) -> str | None:
    """The mode ``train.compile`` asks for: ``None`` when it is off, else the mode's name
    (``true`` is ``default``).

    Example:
        >>> compile_mode(False), compile_mode(True), compile_mode("max-autotune")
        (None, 'default', 'max-autotune')
    """
    if setting is False:
        return None
    if setting is True:
        return "default"
    if setting not in COMPILE_MODES:
        raise ConfigError(
            f"train.compile={setting!r} is invalid; use false, true or one of "
            f"{', '.join(COMPILE_MODES)}"
        )
    return str(setting)


def check_compile(setting: bool | str, device: torch.device) -> None:
    """A one-line ConfigError, before anything trains, when ``torch.compile`` cannot build
    kernels for ``device``: a C++ compiler on the CPU, Triton on CUDA; other devices (MPS)
    are refused."""
    mode = compile_mode(setting)
    if mode is None:
        return
    if device.type == "cpu":
        if not (os.environ.get("CXX") or any(shutil.which(c) for c in CPU_COMPILERS)):
            raise ConfigError(
                f"train.compile={setting} on the CPU needs a C++ compiler (g++ or clang++, or "
                "$CXX) for Inductor's kernels; install one or set train.compile: false"
            )
    elif device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            raise ConfigError(
                f"train.compile={setting} on CUDA needs Triton (Inductor's GPU kernels); "
                "install the triton package matching torch or set train.compile: false"
            )
    else:
        raise ConfigError(
            f"train.compile={setting} is supported on cpu and cuda, not {device.type}; set "
            "train.compile: false"
        )


def compiled(module: nn.Module, setting: bool | str) -> nn.Module:
    """``module`` wrapped by ``torch.compile`` in the mode ``setting`` names (``module``
    itself when it is off); the wrapper shares ``module``'s parameters.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> compiled(net, False) is net
        True
    """
    mode = compile_mode(setting)
    if mode is None:
        return module
    return torch.compile(module, mode=mode)  # type: ignore[return-value]
