"""Object masks and ground-truth heat maps ride along with an in-memory dataset (probes)."""

from __future__ import annotations

import pytest
import torch

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.train.teacher_cache import unaugmented

INFO = DatasetInfo("toy", 2, (1, 4, 4), ["a", "b"])


def _data(masks=None, transform=None):
    inputs = torch.arange(3 * 16, dtype=torch.float32).reshape(3, 1, 4, 4)
    return TensorDataset(inputs, torch.tensor([0, 1, 0]), INFO, transform, masks)


def test_masks_follow_subsets_and_unaugmented_copies():
    masks = torch.zeros(3, 4, 4)
    masks[1, :2] = 1
    masks[2, :, :1] = 1
    data = _data(masks, transform=lambda x: x + 1)
    sub = data.subset([2, 1])
    assert sub.masks.dtype == torch.bool
    assert torch.equal(sub.masks[0], masks[2].bool()) and torch.equal(sub.masks[1], masks[1].bool())
    plain = unaugmented(data)
    assert plain.transform is None and torch.equal(plain.masks, data.masks)


def test_no_masks_by_default():
    assert _data().masks is None and _data().subset([0]).masks is None


@pytest.mark.parametrize("shape", [(3, 4), (2, 4, 4), (3, 4, 5), (3, 1, 4, 4)])
def test_wrong_mask_shapes_are_refused(shape):
    with pytest.raises(ValueError, match="masks must be"):
        _data(torch.zeros(shape))


def test_groups_follow_subsets_and_bad_shapes_are_refused():
    inputs = torch.zeros(3, 1, 4, 4)
    data = TensorDataset(inputs, torch.tensor([0, 1, 0]), INFO, groups=torch.tensor([2, 0, 1]))
    assert data.subset([2, 0]).groups.tolist() == [1, 2]
    assert unaugmented(data).groups.tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="groups must be"):
        TensorDataset(inputs, torch.tensor([0, 1, 0]), INFO, groups=torch.tensor([1, 2]))


def test_heatmaps_follow_subsets_unaugmented_copies_and_the_fingerprint():
    heat = torch.tensor([0, 1, 2], dtype=torch.uint8).view(3, 1, 1).expand(3, 4, 4).clone()
    inputs = torch.zeros(3, 1, 4, 4)
    data = TensorDataset(inputs, torch.tensor([0, 1, 0]), INFO, lambda x: x + 1, heatmaps=heat)
    sub = data.subset([2, 0])
    assert sub.heatmaps.dtype == torch.uint8 and sub.heatmaps[:, 0, 0].tolist() == [2, 0]
    assert torch.equal(unaugmented(data).heatmaps, heat)
    plain = TensorDataset(inputs, torch.tensor([0, 1, 0]), INFO)
    assert plain.heatmaps is None and plain.subset([0]).heatmaps is None
    other = TensorDataset(inputs, torch.tensor([0, 1, 0]), INFO, heatmaps=heat.flip(0))
    assert len({plain.fingerprint(), data.fingerprint(), other.fingerprint()}) == 3


@pytest.mark.parametrize(
    "heat", [torch.zeros(3, 4, dtype=torch.long), torch.zeros(2, 4, 4).long(), torch.zeros(3, 4, 4)]
)
def test_wrong_heatmaps_are_refused(heat):
    with pytest.raises(ValueError, match="heatmaps must be"):
        TensorDataset(torch.zeros(3, 1, 4, 4), torch.tensor([0, 1, 0]), INFO, heatmaps=heat)


def test_a_vocabulary_is_part_of_the_fingerprint_and_its_absence_changes_nothing() -> None:
    from dataclasses import replace

    import torch

    from distillscope.data.base import DatasetInfo, TensorDataset

    info = DatasetInfo("t", 2, (3,), ["a", "b"], pixel_range=None)
    ids, y = torch.tensor([[2, 3, 0]]), torch.tensor([1])
    plain = TensorDataset(ids, y, info).fingerprint()
    assert plain == "de684a3cdc1c401131684515ab923387"  # as before the field existed
    text = TensorDataset(ids, y, replace(info, vocab=("[PAD]", "[UNK]", "a", "b"))).fingerprint()
    other = TensorDataset(ids, y, replace(info, vocab=("[PAD]", "[UNK]", "b", "a"))).fingerprint()
    assert len({plain, text, other}) == 3
    assert replace(info, vocab=("[PAD]",)).is_text and not info.is_text


TEXT = DatasetInfo("t", 4, (4,), ["a", "b", "c", "d"], pixel_range=None, vocab=("[PAD]", "[UNK]"))
IDS = torch.tensor([[2, 3, 0, 0], [4, 1, 5, 0], [2, 2, 2, 2]])


def test_token_labels_follow_subsets_unaugmented_copies_and_the_fingerprint():
    labels = torch.tensor([[1, 0, 0, 0], [-1, 0, 1, 0], [0, 0, 0, -1]], dtype=torch.int32)
    y = torch.tensor([3, 0, 1])
    data = TensorDataset(IDS, y, TEXT, lambda x: x, token_labels=labels)
    assert data.token_labels.dtype == torch.int64 and torch.equal(data.token_labels, labels.long())
    sub = data.subset([2, 1])
    assert sub.token_labels.tolist() == [[0, 0, 0, -1], [-1, 0, 1, 0]]
    assert torch.equal(unaugmented(data).token_labels, data.token_labels)
    plain = TensorDataset(IDS, y, TEXT)
    assert plain.token_labels is None and plain.subset([0]).token_labels is None
    other = TensorDataset(IDS, y, TEXT, token_labels=labels.flip(0))
    same = TensorDataset(IDS, y, TEXT, token_labels=labels.long())
    prints = {plain.fingerprint(), data.fingerprint(), other.fingerprint()}
    assert len(prints) == 3 and same.fingerprint() == data.fingerprint()


def test_token_labels_leave_the_fingerprint_of_data_without_them_as_it_was():
    info = DatasetInfo("t", 2, (3,), ["a", "b"], pixel_range=None)
    plain = TensorDataset(torch.tensor([[2, 3, 0]]), torch.tensor([1]), info, token_labels=None)
    assert plain.fingerprint() == "de684a3cdc1c401131684515ab923387"  # as before the field


@pytest.mark.parametrize(
    "labels",
    [
        torch.zeros(3, 5, dtype=torch.long),  # another length
        torch.zeros(2, 4, dtype=torch.long),  # another count
        torch.zeros(3, 4, 1, dtype=torch.long),  # not (N, L)
        torch.zeros(3, 4),  # floats
        torch.zeros(3, 4, dtype=torch.bool),
    ],
)
def test_wrong_token_label_shapes_and_types_are_refused(labels):
    with pytest.raises(ValueError, match="token_labels must be"):
        TensorDataset(IDS, torch.tensor([0, 1, 0]), TEXT, token_labels=labels)


@pytest.mark.parametrize("value", [2, -2, 5])
def test_token_labels_outside_the_three_values_are_refused(value):
    labels = torch.zeros(3, 4, dtype=torch.long)
    labels[1, 2] = value
    with pytest.raises(ValueError, match=f"-1, 0 and 1 only, got {value}"):
        TensorDataset(IDS, torch.tensor([0, 1, 0]), TEXT, token_labels=labels)


def test_token_labels_need_token_ids_not_images():
    with pytest.raises(ValueError, match="token_labels must be"):
        TensorDataset(torch.zeros(3, 1, 4), torch.tensor([0, 1, 0]), INFO,
                      token_labels=torch.zeros(3, 4, dtype=torch.long))  # fmt: skip
