"""Feature taps: named module paths -> activations, recorded by forward hooks.

Feature-based distillation (FitNets' hint layers, Romero et al. 2015; attention transfer,
Zagoruyko & Komodakis 2017) and representation probes (CKA, Kornblith et al. 2019) read
intermediate activations. Losses never reach into a model: the trainer attaches a
:class:`FeatureTap` to the module paths a loss asks for and hands the recorded tensors over in
:class:`~distillscope.contracts.Outputs`. A wrong path fails when the tap is built, naming the
path and the valid ones, not deep inside a loss.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from distillscope.errors import ModelError

#: How many module paths an error message lists before it says "+N more".
MAX_LISTED_PATHS = 12


def check_module_paths(model: nn.Module, paths: Iterable[str]) -> dict[str, nn.Module]:
    """The submodules of ``model`` at ``paths``, in the given order.

    Args:
        model: The network.
        paths: Dotted module paths as in ``model.named_modules()``; the root itself ("") is not
            a valid path.

    Returns:
        Path -> submodule.

    Raises:
        ModelError: A path names no submodule; the message lists close matches first, then the
            shallowest paths.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU())
        >>> list(check_module_paths(net, ["1"]))
        ['1']
    """
    modules = dict(model.named_modules())
    modules.pop("", None)
    found = {}
    for path in paths:
        if path not in modules:
            raise ModelError(
                f"no module {path!r} in {type(model).__name__}; valid paths: "
                f"{_listed_paths(path, list(modules))}; pass one of them"
            )
        found[path] = modules[path]
    return found


def _listed_paths(wrong: str, valid: list[str]) -> str:
    """Close matches of ``wrong`` first, then the shallowest paths, truncated."""
    if not valid:
        return "(none: the model has no submodules)"
    close = difflib.get_close_matches(wrong, valid, n=5, cutoff=0.6)
    rest = sorted((p for p in valid if p not in close), key=lambda p: p.count("."))
    shown = (close + rest)[:MAX_LISTED_PATHS]
    more = len(valid) - len(shown)
    return ", ".join(shown) + (f" (+{more} more in model.named_modules())" if more else "")


class FeatureTap:
    """Records the outputs of named submodules on every forward pass of ``model``.

    A forward hook on each tapped module stores its output; a pre-hook on ``model`` clears
    the previous pass's features, so :attr:`features` always belongs to the last forward.
    Features keep their autograd graph (a loss can backpropagate through them) unless
    ``detach`` is set. A module run several times in one pass keeps its last output; an
    in-place operation after the tapped module (``ReLU(inplace=True)``) also changes the
    recorded tensor, as it changes the tensor the model itself uses.

    Args:
        model: The network to tap.
        paths: Module paths as in ``model.named_modules()``, e.g. ``"layer3"`` or
            ``"layer2.0.conv1"``; duplicates are tapped once.
        detach: Store features cut from the autograd graph (probes, caches).

    Raises:
        ModelError: A path names no submodule of ``model`` (raised here, when attaching).

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))
        >>> with FeatureTap(net, ["1"]) as tap:
        ...     logits = net(torch.zeros(5, 2))
        ...     tap.features["1"].shape
        torch.Size([5, 4])
    """

    def __init__(self, model: nn.Module, paths: Sequence[str], *, detach: bool = False) -> None:
        if isinstance(paths, str):
            raise ModelError(
                f"FeatureTap paths must be a list of module paths, got the string {paths!r}; "
                f"pass [{paths!r}]"
            )
        self.model = model
        self.paths: tuple[str, ...] = tuple(dict.fromkeys(paths))
        self.detach = detach
        self._features: dict[str, Tensor] = {}
        modules = check_module_paths(model, self.paths)
        self._handles: list[RemovableHandle] = [model.register_forward_pre_hook(self._on_root)]
        self._handles += [m.register_forward_hook(self._recorder(p)) for p, m in modules.items()]

    @property
    def features(self) -> dict[str, Tensor]:
        """Path -> output of that module in the last forward pass, in the order of ``paths``."""
        return {p: self._features[p] for p in self.paths if p in self._features}

    def clear(self) -> None:
        """Forget the recorded features (done automatically at each forward of ``model``)."""
        self._features.clear()

    def remove(self) -> None:
        """Detach every hook from the model and forget the features; safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def _on_root(self, module: nn.Module, args: Any) -> None:
        self._features.clear()

    def _recorder(self, path: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                raise ModelError(
                    f"tapped module {path!r} ({type(module).__name__}) returned "
                    f"{type(output).__name__}, not a tensor; tap a module that returns a tensor"
                )
            self._features[path] = output.detach() if self.detach else output

        return hook
