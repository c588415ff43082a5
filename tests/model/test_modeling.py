"""The model equals an independent composition of transformers' parts; padding, batching and caching are exact."""
import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from xmodelvlm.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from xmodelvlm.model.make_tiny import build_tiny_model

IMG = IMAGE_TOKEN_INDEX


@pytest.fixture(scope="module")
def model():
    return build_tiny_model(vocab_size=300, seed=1)


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.randn(4, 3, 28, 28)


def reference_parts(model):
    """transformers' LlamaForCausalLM and CLIPVisionModel holding the same weights, built independently."""
    state = model.state_dict()
    lm_config = LlamaConfig(**{k: getattr(model.config, k) for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings")})
    lm = LlamaForCausalLM(lm_config).eval()
    lm.load_state_dict({k: v for k, v in state.items() if not k.startswith(("model.vision_tower", "model.mm_projector"))})
    clip = CLIPVisionModel(model.get_vision_tower().config).eval()
    prefix = "model.vision_tower.vision_tower.vision_model."
    clip.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return lm, clip, state


def reference_image_embeds(clip, state, images):
    patches = clip(pixel_values=images, output_hidden_states=True).hidden_states[-2][:, 1:]
    grouped = patches.reshape(patches.shape[0], patches.shape[1] // 4, -1)  # XDP: 4 consecutive tokens
    hidden = F.mish(F.linear(grouped, state["model.mm_projector.mlp.0.weight"], state["model.mm_projector.mlp.0.bias"]))
    return F.linear(hidden, state["model.mm_projector.mlp.2.weight"], state["model.mm_projector.mlp.2.bias"])


@torch.no_grad()
def test_logits_and_loss_equal_independent_composition(model, images):
    lm, clip, state = reference_parts(model)
    ids = torch.tensor([[1, 15, IMG, 27, 33, IMG, 8]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 27, 33, IGNORE_INDEX, 8]])
    image_embeds = reference_image_embeds(clip, state, images[:2])
    embed = lm.get_input_embeddings()
    pieces = [embed(ids[:, :2]), image_embeds[0:1], embed(ids[:, 3:5]), image_embeds[1:2], embed(ids[:, 6:])]
    inputs_embeds = torch.cat(pieces, dim=1)
    k = image_embeds.shape[1]
    ref_labels = torch.cat([labels[:, :2], torch.full((1, k), IGNORE_INDEX), labels[:, 3:5],
                            torch.full((1, k), IGNORE_INDEX), labels[:, 6:]], dim=1)
    expected = lm(inputs_embeds=inputs_embeds, labels=ref_labels)
    got = model(input_ids=ids, images=images[:2], labels=labels)
    assert got.logits.shape == expected.logits.shape == (1, 5 + 2 * k, 300)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-6, rtol=1e-6)


@torch.no_grad()
def test_text_only_equals_plain_llama(model):
    lm, _, _ = reference_parts(model)
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    torch.testing.assert_close(model(input_ids=ids).logits, lm(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


ROWS = [  # (ids, number of images): rows with 0, 1 and 2 images, different lengths
    ([1, 11, 12, 13, 14, 15, 16], 0),
    ([1, IMG, 21, 22], 1),
    ([1, 31, IMG, 32, IMG, 33, 34, 35, 36], 2),
]


def padded_batch(side: str, pad_id: int = 0):
    width = max(len(ids) for ids, _ in ROWS)
    input_ids, mask = [], []
    for ids, _ in ROWS:
        pad = [pad_id] * (width - len(ids))
        input_ids.append(pad + ids if side == "left" else ids + pad)
        ones, zeros = [1] * len(ids), [0] * len(pad)
        mask.append(zeros + ones if side == "left" else ones + zeros)
    return torch.tensor(input_ids), torch.tensor(mask)


def row_images(images, row):
    start = sum(n for _, n in ROWS[:row])
    return images[start:start + ROWS[row][1]] if ROWS[row][1] else None


@pytest.mark.parametrize("side", ["left", "right"])
@torch.no_grad()
def test_padded_batch_logits_equal_each_row_alone(model, images, side):
    input_ids, mask = padded_batch(side)
    batch = model(input_ids=input_ids, attention_mask=mask, images=images[:3]).logits
    for row, (ids, _) in enumerate(ROWS):
        alone = model(input_ids=torch.tensor([ids]), images=row_images(images, row)).logits[0]
        n = alone.shape[0]
        got = batch[row, -n:] if side == "left" else batch[row, :n]
        torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
@torch.no_grad()
def test_batched_generation_equals_one_by_one(model, images, side):
    input_ids, mask = padded_batch(side)
    out = model.generate(input_ids, attention_mask=mask, images=images[:3], max_new_tokens=6, do_sample=False)
    assert torch.equal(out[:, :input_ids.shape[1]], input_ids)
    for row, (ids, _) in enumerate(ROWS):
        alone = model.generate(torch.tensor([ids]), images=row_images(images, row), max_new_tokens=6, do_sample=False)
        assert out[row, input_ids.shape[1]:].tolist() == alone[0, len(ids):].tolist()


@torch.no_grad()
def test_cached_generation_equals_uncached(model, images):
    ids = torch.tensor([ROWS[2][0]])
    cached = model.generate(ids, images=images[:2], max_new_tokens=8, do_sample=False, use_cache=True)
    uncached = model.generate(ids, images=images[:2], max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    assert len(set(cached[0, ids.shape[1]:].tolist())) > 1  # a real sequence, not one repeated token


@torch.no_grad()
def test_generation_continues_the_forward_argmax(model, images):
    ids = torch.tensor([ROWS[1][0]])
    out = model.generate(ids, images=images[:1], max_new_tokens=1, do_sample=False)
    assert out[0, -1].item() == model(input_ids=ids, images=images[:1]).logits[0, -1].argmax().item()


def test_placeholder_and_image_counts_must_agree(model, images):
    with pytest.raises(ValueError, match="2 image placeholders .* but 1 images"):
        model(input_ids=torch.tensor([ROWS[2][0]]), images=images[:1])
    with pytest.raises(ValueError, match="0 image placeholders .* but 1 images"):
        model(input_ids=torch.tensor([ROWS[0][0]]), images=images[:1])


def test_training_step_trains_projector_not_tower(model, images):
    model.train()
    ids = torch.tensor([[1, IMG, 21, 22, 23]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 21, 22, 23]])
    model(input_ids=ids, images=images[:1], labels=labels).loss.backward()
    model.eval()
    assert model.mm_projector.mlp[0].weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in model.get_vision_tower().parameters())
    model.zero_grad(set_to_none=True)


@torch.no_grad()
def test_bfloat16_runs_and_tracks_float32(images):
    model32 = build_tiny_model(vocab_size=300, seed=1)
    ids = torch.tensor([ROWS[2][0]])
    ref = model32(input_ids=ids, images=images[:2]).logits
    model16 = build_tiny_model(vocab_size=300, seed=1).to(torch.bfloat16)
    got = model16(input_ids=ids, images=images[:2]).logits
    assert got.dtype == torch.bfloat16
    assert F.cosine_similarity(got.float().flatten(), ref.flatten(), dim=0) > 0.99
    out = model16.generate(ids, images=images[:2], max_new_tokens=3, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="float16 inference is a GPU path")
@torch.no_grad()
def test_float16_on_gpu(images):
    model = build_tiny_model(vocab_size=300, seed=1).to("cuda", torch.float16)
    out = model.generate(torch.tensor([ROWS[1][0]], device="cuda"), images=images[:1].cuda().half(), max_new_tokens=3)
    assert out.shape[1] == len(ROWS[1][0]) + 3


@torch.no_grad()
def test_beam_search_sampling_and_dict_outputs_keep_the_prompt(model, images):
    ids = torch.tensor([ROWS[1][0]])
    beams = model.generate(ids, images=images[:1], max_new_tokens=4, num_beams=3, do_sample=False)
    sampled = model.generate(ids, images=images[:1], max_new_tokens=4, do_sample=True, top_p=0.9,
                             num_return_sequences=2)
    scored = model.generate(ids, images=images[:1], max_new_tokens=4, return_dict_in_generate=True,
                            output_scores=True)
    assert beams.shape == (1, ids.shape[1] + 4) and sampled.shape == (2, ids.shape[1] + 4)
    assert torch.equal(sampled[:, :ids.shape[1]], ids.repeat(2, 1))
    assert scored.sequences.shape == (1, ids.shape[1] + 4) and len(scored.scores) == 4
