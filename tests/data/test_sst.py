"""sst: the Stanford Sentiment Treebank's PTB trees, on a miniature written here."""

from __future__ import annotations

import pytest
import torch

from distillscope.contracts import PAD_ID, UNK_ID
from distillscope.data import dataset_names, load_dataset
from distillscope.data.sst import parse_tree, sst
from distillscope.data.vision import DATA_ENV
from distillscope.errors import ConfigError, DataError

#: Our own trees in SST's format; the comments give what each must become.
TRAIN = [
    "(4 (3 (2 A) (4 brilliant)) (3 (2 film) (2 .)))",  # class 3; brilliant +
    "(2 (2 It) (2 (2 is) (2 there)))",  # neutral root: left out
    "(0 (1 (1 Dull) (2 and)) (0 (0 awful) (2 (2 -LRB-) (2 (2 really) (2 -RRB-)))))",  # 0
    "(1 (2 Not) (3 good))",  # class 1; good + in a negative sentence
    "(3 (3 (2 well-made) (3 fun)) (2 !))",  # class 2; well-made splits in three tokens
]
TEST = ["(4 (4 brilliant) (3 zebra))", "(2 (2 meh) (2 .))", "(1 (1 dull) (2 film))"]
DEV = ["(0 (0 awful) (2 film))"]


def _write(folder, train=TRAIN, test=TEST, dev=DEV):
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (("train.txt", train), ("test.txt", test), ("dev.txt", dev)):
        if lines is not None:
            (folder / name).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return folder


def _words(ds) -> list[list[str]]:
    return [[ds.info.vocab[i] for i in row if i != PAD_ID] for row in ds.inputs.tolist()]


def test_sentences_take_the_four_classes_and_neutral_ones_are_left_out(tmp_path):
    ds = sst("train", root=str(_write(tmp_path)), min_count=1)
    assert ds.targets.tolist() == [3, 0, 1, 2]  # roots 4, 0, 1, 3; the root-2 tree dropped
    assert _words(ds) == [
        ["a", "brilliant", "film", "."],
        ["dull", "and", "awful", "(", "really", ")"],  # -LRB- / -RRB- read back
        ["not", "good"],
        ["well", "-", "made", "fun", "!"],
    ]
    assert "there" not in ds.info.vocab  # the neutral sentence is not in the vocabulary


def test_word_labels_come_from_the_leaves(tmp_path):
    ds = sst("train", root=str(_write(tmp_path)), min_count=1, max_len=7)
    assert ds.token_labels.tolist() == [
        [0, 1, 0, 0, 0, 0, 0],  # brilliant (4)
        [-1, 0, -1, 0, 0, 0, 0],  # Dull (1), awful (0)
        [0, 1, 0, 0, 0, 0, 0],  # good (3): the word's label, not the sentence's
        [0, 0, 0, 1, 0, 0, 0],  # well-made (2) in three neutral pieces, fun (3)
    ]


def test_the_held_out_split_uses_the_training_vocabulary(tmp_path):
    root = str(_write(tmp_path))
    train = sst("train", root=root, min_count=1)
    test = sst("test", root=root, min_count=1)
    assert test.info.vocab == train.info.vocab and "zebra" not in test.info.vocab
    assert test.targets.tolist() == [3, 1]
    assert test.inputs[0, :2].tolist() == [train.info.vocab.index("brilliant"), UNK_ID]
    assert test.token_labels[0, :2].tolist() == [1, 0]  # the unknown zebra (3) gets 0
    assert sst("test", root=root, holdout="dev").targets.tolist() == [0]
    assert sst("test", root=root, holdout="dev+test").targets.tolist() == [0, 3, 1]


def test_min_count_and_max_len(tmp_path):
    root = str(_write(tmp_path, train=[*TRAIN, "(0 (0 awful) (2 film))", "(2 (2 zany) (2 zany))"]))
    ds = sst("train", root=root)  # default min_count 2: words seen twice in kept sentences
    assert ds.info.vocab[2:] == ("awful", "film")  # twice each; not the neutral "zany"
    cut = sst("train", root=root, min_count=1, max_len=2)
    assert cut.info.input_shape == (2,) and _words(cut)[1] == ["dull", "and"]  # the start kept
    assert cut.token_labels[1].tolist() == [-1, 0] and len(cut) == 5


def test_the_info_describes_text(tmp_path):
    ds = load_dataset("sst", "train", root=str(_write(tmp_path / "data")), max_len=16)
    info = ds.info
    assert "sst" in dataset_names() and info.is_text and info.input_shape == (16,)
    assert info.num_classes == 4 and info.class_names[0] == "very negative"
    assert info.pixel_range is None and info.source == str(tmp_path / "data")
    assert ds.inputs.dtype == torch.int64 and tuple(ds.inputs.shape) == (4, 16)


def test_the_trees_are_found_in_subfolders_and_through_the_environment(tmp_path, monkeypatch):
    _write(tmp_path / "base" / "sst" / "trees")
    assert sst("train", root=str(tmp_path / "base")).info.source.endswith("trees")
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "base"))
    assert len(sst("train")) == 4
    with pytest.raises(DataError, match="SST not found"):  # an explicit root is the only place
        sst("train", root=str(tmp_path / "elsewhere"))


def test_missing_files_name_what_to_download_and_where(tmp_path):
    with pytest.raises(DataError, match="trainDevTestTrees_PTB.zip") as info:
        sst("train", root=str(tmp_path))
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
    _write(tmp_path / "x", test=None)
    assert len(sst("train", root=str(tmp_path / "x"))) == 4  # the training split needs no test
    with pytest.raises(DataError, match=r"lacks test\.txt"):
        sst("test", root=str(tmp_path / "x"))


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("(3 (2 a) (3 b)", r"unbalanced parentheses \(1 '\(' left open\)"),
        ("(3 (2 a) (3 b)))", r"unbalanced parentheses \(a '\)' closes nothing\)"),
        ("(x (2 a) (3 b))", "label 'x' is not an integer"),
        ("(3 (2 a) (3.5 b))", "label '3.5' is not an integer"),
        ("(3 (2 a) (7 b))", "label 7 is outside 0..4"),
        ("(3 (2 a b))", "word 'b' is not alone"),
        ("(3 (2 a (2 b)))", "a leaf '\\(label word\\)' has children"),
        ("(3 ())", "a node has no label"),
        ("(3 (2))", "neither a word nor children"),
        ("(3 (2 a)) (2 b)", "text follows the end of the tree"),
        ("the film is good", "does not start with '\\('"),
    ],
)
def test_a_malformed_tree_is_a_one_line_error_naming_the_file_and_line(tmp_path, line, problem):
    _write(tmp_path, train=[TRAIN[0], "", line])  # a blank line 2 is skipped, not an error
    with pytest.raises(DataError, match=problem) as info:
        sst("train", root=str(tmp_path))
    message = str(info.value)
    assert f"{tmp_path / 'train.txt'}, line 3" in message and "\n" not in message


def test_a_file_without_trees_or_without_labelled_sentences_is_refused(tmp_path):
    _write(tmp_path / "empty", train=[])
    with pytest.raises(DataError, match="holds no tree"):
        sst("train", root=str(tmp_path / "empty"))
    _write(tmp_path / "neutral", train=[TRAIN[1]])
    with pytest.raises(DataError, match="no non-neutral sentence"):
        sst("train", root=str(tmp_path / "neutral"))


def test_deep_trees_parse_without_recursion():
    depth = 5000
    root, words, labels = parse_tree("(1 " * depth + "(0 bad)" + ")" * depth)
    assert (root, words, labels) == (1, ["bad"], [0])


@pytest.mark.parametrize(
    ("params", "match"),
    [({"max_len": 0}, "sst.max_len=0"), ({"min_count": 0}, "sst.min_count=0"),
     ({"holdout": "val"}, "sst.holdout='val' is invalid; use one of test, dev, dev\\+test")],
)  # fmt: skip
def test_bad_params_are_config_errors(tmp_path, params, match):
    with pytest.raises(ConfigError, match=match):
        sst("train", root=str(_write(tmp_path)), **params)


def test_the_sentences_cut_are_logged(tmp_path, caplog):
    root = str(_write(tmp_path))
    with caplog.at_level("INFO", logger="distillscope.data.sst"):
        sst("train", root=root, min_count=1, max_len=4)  # lengths 4, 6, 2, 5
    assert "sst train: 2 of 4 sentences cut to max_len=4 tokens" in caplog.text
