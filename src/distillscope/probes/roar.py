"""DiffROAR: do a model's input gradients rank the discriminative pixels first? (paper 000)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

import torch
from torch import Tensor, nn

from distillscope.checks import check_int, check_positive, check_range
from distillscope.config_train import TrainConfig
from distillscope.data.base import DatasetInfo, TensorDataset, iter_batches
from distillscope.distill import build_loss
from distillscope.errors import ConfigError
from distillscope.explain.maps import explanation_maps
from distillscope.files import cache_root
from distillscope.functional.roar import removal_mask, remove_pixels
from distillscope.messages import say
from distillscope.probes.base import ModelParam, Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.sampling import evaluating, probe_batches
from distillscope.registry import register_probe
from distillscope.train.trainer import Trainer

__all__ = ["DEFAULT_FRACTIONS", "DiffROARProbe", "fresh_copy"]

#: Shares of pixels removed (ours, a CPU-sized subset of paper 000's 0.1, 0.2, ..., 0.9).
DEFAULT_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
#: Version of the retraining recipe, part of every cached cell's key.
CELL_VERSION = 1


def fresh_copy(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model``'s architecture with newly drawn weights: every submodule with a
    ``reset_parameters`` (convolutions, linear layers, batch norm with its statistics) reset
    under ``seed``; the global generator is left as it was."""
    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return fresh


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Tensor):
            h.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()


@register_probe("diffroar")
class DiffROARProbe(Probe):
    """DiffROAR of each model's saliency maps (Shah, Jain & Netrapalli 2021; paper 000, 5.2).

    For a share ``k`` of pixels, two datasets are made from the audited images by removing, per
    image, the top-``k`` and the bottom-``k`` pixels ranked by the model's saliency
    (``|d z_y / d x|``, the true class's logit, the maximum over channels; paper 000 uses
    Captum's ``Saliency``); a fresh network of the model's architecture is trained on each
    (the same :class:`~distillscope.train.trainer.Trainer`, cross-entropy) and tested on the
    equally masked held-out part:

        DiffROAR(k) = acc(bottom-k removed) - acc(top-k removed)

    A higher score means the saliency ranks the discriminative pixels first. The main value is
    the mean over ``fractions`` and ``seeds`` (paper 000, Table 4: over 9 fractions and 10
    initialisations).

    Ours, for a CPU: the retraining data are the probe's held-out samples (``max_samples``,
    split ``train_share`` / rest), not the full training set; ``fractions`` defaults to
    :data:`DEFAULT_FRACTIONS`; the retraining recipe (``epochs``, ``lr``, SGD with momentum 0.9
    and a cosine schedule) is ours (the paper: 60 epochs on CIFAR, 10 on MNIST). Removed pixels
    take the audited images' mean value per channel. Each retraining is a cell cached under
    ``$DISTILLSCOPE_CACHE/diffroar`` by the model's weights, the images, the fraction, the
    side, the seed and the recipe, so a re-run reuses it.

    Args:
        models: Models audited (default: every model of the run).
        fractions: Shares of pixels removed, each in ``(0, 1)``.
        seeds: Initialisation seeds of the retrained networks.
        epochs: Retraining epochs.
        lr: Retraining learning rate.
        train_share: Share of the audited images the networks are retrained on.
        batch_size, max_samples, seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>"`` (the mean), ``"<m>/<k>"`` (mean over seeds at share ``k``). Series:
    ``"x"`` (the shares), ``"<m>/diffroar"``, ``"<m>/top"`` and ``"<m>/bottom"`` (accuracies).
    """

    description = (
        "DiffROAR (Shah et al. 2021): for a share k of pixels, fresh networks are retrained on "
        "the images with the top-k and with the bottom-k pixels of the model's saliency map "
        "removed; the score is accuracy(bottom removed) - accuracy(top removed), higher when "
        "the saliency finds the discriminative pixels. Mean over the shares and retraining "
        "seeds. CPU-sized (ours): retrained on the audited held-out images, few epochs."
    )
    paper = "000"
    higher_is_better = True
    model_params = {"models": ModelParam(why="")}

    def __init__(
        self,
        models: Sequence[str] | None = None,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        seeds: Sequence[int] = (0,),
        epochs: int = 3,
        lr: float = 0.05,
        train_share: float = 0.8,
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        self.models = None if models is None else [str(m) for m in models]
        if not fractions:
            raise ConfigError("diffroar.fractions is empty; give shares in (0, 1), e.g. [0.1]")
        self.fractions = [
            check_range(f"diffroar.fractions[{i}]", f, 0.0, 1.0, low_open=True, high_open=True)
            for i, f in enumerate(fractions)
        ]
        if not seeds:
            raise ConfigError("diffroar.seeds is empty; give at least one seed, e.g. [0]")
        self.seeds = [check_int(f"diffroar.seeds[{i}]", s, minimum=0) for i, s in enumerate(seeds)]
        self.epochs = check_int("diffroar.epochs", epochs)
        self.lr = check_positive("diffroar.lr", lr)
        self.train_share = check_range("diffroar.train_share", train_share, 0.0, 1.0,
                                       low_open=True, high_open=True)  # fmt: skip

    def base_params(self) -> dict[str, Any]:
        return {
            **super().base_params(),
            "models": self.models,
            "fractions": self.fractions,
            "seeds": self.seeds,
            "epochs": self.epochs,
            "lr": self.lr,
            "train_share": self.train_share,
        }

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        names = self.models or list(models)
        params = self.base_params()
        if data.info.pixel_range is None or len(data.info.input_shape) != 3:
            params["skipped"] = {"diffroar": "it removes pixels of images; this data is not images"}
            return ProbeResult(self.name, {}, params=params)
        inputs, targets = self._samples(data)
        n_train = int(len(inputs) * self.train_share)
        if n_train < 2 or len(inputs) - n_train < 1:
            raise ConfigError(
                f"diffroar has {len(inputs)} images to split {self.train_share:g} / rest; "
                "raise max_samples"
            )
        cells = len(names) * len(self.fractions) * 2 * len(self.seeds)
        say(
            f"diffroar: {cells} retrainings ({len(names)} models x {len(self.fractions)} shares "
            f"x top/bottom x {len(self.seeds)} seeds) of {self.epochs} epochs on {n_train} "
            "images; cached cells are reused"
        )
        values: dict[str, float] = {}
        series: dict[str, list[float]] = {"x": list(self.fractions)}
        params.update({"n_train": n_train, "n_test": len(inputs) - n_train, "reused": 0})
        data_key = _digest(inputs, targets)
        fill = inputs.mean(dim=(0, 2, 3))  # (C,) the images' mean pixel
        with evaluating(models, names, data.device) as active:
            maps = {m: self._saliency(active[m], inputs, targets, data.device) for m in names}
        for m in names:
            model_key = _digest(*models[m].state_dict().values())
            tops, bottoms, diffs = [], [], []
            for k in self.fractions:
                acc = {}
                for top in (True, False):
                    mask = removal_mask(maps[m], k, top)
                    x = remove_pixels(inputs, mask, fill)
                    runs = [
                        self._cell(
                            models[m],
                            x,
                            targets,
                            n_train,
                            data.info,
                            seed,
                            data.device,
                            [data_key, model_key, k, top, seed],
                            params,
                        )  # fmt: skip
                        for seed in self.seeds
                    ]
                    acc[top] = runs
                tops.append(sum(acc[True]) / len(self.seeds))
                bottoms.append(sum(acc[False]) / len(self.seeds))
                diffs.append(bottoms[-1] - tops[-1])
                values[f"{m}/{k:g}"] = diffs[-1]
            values[m] = sum(diffs) / len(diffs)
            series[f"{m}/diffroar"] = diffs
            series[f"{m}/top"] = tops
            series[f"{m}/bottom"] = bottoms
        return ProbeResult(self.name, values, series=series, params=params)

    # ------------------------------------------------------------------ parts
    def _samples(self, data: ProbeData) -> tuple[Tensor, Tensor]:
        xs, ys = [], []
        for batch in probe_batches(self, data):
            xs.append(batch.inputs.detach().cpu())
            ys.append(batch.targets.detach().cpu())
        return torch.cat(xs), torch.cat(ys)

    def _saliency(self, model: nn.Module, x: Tensor, y: Tensor, device: str) -> Tensor:
        """``(N, H, W)`` saliency maps of the true classes."""
        maps = []
        for start in range(0, len(x), self.batch_size):
            xb = x[start : start + self.batch_size].to(device)
            yb = y[start : start + self.batch_size].to(device)
            maps.append(explanation_maps(model, xb, yb, "saliency").cpu())
        return torch.cat(maps)

    def _cell(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        n_train: int,
        info: DatasetInfo,
        seed: int,
        device: str,
        key_parts: list[Any],
        params: dict[str, Any],
    ) -> float:
        """Accuracy of a fresh network trained on ``x[:n_train]``, tested on the rest (cached)."""
        recipe = {"v": CELL_VERSION, "epochs": self.epochs, "lr": self.lr,
                  "batch": self.batch_size, "n_train": n_train}  # fmt: skip
        key = _digest(*key_parts[:2], [*key_parts[2:], recipe])
        path = cache_root() / "diffroar" / f"{key[:32]}.json"
        if path.is_file():
            try:
                accuracy = float(json.loads(path.read_text())["accuracy"])
            except (ValueError, KeyError, TypeError, OSError):
                pass  # a damaged cell is computed again
            else:
                params["reused"] += 1
                return accuracy
        net = fresh_copy(model, seed).to(device)
        cfg = TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr)
        train = TensorDataset(x[:n_train], y[:n_train], info)
        Trainer(net, build_loss({"ce": {}}), cfg, device=device, progress=False, seed=seed,
                name="diffroar").fit(train)  # fmt: skip
        net.eval()
        correct = 0
        with torch.no_grad():
            for batch in iter_batches(TensorDataset(x[n_train:], y[n_train:], info), 512):
                logits = net(batch.inputs.to(device))
                correct += int((logits.argmax(1).cpu() == batch.targets).sum())
        accuracy = correct / (len(x) - n_train)
        _write_cell(path, accuracy)
        return accuracy


def _write_cell(path: Path, accuracy: float) -> None:
    """Write a cell atomically (a concurrent reader sees the whole file or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"accuracy": accuracy}))
    tmp.replace(path)
