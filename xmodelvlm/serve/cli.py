"""Command-line inference: answer a question about one or more images, streaming the answer to stdout.

    python inference.py --model-path DIR [--vision-tower DIR] --image-file IMG [--image-file IMG2 ...] \
        --prompt TEXT [--conv-mode v1] [--temperature 0] [--top-p P] [--num-beams 1] [--max-new-tokens 512] \
        [--device auto|cuda|cpu|mps] [--dtype auto|bfloat16|float16|float32] [--load-8bit|--load-4bit]

stdout holds only the answer; logs go to stderr. Without --prompt: an interactive multi-turn chat about the
image(s) on stdin (an empty line or EOF ends it).
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

import torch
from transformers import TextStreamer

from ..constants import DEFAULT_IMAGE_TOKEN
from ..data.conversation import Conversation, get_conv_template
from ..data.image import load_image, process_images
from ..data.tokenization import tokenizer_image_token
from ..errors import ArgumentParser, UserError, run_cli

logger = logging.getLogger("xmodelvlm")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="inference.py", description="Ask Xmodel-VLM about images.")
    parser.add_argument("--model-path", required=True, help="checkpoint directory (config.json, model.safetensors, tokenizer)")
    parser.add_argument("--vision-tower", help="CLIP ViT directory (e.g. openai/clip-vit-large-patch14-336); "
                                               "needed when the checkpoint's configured path does not exist and it stores no tower")
    parser.add_argument("--image-file", action="append", default=[], help="image path; repeat for several images")
    parser.add_argument("--prompt", help="the question; without it, an interactive chat starts")
    parser.add_argument("--conv-mode", default="v1", help="prompt template (v1, plain)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu", "mps"])
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    quant = parser.add_mutually_exclusive_group()
    quant.add_argument("--load-8bit", action="store_true")
    quant.add_argument("--load-4bit", action="store_true")
    return parser


class _StdoutStreamer(TextStreamer):
    """Print each finished piece of the answer to stdout as soon as it is decoded."""

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()


@dataclass
class ChatSession:
    """One conversation about a fixed set of images; the images go with the first user turn."""

    tokenizer: object
    model: object
    images: torch.Tensor | None
    num_images: int
    conv: Conversation
    generation: dict = field(default_factory=dict)

    def first_message(self, question: str) -> str:
        found = question.count(DEFAULT_IMAGE_TOKEN)
        if found == 0:
            return "".join(f"{DEFAULT_IMAGE_TOKEN}\n" for _ in range(self.num_images)) + question
        if found != self.num_images:
            raise UserError(f"the prompt holds {found} {DEFAULT_IMAGE_TOKEN} markers but {self.num_images} "
                            "--image-file were given; give one image per marker")
        return question

    def ask(self, question: str, stream: bool = True) -> str:
        message = self.first_message(question) if not self.conv.messages else question
        self.conv.append_message(self.conv.roles[0], message)
        self.conv.append_message(self.conv.roles[1], None)
        prompt = self.conv.get_prompt()
        input_ids = tokenizer_image_token(prompt, self.tokenizer, return_tensors="pt").unsqueeze(0)
        images = self.images if DEFAULT_IMAGE_TOKEN in prompt else None
        streamer = (_StdoutStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
                    if stream and self.generation.get("num_beams", 1) == 1 else None)
        output = self.model.generate(input_ids.to(self.model.device), images=images, streamer=streamer,
                                     **self.generation)
        answer = self.tokenizer.decode(output[0, input_ids.shape[1]:], skip_special_tokens=True).strip()
        if stream and streamer is None:
            sys.stdout.write(answer)
        if stream:
            sys.stdout.write("\n")
            sys.stdout.flush()
        self.conv.messages[-1][-1] = answer
        return answer


def generation_kwargs(args, tokenizer) -> dict:
    if args.max_new_tokens < 1 or args.num_beams < 1:
        raise UserError("--max-new-tokens and --num-beams must be at least 1")
    sampling = args.temperature > 0
    kwargs = dict(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, do_sample=sampling,
                  use_cache=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if sampling:
        kwargs["temperature"] = args.temperature
        if args.top_p is not None:
            kwargs["top_p"] = args.top_p
    return kwargs


def open_session(args) -> ChatSession:
    from ..model.builder import load_pretrained_model

    conv = get_conv_template(args.conv_mode)
    pil_images = [load_image(path) for path in args.image_file]  # fail on a bad image before loading weights
    tokenizer, model, image_processor, _ = load_pretrained_model(
        args.model_path, vision_tower=args.vision_tower, device=args.device, dtype=args.dtype,
        load_8bit=args.load_8bit, load_4bit=args.load_4bit)
    images = None
    if pil_images:
        images = process_images(pil_images, image_processor, model.config).to(model.device, dtype=model.dtype)
    return ChatSession(tokenizer, model, images, len(pil_images), conv, generation_kwargs(args, tokenizer))


def chat_loop(session: ChatSession) -> None:
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("USER: ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line or not line.strip() or line.strip() in ("exit", "quit"):
            return
        if interactive:
            print("ASSISTANT: ", end="", file=sys.stderr, flush=True)
        session.ask(line.strip())


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    session = open_session(args)
    if args.prompt is not None:
        session.ask(args.prompt)
    else:
        chat_loop(session)
    return 0


def entry() -> None:
    raise SystemExit(run_cli(main))
