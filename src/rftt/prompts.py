"""Named prompt templates: how a question becomes the text a model continues.

- `chat`: the model's chat template, the question plus an instruction to box the answer;
- `chat_steps`: the chat template, the question plus "Solve the problem step by step, then put the
  final answer in \\boxed{}." (the reference TRL glue's prompt, ../shared/DESIGN.md);
- `functional`: the chat template with the bare question (a model taught functional
  tokens starts its answer with a move, no instruction needed);
- `reft`: ReFT's natural-language format, `Question:\\n{q}\\nAnswer reasoning:\\n`;
- `plain`: the question and a newline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from transformers import PreTrainedTokenizerBase

from rftt.errors import RfttError

BOX_INSTRUCTION = "Put your final answer within \\boxed{}."
STEPS_INSTRUCTION = "Solve the problem step by step, then put the final answer in \\boxed{}."
REFT_TEMPLATE = "Question:\n{question}\nAnswer reasoning:\n"


class TemplateError(RfttError):
    """A prompt template that is unknown or that the model cannot use."""


def _chat(tokenizer: PreTrainedTokenizerBase, content: str, template_name: str) -> str:
    if tokenizer.chat_template is None:
        raise TemplateError(
            f"template {template_name!r} needs a chat template, which this tokenizer lacks; use 'reft' or 'plain'"
        )
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)


@dataclass(frozen=True)
class PromptTemplate:
    """A named way to turn a question into a prompt."""

    name: str
    render_with: Callable[[str, PreTrainedTokenizerBase], str]
    description: str

    def render(self, question: str, tokenizer: PreTrainedTokenizerBase) -> str:
        return self.render_with(question, tokenizer)


PROMPT_TEMPLATES: dict[str, PromptTemplate] = {
    template.name: template
    for template in (
        PromptTemplate("chat", lambda question, tokenizer: _chat(tokenizer, f"{question}\n{BOX_INSTRUCTION}", "chat"),
                       "chat template, question + 'put your final answer within \\boxed{}'"),
        PromptTemplate("chat_steps",
                       lambda question, tokenizer: _chat(tokenizer, f"{question}\n{STEPS_INSTRUCTION}", "chat_steps"),
                       "chat template, question + 'Solve the problem step by step, then put the final answer in "
                       "\\boxed{}'"),
        PromptTemplate("functional", lambda question, tokenizer: _chat(tokenizer, question, "functional"),
                       "chat template, bare question (for models taught functional tokens)"),
        PromptTemplate("reft", lambda question, tokenizer: REFT_TEMPLATE.format(question=question),
                       "ReFT: 'Question:\\n{q}\\nAnswer reasoning:\\n'"),
        PromptTemplate("plain", lambda question, tokenizer: f"{question}\n", "the question and a newline"),
    )
}


def get_template(name: str) -> PromptTemplate:
    """The template called `name`, or an error listing the known ones."""
    if name not in PROMPT_TEMPLATES:
        raise TemplateError(f"unknown prompt template {name!r}; choose from {', '.join(PROMPT_TEMPLATES)}")
    return PROMPT_TEMPLATES[name]
