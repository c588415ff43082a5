"""Show how training will see the first samples of a data file: the exact tokens and which of them are supervised.

    python -m xmodelvlm.data.preview --data-path F [F2 ...] [--image-folder D] --model-path M --version v1 \
        [--num 3] [--json] [--model-max-length N] [--tokenizer DIR] [--num-image-tokens K]

Text output marks supervised text with ``[[...]]`` and each image placeholder as ``<image×K>``; text is rebuilt from
the sentencepiece pieces, so the space a reply's first piece carries shows inside the brackets. ``--json`` prints one
object per sample, ``{"id", "input_ids", "labels"}`` (ids with -200 placeholders before image expansion, labels of
the same length with -100 where masked); notes then go to stderr. The first ``--num`` records are shown, bad ones as
a note with the reason training would skip them. No model weights and no image bytes are loaded (a missing image is
reported as a note). The tokenizer comes from ``--tokenizer`` or else ``--model-path``; the image length from
``--num-image-tokens`` or else the checkpoint's config.json (144 if it has none).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from ..errors import ArgumentParser, UserError, run_cli
from .dataset import read_records, normalize_sample, sample_id
from .masking import BadSample, ConversationEncoder, EncodedConversation, expanded_length, truncate

DEFAULT_NUM_IMAGE_TOKENS = 144
BYTE_PIECE_LENGTH = len("<0x00>")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m xmodelvlm.data.preview",
                            description="Show the tokens and label masking training uses for the first samples.")
    parser.add_argument("--data-path", nargs="+", required=True, help="LLaVA .json/.jsonl file(s), concatenated")
    parser.add_argument("--image-folder", help="folder image paths are relative to (default: the data file's folder)")
    parser.add_argument("--model-path", help="checkpoint directory: tokenizer files and config.json (no weights read)")
    parser.add_argument("--tokenizer", help="tokenizer directory (overrides --model-path for the tokenizer)")
    parser.add_argument("--version", default="v1", help="conversation template: v1 (instruction tuning) or plain")
    parser.add_argument("--num", type=int, default=3, help="how many records to show (default 3)")
    parser.add_argument("--json", action="store_true", help="one JSON object per sample: id, input_ids, labels")
    parser.add_argument("--model-max-length", type=int, help="truncate as training does (image tokens counted)")
    parser.add_argument("--num-image-tokens", type=int,
                        help="positions one image takes (default: from --model-path's config.json, else 144)")
    parser.add_argument("--is-multimodal", default=True, action=__import__("argparse").BooleanOptionalAction,
                        help="--no-is-multimodal: treat samples as text only, as training with is_multimodal=False")
    return parser


def num_image_tokens_of(model_path: str | None) -> int:
    """Image tokens of a checkpoint, from its config.json alone (projector name and CLIP grid)."""
    if not model_path or not (Path(model_path) / "config.json").is_file():
        return DEFAULT_NUM_IMAGE_TOKENS
    from ..model.configuration import XmodelVLMConfig
    from ..model.projector import build_projector
    try:
        config = XmodelVLMConfig.from_pretrained(model_path)
    except Exception as exc:  # noqa: BLE001 - any unreadable config is the user's to fix
        raise UserError(f"cannot read {model_path}/config.json: {exc}; pass --num-image-tokens") from None
    vision = config.vision_tower_config()
    patches = (vision.image_size // vision.patch_size) ** 2
    projector = build_projector(config.mm_projector_type, config.mm_hidden_size, 8)  # tiny: only the count matters
    return projector.num_tokens(patches)


def render_tokens(encoded: EncodedConversation, tokenizer, num_image_tokens: int) -> str:
    """The token sequence as text: pieces joined (▁ → space, byte pieces decoded), supervised runs in [[...]]."""
    sp = tokenizer.sp_model
    out: list[str] = []
    pending_bytes = bytearray()
    supervised = False

    def flush_bytes() -> None:
        if pending_bytes:
            out.append(pending_bytes.decode("utf-8", errors="replace"))
            pending_bytes.clear()

    for token, label in zip(encoded.input_ids, encoded.labels):
        is_supervised = label != IGNORE_INDEX
        if is_supervised != supervised:
            flush_bytes()
            out.append("[[" if is_supervised else "]]")
            supervised = is_supervised
        if token == IMAGE_TOKEN_INDEX:
            flush_bytes()
            out.append(f"<image×{num_image_tokens}>")
            continue
        if 0 <= token < sp.get_piece_size() and sp.is_byte(token):
            pending_bytes.append(int(sp.id_to_piece(token)[3:5], 16))
            continue
        flush_bytes()
        if 0 <= token < sp.get_piece_size() and not sp.is_control(token) and not sp.is_unknown(token):
            out.append(sp.id_to_piece(token).replace("\u2581", " "))
        else:
            out.append(tokenizer.convert_ids_to_tokens(token))
    flush_bytes()
    if supervised:
        out.append("]]")
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.tokenizer and not args.model_path:
        raise UserError("pass --model-path (a checkpoint directory) or --tokenizer (a tokenizer directory)")
    if args.num < 1:
        raise UserError(f"--num must be at least 1, got {args.num}")
    from ..model.tokenizer import load_tokenizer
    tokenizer_dir = args.tokenizer or args.model_path
    if not os.path.isdir(tokenizer_dir):
        raise UserError(f"tokenizer directory not found: {tokenizer_dir}")
    tokenizer = load_tokenizer(tokenizer_dir)
    num_image_tokens = args.num_image_tokens or num_image_tokens_of(args.model_path)
    encoder = ConversationEncoder(tokenizer, args.version)

    def note(message: str) -> None:
        print(f"note: {message}", file=sys.stderr if args.json else sys.stdout, flush=True)

    shown = skipped = total_tokens = total_supervised = 0
    for path in args.data_path:
        if shown + skipped >= args.num:
            break
        root = Path(args.image_folder) if args.image_folder else Path(path).parent
        for record, origin in read_records(path):
            if shown + skipped >= args.num:
                break
            sid = sample_id(record, origin)
            try:
                sample = normalize_sample(record, origin, plain=encoder.plain, is_multimodal=args.is_multimodal,
                                          special_strings=encoder.tokenize.special_strings_in)
                encoded = encoder(list(sample.turns))
                if args.model_max_length:
                    encoded.input_ids, encoded.labels = truncate(encoded.input_ids, encoded.labels,
                                                                 args.model_max_length, num_image_tokens)
                if encoded.num_supervised == 0:
                    raise BadSample("fully masked", "no reply token within --model-max-length")
            except BadSample as bad:
                skipped += 1
                note(f"sample {sid} ({origin}) would be skipped: {bad}")
                continue
            shown += 1
            total_tokens += expanded_length(encoded.input_ids, num_image_tokens)
            total_supervised += encoded.num_supervised
            if sample.image and not (root / sample.image).is_file():
                note(f"sample {sid}: image not found: {root / sample.image} (training would skip this sample)")
            if args.json:
                print(json.dumps({"id": sid, "input_ids": encoded.input_ids, "labels": encoded.labels}), flush=True)
                continue
            print(f"=== {sid} ({origin}){'  image=' + sample.image if sample.image else '  text-only'}")
            print(render_tokens(encoded, tokenizer, num_image_tokens))
            print(f"--- {len(encoded.input_ids)} ids, {expanded_length(encoded.input_ids, num_image_tokens)} positions "
                  f"with images expanded, {encoded.num_supervised} supervised\n", flush=True)
    summary = (f"{shown} sample(s) shown, {skipped} would be skipped; {total_tokens} positions, "
               f"{total_supervised} supervised (template {args.version}, image = {num_image_tokens} tokens)")
    if args.json:
        print(summary, file=sys.stderr)
    else:
        print(summary)
    return 0


if __name__ == "__main__":
    run_cli(main)
