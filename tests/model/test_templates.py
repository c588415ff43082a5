"""Prompt templates, `tokenizer_image_token` and image preprocessing (SPEC §4)."""
import numpy as np
import pytest
import torch
from PIL import Image

from xmodelvlm import (DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX, conv_templates, get_conv_template, process_images,
                       tokenizer_image_token)
from xmodelvlm.data.conversation import SYSTEM_V1
from xmodelvlm.data.image import expand2square, load_image, to_rgb
from xmodelvlm.errors import UserError
from xmodelvlm.model.tokenizer import load_tokenizer
from xmodelvlm.model.vision_tower import CLIP_MEAN, standard_clip_processor


def test_v1_renders_exactly():
    conv = conv_templates["v1"].copy()
    conv.append_message(conv.roles[0], "<image>\nq1")
    conv.append_message(conv.roles[1], "a1")
    conv.append_message(conv.roles[0], "q2")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == f"{SYSTEM_V1} USER: <image>\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT:"
    assert conv_templates["v1"].messages == []  # copy() leaves the template untouched


def test_plain_renders_image_caption_newline():
    conv = get_conv_template("plain")
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN)
    conv.append_message(conv.roles[1], "a red circle")
    assert conv.get_prompt() == "<image>a red circle\n"


def test_unknown_template_is_a_user_error():
    with pytest.raises(UserError, match="known: plain, v1"):
        get_conv_template("llava_v0")


@pytest.fixture(scope="module")
def tokenizer(real_tokenizer_dir):
    return load_tokenizer(real_tokenizer_dir)


def test_tokenizer_image_token_one_bos_and_placeholders(tokenizer):
    ids = tokenizer_image_token("<image>\nWhat is <image> here?", tokenizer)
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert ids[1] == IMAGE_TOKEN_INDEX and ids.count(IMAGE_TOKEN_INDEX) == 2
    # each chunk is tokenized on its own (with its own dummy prefix), BOS dropped
    first = tokenizer("\nWhat is ").input_ids[1:]
    assert ids[2:2 + len(first)] == first
    assert torch.equal(tokenizer_image_token("<image>\nhi", tokenizer, return_tensors="pt"),
                       torch.tensor(tokenizer_image_token("<image>\nhi", tokenizer)))


def test_tokenizer_image_token_without_image_equals_tokenizer(tokenizer):
    assert tokenizer_image_token("plain text", tokenizer) == tokenizer("plain text").input_ids


def test_expand2square_centres_on_mean_colour():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    square = expand2square(image, tuple(int(x * 255) for x in CLIP_MEAN))
    assert square.size == (40, 40)
    assert square.getpixel((0, 0)) == (122, 116, 104)  # int(mean*255) per channel
    assert square.getpixel((20, 20)) == (255, 0, 0) and square.getpixel((20, 9)) == (122, 116, 104)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1"])
def test_process_images_any_mode(mode):
    processor = standard_clip_processor(28)
    image = Image.fromarray((np.random.RandomState(0).rand(10, 30, 3) * 255).astype("uint8")).convert(mode)
    pixels = process_images([image, image], processor, type("Cfg", (), {"image_aspect_ratio": "pad"})())
    assert pixels.shape == (2, 3, 28, 28) and torch.isfinite(pixels).all()


@pytest.mark.parametrize("modes", [["RGB", "RGB"], ["L", "RGBA"]])
@pytest.mark.parametrize("sizes", [[(28, 28), (28, 28)], [(28, 28), (30, 28)], [(29, 29), (29, 29)]])
def test_images_at_the_processor_size_skip_its_overhead_with_the_same_bits(modes, sizes, monkeypatch):
    """An image already S x S skips the processor's identity resize and crop (0.47 -> 0.12 ms per 48 px image):
    bit for bit what the processor returns, also in a batch where only some images are at the size."""
    import xmodelvlm.data.image as image_module

    processor, rng = standard_clip_processor(28), np.random.RandomState(0)
    images = [Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8)).convert(m)
              for m, (w, h) in zip(modes, sizes)]
    fast_calls = []
    monkeypatch.setattr(image_module, "_rescale_and_normalize",
                        lambda *a, fast=image_module._rescale_and_normalize: fast_calls.append(0) or fast(*a))
    for cfg in (type("Cfg", (), {"image_aspect_ratio": "pad"})(), None):
        want = processor(images=[to_rgb(i) if cfg is None else expand2square(to_rgb(i), (122, 116, 104))
                                 for i in images], return_tensors="pt")["pixel_values"]
        assert torch.equal(process_images(images, processor, cfg), want)
    on_size = all(size == (28, 28) for size in sizes)
    assert len(fast_calls) == (2 if on_size else 0)
    assert image_module._identity_geometry_side(processor) == 28
    processor.crop_size = {"height": 24, "width": 24}  # a real crop: the processor's own path
    assert image_module._identity_geometry_side(processor) is None


def test_pad_changes_content_versus_plain_resize():
    processor = standard_clip_processor(28)
    image = Image.new("RGB", (60, 20), (255, 255, 255))
    padded = process_images([image], processor, type("Cfg", (), {"image_aspect_ratio": "pad"})())
    cropped = process_images([image], processor, None)
    mean_pixel = (int(CLIP_MEAN[0] * 255) / 255 - CLIP_MEAN[0]) / 0.26862954
    assert padded[0, 0, 0, 0].item() == pytest.approx(mean_pixel, abs=0.02)  # corner is the mean-colour border
    assert cropped[0, 0, 0, 0].item() > 1.5  # plain resize+crop keeps white there


def test_load_image_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00not an image")
    with pytest.raises(UserError, match="cannot read image"):
        load_image(bad)
    Image.new("RGBA", (5, 5)).save(tmp_path / "ok.png")
    assert load_image(tmp_path / "ok.png").mode == "RGB"
