"""The demo's data and frozen pieces: synthetic data formats, tiny tokenizer, tiny CLIP tower."""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from xmodelvlm.demo import synthetic_data as sd
from xmodelvlm.demo import tiny_tokenizer as tt

SQ = "\nAnswer the question using a single word or phrase."
FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"
SMALL = dict(seed=0, num_train=40, num_eval=60, image_size=64, quiet=True)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    sd.generate(out, **SMALL)
    return out


@pytest.fixture(scope="module")
def tokenizer_dir(data, tmp_path_factory) -> Path:
    return tt.train_tokenizer(tt.dataset_texts(data), tmp_path_factory.mktemp("tok"))


# ------------------------------------------------------------------------------------------ generator
def test_deterministic_by_seed(data, tmp_path):
    again = tmp_path / "again"
    sd.generate(again, **SMALL)
    a, b = _files(data), _files(again)
    a.pop("manifest.json"), b.pop("manifest.json")  # holds the wall time
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    other = tmp_path / "other"
    sd.generate(other, **{**SMALL, "seed": 1})
    assert (other / "train/pretrain.json").read_bytes() != a["train/pretrain.json"]
    assert (other / "train/images/000000.png").read_bytes() != a["train/images/000000.png"]


def test_rerun_is_noop_unless_forced_or_changed(tmp_path):
    out = tmp_path / "d"
    m1 = sd.generate(out, **{**SMALL, "num_train": 5, "num_eval": 10})
    png = out / "train/images/000000.png"
    stamp = png.stat().st_mtime_ns
    assert sd.generate(out, **{**SMALL, "num_train": 5, "num_eval": 10}) == m1
    assert png.stat().st_mtime_ns == stamp
    sd.generate(out, **{**SMALL, "num_train": 5, "num_eval": 10}, force=True)
    assert png.stat().st_mtime_ns != stamp
    m3 = sd.generate(out, **{**SMALL, "num_train": 6, "num_eval": 10})
    assert m3["counts"]["train_images"] == 6 and len(list((out / "train/images").iterdir())) == 6


def test_cli(tmp_path):
    assert sd.main(["--out", str(tmp_path / "c"), "--num-train", "3", "--num-eval", "10", "--quiet"]) == 0
    manifest = json.loads((tmp_path / "c/manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["image_size"] == 64
    assert all((tmp_path / "c" / p).exists() for p in manifest["files"].values())


def test_scene_from_json_inverts_scenes_json(data):
    entries = json.loads((Path(data) / "train" / "scenes.json").read_text())
    for entry in entries:
        scene = sd.Scene.from_json(entry)
        assert {**scene.to_json(), "image": entry["image"]} == entry
    assert any(len(sd.Scene.from_json(e).objects) > 1 for e in entries)


def test_pretrain_json_is_llava_558k_style(data):
    samples = json.loads((data / "train/pretrain.json").read_text())
    assert len(samples) == SMALL["num_train"]
    assert len({s["id"] for s in samples}) == len(samples)
    orders = Counter()
    for s in samples:
        assert set(s) == {"id", "image", "conversations"}
        assert (data / "train" / s["image"]).is_file()
        (h, g) = s["conversations"]
        assert h["from"] == "human" and g["from"] == "gpt"
        assert h["value"].count("<image>") == 1 and "<image>" not in g["value"]
        orders[h["value"].startswith("<image>")] += 1
        assert g["value"] and g["value"] == g["value"].strip()
    assert orders[False] > 0  # "instruction\n<image>" as in LLaVA-Pretrain


def test_instruct_json_is_llava_665k_style(data):
    samples = json.loads((data / "train/instruct.json").read_text())
    assert len({s["id"] for s in samples}) == len(samples)
    text_only = [s for s in samples if "image" not in s]
    assert 1 <= len(text_only) <= 0.15 * len(samples)
    answers, short, image_after = Counter(), 0, 0
    for s in samples:
        conv = s["conversations"]
        assert 2 <= len(conv) <= 8 and len(conv) % 2 == 0
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
        n_img = sum(t["value"].count("<image>") for t in conv)
        if "image" in s:
            assert (data / "train" / s["image"]).is_file()
            assert n_img == 1 and "<image>" in conv[0]["value"]
            image_after += not conv[0]["value"].startswith("<image>")
        else:
            assert n_img == 0
        for q, a in zip(conv[::2], conv[1::2]):
            if q["value"].replace("\n<image>", "").endswith(SQ):
                short += 1
                assert len(a["value"].split()) == 1, a
                answers[a["value"]] += 1
    assert short > 0 and answers["Yes"] > 0 and answers["No"] > 0
    assert image_after > 0


def test_pope_layout_and_labels(data):
    root = data / "eval/pope"
    qs = _jsonl(root / "llava_pope_test.jsonl")
    assert len({q["question_id"] for q in qs}) == len(qs) and all(isinstance(q["question_id"], int) for q in qs)
    by_cat = defaultdict(list)
    for q in qs:
        assert set(q) == {"question_id", "image", "text", "category"}
        assert q["text"].startswith("Is there ") and q["text"].endswith(" in the image?" + SQ)
        assert (root / "val2014" / q["image"]).is_file()
        by_cat[q["category"]].append(q)
    assert set(by_cat) == {"adversarial", "popular", "random"}
    for cat, cq in by_cat.items():
        labels = _jsonl(root / "coco" / f"coco_pope_{cat}.json")
        assert len(labels) == len(cq)
        for q, lab in zip(cq, labels):  # the k-th question of a category pairs with the k-th label line
            assert set(lab) == {"question_id", "image", "text", "label"}
            assert lab["image"] == q["image"] and lab["text"] + SQ == q["text"]
        c = Counter(lab["label"] for lab in labels)
        assert c["yes"] == c["no"] == len(labels) // 2


def test_pope_negatives_follow_their_category(data):
    """Regenerate the eval scenes from the seed and check yes = present, no = absent, adversarial shares an
    attribute with a present object, popular = the most frequent absent pair."""
    manifest = json.loads((data / "manifest.json").read_text())
    popular = [tuple(p.split()) for p in manifest["popular_ranking"]]
    root = data / "eval/pope"
    labels = {c: _jsonl(root / "coco" / f"coco_pope_{c}.json") for c in ("adversarial", "popular", "random")}
    for i in range(manifest["counts"]["pope_images"]):
        scene = sd.sample_scene(sd._rng(0, sd.STREAM_POPE, i), 64)
        name = f"COCO_val2014_{i + 1:012d}.png"
        for cat, rows in labels.items():
            for row in (r for r in rows if r["image"] == name):
                words = row["text"].split()
                pair = (words[3], words[4])
                assert (pair in scene.pairs()) == (row["label"] == "yes")
                if row["label"] == "no" and cat == "adversarial":
                    assert any(pair[0] == c or pair[1] == s for c, s in scene.pairs())
                if row["label"] == "no" and cat == "popular":
                    assert pair == next(p for p in popular if p not in scene.pairs())


def test_gqa_layout(data):
    root = data / "eval/gqa"
    qs = _jsonl(root / "llava_gqa_testdev_balanced.jsonl")
    gt = json.loads((root / "data/testdev_balanced_questions.json").read_text())
    assert [q["question_id"] for q in qs] == list(gt) and len(set(gt)) == len(qs)
    structural = Counter()
    for q in qs:
        assert set(q) == {"question_id", "image", "text"} and isinstance(q["question_id"], str)
        assert (root / "data/images" / q["image"]).is_file()
        g = gt[q["question_id"]]
        assert {"imageId", "question", "answer", "types", "isBalanced"} <= set(g)
        assert q["text"] == g["question"] + SQ and q["image"] == g["imageId"] + ".png"
        assert g["answer"] == g["answer"].lower().strip() and g["isBalanced"] is True
        assert set(g["types"]) == {"structural", "semantic", "detailed"}
        if g["types"]["structural"] == "verify":
            assert g["answer"] in ("yes", "no")
        structural[g["types"]["structural"]] += 1
    assert structural["query"] > 0 and structural["verify"] > 0
    assert set(structural) <= {"query", "verify", "compare", "choose", "logical"}


def test_mme_layout_and_ground_truth(data):
    root = data / "eval/MME"
    release = root / "MME_Benchmark_release_version"
    qs = _jsonl(root / "llava_mme.jsonl")
    per_image = defaultdict(list)
    for q in qs:
        assert set(q) == {"question_id", "image", "text", "category"}
        assert q["question_id"] == q["image"] and q["category"] == q["image"].split("/")[0]
        assert q["text"].endswith(SQ) and (release / q["image"]).is_file()
        per_image[q["image"]].append(q)
    layouts = set()
    for image, rows in per_image.items():
        assert len(rows) == 2
        task, *mid, fname = image.split("/")
        stem = Path(fname).stem
        if mid == ["images"]:
            layouts.add("nested")
            gt_file = release / task / "questions_answers_YN" / f"{stem}.txt"
        else:
            assert not mid
            layouts.add("flat")
            gt_file = release / task / f"{stem}.txt"
        gt = dict(line.split("\t") for line in gt_file.read_text().splitlines())
        assert sorted(gt.values()) == ["No", "Yes"]
        for q in rows:  # LLaVA's convert_answer_to_mme.py recovers the GT question from the prompt like this
            prompt = q["text"].replace(SQ.strip(), "").strip() + " Please answer yes or no."
            if prompt not in gt:
                prompt = prompt.replace(" Please answer yes or no.", "  Please answer yes or no.")
            assert prompt in gt
    assert layouts == {"flat", "nested"}
    assert {q["category"] for q in qs} == {"existence", "count", "position", "color", "scene"}


# ------------------------------------------------------------------------------------------ tokenizer
def test_tokenizer_matches_xmodel_conventions(tokenizer_dir, data, tmp_path):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "tokenizer.model"))
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, -1)
    assert [sp.id_to_piece(i) for i in sp.encode("\n")] == ["▁", "<0x0A>"]  # byte fallback, as Xmodel's
    assert [sp.id_to_piece(i) for i in sp.encode("What?\nAnswer")] == ["▁What", "?", "<0x0A>", "Answer"]
    for text in ["A chat between a curious user and an artificial intelligence assistant. USER: Is there a red "
                 "circle in the image?" + SQ + " ASSISTANT: Yes", "Zebra 42 élan ☃", "what  color"]:
        assert sp.decode(sp.encode(text)) == re.sub(" +", " ", text)  # extra whitespace removed
    # prompt words are whole pieces, so sequences stay short
    assert [sp.id_to_piece(i) for i in sp.encode("USER: ASSISTANT:")] == ["▁USER", ":", "▁ASSISTANT", ":"]
    m = pb.ModelProto()
    m.ParseFromString((tokenizer_dir / "tokenizer.model").read_bytes())
    assert m.trainer_spec.model_type == pb.TrainerSpec.UNIGRAM and m.trainer_spec.byte_fallback
    assert not m.trainer_spec.hard_vocab_limit and m.trainer_spec.pad_id == -1
    assert m.normalizer_spec.name == "identity" and m.normalizer_spec.add_dummy_prefix
    assert m.normalizer_spec.remove_extra_whitespaces
    # deterministic
    again = tt.train_tokenizer(tt.dataset_texts(data), tmp_path / "again")
    assert (again / "tokenizer.model").read_bytes() == (tokenizer_dir / "tokenizer.model").read_bytes()


def test_prompt_pieces_make_the_prompt_boilerplate_one_piece_each(tokenizer_dir, data, tmp_path):
    from xmodelvlm import IGNORE_INDEX, load_tokenizer, tokenizer_image_token
    from xmodelvlm.data.conversation import SYSTEM_V1
    from xmodelvlm.data.masking import ConversationEncoder

    with_pieces = load_tokenizer(tt.train_tokenizer(tt.dataset_texts(data), tmp_path / "p", prompt_pieces=True))
    plain = load_tokenizer(tokenizer_dir)
    turns = [("human", "<image>\nWhat shape is the red object?" + SQ), ("gpt", "Circle"),
             ("human", "Is it large?" + SQ), ("gpt", "Yes")]
    encoded = ConversationEncoder(with_pieces, "v1")(turns)
    assert encoded.input_ids == tokenizer_image_token(encoded.prompt, with_pieces)  # masking agrees with inference
    toks = [with_pieces.convert_ids_to_tokens(i) for i in encoded.input_ids if i >= 0]
    assert toks[1] == (" " + SYSTEM_V1).replace(" ", "\u2581")
    assert toks.count(SQ.strip().replace(" ", "\u2581")) == 2
    assert [with_pieces.convert_ids_to_tokens(i) for i in encoded.labels if i != IGNORE_INDEX] == \
        ["\u2581Circle", "</s>", "\u2581Yes", "</s>"]
    assert with_pieces.sp_model.decode(with_pieces.sp_model.encode(encoded.prompt)) == encoded.prompt
    # the rest of the text is split as before: only the boilerplate got shorter (29 + 2 x 10 pieces -> 3)
    shorter = len(tokenizer_image_token(encoded.prompt, plain)) - len(encoded.input_ids)
    assert shorter == len(plain.sp_model.encode(SYSTEM_V1)) - 1 + 2 * (len(plain.sp_model.encode(SQ.strip())) - 1)
    assert shorter >= 40
    # an eval prompt (MME's suffix is not a piece) and a caption are unaffected
    for text in ["Is there a red circle? Please answer yes or no.", "a red circle on the left"]:
        assert with_pieces.convert_ids_to_tokens(with_pieces(text).input_ids) == \
            plain.convert_ids_to_tokens(plain(text).input_ids)


def test_tokenizer_config_files(tokenizer_dir):
    cfg = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    special = json.loads((tokenizer_dir / "special_tokens_map.json").read_text())
    assert cfg["tokenizer_class"] == "XmodelTokenizer" and "auto_map" not in cfg
    assert cfg["add_bos_token"] is True and cfg["add_eos_token"] is False and cfg["pad_token"] == "<unk>"
    assert special == {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}
    released = FIXTURES / "xmodel_tokenizer"
    if released.is_dir():
        ref = json.loads((released / "tokenizer_config.json").read_text())
        assert set(cfg) == set(ref) - {"auto_map"}
        assert {k: v for k, v in cfg.items() if k != "tokenizer_class"} == \
            {k: v for k, v in ref.items() if k not in ("auto_map", "tokenizer_class")}
        assert special == json.loads((released / "special_tokens_map.json").read_text())


def test_tokenizer_cli(data, tmp_path):
    assert tt.main(["--data", str(data), "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t/tokenizer.model").is_file()


# ------------------------------------------------------------------------------------------ tiny CLIP
def test_tiny_clip_saves_a_loadable_openai_style_dir(data, tmp_path):
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionModel
    from PIL import Image

    from xmodelvlm.demo import tiny_clip as tc

    out = tc.pretrain_tiny_clip(data / "train/pretrain.json", data / "train", tmp_path / "clip", steps=2,
                                batch_size=8, quiet=True)
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in out.iterdir()}
    model, info = CLIPVisionModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.image_size, cfg.patch_size, cfg.hidden_act) == \
        (128, 4, 64, 8, "quick_gelu")
    proc = CLIPImageProcessor.from_pretrained(out)
    img = Image.open(data / "train/images/000000.png")
    pix = proc(images=img, return_tensors="pt")["pixel_values"]
    assert pix.shape == (1, 3, 64, 64)
    # the processor is the identity + normalisation on the generator's square images (what training used)
    assert torch.allclose(pix, tc.normalize(tc.load_images([data / "train/images/000000.png"], 64)), atol=1e-5)
    with torch.no_grad():
        hs = model(pixel_values=pix, output_hidden_states=True).hidden_states
    feats = hs[-2][:, 1:]  # layer -2, patch tokens only (what the VLM uses)
    assert feats.shape == (1, 64, 128) and feats.shape[1] % 4 == 0
    stats = json.loads((out / "clip_pretrain_stats.json").read_text())
    assert stats["steps"] == 2 and stats["aux_region_loss"] is True and stats["located_phrases"] is True
    for key in ("seconds", "final_loss", "probe_acc", "retrieval_top1", "presence_acc", "color_acc"):
        assert isinstance(stats[key], float), key


def test_tiny_clip_cli_patch_size_and_unlocated_phrases(data, tmp_path):
    from xmodelvlm.demo import tiny_clip as tc

    out = tmp_path / "clip16"
    assert tc.main(["--data", str(data), "--out", str(out), "--steps", "1", "--batch-size", "8", "--patch-size", "16",
                    "--no-located-phrases", "--threads", "1", "--quiet"]) == 0
    stats = json.loads((out / "clip_pretrain_stats.json").read_text())
    assert stats["num_patches"] == 16 and stats["located_phrases"] is False and stats["aux_region_loss"] is True
    assert 0.0 <= stats["position_acc"] <= 1.0
    with pytest.raises(SystemExit) as exc:  # a patch size that does not divide the images: usage error, exit 2
        tc.main(["--data", str(data), "--out", str(tmp_path / "bad"), "--patch-size", "7", "--quiet"])
    assert exc.value.code == 2 and not (tmp_path / "bad").exists()


def test_tiny_clip_aux_head_none_puts_the_region_loss_on_the_tokens_themselves(data, tmp_path):
    import torch

    from xmodelvlm.demo import tiny_clip as tc

    tokens = torch.randn(2, 4, 8)
    assert torch.equal(tc._region_head("none", 8, 8)(tokens), tokens)
    assert tc._region_head("linear", 8, 16)(tokens).shape == (2, 4, 16)
    with pytest.raises(ValueError, match="projection dim"):  # no head, so the widths must agree
        tc._region_head("none", 8, 16)
    with pytest.raises(ValueError, match="aux_head"):
        tc._region_head("mlp", 8, 8)
    from transformers import CLIPVisionModel

    weights = {}
    for head in ("linear", "none"):  # same seed and steps: only where the region loss acts differs
        out = tmp_path / head
        assert tc.main(["--data", str(data), "--out", str(out), "--steps", "2", "--batch-size", "8",
                        "--aux-head", head, "--threads", "1", "--quiet"]) == 0
        assert json.loads((out / "clip_pretrain_stats.json").read_text())["aux_head"] == head
        weights[head] = CLIPVisionModel.from_pretrained(out).state_dict()
    assert any(not torch.equal(weights["linear"][k], weights["none"][k]) for k in weights["linear"])


def test_tiny_clip_without_scenes_is_pure_contrastive(data, tmp_path):
    from xmodelvlm.demo import tiny_clip as tc

    out = tc.pretrain_tiny_clip(data / "train/pretrain.json", data / "train", tmp_path / "clip", steps=1,
                                batch_size=8, scenes_json=tmp_path / "absent.json", quiet=True)
    stats = json.loads((out / "clip_pretrain_stats.json").read_text())
    assert stats["aux_region_loss"] is False and stats["probe_acc"] == stats["retrieval_top1"]


@pytest.mark.slow
def test_default_sizes_generate_quickly(tmp_path):
    import time

    t = time.time()
    m = sd.generate(tmp_path / "full", quiet=True)
    assert time.time() - t < 60
    c = m["counts"]
    assert c["train_images"] == 4000 and c["pope_questions"] == 300 and c["gqa_questions"] == 300
    assert c["mme_questions"] == 300
    assert 0.03 < c["instruct_text_only"] / c["instruct_samples"] < 0.07


def test_at_the_demo_size_every_object_lies_in_its_own_slot_cell():
    """At 48 px the five slots are the centres of a 3x3 grid of 16 px cells, so a patch-16 tower gives one token
    per slot: each object's pixels stay inside its slot's cell, all but a sliver of the largest, jittered ones."""
    from xmodelvlm.demo.run import DEFAULT

    size, cell = DEFAULT.image_size, DEFAULT.clip_patch
    assert size == 3 * cell
    cell_of = {"left": (1, 0), "right": (1, 2), "top": (0, 1), "bottom": (2, 1), "center": (1, 1)}
    for i in range(200):
        scene = sd.sample_scene(sd._rng(0, sd.STREAM_TRAIN, i), size)
        mask = sd.render_mask(scene, size)
        for k, obj in enumerate(scene.objects, start=1):
            row, col = cell_of[obj.position]
            inside = mask[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] == k
            assert inside.sum() >= 0.9 * (mask == k).sum(), (i, obj)


def test_located_region_targets_name_each_objects_slot():
    import torch

    from xmodelvlm.demo import tiny_clip as tc

    meta = tc.scenes_meta()
    phrases = tc._phrases(meta, located=True)
    assert len(phrases) == 6 * 4 * 5 + 9 and "a red circle on the left" in phrases
    scenes = [{"objects": [vars(o) for o in sd.sample_scene(sd._rng(0, sd.STREAM_TRAIN, i), 48).objects],
               "bg_color": "gray", "bg_texture": "plain"} for i in range(20)]
    located = tc.patch_targets(scenes, 48, 16, meta, located=True)
    plain = tc.patch_targets(scenes, 48, 16, meta)
    assert located.shape == (20, 9, len(phrases)) and plain.shape == (20, 9, 6 * 4 + 9)
    for targets in (located, plain):  # every patch's coverage adds up to one
        assert torch.allclose(targets.sum(-1), torch.ones(20, 9))
    cell = {"left": 3, "right": 5, "top": 1, "bottom": 7, "center": 4}
    n_objects = 6 * 4 * 5
    for k, sc in enumerate(scenes):
        for o in sc["objects"]:
            name = f"a {o['color']} {o['shape']} {sd.POS_PHRASE[o['position']]}"
            assert phrases[int(located[k, cell[o["position"]], :n_objects].argmax())] == name



def test_anisotropy_is_zero_when_every_direction_varies_alike():
    import torch

    from xmodelvlm.demo import tiny_clip as tc

    torch.manual_seed(0)
    isotropic = torch.randn(64, 9, 16)
    skewed = isotropic * torch.tensor([10.0] + [1.0] * 15)  # one loud direction, as a loud background makes
    assert tc._anisotropy(isotropic) < 0.01 < 0.1 < tc._anisotropy(skewed)
    assert torch.isclose(tc._anisotropy(isotropic * 5 + 3), tc._anisotropy(isotropic))  # scale and shift free


def test_tiny_clip_isotropy_weight_makes_its_tokens_better_conditioned(data, tmp_path):
    """The isotropy loss on the layer -2 tokens (`--isotropy-weight`) narrows the spread of their covariance's
    eigenvalues, which is what lets a projector learn the quiet attributes (BENCHMARKS.md)."""
    import torch
    from transformers import CLIPVisionModel

    from xmodelvlm.demo import tiny_clip as tc

    pix = tc.normalize(tc.load_images(sorted((data / "train/images").glob("*.png")), 64))
    spread = {}
    for weight in (0.0, 30.0):
        out = tmp_path / f"iso{weight}"
        assert tc.main(["--data", str(data), "--out", str(out), "--steps", "30", "--batch-size", "16",
                        "--patch-size", "16", "--lr", "1e-3", "--isotropy-weight", str(weight), "--threads", "1",
                        "--quiet"]) == 0
        assert json.loads((out / "clip_pretrain_stats.json").read_text())["isotropy_weight"] == weight
        with torch.no_grad():
            tokens = CLIPVisionModel.from_pretrained(out)(pixel_values=pix, output_hidden_states=True).hidden_states[-2]
        x = tokens[:, 1:].reshape(-1, tokens.shape[-1]).double()
        eig = torch.linalg.eigvalsh(torch.cov((x - x.mean(0)).T))
        spread[weight] = (eig[-1] / eig.sum()).item()  # the loudest direction's share of the variance
    assert spread[30.0] < 0.5 * spread[0.0], spread
    # also without the region loss (no scenes.json), and a negative weight is a usage error
    out = tc.pretrain_tiny_clip(data / "train/pretrain.json", data / "train", tmp_path / "plain", steps=1, batch_size=8,
                                scenes_json=tmp_path / "absent.json", isotropy_weight=1.0, quiet=True)
    assert json.loads((out / "clip_pretrain_stats.json").read_text())["isotropy_weight"] == 1.0
    with pytest.raises(SystemExit) as exc:
        tc.main(["--data", str(data), "--out", str(tmp_path / "bad"), "--isotropy-weight", "-1", "--quiet"])
    assert exc.value.code == 2 and not (tmp_path / "bad").exists()
