"""Prompt templates (`conv_templates`), rendering exactly as LLaVA-1.5 / the released model expects (SPEC §4).

* `v1` (vicuna_v1): `{system} USER: {q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT:` — " " closes a user turn,
  "</s>" closes an assistant turn; an open assistant turn ends the prompt with "ASSISTANT:".
* `plain` (stage 1): no system, no roles: `<image>` + caption + "\n".
"""
from __future__ import annotations

import dataclasses
from enum import Enum, auto


class SeparatorStyle(Enum):
    TWO = auto()     # alternate sep (after user turns) and sep2 (after assistant turns)
    PLAIN = auto()   # messages concatenated; sep after each assistant message


@dataclasses.dataclass
class Conversation:
    system: str
    roles: tuple[str, str]
    messages: list[list]
    sep_style: SeparatorStyle
    sep: str = " "
    sep2: str | None = None
    version: str = "unknown"

    def append_message(self, role: str, message: str | None) -> None:
        self.messages.append([role, message])

    def copy(self) -> "Conversation":
        """A copy whose message list can be changed freely (LLaVA's `copy`: the messages' contents, e.g. images,
        are shared, not duplicated; a deep copy cost a training step a few milliseconds per sample)."""
        return dataclasses.replace(self, messages=[list(m) for m in self.messages])

    def get_prompt(self) -> str:
        if self.sep_style == SeparatorStyle.TWO:
            seps = (self.sep, self.sep2)
            text = self.system + seps[0]
            for i, (role, message) in enumerate(self.messages):
                if message:
                    text += f"{role}: {_text_of(message)}{seps[i % 2]}"
                else:
                    text += f"{role}:"
            return text
        if self.sep_style == SeparatorStyle.PLAIN:
            text = self.system
            for i, (_, message) in enumerate(self.messages):
                if message:
                    text += _text_of(message) + (self.sep if i % 2 else "")
            return text
        raise ValueError(f"unsupported separator style {self.sep_style}")

    @property
    def stop_str(self) -> str:
        return self.sep2 if self.sep_style == SeparatorStyle.TWO else self.sep


def _text_of(message) -> str:
    # LLaVA stores (text, image, mode) tuples for image turns; the text is what is rendered.
    return message[0] if isinstance(message, tuple) else message


SYSTEM_V1 = ("A chat between a curious user and an artificial intelligence assistant. "
             "The assistant gives helpful, detailed, and polite answers to the user's questions.")

conv_vicuna_v1 = Conversation(
    system=SYSTEM_V1, roles=("USER", "ASSISTANT"), messages=[], sep_style=SeparatorStyle.TWO,
    sep=" ", sep2="</s>", version="v1",
)
conv_plain = Conversation(
    system="", roles=("", ""), messages=[], sep_style=SeparatorStyle.PLAIN, sep="\n", version="plain",
)

conv_templates: dict[str, Conversation] = {
    "v1": conv_vicuna_v1,
    "vicuna_v1": conv_vicuna_v1,
    "plain": conv_plain,
}
default_conversation = conv_vicuna_v1


def get_conv_template(name: str) -> Conversation:
    """A fresh copy of a template, by exact name."""
    if name not in conv_templates:
        from ..errors import UserError
        raise UserError(f"unknown conversation mode {name!r}; known: {', '.join(sorted(conv_templates))}")
    return conv_templates[name].copy()
