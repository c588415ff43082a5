"""LLaVA-format supervised data: lazy dataset, collator, and `make_supervised_data_module` for the trainer.

Files: a JSON list or JSON Lines of ``{"id", "image"?: path relative to image_folder, "conversations":
[{"from": "human"|"gpt", "value": ...}, ...]}`` (LLaVA-Pretrain 558K and the LLaVA-1.5 665K mix load unchanged).
Several files are concatenated. Labels come from `masking.ConversationEncoder` (exact, see there).

Bad data never ends a run. Cheap structural checks and image-file existence (os.stat) run at init, so
`len(dataset)` counts usable samples only; per-item problems (corrupt image bytes, no supervised token left after
truncation) are handled in `__getitem__`, which then returns the next usable index (deterministic, so a resumed run
sees the same batches). Every skip is counted in `skip_stats` and logged once, with the sample id, on the
"xmodelvlm.data" logger. `strict_data` turns the first skip into a `UserError`; more than `max_skip_fraction`
skipped at init is a `UserError` too (a wrong --image_folder should not train on scraps).

Decisions where LLaVA's own code is loose (kept compatible with what its files contain):
* a leading gpt turn is dropped and a trailing unanswered human turn is dropped (LLaVA does the first and renders
  the second as unsupervised text); any other break of human/gpt alternation skips the sample;
* `<image>` anywhere in the first human turn moves to its front (``"<image>\\n" + rest.strip()``; added there if the
  text lacks it); `<image>` in any other turn, or in a sample without an image, skips the sample ("stray <image>");
* a reply containing a special-token string (``</s>``, ``<s>``, ``<unk>``) skips the sample: the tokenizer — at
  training and inference alike — turns it into that token, so it cannot be learnt as text, and a supervised
  ``</s>`` inside a reply would teach the model to stop there;
* truncation never cuts an image: a sample whose image does not fit is skipped (see `masking.truncate`);
* skip counts seen inside DataLoader worker processes stay in those workers (the log lines still appear).
"""
from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX
from ..errors import UserError
from .image import load_image, process_images
from .masking import GPT, HUMAN, BadSample, ConversationEncoder, EncodedConversation, truncate

logger = logging.getLogger("xmodelvlm.data")

ROLE_ALIASES = {"human": HUMAN, "user": HUMAN, "gpt": GPT, "assistant": GPT}
STAT_THREADS = 32          # os.stat of 665K images over a network file system is latency-bound: overlap it
PARALLEL_STAT_MIN = 256


@dataclass
class DataArguments:
    """Data flags (parsed by HfArgumentParser in train.py; field names = the seed's CLI flags)."""

    data_path: list[str] = field(metadata={"help": "one or more LLaVA .json (list) / .jsonl files, concatenated"})
    image_folder: str | None = field(default=None, metadata={
        "help": "folder the samples' image paths are relative to (default: each data file's own folder)"})
    image_aspect_ratio: str = field(default="pad", metadata={
        "help": "'pad': centre on a square of the CLIP mean colour first; anything else: plain CLIP resize+crop"})
    lazy_preprocess: bool = field(default=True, metadata={
        "help": "accepted for compatibility with the seed's scripts; loading is always lazy"})
    is_multimodal: bool = field(default=True, metadata={
        "help": "False: ignore the samples' images (and their <image> markers) and train on the text only"})
    strict_data: bool = field(default=False, metadata={
        "help": "stop at the first bad sample with its id and reason instead of skipping it"})
    max_skip_fraction: float = field(default=0.5, metadata={
        "help": "stop with a clear message if more than this fraction of the samples is unusable at start"})
    cache_samples: bool = field(default=False, metadata={
        "help": "keep each built sample (token ids, labels, preprocessed image) in memory after its first use, so "
                "later epochs skip tokenizing and image decoding: for data that fits in RAM, trained for several "
                "epochs (the synthetic demo: about 110 MB). Each data-loader worker keeps a cache of its own, so use "
                "it with --dataloader_num_workers 0 or --dataloader_persistent_workers True"})

    def __post_init__(self):
        if isinstance(self.data_path, (str, os.PathLike)):
            self.data_path = [str(self.data_path)]
        if not self.data_path:
            raise UserError("--data_path needs at least one .json/.jsonl file")
        if not 0.0 <= self.max_skip_fraction <= 1.0:
            raise UserError(f"--max_skip_fraction must be between 0 and 1, got {self.max_skip_fraction}")


# ---------------------------------------------------------------------------------------------------------------
# Reading files


@dataclass(frozen=True)
class Origin:
    """Where a record came from, for messages."""

    file: str
    index: int          # position in a JSON list, or 1-based line number in a JSONL file
    is_line: bool

    def __str__(self) -> str:
        return f"{self.file} {'line' if self.is_line else 'item'} {self.index}"


_FIRST_NON_SPACE = re.compile(r"\S")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except FileNotFoundError:
        raise UserError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"--data_path {path} is a directory; pass the .json/.jsonl file(s)") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start}): pass a LLaVA .json/.jsonl file") from None
    except OSError as exc:
        raise UserError(f"cannot read data file {path}: {exc.strerror or exc}") from None


def read_records(path: str | os.PathLike) -> Iterator[tuple[Any, Origin]]:
    """The records of one data file: a JSON list, or JSON Lines (one object per line, blank lines ignored).
    Malformed JSON → `UserError` naming the file and line."""
    name = os.fspath(path)
    path = Path(path)
    text = _read_text(path)
    first = _FIRST_NON_SPACE.search(text)
    if first and first.group() == "[":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{name} line {exc.lineno} column {exc.colno}: invalid JSON ({exc.msg})") from None
        del text
        for index, record in enumerate(records):
            yield record, Origin(name, index, False)
        return
    # split on "\n" only: str.splitlines() would also split inside strings holding U+2028 and friends
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            hint = "" if path.suffix == ".jsonl" else " (expected a JSON list or JSON Lines)"
            raise UserError(f"{name} line {number}: invalid JSON ({exc.msg}){hint}") from None
        yield record, Origin(name, number, True)


# ---------------------------------------------------------------------------------------------------------------
# Structural checks


@dataclass(frozen=True)
class Sample:
    """One validated record, in the form the encoder renders."""

    id: str
    image: str | None                       # path as written in the file (relative to the image folder)
    turns: tuple[tuple[str, str], ...]      # (HUMAN|GPT, text), alternating, starting with HUMAN, ending with GPT

    @property
    def num_words(self) -> int:
        return sum(len(text.split()) for _, text in self.turns)


def sample_id(record: Any, origin: Origin) -> str:
    if isinstance(record, dict) and record.get("id") is not None:
        return str(record["id"])
    return f"{Path(origin.file).name}:{origin.index}"


def _image_field(record: dict) -> str | None:
    image = record.get("image")
    if image is None:
        return None
    if isinstance(image, list) and len(image) == 1:
        image = image[0]
    if not isinstance(image, str) or not image.strip():
        raise BadSample("bad image field", f"'image' must be one path, got {str(image)[:80]!r}")
    return image


def _read_turns(conversations: Any) -> list[tuple[str, str]]:
    if not isinstance(conversations, list) or not conversations:
        raise BadSample("no conversation", "'conversations' missing, empty or not a list")
    turns = []
    for k, turn in enumerate(conversations):
        try:
            name, value = turn["from"], turn["value"]
        except (TypeError, KeyError):
            raise BadSample("malformed turn", f"turn {k} is not an object with 'from' and 'value'") from None
        role = (ROLE_ALIASES.get(name) or ROLE_ALIASES.get(name.lower())) if isinstance(name, str) else None
        if role is None:
            raise BadSample("malformed turn", f"turn {k} has unknown role {str(name)[:40]!r}")
        if not isinstance(value, str):
            raise BadSample("non-string value", f"turn {k} value is {type(value).__name__}")
        turns.append((role, value))
    return turns


def _check_order(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if turns and turns[0][0] == GPT:
        turns = turns[1:]                       # LLaVA drops a conversation-opening gpt turn
    if turns and turns[-1][0] == HUMAN:
        turns = turns[:-1]                      # nothing answers it: nothing to learn from it
    for k, (role, _) in enumerate(turns):
        if role != (HUMAN if k % 2 == 0 else GPT):
            raise BadSample("wrong role order", f"turn {k} is {role}, expected {'human' if k % 2 == 0 else 'gpt'}")
    if not turns:
        raise BadSample("no reply", "no human turn followed by a gpt turn")
    return turns


def normalize_sample(record: Any, origin: Origin, *, plain: bool, is_multimodal: bool = True,
                     special_strings=None) -> Sample:
    """Validate one record and return it in canonical form, or raise `BadSample`.

    `special_strings(text) -> list[str]` finds special-token strings (replies holding one are rejected)."""
    if not isinstance(record, dict):
        raise BadSample("not an object", f"record is {type(record).__name__}")
    image = _image_field(record) if is_multimodal else None
    raw_turns = _read_turns(record.get("conversations"))
    if image is not None and all(not text.replace(DEFAULT_IMAGE_TOKEN, "").strip() for _, text in raw_turns):
        raise BadSample("image only", "the conversation holds no text besides <image>")
    turns = _check_order(raw_turns)
    if not is_multimodal:
        turns = [(role, text.replace(DEFAULT_IMAGE_TOKEN, "").strip() if DEFAULT_IMAGE_TOKEN in text else text)
                 for role, text in turns]
    out: list[tuple[str, str]] = []
    for k, (role, text) in enumerate(turns):
        if image is not None and k == 0:
            text = (DEFAULT_IMAGE_TOKEN + "\n" + text.replace(DEFAULT_IMAGE_TOKEN, "").strip()).strip()
        elif DEFAULT_IMAGE_TOKEN in text:
            where = ("a sample without an image" if image is None
                     else f"turn {k} (only the first human turn may hold it)")
            raise BadSample("stray <image>", f"<image> in {where}")
        if role == GPT:
            if not text.strip():
                raise BadSample("empty reply", f"turn {k} is empty")
            found = special_strings(text) if special_strings else []
            if found:
                raise BadSample("special token in reply", f"turn {k} contains {found[0]!r}")
        elif not text.strip():
            raise BadSample("empty question", f"turn {k} is empty")
        out.append((role, text))
    if plain:
        if image is None:
            raise BadSample("not a caption sample", "the plain template needs an image")
        if len(out) != 2:
            raise BadSample("not a caption sample",
                            f"the plain template takes one human and one gpt turn, got {len(out)}")
    return Sample(sample_id(record, origin), image, tuple(out))


# ---------------------------------------------------------------------------------------------------------------
# The dataset


def _is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def _summarize(counts: Counter) -> str:
    return ", ".join(f"{kind} ×{n}" for kind, n in counts.most_common())


_HINTS = {
    "missing image": "check --image_folder",
    "not a caption sample": "--version plain expects LLaVA-Pretrain caption pairs with images",
}


class PackedSamples(Sequence):
    """The usable samples, packed as JSON in one byte buffer plus an offset array.

    A list of 665K dicts would be copied page by page into every forked DataLoader worker as reference counts
    are touched (pytorch/pytorch#13246); one numpy buffer stays shared. Item i → (Sample, image path, Origin)."""

    def __init__(self, entries: Sequence[tuple[Sample, str | None, Origin]], files: Sequence[str]):
        file_index = {name: k for k, name in enumerate(files)}
        blobs = [json.dumps([s.id, s.image, path, s.turns, file_index[o.file], o.index, o.is_line],
                            ensure_ascii=False).encode("utf-8") for s, path, o in entries]
        self._files = list(files)
        self._offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in blobs], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(blobs), dtype=np.uint8) if blobs else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def entry(self, index: int) -> tuple[Sample, str | None, Origin]:
        begin, end = self._offsets[index], self._offsets[index + 1]
        sid, image, path, turns, file, position, is_line = json.loads(self._buffer[begin:end].tobytes())
        sample = Sample(sid, image, tuple((role, text) for role, text in turns))
        return sample, path, Origin(self._files[file], position, is_line)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self.entry(index % len(self))[0]


class LazySupervisedDataset(Dataset):
    """LLaVA conversations → {"input_ids", "labels", "image"?, "id"}; images are loaded on access."""

    def __init__(self, data_args: DataArguments, tokenizer, image_processor, *, version: str,
                 num_image_tokens: int, model_max_length: int, model_cfg=None):
        self.data_args = data_args
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.version = version
        self.num_image_tokens = int(num_image_tokens)
        self.model_max_length = int(model_max_length)
        self.encoder = ConversationEncoder(tokenizer, version)
        aspect = data_args.image_aspect_ratio or getattr(model_cfg, "image_aspect_ratio", None)
        self._image_cfg = SimpleNamespace(image_aspect_ratio=aspect)
        self._skip_counts: Counter = Counter()
        self._bad_indices: set[int] = set()
        self._cache: dict[int, dict] | None = {} if data_args.cache_samples else None
        self._init_skips: list[str] = []   # log lines, held back until we know the run goes ahead

        entries, total = self._load(data_args.data_path)
        skipped = total - len(entries)
        example = f"; first: {self._init_skips[0]}" if self._init_skips else ""
        if not entries:
            raise UserError(f"no usable samples in {', '.join(data_args.data_path)}"
                            + (f" ({_summarize(self._skip_counts)}){example}" if skipped else ""))
        if skipped > data_args.max_skip_fraction * total:
            top = self._skip_counts.most_common(1)[0][0]
            hint = _HINTS.get(top, "fix the data or raise --max_skip_fraction")
            raise UserError(f"{skipped}/{total} samples skipped ({_summarize(self._skip_counts)}): {hint}{example}")
        if _is_rank_zero():  # every rank reads the same files: report once
            for line in self._init_skips:
                logger.warning("skipped sample %s", line)
            logger.info("%d usable samples from %d file(s)%s", len(entries), len(data_args.data_path),
                        f"; skipped {skipped} ({_summarize(self._skip_counts)})" if skipped else "")
        self._init_skips = []
        self._modality_lengths = np.array(
            [(s.num_words + self.num_image_tokens) if s.image else -s.num_words for s, _, _ in entries],
            dtype=np.int64)
        self.samples = PackedSamples(entries, data_args.data_path)

    # -- loading ----------------------------------------------------------------------------------------------

    def _load(self, paths: Sequence[str]) -> tuple[list[tuple[Sample, str | None, Origin]], int]:
        candidates: list[tuple[Sample, str | None, Origin]] = []
        total = 0
        plain = self.encoder.plain
        special_strings = self.encoder.tokenize.special_strings_in
        for path in paths:
            root = self.data_args.image_folder or os.path.dirname(path)
            for record, origin in read_records(path):
                total += 1
                try:
                    sample = normalize_sample(record, origin, plain=plain, is_multimodal=self.data_args.is_multimodal,
                                              special_strings=special_strings)
                except BadSample as bad:
                    self._skip(sample_id(record, origin), bad, origin, at_init=True)
                    continue
                image_path = os.path.join(root, sample.image) if sample.image else None
                candidates.append((sample, image_path, origin))
        if self.image_processor is None and any(path for _, path, _ in candidates):
            raise UserError("the data has images but no image processor was given (is the vision tower set?)")
        exists = self._existing_files([path for _, path, _ in candidates if path])
        entries = []
        for sample, image_path, origin in candidates:
            if image_path and not exists[image_path]:
                self._skip(sample.id, BadSample("missing image", image_path), origin, at_init=True)
            else:
                entries.append((sample, image_path, origin))
        return entries, total

    @staticmethod
    def _existing_files(paths: list[str]) -> dict[str, bool]:
        def is_file(path: str) -> bool:
            try:
                return stat.S_ISREG(os.stat(path).st_mode)
            except OSError:
                return False

        unique = list(dict.fromkeys(paths))
        if len(unique) < PARALLEL_STAT_MIN:
            return {path: is_file(path) for path in unique}
        with ThreadPoolExecutor(max_workers=STAT_THREADS) as pool:
            return dict(zip(unique, pool.map(is_file, unique)))

    def _skip(self, sid: str, bad: BadSample, origin: Origin | None = None, at_init: bool = False) -> None:
        line = f"{sid}{f' ({origin})' if origin else ''}: {bad}"
        if self.data_args.strict_data:
            raise UserError(f"bad sample {line} (--strict_data is on; fix or drop the sample)")
        self._skip_counts[bad.kind] += 1
        if at_init:
            self._init_skips.append(line)
        else:
            logger.warning("skipped sample %s", line)

    # -- lengths and counts -----------------------------------------------------------------------------------

    @property
    def lengths(self) -> list[int]:
        """Approximate sequence length per sample: words + num_image_tokens per image."""
        return np.abs(self._modality_lengths).tolist()

    @property
    def modality_lengths(self) -> list[int]:
        """LLaVA's convention for `group_by_modality_length`: + for image samples, − for text-only."""
        return self._modality_lengths.tolist()

    @property
    def skip_stats(self) -> dict[str, int]:
        """Skipped samples so far, by reason (init checks + this process's __getitem__ calls)."""
        return dict(self._skip_counts)

    # -- items ------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.samples)

    def encode(self, index: int) -> EncodedConversation:
        """Tokenize + mask + truncate sample `index` (no image I/O); `BadSample` if nothing is left to learn."""
        encoded = self.encoder(list(self.samples[index].turns))
        encoded.input_ids, encoded.labels = truncate(encoded.input_ids, encoded.labels, self.model_max_length,
                                                     self.num_image_tokens)
        if encoded.num_supervised == 0:
            raise BadSample("fully masked", f"no reply token within model_max_length {self.model_max_length}")
        return encoded

    def load_pixels(self, path: str) -> torch.Tensor:
        try:
            image = load_image(path)
            return process_images([image], self.image_processor, self._image_cfg)[0]
        except UserError as exc:
            raise BadSample("unreadable image", str(exc)) from None
        except (OSError, ValueError) as exc:  # decodable header, undecodable content / degenerate size
            raise BadSample("unreadable image", f"{path}: {exc}") from None

    def _build(self, index: int) -> dict:
        sample, image_path, _ = self.samples.entry(index)
        encoded = self.encode(index)
        item = {
            "input_ids": torch.tensor(encoded.input_ids, dtype=torch.long),
            "labels": torch.tensor(encoded.labels, dtype=torch.long),
            "id": sample.id,
        }
        if image_path:
            item["image"] = self.load_pixels(image_path)
        return item

    def __getitem__(self, index: int) -> dict:
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(index)
        index %= n
        for offset in range(n):
            candidate = (index + offset) % n
            if candidate in self._bad_indices:
                continue
            if self._cache is not None and candidate in self._cache:
                return dict(self._cache[candidate])  # a copy: a caller that pops a key leaves the cache whole
            try:
                item = self._build(candidate)
            except BadSample as bad:
                self._bad_indices.add(candidate)
                sample, _, origin = self.samples.entry(candidate)
                self._skip(sample.id, bad, origin)
                continue
            if self._cache is not None:
                self._cache[candidate] = dict(item)
            return item
        raise UserError(f"every sample failed to load ({_summarize(self._skip_counts)})")


# ---------------------------------------------------------------------------------------------------------------
# Collation


@dataclass
class DataCollatorForSupervisedDataset:
    """Right-pad a list of dataset items into a batch.

    `attention_mask` comes from the lengths, not from `input_ids != pad_token_id`: the pad id is `<unk>` (0), which
    may also occur as a real token. `images` stacks the batch's images in item order (absent when none)."""

    tokenizer: Any
    pad_to_multiple_of: int | None = None

    def __call__(self, instances: Sequence[dict]) -> dict:
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.unk_token_id if self.tokenizer.unk_token_id is not None else 0
        longest = max(len(item["input_ids"]) for item in instances)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch_size = len(instances)
        input_ids = torch.full((batch_size, longest), pad_id, dtype=torch.long)
        labels = torch.full((batch_size, longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, longest), dtype=torch.long)
        for row, item in enumerate(instances):
            length = len(item["input_ids"])
            input_ids[row, :length] = torch.as_tensor(item["input_ids"], dtype=torch.long)
            labels[row, :length] = torch.as_tensor(item["labels"], dtype=torch.long)
            attention_mask[row, :length] = 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        images = [item["image"] for item in instances if item.get("image") is not None]
        if images:
            batch["images"] = torch.stack(images)
        return batch


def make_supervised_data_module(tokenizer, image_processor, data_args: DataArguments, *, version: str,
                                num_image_tokens: int, model_max_length: int, model_cfg=None) -> dict:
    train_dataset = LazySupervisedDataset(data_args, tokenizer, image_processor, version=version,
                                          num_image_tokens=num_image_tokens, model_max_length=model_max_length,
                                          model_cfg=model_cfg)
    return dict(train_dataset=train_dataset, eval_dataset=None,
                data_collator=DataCollatorForSupervisedDataset(tokenizer=tokenizer))
