"""Anti-samples: the contrast set the selector weighs a forget fact against.

For a fact ("The capital of France is" -> Paris) an anti-sample is a text whose next token is
scored, of one of three kinds:

- counterfactual: the fact's prompt (or a paraphrase) paired with a wrong answer of the same type
  (another capital). Codes that push the true answer over these carry the association itself,
  not "the answer is a capital city".
- rationale: in the spirit of UnSTAR, a short text that argues for the wrong answer and then asks
  the question again ("... Many people are surprised to learn this ... The capital of France
  is"). Codes that still push the true answer against a misleading context are the ones that
  store it.
- paraphrase: other prompts with the same (true) answer, the fact's own and generated ones that
  the model still answers: the cut must reach them too.

    samples = make_antisamples(model, fact, pool=facts)
    antisamples_table(samples)        # a DataFrame to read in a notebook
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

import pandas as pd

from codecut.core.errors import BadInput, BadType
from codecut.core.facts import Fact

KINDS = ("counterfactual", "rationale", "paraphrase")

# Rationale templates for models whose tokenizer covers ordinary English (BPE); a template whose
# text the tokenizer cannot represent (a word-level toy vocabulary) is skipped. "{claim}" is a
# prompt of the fact completed with the wrong answer; the question follows the template.
RATIONALE_TEMPLATES = (
    "{claim}. Many people are surprised to learn this, because most textbooks get it wrong.",
    "Fact check: {claim}. This is confirmed by official records.",
    "{claim}, as every expert on the subject will tell you.",
)

# Neutral prefixes for generated paraphrases. Those ending in punctuation start a new sentence;
# the others run into the prompt, so they are used only where the prompt can follow them
# mid-sentence (it starts lower-case or with the subject).
PARAPHRASE_PREFIXES = ("Question:", "Fact:", "Trivia:", "people say that")

# How many of the model's top next tokens are looked at for wrong answers when the pool has too
# few of the fact's relation.
RANKED_CANDIDATES = 200

# How many wrong answers get a rationale written by the host model (a generate call each).
MODEL_RATIONALES = 2
RATIONALE_TOKENS = 16


@dataclass
class AntiSample:
    """One contrast text for a forget fact.

    Attributes:
        kind: "counterfactual", "rationale" or "paraphrase".
        prompt: text whose next token is scored.
        answer: the wrong answer it argues for (counterfactual, rationale) or the true answer
            (paraphrase).
        fact: the forget fact it was made for.
        p_true: the model's probability of the true answer's first token after `prompt`.
        p_anti: the probability of `answer`'s first token (equal to p_true for paraphrases).
    """

    kind: str
    prompt: str
    answer: str
    fact: Fact
    p_true: float | None = None
    p_anti: float | None = None


def make_antisamples(
    model,
    fact: Fact,
    pool: list[Fact] = (),
    n_counterfactual: int = 4,
    rationales: bool = True,
    model_rationales: bool = False,
    paraphrases: bool = True,
    seed: int = 0,
) -> list[AntiSample]:
    """Counterfactual, rationale and paraphrase anti-samples for `fact`, scored by `model`.

    Args:
        model: a `codecut.Model` (anything with its tokenizer, `answer_token`,
            `next_token_logprobs` and `generate`).
        fact: the fact to forget.
        pool: facts to draw wrong answers from; only those of `fact`'s relation are used.
        n_counterfactual: how many wrong answers. Taken from the pool first (in an order fixed by
            `seed`), then from the tokens the model itself ranks highest after the prompt.
        rationales: add misleading rationales (from the fact's own prompts and, where the
            tokenizer covers English, from `RATIONALE_TEMPLATES`).
        model_rationales: also let the model write a short rationale for the first wrong answers
            (greedy generation from "{prompt} {wrong} because", or "and" where the vocabulary lacks "because").
        paraphrases: add the fact's own paraphrases and generated ones the model answers.
        seed: fixes the choice of wrong answers and of the prompts the rationales quote.

    Returns:
        The anti-samples with p_true and p_anti filled in, grouped by kind.
    """
    _check(fact, n_counterfactual)
    tok = model.tokenizer
    rng = random.Random(seed)
    true_token = model.answer_token(fact.answer)
    wrong = _wrong_answers(model, fact, pool, n_counterfactual, true_token, rng)

    samples = [AntiSample("counterfactual", p, w, fact) for p in fact.prompts for w in wrong]
    if rationales:
        samples += _rationales(model, fact, wrong, model_rationales, rng)
    if paraphrases:
        samples += [AntiSample("paraphrase", p, fact.answer, fact) for p in fact.paraphrases]
        samples += [
            AntiSample("paraphrase", p, fact.answer, fact)
            for p in _generated_paraphrases(tok, fact)
        ]
    if not samples:
        return []

    # One forward pass over the distinct prompts scores every sample.
    prompts = list(dict.fromkeys(s.prompt for s in samples))
    logp = model.next_token_logprobs(prompts)
    row = {p: i for i, p in enumerate(prompts)}
    for s in samples:
        lp = logp[row[s.prompt]]
        s.p_true = lp[true_token].exp().item()
        s.p_anti = lp[model.answer_token(s.answer)].exp().item()
    # A generated paraphrase the model does not answer is not a paraphrase of what it knows.
    return [
        s
        for s in samples
        if not (s.kind == "paraphrase" and s.prompt not in fact.paraphrases)
        or logp[row[s.prompt]].argmax().item() == true_token
    ]


def antisamples_table(samples: list[AntiSample]) -> pd.DataFrame:
    """A row per anti-sample: kind, prompt, answer, true_answer, p_true, p_anti, subject,
    relation, and `generated` (a paraphrase or rationale not taken from the fact as given)."""
    columns = [
        "kind", "prompt", "answer", "true_answer", "p_true", "p_anti", "subject", "relation",
        "generated",
    ]  # fmt: skip
    rows = [
        {
            "kind": s.kind,
            "prompt": s.prompt,
            "answer": s.answer,
            "true_answer": s.fact.answer,
            "p_true": s.p_true,
            "p_anti": s.p_anti,
            "subject": s.fact.subject,
            "relation": s.fact.relation,
            "generated": s.prompt not in s.fact.prompts,
        }
        for s in samples
    ]
    return pd.DataFrame(rows, columns=columns)


def _check(fact: Fact, n_counterfactual: int) -> None:
    if not isinstance(fact, Fact):
        raise BadType(f"expected a codecut.Fact, got {type(fact).__name__}")
    for name in ("prompt", "answer"):
        if not isinstance(getattr(fact, name), str) or not getattr(fact, name).strip():
            raise BadInput(f"fact {fact.subject!r}/{fact.relation!r} has an empty {name}")
    if n_counterfactual < 0:
        raise BadInput(f"n_counterfactual must be >= 0, got {n_counterfactual}")


def _wrong_answers(
    model, fact: Fact, pool, n: int, true_token: int, rng: random.Random
) -> list[str]:
    """Up to `n` wrong answers of fact's relation, each with a first token of its own."""
    candidates = sorted({f.answer for f in pool if f.relation == fact.relation})
    rng.shuffle(candidates)
    wrong: list[str] = []
    used = {true_token}
    for answer in candidates:
        # Case-insensitive: "Euro" is not a wrong answer for "euro".
        if len(wrong) == n or answer.strip().lower() == fact.answer.strip().lower():
            continue
        token = model.answer_token(answer)
        if token not in used:
            wrong.append(answer)
            used.add(token)
    if len(wrong) < n:
        # Too few facts of this relation: take what the model itself would say instead.
        wrong += _ranked_answers(model, fact, n - len(wrong), used)
    return wrong


def _ranked_answers(model, fact: Fact, n: int, used: set[int]) -> list[str]:
    """Up to `n` of the words the model ranks highest after the prompt, none of whose first
    tokens is in `used`. Only words that could be an answer (they begin with a letter or digit,
    as facts' answers must), and those shaped like the true answer first ("Charles" for "Jane",
    not "a"): a contrast of one name with another isolates the association, a contrast with
    "a" only the type of answer."""
    logp = model.next_token_logprobs([fact.prompt])[0]
    truth = model.tokenizer.decode([model.answer_token(fact.answer)]).strip().lower()
    words = {}
    for token in logp.argsort(descending=True)[:RANKED_CANDIDATES].tolist():
        word = model.tokenizer.decode([token]).strip()
        if (
            token in used
            or not word[:1].isalnum()
            or word.lower() == truth
            or not in_vocabulary(model.tokenizer, word)
        ):
            continue
        # The word must round-trip to the same token, or p_anti would score another one.
        if model.answer_token(word) == token:
            words[token] = word
    shaped = [w for w in words.values() if _shape(w) == _shape(fact.answer)]
    return (shaped + [w for w in words.values() if w not in shaped])[:n]


def _shape(word: str) -> tuple[bool, bool]:
    """Whether a word starts with a capital, or with a digit."""
    return word[0].isupper(), word[0].isdigit()


def _rationales(
    model, fact: Fact, wrong: list[str], by_model: bool, rng: random.Random
) -> list[AntiSample]:
    """Texts that argue for a wrong answer, each followed by the fact's prompt."""
    tok = model.tokenizer
    # The word-level world vocabulary has no '.', so claim and question are then joined by a
    # plain space (the claim's answer word still ends it).
    sep = ". " if in_vocabulary(tok, f"{fact.prompt}. {fact.prompt}") else " "
    # Claims quote the paraphrases where there are any: the prompt itself is the question.
    quoted = fact.paraphrases or [fact.prompt]
    texts = []  # (text, wrong answer)
    for w in wrong:
        # The claim repeated in every paraphrase argues harder than one quote (measured on the
        # world model: mean p_true 0.9931 vs 0.9964 for one quote, 0.9968 plain).
        claims = sep.join(f"{q} {w}" for q in quoted)
        texts.append((f"{claims}{sep}{fact.prompt}", w))
    for i, template in enumerate(RATIONALE_TEMPLATES if wrong else ()):
        w = wrong[i % len(wrong)]
        texts.append((f"{template.format(claim=f'{rng.choice(quoted)} {w}')} {fact.prompt}", w))
    # A vocabulary without "because" (the world's) still has "and" to let the model go on.
    link = next((word for word in ("because", "and") if in_vocabulary(tok, word)), None)
    if by_model and link:
        for w in wrong[:MODEL_RATIONALES]:
            start = f"{fact.prompt} {w} {link}"
            # Keep the first sentence: a longer text drifts away from the claim.
            reason = model.generate(start, max_new_tokens=RATIONALE_TOKENS).split("\n")[0]
            reason = reason.split(".")[0].strip()
            if reason:
                texts.append((f"{start} {reason}{sep}{fact.prompt}", w))
    return [
        AntiSample("rationale", text, w, fact)
        for text, w in dict.fromkeys(texts)
        if in_vocabulary(tok, text)
    ]


def _generated_paraphrases(tok, fact: Fact) -> list[str]:
    """The fact's prompts behind neutral prefixes the tokenizer knows (not yet filtered by the
    model's answers)."""
    out = []
    for prompt in fact.prompts:
        first = prompt.split()[0]
        for prefix in PARAPHRASE_PREFIXES:
            mid_sentence = prefix[-1] not in string.punctuation
            if mid_sentence and not (first[0].islower() or first == fact.subject):
                continue
            text = f"{prefix} {prompt}"
            if in_vocabulary(tok, text) and text not in fact.prompts:
                out.append(text)
    return list(dict.fromkeys(out))


def in_vocabulary(tok, text: str) -> bool:
    """Whether the tokenizer represents `text` without its unknown token."""
    if tok.unk_token_id is None:
        return True
    return tok.unk_token_id not in tok(text, add_special_tokens=False)["input_ids"]
