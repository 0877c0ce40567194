"""A fact asked another way than its plain prompt: the formats the attack suite's format probe
measures and the selector's forget probe asks.

A cut found on the plain prompt may only hide the fact from that wording. Each variant wraps
every prompt of the fact (its prompt and paraphrases) and asks for the same next token, the
first token of " " + answer:

- prompt: the plain prompts (the reference: what `evaluate` measures);
- question: "Q: <prompt> what?\\nA:";
- chat: "<prompt> what?" as the user's turn of the tokenizer's chat template, the assistant's
  turn begun with the prompt (so the answer is still the next token);
- few-shot: other facts of the same relation (with other answers), one a line, before the prompt;
- misleading: the fact stated with a wrong answer (another value of the relation) first;
- helpful: a true fact about the same subject (another relation) first, which calls the subject
  up before it is asked about;
- filler: a paragraph of text that says nothing first (`FILLER`): padding that, in a published
  stress test of SAE clamping, unblocked most of what the clamp blocked;
- long context: up to `CONTEXT_FACTS` unrelated facts (neither the subject nor the relation)
  stated first, one a line: the fact asked deep in a context about other things.
"""

from __future__ import annotations

from codecut.core.facts import Fact
from codecut.core.models import Model

VARIANTS = (
    "prompt", "question", "chat", "few-shot", "misleading", "helpful", "filler", "long context"
)  # fmt: skip
WHY_NOT = {
    "chat": "the tokenizer has no chat template",
    "few-shot": "the pool holds no other fact of this relation with another answer",
    "misleading": "the pool holds no other answer of this relation",
    "helpful": "the pool holds no other fact about this subject",
    "filler": "the model reads too few tokens for the filler",
    "long context": "the pool holds no fact of another subject and relation, or the model reads "
    "too few tokens for one",
}
FILLER = (
    "Please read the following text before you answer. It is here only to take up room, and "
    "nothing in it matters. Some days are long and some are short. People walk, talk, read and "
    "write, and then they rest. The weather changes, the hours pass, and the page goes on. "
    "None of this is about the question, which comes next.\n"
)
CONTEXT_FACTS = 20


def ask(prompt: str) -> str:
    """The prompt as a question: "The capital of France is what?"."""
    return f"{prompt} what?"


def question(prompt: str) -> str:
    return f"Q: {ask(prompt)}\nA:"


def variant_prompts(
    model: Model, fact: Fact, others: list[Fact], variant: str, shots: int
) -> list[str]:
    """The fact's prompts asked as `variant`; [] where that cannot be built (see WHY_NOT).

    `others` are the facts a prompt may show (never a fact being attacked)."""
    same_relation = [g for g in others if g.relation == fact.relation and g.subject != fact.subject]
    if variant == "prompt":
        return fact.prompts
    if variant == "question":
        return [question(p) for p in fact.prompts]
    if variant == "chat":
        if not getattr(model.tokenizer, "chat_template", None):
            return []
        return [chat(model, ask(p)) + p for p in fact.prompts]
    if variant == "few-shot":
        # Shots with other answers: a shot stating the fact's own answer ("Germany's currency
        # is the Euro" before "Greece's ...") lets the model copy it from the context, which
        # measures copying, not whether it still knows the fact.
        shown = [g for g in same_relation if g.answer != fact.answer][:shots]
        prefix = "".join(f"{g.prompt} {g.answer}\n" for g in shown)
        return [prefix + p for p in fact.prompts] if prefix else []
    if variant == "misleading":
        wrong = next((g.answer for g in same_relation if g.answer != fact.answer), None)
        return [f"{fact.prompt} {wrong}\n{p}" for p in fact.prompts] if wrong else []
    if variant == "helpful":
        about = [g for g in others if g.subject == fact.subject and g.relation != fact.relation]
        return [f"{about[0].prompt} {about[0].answer}\n{p}" for p in fact.prompts] if about else []
    if variant == "filler":
        return [FILLER + p for p in fact.prompts] if _fit(model, FILLER, fact.prompts) else []
    if variant == "long context":
        apart = [g for g in others if g.subject != fact.subject and g.relation != fact.relation]
        lines = [f"{g.prompt} {g.answer}\n" for g in apart[:CONTEXT_FACTS]]
        while lines and not _fit(model, "".join(lines), fact.prompts):
            lines.pop()  # as long a context as the model reads
        return ["".join(lines) + p for p in fact.prompts] if lines else []
    raise ValueError(f"unknown format variant {variant!r}")


def _fit(model: Model, prefix: str, prompts: list[str]) -> bool:
    """Whether every prompt after `prefix` is within the model's context (`Model.max_length`)."""
    limit = getattr(model, "max_length", None)
    if limit is None:
        return True
    return max(map(len, model.tokenizer([prefix + p for p in prompts])["input_ids"])) <= limit


def chat(model: Model, user: str) -> str:
    """The chat template's text up to the assistant's turn, for one user message."""
    messages = [{"role": "user", "content": user}]
    return model.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
