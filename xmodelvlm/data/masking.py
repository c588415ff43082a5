"""Tokenize a whole conversation ONCE and derive its labels from character offsets (SPEC §4).

Why this shape: the seed tokenized the prompt and each instruction separately and masked "instruction length − 2"
tokens, which left the ":" after ASSISTANT supervised and silently zeroed whole samples on "tokenization mismatch".
Here the conversation is rendered with the same `conv_templates` code inference uses, tokenized by the same rule as
`tokenizer_image_token` (so the prompt tokens are by construction the ones inference feeds — and we assert it on
the first prompts and a sample after them, see `SpanTokenizer`), and
each token is labelled by *where its text sits* in the rendered string:

* For assistant turn k, `open_k` = the turns before k plus an open assistant turn (exactly the inference prompt,
  ending in "ASSISTANT:") and `closed_k` = the turns up to and including k. The reply region is the characters
  `[len(open_k), len(closed_k))`: the space after "ASSISTANT:", the reply, and its closing "</s>" (v1), or the
  caption and its "\\n" (plain).
* A token is supervised iff its character span starts inside a reply region. SentencePiece puts the space after
  "ASSISTANT:" into the reply's first piece ("▁Red") or a lone "▁" ("▁" + "hello"), so that piece is supervised;
  ":" ends before the region and never is. A token straddling a region boundary raises `RuntimeError` (it would
  mean training and inference prompts differ) — there is no silent "mismatch" path.

Per-token character spans come from sentencepiece itself (`offset_mapping`, or byte offsets from the proto API on
older sentencepiece, converted to character offsets so UTF-8 text such as Chinese lines up).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from .conversation import SeparatorStyle, get_conv_template
from .tokenization import tokenizer_image_token

HUMAN, GPT = "human", "gpt"


class BadSample(Exception):
    """A data problem that makes one sample unusable; `kind` is a short stable key for counting."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


@dataclass
class EncodedConversation:
    """One tokenized sample: ids with one IMAGE_TOKEN_INDEX per image, labels of the same length."""

    prompt: str                       # the rendered conversation
    input_ids: list[int]
    labels: list[int]
    spans: list[tuple[int, int]]      # character span of each token in `prompt`
    inference_prompts: list[str] = field(default_factory=list)  # open prompt before each assistant reply

    @property
    def num_supervised(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


# ---------------------------------------------------------------------------------------------------------------
# Tokenization with character spans


def _byte_to_char_maps(text: str) -> tuple[list[int], list[int]]:
    """For each byte offset of `text` in UTF-8 (0..len): the index of the character holding it (floor), and the
    first character boundary at or after it (ceil)."""
    floor: list[int] = []
    ceil: list[int] = []
    for index, char in enumerate(text):
        width = len(char.encode("utf-8"))
        floor.extend([index] * width)
        ceil.extend([index] + [index + 1] * (width - 1))
    floor.append(len(text))
    ceil.append(len(text))
    return floor, ceil


def _offsets_from_proto(pieces, text: str) -> list[tuple[int, int, int]]:
    floor, ceil = _byte_to_char_maps(text)
    return [(piece.id, floor[piece.begin], ceil[piece.end]) for piece in pieces]


OFFSET_MODES = ("offset_mapping", "proto", "immutable_proto")


def sp_encode_with_offsets(sp_model, text: str, mode: str = "offset_mapping") -> list[tuple[int, int, int]]:
    """`sp_model.encode(text)` as (id, char_begin, char_end) triples.

    `mode` picks the sentencepiece API: "offset_mapping" (sentencepiece ≥ 0.2.1, character offsets), "proto" or
    "immutable_proto" (byte offsets into the UTF-8 text, converted here). An API this sentencepiece lacks raises
    `RuntimeError`."""
    if not text:
        return []
    try:
        if mode == "offset_mapping":
            result = sp_model.encode(text, out_type="offset_mapping")
            return [(i, b, e) for i, (b, e) in zip(result["ids"], result["offsets"])]
        encoded = sp_model.encode(text, out_type=mode)
        return _offsets_from_proto(encoded.pieces, text)
    except (ValueError, TypeError, ImportError, AttributeError) as exc:  # API absent in this sentencepiece
        raise RuntimeError(f"sentencepiece cannot report piece offsets with out_type={mode!r}: {exc}") from exc


def detect_offset_mode(sp_model) -> str:
    """The first offset API this sentencepiece supports that agrees with plain `encode`."""
    probe = "ab 中文 \n x"
    for mode in OFFSET_MODES:
        try:
            triples = sp_encode_with_offsets(sp_model, probe, mode)
        except RuntimeError:
            continue
        if [t[0] for t in triples] == sp_model.encode(probe):
            return mode
    raise RuntimeError("this sentencepiece reports no piece offsets (need sentencepiece >= 0.1.99)")


class SpanTokenizer:
    """Tokenizes like `tokenizer_image_token` (split at `<image>`, then like XmodelTokenizer: split at the
    special-token strings, `sp.encode` each other non-empty piece, one BOS in front) and also returns each token's
    character span in the prompt.

    Each result is checked against `tokenizer_image_token` itself for the first `check_first` prompts, then for one
    prompt in `check_every` (1: all). A disagreement is a bug in this class for that tokenizer, so it shows on the
    first prompts of a kind; checking every prompt cost a CPU training step about a millisecond per sample (the
    transformers tokenizer is the slow half)."""

    def __init__(self, tokenizer, offset_mode: str | None = None, check_first: int = 256, check_every: int = 16):
        sp_model = getattr(tokenizer, "sp_model", None)
        if sp_model is None:
            raise RuntimeError(f"{type(tokenizer).__name__} has no sp_model: label masking needs the SentencePiece "
                               "XmodelTokenizer (xmodelvlm.load_tokenizer)")
        self.tokenizer = tokenizer
        self.sp_model = sp_model
        self.offset_mode = offset_mode or detect_offset_mode(sp_model)
        empty = tokenizer("").input_ids
        bos = tokenizer.bos_token_id
        if empty not in ([], [bos]):
            raise RuntimeError(f"unsupported tokenizer setting: tokenizer('') gives {empty} (EOS appended?); "
                               "training expects BOS only")
        self.bos_ids = list(empty)
        # The strings the tokenizer never splits (special and added tokens) and their ids, longest first so the
        # regex finds the longest match at the earliest position, as transformers' trie does.
        special: dict[str, int] = dict(tokenizer.added_tokens_encoder)
        for token in tokenizer.all_special_tokens:
            special.setdefault(token, tokenizer.convert_tokens_to_ids(token))
        for token in tokenizer.added_tokens_decoder.values():
            if any(getattr(token, flag, False) for flag in ("lstrip", "rstrip", "single_word")):
                raise RuntimeError(f"added token {token.content!r} strips spaces or is single_word; not supported")
        self.special_ids = special
        alternatives = "|".join(re.escape(t) for t in sorted(special, key=len, reverse=True) if t)
        self.special_pattern = re.compile(alternatives or r"(?!)")  # (?!) never matches
        self._special_initials = tuple({token[0] for token in special if token})
        self.check_first, self.check_every = check_first, max(1, check_every)
        self._calls = 0

    def special_strings_in(self, text: str) -> list[str]:
        """The special-token strings in `text` (the tokenizer would turn each into its id)."""
        if not any(initial in text for initial in self._special_initials):  # the common case, cheaply
            return []
        return self.special_pattern.findall(text)

    def _encode_chunk(self, chunk: str, base: int, ids: list[int], spans: list[tuple[int, int]]) -> None:
        position = 0
        for match in self.special_pattern.finditer(chunk):
            self._encode_text(chunk[position:match.start()], base + position, ids, spans)
            ids.append(self.special_ids[match.group()])
            spans.append((base + match.start(), base + match.end()))
            position = match.end()
        self._encode_text(chunk[position:], base + position, ids, spans)

    def _encode_text(self, text: str, base: int, ids: list[int], spans: list[tuple[int, int]]) -> None:
        for token_id, begin, end in sp_encode_with_offsets(self.sp_model, text, self.offset_mode):
            ids.append(token_id)
            spans.append((base + begin, base + end))

    def __call__(self, prompt: str) -> tuple[list[int], list[tuple[int, int]]]:
        ids: list[int] = list(self.bos_ids)
        spans: list[tuple[int, int]] = [(0, 0)] * len(ids)
        position = 0
        for index, chunk in enumerate(prompt.split(DEFAULT_IMAGE_TOKEN)):
            if index:
                ids.append(IMAGE_TOKEN_INDEX)
                spans.append((position - len(DEFAULT_IMAGE_TOKEN), position))
            self._encode_chunk(chunk, position, ids, spans)
            position += len(chunk) + len(DEFAULT_IMAGE_TOKEN)
        self._calls += 1
        if self._calls > self.check_first and self._calls % self.check_every:
            return ids, spans
        reference = tokenizer_image_token(prompt, self.tokenizer)
        if ids != reference:
            raise RuntimeError(
                "span tokenization differs from tokenizer_image_token (a bug, not a data problem): "
                f"prompt={prompt[:200]!r}... ours={ids[:40]}... reference={reference[:40]}...")
        return ids, spans


# ---------------------------------------------------------------------------------------------------------------
# Rendering and labels


def is_plain(version: str) -> bool:
    return get_conv_template(version).sep_style == SeparatorStyle.PLAIN


def render_conversation(turns: list[tuple[str, str]], version: str) -> tuple[str, list[tuple[int, int]], list[str]]:
    """Render (role, text) turns with `conv_templates[version]` → (full prompt, reply character regions,
    inference prompt before each reply). `turns` must alternate human/gpt starting with human.

    For `plain` the human text is replaced by the image alone, as LLaVA's stage-1 preprocessing does."""
    template = get_conv_template(version)
    plain = template.sep_style == SeparatorStyle.PLAIN
    role_names = {HUMAN: template.roles[0], GPT: template.roles[1]}
    messages = [[role_names[role], DEFAULT_IMAGE_TOKEN if plain and role == HUMAN else text]
                for role, text in turns]

    def prompt_of(prefix: list[list]) -> str:
        conv = template.copy()
        conv.messages = [list(m) for m in prefix]
        return conv.get_prompt()

    full = prompt_of(messages)
    regions: list[tuple[int, int]] = []
    inference_prompts: list[str] = []
    for k, (role, _) in enumerate(turns):
        if role != GPT:
            continue
        open_prompt = prompt_of(messages[:k] + [[role_names[GPT], None]])
        closed = prompt_of(messages[:k + 1])
        if not (full.startswith(open_prompt) and full.startswith(closed) and len(open_prompt) < len(closed)):
            raise RuntimeError(f"template {version!r} does not render turn {k} as a prefix of the conversation")
        regions.append((len(open_prompt), len(closed)))
        inference_prompts.append(open_prompt)
    return full, regions, inference_prompts


def labels_from_regions(ids: list[int], spans: list[tuple[int, int]], regions: list[tuple[int, int]],
                        prompt: str) -> list[int]:
    """Supervise exactly the tokens whose span starts inside a region; image placeholders never."""
    labels = [IGNORE_INDEX] * len(ids)
    region_index = 0
    for t, (token_id, (begin, end)) in enumerate(zip(ids, spans)):
        while region_index < len(regions) and begin >= regions[region_index][1]:
            region_index += 1
        if region_index == len(regions):
            break
        start, stop = regions[region_index]
        inside = start <= begin < stop
        if (begin < start < end) or (inside and end > stop):
            raise RuntimeError(f"token {t} (id {token_id}, text {prompt[begin:end]!r}) straddles the boundary of "
                               f"reply {region_index} at characters {start}-{stop}")
        if inside and token_id != IMAGE_TOKEN_INDEX:
            labels[t] = token_id
    return labels


class ConversationEncoder:
    """(role, text) turns → `EncodedConversation` for one template; build once per tokenizer."""

    def __init__(self, tokenizer, version: str, offset_mode: str | None = None):
        get_conv_template(version)  # unknown names fail here, as a UserError
        self.version = version
        self.plain = is_plain(version)
        self.tokenize = SpanTokenizer(tokenizer, offset_mode)

    def __call__(self, turns: list[tuple[str, str]]) -> EncodedConversation:
        """Raises `BadSample` for a reply holding a special-token string (it would be learnt as that token)."""
        for k, (role, text) in enumerate(turns):
            found = self.tokenize.special_strings_in(text) if role == GPT else []
            if found:
                raise BadSample("special token in reply", f"turn {k} contains {found[0]!r}")
        prompt, regions, inference_prompts = render_conversation(turns, self.version)
        ids, spans = self.tokenize(prompt)
        labels = labels_from_regions(ids, spans, regions, prompt)
        return EncodedConversation(prompt, ids, labels, spans, inference_prompts)


# ---------------------------------------------------------------------------------------------------------------
# Length


def expanded_length(input_ids: list[int], num_image_tokens: int) -> int:
    """The sequence length the LM sees: each placeholder becomes `num_image_tokens` positions."""
    images = sum(token == IMAGE_TOKEN_INDEX for token in input_ids)
    return len(input_ids) + images * (num_image_tokens - 1)


def truncate(input_ids: list[int], labels: list[int], max_length: int,
             num_image_tokens: int) -> tuple[list[int], list[int]]:
    """Drop tail tokens until the expanded length fits `max_length`. An image is never cut: if its placeholder
    would not fit completely the sample is unusable (`BadSample("image cut by truncation")`) — the image opens the
    first user turn, so what would remain before it holds no reply to learn from anyway."""
    if expanded_length(input_ids, num_image_tokens) <= max_length:
        return input_ids, labels
    used = 0
    for index, token in enumerate(input_ids):
        cost = num_image_tokens if token == IMAGE_TOKEN_INDEX else 1
        if used + cost > max_length:
            if token == IMAGE_TOKEN_INDEX:
                raise BadSample("image cut by truncation",
                                f"image at token {index} needs {num_image_tokens} positions, only "
                                f"{max_length - used} of model_max_length {max_length} left")
            return input_ids[:index], labels[:index]
        used += cost
    return input_ids, labels
