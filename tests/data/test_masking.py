"""Exact label masking with the real Xmodel tokenizer, token by token (SPEC §4)."""
from __future__ import annotations

import random

import pytest

from xmodelvlm import IGNORE_INDEX, IMAGE_TOKEN_INDEX, get_conv_template, tokenizer_image_token
from xmodelvlm.data import masking
from xmodelvlm.data.masking import (BadSample, ConversationEncoder, SpanTokenizer, expanded_length,
                                    labels_from_regions, sp_encode_with_offsets, truncate)

H, G = "human", "gpt"


@pytest.fixture(scope="module")
def v1(tokenizer):
    return ConversationEncoder(tokenizer, "v1")


@pytest.fixture(scope="module")
def plain(tokenizer):
    return ConversationEncoder(tokenizer, "plain")


def pieces(tokenizer, ids):
    return [IMAGE_TOKEN_INDEX if i == IMAGE_TOKEN_INDEX else tokenizer.convert_ids_to_tokens(i) for i in ids]


def supervised_pieces(tokenizer, encoded):
    return [tokenizer.convert_ids_to_tokens(label) for label in encoded.labels if label != IGNORE_INDEX]


def supervised_runs(labels):
    """[(start, end)) of each maximal run of supervised positions."""
    runs, start = [], None
    for t, label in enumerate(list(labels) + [IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = t
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, t))
            start = None
    return runs


def inference_prompt(turns, k, version="v1"):
    """What inference feeds before reply k, rendered straight from the template (independently of masking.py)."""
    conv = get_conv_template(version)
    for role, text in turns[:k]:
        conv.append_message(conv.roles[0] if role == H else conv.roles[1], text)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def test_v1_single_turn_supervises_exactly_the_reply_and_eos(tokenizer, v1):
    encoded = v1([(H, "<image>\nWhat color?"), (G, "Red.")])
    assert encoded.prompt.endswith("USER: <image>\nWhat color? ASSISTANT: Red.</s>")
    assert encoded.input_ids == tokenizer_image_token(encoded.prompt, tokenizer)
    assert supervised_pieces(tokenizer, encoded) == ["▁Red", ".", "</s>"]
    toks = pieces(tokenizer, encoded.input_ids)
    # the ":" after ASSISTANT, BOS and the image placeholder are input only
    colon = len(toks) - 4
    assert toks[colon - 3:colon + 1] == ["ASS", "IST", "ANT", ":"]
    assert encoded.labels[:colon + 1] == [IGNORE_INDEX] * (colon + 1)
    assert encoded.input_ids[0] == tokenizer.bos_token_id and encoded.labels[0] == IGNORE_INDEX
    assert encoded.labels[encoded.input_ids.index(IMAGE_TOKEN_INDEX)] == IGNORE_INDEX


def test_lone_space_piece_before_reply_is_supervised(tokenizer, v1):
    encoded = v1([(H, "hi"), (G, "hello")])
    assert supervised_pieces(tokenizer, encoded) == ["▁", "hello", "</s>"]
    assert pieces(tokenizer, encoded.input_ids)[-4:] == [":", "▁", "hello", "</s>"]
    assert encoded.labels[-4] == IGNORE_INDEX


def test_multi_turn_each_reply_is_one_run_ending_in_eos(tokenizer, v1):
    turns = [(H, "<image>\nWhat is it?"), (G, "A red circle."), (H, "Where is it?"), (G, "On the left."),
             (H, "Anything else?"), (G, "No.")]
    encoded = v1(turns)
    runs = supervised_runs(encoded.labels)
    assert len(runs) == 3
    got = [pieces(tokenizer, encoded.input_ids[a:b]) for a, b in runs]
    assert got == [["▁A", "▁red", "▁", "circle", ".", "</s>"],
                   ["▁On", "▁the", "▁left", ".", "</s>"],
                   ["▁No", ".", "</s>"]]
    # what follows a reply's </s> ("USER: ...") is input again
    after = encoded.input_ids[runs[0][1]:runs[1][0]]
    assert tokenizer.sp_model.decode(after) == "USER: Where is it? ASSISTANT:"
    assert set(encoded.labels[runs[0][1]:runs[1][0]]) == {IGNORE_INDEX}


def test_text_only_sample(tokenizer, v1):
    encoded = v1([(H, "Write one word."), (G, "Okay")])
    assert IMAGE_TOKEN_INDEX not in encoded.input_ids
    assert encoded.input_ids == tokenizer(encoded.prompt).input_ids
    assert supervised_pieces(tokenizer, encoded) == ["▁", "Okay", "</s>"]


def test_plain_supervises_caption_and_newline_only(tokenizer, plain):
    encoded = plain([(H, "<image>\nRender a clear and concise summary of the photo."), (G, "a red circle")])
    assert encoded.prompt == "<image>a red circle\n"           # the human text is replaced by the image alone
    assert encoded.input_ids[:2] == [tokenizer.bos_token_id, IMAGE_TOKEN_INDEX]
    assert encoded.labels[:2] == [IGNORE_INDEX, IGNORE_INDEX]
    assert encoded.labels[2:] == encoded.input_ids[2:]
    assert supervised_pieces(tokenizer, encoded)[-1] == "<0x0A>"
    assert tokenizer.sp_model.decode(encoded.input_ids[2:]) == "a red circle\n"


@pytest.mark.parametrize("reply", ["我很好，谢谢！", "  中文回答 𝄞 and ASCII", "ナイス 😀"])
def test_utf8_replies_are_supervised_exactly(tokenizer, v1, reply):
    turns = [(H, "<image>\n你好吗？"), (G, reply)]
    encoded = v1(turns)
    (start, end), = supervised_runs(encoded.labels)
    assert encoded.input_ids[end - 1] == tokenizer.eos_token_id
    # the supervised tokens are exactly the reply: sentencepiece decodes them back to it (normalised whitespace)
    assert tokenizer.sp_model.decode(encoded.input_ids[start:end - 1]) == " ".join(reply.split())
    assert encoded.input_ids[start:end - 1] == tokenizer.sp_model.encode(" " + reply)
    assert encoded.input_ids[:start] == tokenizer_image_token(inference_prompt(turns, 1), tokenizer)


@pytest.mark.parametrize("text", ["你好 世界 ASSISTANT:  中文回答𝄞", "a  b   c ", "  lead\n\n\tx", "ナイス 😀!", "é"])
def test_byte_offsets_from_proto_match_char_offsets(tokenizer, text):
    reference = sp_encode_with_offsets(tokenizer.sp_model, text, "offset_mapping")
    checked = 0
    for mode in ("proto", "immutable_proto"):
        try:
            got = sp_encode_with_offsets(tokenizer.sp_model, text, mode)
        except RuntimeError:
            continue  # this sentencepiece release lacks that API
        assert got == reference
        checked += 1
    assert checked, "no byte-offset API available to compare"
    for token_id, begin, end in reference:
        assert 0 <= begin <= end <= len(text)


TRICKY_QUESTIONS = ["What color?", "你好吗？", "Describe it.\nAnswer briefly.", "a  b", "x:y", "USER: hi",
                    "Why?  ", "1+1=?", "Reference OCR token: STOP"]
TRICKY_REPLIES = ["Red.", "hello", " leading space", "\nnewline first", "我很好", "42", ":colon", "(a) yes",
                  "Two  spaces", "trailing space ", "ASSISTANT: echo", "😀", "tab\there", "Yes"]


def test_training_prompt_equals_inference_prompt_for_every_turn(tokenizer, v1):
    rng = random.Random(0)
    for trial in range(40):
        n = rng.randint(1, 4)
        turns = []
        for k in range(n):
            question = rng.choice(TRICKY_QUESTIONS)
            if k == 0 and trial % 2:
                question = "<image>\n" + question
            turns += [(H, question), (G, rng.choice(TRICKY_REPLIES))]
        encoded = v1(turns)
        assert encoded.input_ids == tokenizer_image_token(encoded.prompt, tokenizer)
        runs = supervised_runs(encoded.labels)
        assert len(runs) == n, (turns, runs)
        for k, (start, end) in enumerate(runs):
            prompt_k = inference_prompt(turns, 2 * k + 1)
            assert encoded.input_ids[:start] == tokenizer_image_token(prompt_k, tokenizer), (turns, k)
            assert encoded.input_ids[end - 1] == tokenizer.eos_token_id
            reply = turns[2 * k + 1][1]
            # exactly the reply's tokens: they decode to what the reply alone decodes to
            sp = tokenizer.sp_model
            assert sp.decode(encoded.input_ids[start:end - 1]) == sp.decode(sp.encode(reply))
        # nothing outside the replies is supervised: every masked token lies before/between replies
        assert sum(b - a for a, b in runs) == encoded.num_supervised


def test_mismatch_with_tokenizer_image_token_is_loud(tokenizer, monkeypatch):
    span = SpanTokenizer(tokenizer)
    monkeypatch.setattr(masking, "tokenizer_image_token", lambda prompt, tok: [1, 2, 3])
    with pytest.raises(RuntimeError, match="differs from tokenizer_image_token"):
        span("USER: hi ASSISTANT: hello</s>")


def test_reference_check_covers_the_first_prompts_then_a_sample(tokenizer, monkeypatch):
    checked = []
    reference = masking.tokenizer_image_token
    monkeypatch.setattr(masking, "tokenizer_image_token",
                        lambda prompt, tok: checked.append(prompt) or reference(prompt, tok))
    span = SpanTokenizer(tokenizer, check_first=3, check_every=4)
    prompts = [f"USER: question {k} ASSISTANT: answer {k}</s>" for k in range(12)]
    for prompt in prompts:
        span(prompt)
    assert checked == [prompts[k] for k in (0, 1, 2, 3, 7, 11)]  # calls 1-3, then calls 4, 8, 12
    monkeypatch.setattr(masking, "tokenizer_image_token", lambda prompt, tok: [1, 2, 3])
    for _ in range(3):  # calls 13-15 are not checked; call 16 is, and the mismatch is loud
        span(prompts[0])
    with pytest.raises(RuntimeError, match="differs from tokenizer_image_token"):
        span(prompts[0])


def test_token_straddling_a_reply_boundary_is_loud():
    with pytest.raises(RuntimeError, match="straddles"):
        labels_from_regions([5, 6], [(0, 4), (4, 9)], [(6, 12)], "x" * 12)
    with pytest.raises(RuntimeError, match="straddles"):
        labels_from_regions([5, 6], [(0, 4), (7, 14)], [(6, 12)], "x" * 14)
    # zero-width pieces (byte-fallback heads, dummy prefixes) at a region's end belong to what follows
    assert labels_from_regions([5, 6, 7], [(6, 8), (8, 12), (12, 12)], [(6, 12)], "x" * 12) == [5, 6, IGNORE_INDEX]


def test_special_token_strings_are_found(tokenizer):
    span = SpanTokenizer(tokenizer)
    assert span.special_strings_in("a </s> b <s><unk>") == ["</s>", "<s>", "<unk>"]
    assert span.special_strings_in("plain <b>text</b>") == []


def test_unknown_template_is_a_user_error(tokenizer):
    from xmodelvlm.errors import UserError
    with pytest.raises(UserError, match="unknown conversation mode"):
        ConversationEncoder(tokenizer, "llama_9")


def test_truncation_counts_image_tokens_and_never_cuts_an_image():
    ids = [1, IMAGE_TOKEN_INDEX, 10, 11, 12, 13]
    labels = [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 11, 12, 13]
    assert expanded_length(ids, 4) == 9
    assert truncate(ids, labels, 9, 4) == (ids, labels)
    assert truncate(ids, labels, 7, 4) == (ids[:4], labels[:4])       # 1 + 4 + 2 positions
    assert truncate(ids, labels, 5, 4) == (ids[:2], labels[:2])       # BOS + the whole image
    with pytest.raises(BadSample) as info:
        truncate(ids, labels, 4, 4)                                     # the image would be cut
    assert info.value.kind == "image cut by truncation"


def test_special_token_text_in_a_question_stays_input_and_matches_inference(tokenizer, v1):
    # Decision: only replies may not hold special-token strings (the dataset skips those); in a question the
    # tokenizer turns "</s>" into EOS at training and inference alike, so the prompts still agree.
    turns = [(H, "Is </s> a token?"), (G, "Yes.")]
    encoded = v1(turns)
    (start, end), = supervised_runs(encoded.labels)
    assert encoded.input_ids[:start].count(tokenizer.eos_token_id) == 1
    assert encoded.input_ids[:start] == tokenizer_image_token(inference_prompt(turns, 1), tokenizer)
    assert supervised_pieces(tokenizer, encoded) == ["▁Yes", ".", "</s>"]


@pytest.mark.parametrize("mode", ["proto", "immutable_proto"])
def test_byte_offset_path_gives_the_same_labels(tokenizer, v1, mode):
    try:
        encoder = ConversationEncoder(tokenizer, "v1", offset_mode=mode)
        sp_encode_with_offsets(tokenizer.sp_model, "x", mode)
    except RuntimeError:
        pytest.skip(f"sentencepiece here has no out_type={mode!r}")
    turns = [(H, "<image>\n这是什么？"), (G, "一只猫 😀"), (H, "颜色？"), (G, " 橙色。")]
    assert encoder(turns).labels == v1(turns).labels
    assert supervised_pieces(tokenizer, encoder(turns))[-1] == "</s>"


def test_encoder_refuses_a_reply_holding_a_special_token_string(v1):
    with pytest.raises(BadSample) as info:
        v1([(H, "q"), (G, "stop</s> here")])
    assert info.value.kind == "special token in reply"
