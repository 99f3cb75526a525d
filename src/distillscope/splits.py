"""The data an experiment trains and probes on: the top-level splits and members' own data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import torch

from distillscope.config import DataConfig, ExperimentConfig
from distillscope.data import load_dataset
from distillscope.data.base import DatasetInfo, DistillDataset, TensorDataset
from distillscope.data.subsets import take_group_shares, take_subset
from distillscope.errors import ConfigError, DataError, clipped
from distillscope.messages import say

__all__ = ["Splits", "load_data", "load_splits", "match_normalisation"]


@dataclass
class Splits:
    """The top-level training and held-out splits, and members' own training data.

    Attributes:
        train: The top-level training split.
        test: The held-out split every model is validated and probed on.
        member_train: Member name -> its own training split (``teachers.X.data`` /
            ``students.X.data``); members that share a data override share the object.
    """

    train: DistillDataset
    test: DistillDataset
    member_train: dict[str, DistillDataset] = field(default_factory=dict)

    def train_of(self, name: str) -> DistillDataset:
        """The training split of member ``name``."""
        return self.member_train.get(name, self.train)

    def fingerprints(self) -> dict[str, str]:
        """Fingerprint of every split read (``train``, ``test``, ``<member>.train``): every
        byte loaded (:meth:`~distillscope.data.base.DistillDataset.fingerprint`)."""
        prints = {"train": self.train.fingerprint(), "test": self.test.fingerprint()}
        for name, data in sorted(self.member_train.items()):
            prints[f"{name}.train"] = data.fingerprint()
        return prints


def load_splits(cfg: ExperimentConfig, data_root: str | None = None) -> Splits:
    """The training and held-out splits the config asks for (none may be empty).

    Members with their own ``data`` get their own training split, checked against the
    held-out data (same classes and input shape) and put in its normalisation.

    Raises:
        ConfigError: A dataset parameter the dataset rejects, an empty split, or a member's
            data that does not fit the held-out data.
        DataError: The data cannot be found or read, or a split holds fewer than 2 classes.
    """
    specs = [("teachers", n, t.data) for n, t in cfg.teachers.items()]
    specs += [("students", n, s.data) for n, s in cfg.students.items()]
    own = [(f"{section}.{n}.data", n, d.over(cfg.data)) for section, n, d in specs if d is not None]
    return load_data(cfg.data, own, data_root)


def load_data(
    d: DataConfig, own: list[tuple[str, str, DataConfig]], data_root: str | None = None
) -> Splits:
    """The splits of the top-level data ``d`` and of members' own data (:func:`load_splits`).

    Args:
        d: The top-level data (its held-out split is every member's).
        own: ``(config key, member, its resolved data)`` of each member with its own data.
        data_root: Overrides every ``root``.
    """
    train = _load_split(d, "train", data_root, "data")
    test = _load_split(d, "test", data_root, "data")
    if test.shares_training_images:
        say(
            f"warning: {d.name} has no separate held-out images (no train/ and test/ or val/ "
            "folders): held-out accuracy and every probe are measured on the training images; "
            "split the folder to measure generalisation"
        )
    member_train: dict[str, DistillDataset] = {}
    loaded: dict[str, DistillDataset] = {}
    for where, name, dc in own:
        key = json.dumps(dc.model_dump(mode="json"), sort_keys=True)
        if key not in loaded:
            own_train = _load_split(dc, "train", data_root, where)
            loaded[key] = match_normalisation(own_train, test.info, where)
        member_train[name] = loaded[key]
    return Splits(train, test, member_train)


def _load_split(d: DataConfig, split: str, data_root: str | None, where: str) -> DistillDataset:
    """One split of ``d`` (``where`` names the config key in errors)."""
    is_train = split == "train"
    params = d.params if is_train else {k: v for k, v in d.params.items() if k != "augment"}
    per_class = d.train_per_class if is_train else d.test_per_class
    fraction = d.train_fraction if is_train else d.test_fraction
    try:
        data = load_dataset(d.name, split, root=data_root or d.root, seed=d.seed, **params)
    except (TypeError, ValueError) as exc:  # a value the dataset's own code rejects
        raise ConfigError(
            f"config key '{where}.params': {d.name} rejects {clipped(params, 200)}: "
            f"{' '.join(str(exc).split())[:200]}; fix the value"
        ) from None
    keys = (f"{where}.{split}_per_class", f"{where}.{split}_fraction")
    data = take_subset(data, per_class=per_class, fraction=fraction, seed=d.seed, keys=keys)
    if is_train and d.train_groups:
        try:
            data = take_group_shares(data, d.train_groups, d.seed)
        except ConfigError as exc:
            raise ConfigError(f"config key '{where}.train_groups': {exc}") from None
    if len(data) == 0:
        raise ConfigError(
            f"the {split} split of {d.name} is empty ({where}: "
            f"{d.model_dump(exclude={'params'})}); check the data folder and the subset keys"
        )
    present = torch.unique(data.targets_tensor()).tolist()
    if len(present) < 2:
        names = data.info.class_names
        only = names[present[0]] if 0 <= present[0] < len(names) else present[0]
        subsets = f"{split}_per_class, {split}_fraction" + (", train_groups" if is_train else "")
        raise DataError(
            f"the {split} split of {d.name} ({where}) holds one class only ({clipped(only)}), so "
            f"every metric would be 1.0; use data with at least 2 classes (check the class "
            f"folders and {where}'s {subsets})"
        )
    return data


def match_normalisation(data: DistillDataset, target: DatasetInfo, where: str) -> DistillDataset:
    """``data`` checked against the held-out data's ``target`` info, in its normalisation.

    The classes must match in number and the inputs in shape, else the models could not be
    trained on one and probed on the other. In-memory images normalised with other constants
    are mapped back to pixels and normalised as the held-out data is, so every model sees one
    pixel-to-input mapping (a teacher trained on Fashion-MNIST and distilled on digits sees
    digit pixels as it would see Fashion-MNIST pixels).

    Raises:
        ConfigError: Another number of classes or input shape, or other constants on data
            that is not held in memory.
    """
    info = data.info
    if info.num_classes != target.num_classes or tuple(info.input_shape) != tuple(
        target.input_shape
    ):
        raise ConfigError(
            f"config key '{where}': {info.name} has {info.num_classes} classes and inputs "
            f"{tuple(info.input_shape)}, the held-out {target.name} {target.num_classes} and "
            f"{tuple(target.input_shape)}; use data of the same classes and input shape "
            "(e.g. a dataset's size parameter)"
        )
    if info.mean == target.mean and info.std == target.std:
        return data
    constants = (info.mean, info.std, target.mean, target.std)
    if not isinstance(data, TensorDataset) or None in constants:
        raise ConfigError(
            f"config key '{where}': {info.name} is normalised with mean {info.mean} / std "
            f"{info.std}, the held-out {target.name} with {target.mean} / {target.std}; "
            "use an in-memory dataset or one with the same normalisation"
        )
    shape = (1, -1, *([1] * (len(info.input_shape) - 1)))
    mean, std = torch.tensor(info.mean).view(shape), torch.tensor(info.std).view(shape)
    new_mean = torch.tensor(target.mean).view(shape)
    new_std = torch.tensor(target.std).view(shape)
    pixels = data.inputs * std + mean  # (N, C, H, W)
    renorm = replace(info, mean=target.mean, std=target.std)
    transform = data.transform
    if transform is not None:
        say(f"{where}: {info.name} is re-normalised as {target.name}; its augmentation is kept")
    inputs = (pixels - new_mean) / new_std
    return TensorDataset(
        inputs,
        data.targets,
        renorm,
        transform,
        data.masks,
        data.groups,
        data.heatmaps,
        data.token_labels,
    )
