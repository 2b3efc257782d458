"""ImageNet class names: TFDS wnids + WordNet lemmas, with a wnid fallback."""

from __future__ import annotations

import pytest

from vim_jax.data import imagenet_labels as labels

needs_wordnet = pytest.mark.skipif(not labels.wordnet_noun_file().is_file(), reason="apt-get install wordnet-base")


def test_wnids_are_tfds_label_order():
    wnids = labels.imagenet_wnids()
    assert len(wnids) == 1000 and len(set(wnids)) == 1000
    assert wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    assert wnids == sorted(wnids)  # TFDS orders labels by wnid


@needs_wordnet
def test_names_come_from_wordnet_first_lemmas():
    names = labels.imagenet_class_names()
    assert len(names) == 1000
    assert names[:3] == ["tench", "goldfish", "great white shark"]
    assert names[labels.imagenet_wnids().index("n04597913")] == "wooden spoon"  # underscores -> spaces
    # Two synsets share the first lemma 'crane' (the bird and the machine).
    assert names.count("crane") == 2
    assert all(name and "_" not in name for name in names)


def test_first_lemma_parses_a_data_noun_line():
    line = "01440764 05 n 02 tench 0 Tinca_tinca 0 003 @ 01439121 n 0000 | freshwater dace-like game fish\n"
    assert labels.first_lemma(line) == "tench"
    assert labels.first_lemma(line.replace(" tench ", " great_white_shark ")) == "great white shark"


def test_missing_wordnet_falls_back_to_wnids_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="wordnet-base"):
        names = labels.imagenet_class_names(tmp_path)
    assert names == labels.imagenet_wnids()


def test_wrong_wordnet_file_is_reported(tmp_path):
    (tmp_path / "data.noun").write_text("not wordnet\n" * 10)
    with pytest.raises(ValueError, match="no synset"):
        labels.imagenet_class_names(tmp_path)
