"""`vim-jax predict` on real photos: five ImageNet names per image, the official model's top-5."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image

from tests.convert.checkpoint_files import write_training_checkpoint
from tests.official_torch import official_logits, random_official_state_dict
from vim_jax import cli
from vim_jax.data.imagenet_labels import imagenet_class_names
from vim_jax.predict import load_images
from vim_jax.registry import get_config, resolve

LINE = re.compile(r"^  ([1-5])\. (.+?) +(\d+\.\d\d)%$")


@pytest.fixture(scope="module")
def vim_tiny_file(tmp_path_factory):
    cfg = get_config("vim_tiny")
    sd = random_official_state_dict(cfg, seed=21)
    return write_training_checkpoint(tmp_path_factory.mktemp("predict") / "vim_tiny.pth", sd, cfg), sd


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Photos shipped with matplotlib, plus a greyscale crop (PIL mode 'L') of one of them."""
    hopper = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    pack = cbook.get_sample_data("Minduka_Present_Blue_Pack.png", asfileobj=False)
    grey = tmp_path_factory.mktemp("photos") / "hopper_face_grey.jpg"
    with Image.open(hopper) as image:
        image.crop((120, 40, 420, 400)).convert("L").save(grey)
    return [str(hopper), str(pack), str(grey)]


def parse(output: str) -> dict[str, list[str]]:
    """{image name: [five class names]} from predict's output."""
    results, current = {}, None
    for line in output.splitlines():
        match = LINE.match(line)
        if match:
            results[current].append(match.group(2))
        elif not line.startswith(" ") and not line.startswith("vim_tiny on "):
            current = Path(line).name
            results[current] = []
    return results


@pytest.mark.slow
def test_predict_prints_the_official_top5(vim_tiny_file, photos, capsys):
    path, sd = vim_tiny_file
    # Three images in batches of two: the last batch is padded, one shape compiles.
    assert cli.main(["predict", "--model", "vim_tiny", "--checkpoint", str(path), "--batch-size", "2", *photos]) == 0
    captured = capsys.readouterr()
    results = parse(captured.out)
    assert list(results) == ["grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "hopper_face_grey.jpg"]
    names = imagenet_class_names()
    images = load_images(photos, resolve("vim_tiny").eval_settings)
    logits = official_logits(sd, get_config("vim_tiny"), images)
    for (image, got), row in zip(results.items(), logits):
        assert got == [names[i] for i in np.argsort(-row)[:5]], image
    assert re.search(r"vim_tiny on cpu: compile \d+\.\d\d s, [\d.]+ ms per batch of 2 .* over 2 batch\(es\)",
                     captured.out)
    assert "random" not in captured.err


def test_evaluation_transform_is_the_official_one(photos):
    """Shorter side to 256 with PIL bicubic, centre 224 crop, ImageNet mean/std (torchvision's)."""
    image = load_images(photos[:1], resolve("vim_tiny").eval_settings)[0]
    with Image.open(photos[0]) as pil:
        w, h = pil.size  # 512 x 600: width is the shorter side
        resized = pil.convert("RGB").resize((256, int(256 * h / w)), Image.BICUBIC)
    top = int(round((resized.height - 224) / 2))
    crop = np.asarray(resized, np.float32)[top:top + 224, 16:240] / 255
    want = (crop - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    np.testing.assert_allclose(image, want, atol=1e-6)


def test_without_checkpoint_says_weights_are_random(photos, capsys):
    assert cli.main(["predict", "--model", "vim_tiny", photos[0]]) == 0
    captured = capsys.readouterr()
    assert "no --checkpoint: vim_tiny has random weights" in captured.err
    assert len(parse(captured.out)["grace_hopper.jpg"]) == 5


def test_bad_inputs_exit_with_one_message(tmp_path, photos, vim_tiny_file):
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not a JPEG")
    cases = [
        (["--model", "vim_tiny", str(not_an_image)], f"cannot read image {not_an_image}: cannot identify image file"),
        (["--model", "vim_tiny", str(tmp_path / "missing.jpg")], f"cannot read image {tmp_path / 'missing.jpg'}"),
        (["--model", "vim_tinny", photos[0]], "unknown model 'vim_tinny'; did you mean 'vim_tiny'"),
        (["--model", "vim_tiny", "--checkpoint", str(tmp_path / "nope.pth"), photos[0]],
         f"checkpoint not found: {tmp_path / 'nope.pth'}"),
        (["--model", "vim_small", "--checkpoint", str(vim_tiny_file[0]), photos[0]], "does not fit this model"),
        (["--model", "vim_tiny", "--batch-size", "0", photos[0]], "--batch-size and --top-k must be positive"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["predict", *argv])
        assert str(exit_info.value.code).startswith("vim-jax predict: error: "), argv
        assert message in str(exit_info.value.code), argv
