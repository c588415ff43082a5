"""The LM warm-up: its batches (random by default, length-grouped with `group_steps` > 1), its grid documents and
the new scenes of the `scenes` corpus."""
from __future__ import annotations

import json
import random

import pytest
import torch

from xmodelvlm.demo import synthetic_data as sd
from xmodelvlm.demo.tiny_lm import (PAD_ID, SCENE_CAPTION_SHARE, _batch_indices, _cell_vectors, _collate, build_lm,
                                    encode_documents, grid_documents, scene_cells, scene_documents, warm_up,
                                    warmup_corpus)
from xmodelvlm.errors import UserError


def docs(n=120, seed=0):
    rng = random.Random(seed)
    return [[7] * rng.randint(5, 90) for _ in range(n)]


def epoch_rows(encoded, batch_size, group_steps):
    """One epoch of batches (120 docs / batch 8 = 15 steps), each row's length recovered from its mask."""
    out = []
    lengths = [len(d) for d in encoded]
    for idx in _batch_indices(lengths, batch_size, len(encoded) // batch_size, 0, group_steps):
        input_ids, mask, labels = _collate([encoded[i] for i in idx])
        assert input_ids.shape == mask.shape == labels.shape and len(input_ids) == batch_size
        assert (labels[mask == 0] == -100).all() and (input_ids[mask == 0] == PAD_ID).all()
        out.append(mask.sum(1).tolist())
    return out


@pytest.mark.parametrize("group_steps", [1, 4, 15])
def test_an_epoch_uses_every_document_once(group_steps):
    encoded = docs()
    rows = epoch_rows(encoded, 8, group_steps)
    assert sorted(n for batch in rows for n in batch) == sorted(len(d) for d in encoded)


def test_length_grouping_pads_less_and_keeps_batches_shuffled():
    encoded = docs()
    padded = {g: sum(len(b) * max(b) for b in epoch_rows(encoded, 8, g)) for g in (1, 15)}
    assert padded[15] < 0.75 * padded[1]
    maxima = [max(b) for b in epoch_rows(encoded, 8, 15)]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


# ------------------------------------------------------------------------------------------ grid documents
def test_scene_cells_put_each_object_in_its_patch_row_major():
    """The cells follow the patch tokens' order (row-major), one cell per patch of a 48 px image in 16 px patches."""
    scene = {"bg_color": "gray", "bg_texture": "striped", "objects": [
        {"color": "red", "shape": "circle", "size": "small", "cx": 24.3, "cy": 7.9},     # top: row 0, column 1
        {"color": "blue", "shape": "star", "size": "large", "cx": 7.6, "cy": 23.5},     # left: row 1, column 0
        {"color": "green", "shape": "square", "size": "small", "cx": 40.1, "cy": 24.2},  # right: row 1, column 2
    ]}
    cells = scene_cells(scene, side=3, image_size=48)
    assert cells[1] == ["small", "red", "circle"]
    assert cells[3] == ["large", "blue", "star"]
    assert cells[5] == ["small", "green", "square"]
    assert [cells[k] for k in (0, 2, 4, 6, 7, 8)] == [["gray", "striped"]] * 6


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from xmodelvlm.demo import synthetic_data as sd
    from xmodelvlm.demo import tiny_tokenizer as tt

    root = tmp_path_factory.mktemp("grid")
    sd.generate(root / "data", seed=0, num_train=240, num_eval=10, image_size=48, quiet=True)
    tt.train_tokenizer(tt.dataset_texts(root / "data"), root / "tok")
    return root / "data", root / "tok"


def test_grid_documents_give_every_scene_its_caption_and_its_conversation(small_data):
    data, _ = small_data
    pretrain = json.loads((data / "train" / "pretrain.json").read_text())
    instruct = [s for s in json.loads((data / "train" / "instruct.json").read_text()) if s.get("image")]
    scenes = {s["image"]: s for s in json.loads((data / "train" / "scenes.json").read_text())}
    docs = grid_documents(data, side=3)
    assert len(docs) == len(pretrain) + len(instruct)
    cells, caption = docs[0]
    assert caption == pretrain[0]["conversations"][1]["value"]  # the caption alone, right after the grid
    assert cells == scene_cells(scenes[pretrain[0]["image"]], 3, 48) and len(cells) == 9
    cells, conversation = docs[len(pretrain)]
    assert conversation.startswith("\n") and "<image>" not in conversation
    assert instruct[0]["conversations"][1]["value"] in conversation
    assert cells == scene_cells(scenes[instruct[0]["image"]], 3, 48)


def test_grid_documents_without_the_manifest_is_a_user_error(small_data, tmp_path):
    data, _ = small_data
    (tmp_path / "train").mkdir()
    for name in ("scenes.json", "pretrain.json", "instruct.json"):
        (tmp_path / "train" / name).write_bytes((data / "train" / name).read_bytes())
    with pytest.raises(UserError, match="manifest.json"):
        grid_documents(tmp_path, side=3)


def test_cell_vectors_are_the_mean_embedding_of_the_cell_words_and_are_not_predicted():
    torch.manual_seed(0)
    embed = torch.nn.Embedding(20, 4)
    rows = [([1, PAD_ID, PAD_ID, 5, 6, 2], [[3, 4], [7]]), ([1, 5, 2], None)]
    input_ids, mask, labels = _collate([ids for ids, _ in rows], [len(c or ()) for _, c in rows])
    inputs = _cell_vectors(embed, rows, input_ids)
    w = embed.weight.detach()
    assert torch.allclose(inputs[0, 1], (w[3] + w[4]) / 2) and torch.allclose(inputs[0, 2], w[7])
    assert torch.allclose(inputs[0, 3], w[5]) and torch.allclose(inputs[1, :3], w[[1, 5, 2]])
    assert labels[0].tolist() == [1, -100, -100, 5, 6, 2] and labels[1].tolist() == [1, 5, 2, -100, -100, -100]
    inputs.sum().backward()  # the cell vectors train the word embeddings they are made of
    assert embed.weight.grad[3].abs().sum() > 0 and embed.weight.grad[7].abs().sum() > 0


def test_warm_up_on_grids_learns_to_read_them(small_data, tmp_path):
    """After a short warm-up with grid documents, a caption is likelier after its own scene's grid than after
    another scene's: the LM reads the cells, not just the caption's prior."""
    import sentencepiece as spm

    data, tok = small_data
    sp = spm.SentencePieceProcessor(model_file=str(tok / "tokenizer.model"))
    grids = grid_documents(data, side=3)
    captions = grids[:240]
    model = build_lm({"vocab_size": sp.get_piece_size(), "hidden_size": 64, "intermediate_size": 128,
                      "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2}, seed=0)
    torch.set_num_threads(1)
    stats = warm_up(model, warmup_corpus(data), sp, steps=250, batch_size=32, lr=3e-3, seed=0, log_every=10**6,
                    grids=grids)
    assert stats["grid_documents"] == len(grids) and stats["final_loss"] < stats["first_loss"]

    def caption_loss(pairs):
        encoded = encode_documents([], pairs, sp)
        input_ids, mask, labels = _collate([ids for ids, _ in encoded], [len(c) for _, c in encoded])
        with torch.no_grad():
            inputs = _cell_vectors(model.get_input_embeddings(), encoded, input_ids)
            return model(inputs_embeds=inputs, attention_mask=mask, labels=labels).loss.item()

    own = caption_loss(captions[:64])
    other = caption_loss([(captions[(k + 1) % 64][0], captions[k][1]) for k in range(64)])
    assert own < other - 0.05, (own, other)  # 0.74 vs 0.82 nats per caption token when measured


def test_cli_grid_corpus_writes_an_lm_that_records_its_grids(small_data, tmp_path):
    from xmodelvlm.demo.tiny_lm import STATS_FILE, main

    data, tok = small_data
    args = ["--data", str(data), "--tokenizer", str(tok), "--hidden", "32", "--intermediate", "64", "--layers", "1",
            "--heads", "2", "--kv-heads", "2", "--steps", "3", "--batch-size", "8", "--corpus", "grid"]
    with pytest.raises(SystemExit) as exc:  # a grid needs at least one cell per side: usage error, exit 2
        main(args + ["--out", str(tmp_path / "bad"), "--grid-side", "0"])
    assert exc.value.code == 2 and not (tmp_path / "bad").exists()
    assert main(args + ["--out", str(tmp_path / "lm")]) == 0
    stats = json.loads((tmp_path / "lm" / STATS_FILE).read_text())
    assert stats["grid_side"] == 3 and stats["grid_documents"] == len(grid_documents(data, 3)) > 0


def test_scene_documents_are_new_scenes_each_grid_before_a_conversation_or_its_caption(small_data):
    data, _ = small_data
    docs = scene_documents(400, seed=0, side=3, image_size=48)
    assert docs == scene_documents(400, seed=0, side=3, image_size=48)  # deterministic by seed
    assert docs != scene_documents(400, seed=1, side=3, image_size=48)
    assert all(len(cells) == 9 for cells, _ in docs)
    for i in (0, 1, 399):  # the grid of the generator's scene, as its scenes.json entry would give it
        scene = sd.sample_scene(sd._rng(0, sd.STREAM_LM_SCENES, i), 48)
        assert docs[i][0] == scene_cells(scene.to_json(), 3, 48)
    captions = [(cells, text) for cells, text in docs if not text.startswith("\n")]
    assert abs(len(captions) / len(docs) - SCENE_CAPTION_SHARE) < 0.07
    for cells, text in captions:  # a caption names every object of its grid
        for words in cells:
            if len(words) == 3:  # size, colour, shape: an object
                assert f"{words[1]} {words[2]}" in text, (words, text)
    conversations = [text for _, text in docs if text.startswith("\n")]
    assert not any("<image>" in t or sd.SHORT_ANSWER_SUFFIX.strip() in t for t in conversations)
    assert any("?" in t for t in conversations)
    # the LM's own stream: not the training scenes (the same seed, the same indices)
    train = [scene_cells(s, 3, 48) for s in json.loads((data / "train" / "scenes.json").read_text())]
    assert sum(cells == train[i] for i, (cells, _) in enumerate(docs[:len(train)])) < 0.1 * len(train)


def test_build_lm_draws_its_weights_with_the_given_standard_deviation():
    sizes = {"vocab_size": 64, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 2}
    for std in (0.02, 0.08):
        model = build_lm(sizes, seed=0, init_std=std)
        for weight in (model.model.layers[0].self_attn.q_proj.weight, model.model.embed_tokens.weight):
            assert abs(weight.std().item() - std) < 0.1 * std


def test_cli_scenes_corpus_records_its_scenes_and_rejects_bad_values(small_data, tmp_path):
    from xmodelvlm.demo.tiny_lm import STATS_FILE, main

    data, tok = small_data
    args = ["--data", str(data), "--tokenizer", str(tok), "--hidden", "32", "--intermediate", "64", "--layers", "1",
            "--heads", "2", "--kv-heads", "2", "--steps", "3", "--batch-size", "8", "--corpus", "scenes"]
    for bad in (["--scenes", "0"], ["--init-std", "0"], ["--grid-side", "0"]):  # usage errors: exit 2, nothing written
        with pytest.raises(SystemExit) as exc:
            main(args + ["--out", str(tmp_path / "bad")] + bad)
        assert exc.value.code == 2 and not (tmp_path / "bad").exists()
    assert main(args + ["--out", str(tmp_path / "lm"), "--scenes", "50", "--init-std", "0.05"]) == 0
    stats = json.loads((tmp_path / "lm" / STATS_FILE).read_text())
    assert (stats["corpus"], stats["scenes"], stats["grid_documents"], stats["documents"]) == ("scenes", 50, 50, 0)
    assert stats["grid_side"] == 3 and stats["init_std"] == 0.05
