"""Human-readable names of the 1000 ImageNet classes, derived rather than typed in.

Class ids (wnids) come from TFDS's own ``labels.txt`` (label i = line i), located inside the
installed tensorflow_datasets package without importing it (no TF needed). A wnid ``nXXXXXXXX``
is the WordNet 3.0 noun synset at byte offset XXXXXXXX of ``data.noun``; its first lemma, with
underscores turned into spaces, is the name (Debian: ``apt-get install wordnet-base`` puts the file
at /usr/share/wordnet/data.noun; override with $VIM_JAX_WORDNET_DIR). Without WordNet the wnids
themselves are returned, with a warning. A few first lemmas repeat (e.g. two "crane" synsets: the
bird and the machine); :func:`imagenet_class_names` keeps them as WordNet has them.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from pathlib import Path


WORDNET_DIR = "/usr/share/wordnet"
WORDNET_ENV_VAR = "VIM_JAX_WORDNET_DIR"


def _tfds_imagenet_file(name: str) -> Path:
    """A file bundled with the installed tensorflow_datasets, found without importing it."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("tensorflow_datasets is not installed (pip install tensorflow-datasets)")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "imagenet2012" / name


def tfds_synsets() -> list[str]:
    """The 1000 wnids in TFDS's label order (label i is line i of its labels.txt)."""
    return _tfds_imagenet_file("labels.txt").read_text().split()


def tfds_validation_synsets() -> list[str]:
    """The validation labels TFDS assigns to ILSVRC2012_val_00000001.JPEG, ... in that order."""
    return _tfds_imagenet_file("validation_labels.txt").read_text().split()


def imagenet_wnids() -> list[str]:
    """The 1000 wnids in TFDS label order."""
    return tfds_synsets()


def wordnet_noun_file(wordnet_dir: str | os.PathLike | None = None) -> Path:
    """WordNet's ``data.noun``: the argument, else $VIM_JAX_WORDNET_DIR, else /usr/share/wordnet."""
    return Path(wordnet_dir or os.environ.get(WORDNET_ENV_VAR) or WORDNET_DIR) / "data.noun"


def first_lemma(data_noun_line: str) -> str:
    """The first word of a ``data.noun`` synset line: 'offset lex_filenum ss_type w_cnt word ...'."""
    return data_noun_line.split(" ", 5)[4].replace("_", " ")


@functools.lru_cache(maxsize=4)
def _names(data_noun: str) -> tuple[str, ...]:
    wnids = imagenet_wnids()
    path = Path(data_noun)
    if not path.is_file():
        warnings.warn(f"WordNet data not found at {path} (apt-get install wordnet-base); "
                      "ImageNet class names fall back to wnids", stacklevel=3)
        return tuple(wnids)
    with open(path, "rb") as f:
        names = []
        for wnid in wnids:
            # The offset *is* the synset line's byte position in data.noun: seek, no full parse.
            f.seek(int(wnid[1:]))
            line = f.readline().decode("utf-8")
            if not line.startswith(wnid[1:] + " "):
                raise ValueError(f"{path}: no synset at offset {wnid[1:]} for {wnid} (not WordNet 3.0?)")
            names.append(first_lemma(line))
    return tuple(names)


def imagenet_class_names(wordnet_dir: str | os.PathLike | None = None) -> list[str]:
    """1000 readable class names in TFDS label order (e.g. label 0 -> 'tench')."""
    return list(_names(str(wordnet_noun_file(wordnet_dir))))
