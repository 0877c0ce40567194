"""The unlearning losses, one function per method.

Each function takes the model being trained and its `Data`, computes once what stays fixed
(a frozen reference's log-probabilities, a teacher's distributions, frozen activations: the
reference model and the inputs never change, so nothing has to run twice), and returns the
loss as a function of the step's `Batch` (which rows of each set it reads; all of them unless
the run has a batch size) that `run` calls once per step. Keyword arguments are the method's
own hyper-parameters; their defaults are the ones recorded when a caller gives none (`plan`,
`bottleneck`, `seed` and `weights` come from the run, not the caller's options).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from codecut.codebook import Bottleneck
from codecut.codebook.corpus import generated_texts
from codecut.probes.antisamples import make_antisamples
from codecut.probes.finetune.data import (
    Batch,
    Data,
    Sequences,
    answer_logprobs,
    logits,
    positions,
    sequences,
    take,
    text_sequences,
    token_logprobs,
)
from codecut.probes.plan import UnlearnPlan, apply
from torch import nn

from codecut.core.errors import BadInput
from codecut.core.facts import Fact
from codecut.core.models import Model

Loss = Callable[[Batch], torch.Tensor]
TEMPLATE = "I don't know"  # the obliterated answer FLAT and SNAP train toward


def _mean_logprob(model: Model, seqs: Sequences) -> torch.Tensor:
    """Mean log p over every answer token of the sequences: the negated next-token loss."""
    total, count = answer_logprobs(model, seqs)
    return total.sum() / count.sum()


def ga(model: Model, data: Data) -> Loss:
    """Gradient ascent on the forget answers (Jang et al. 2023, "Knowledge Unlearning for
    Mitigating Privacy Risks in Language Models"):

        L = mean over forget answer tokens y_t of  log p_theta(y_t | x, y_<t)

    i.e. the next-token loss with its sign flipped. Nothing holds the rest of the model in place.
    """
    return lambda batch: _mean_logprob(model, batch.take(data.forget))


def graddiff(model: Model, data: Data, *, alpha: float = 1.0) -> Loss:
    """Gradient difference (the TOFU baseline, Maini et al. 2024, "TOFU: A Task of Fictitious
    Unlearning for LLMs"): gradient ascent on the forget answers plus the next-token loss on the
    retain answers,

        L = mean_forget log p_theta(y_t | ...) - alpha * mean_retain log p_theta(y_t | ...)
    """

    def loss(batch: Batch) -> torch.Tensor:
        forget = _mean_logprob(model, batch.take(data.forget))
        return forget - alpha * _mean_logprob(model, batch.take(data.retain))

    return loss


def npo(model: Model, data: Data, *, beta: float = 0.1) -> Loss:
    """Negative preference optimisation (Zhang et al. 2024, "Negative Preference Optimization:
    From Catastrophic Collapse to Effective Unlearning"): DPO with the forget answer as the
    rejected reply and no preferred one,

        L = -(2 / beta) * mean_(x,y) log sigmoid(-beta * (log p_theta(y|x) - log p_ref(y|x)))

    log p(y|x) sums over the answer's tokens; p_ref is the model before fine-tuning (frozen:
    its log-probabilities on these fixed sequences are computed once). The loss flattens once
    the answer is far below the reference, which is what slows NPO's collapse next to GA.
    """
    with torch.no_grad():
        ref, _ = answer_logprobs(model, data.forget)

    def loss(batch: Batch) -> torch.Tensor:
        rows = batch.rows(data.forget)
        now, _ = answer_logprobs(model, take(data.forget, rows))
        return -(2 / beta) * F.logsigmoid(-beta * (now - ref[rows])).mean()

    return loss


def simnpo(model: Model, data: Data, *, beta: float = 2.5, gamma: float = 0.0) -> Loss:
    """Simple NPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference
    Optimization for LLM Unlearning"): NPO without the reference model, the answer's
    log-probability normalised by its length |y|, and a reward margin gamma,

        L = -(2 / beta) * mean_(x,y) log sigmoid(-(beta / |y|) * log p_theta(y|x) - gamma)
    """

    def loss(batch: Batch) -> torch.Tensor:
        total, count = answer_logprobs(model, batch.take(data.forget))
        return -(2 / beta) * F.logsigmoid(-beta * total / count - gamma).mean()

    return loss


def rmu_layer(model: Model, layer: int | None) -> int:
    """The layer RMU steers: `layer`, else 7 as in the paper's 32-layer models, or the middle
    layer of a model too shallow for that."""
    return min(7, model.n_layers // 2) if layer is None else layer


def rmu(
    model: Model,
    data: Data,
    *,
    layer: int | None = None,
    scale: float = 2.0,
    alpha: float = 100.0,
    seed: int = 0,
) -> Loss:
    """Representation misdirection (Li et al. 2024, "The WMDP Benchmark: Measuring and
    Reducing Malicious Use with Unlearning"), at the output of block `layer`:

        L = mean_forget tokens ||h_theta(t) - c u||^2 / d  +  alpha * mean_retain tokens
            ||h_theta(t) - h_frozen(t)||^2 / d

    u is a fixed random unit vector with entries drawn uniformly from [0, 1) (then normalised),
    as in the paper; h_frozen is the model before fine-tuning. The paper's c is an absolute
    number tuned per model (6.5 for Zephyr-7B); here c = scale * the mean norm of the frozen
    forget activations, so one default fits models whose activations differ in size (the
    adaptive RMU of Dang et al. 2025 scales c the same way). Tokens are every real token of
    the prompt and answer but special ones (BOS carries a far larger norm). By default only the
    MLPs of blocks layer-2 .. layer are trained, as in the paper (see `params`).
    """
    layer = rmu_layer(model, layer)
    point = model.hook_dict[f"blocks.{layer}.hook_out"]

    def hidden(seqs: Sequences) -> torch.Tensor:
        seen = []
        handle = point.register_forward_hook(lambda module, args, out: seen.append(out))
        try:
            logits(model, seqs)
        finally:
            handle.remove()
        return seen[0][seqs.words].float()

    with torch.no_grad():
        frozen_retain = hidden(data.retain)
        norm = hidden(data.forget).norm(dim=-1).mean()
    index = positions(data.retain.words)
    u = torch.rand(model.d_model, generator=torch.Generator().manual_seed(seed))
    target = (scale * norm * u / u.norm()).to(norm.device)

    def loss(batch: Batch) -> torch.Tensor:
        forget = hidden(batch.take(data.forget))
        steer = F.mse_loss(forget, target.expand_as(forget))
        rows = batch.rows(data.retain)
        retain = take(data.retain, rows)
        frozen = frozen_retain[index[rows][retain.words]]
        return steer + alpha * F.mse_loss(hidden(retain), frozen)

    return loss


def bake(
    model: Model,
    data: Data,
    *,
    plan: UnlearnPlan,
    bottleneck: Bottleneck | None = None,
    noise: float = 0.0,
    texts: int = 0,
    seed: int = 0,
    weights: list[nn.Parameter] = (),
) -> Loss:
    """A zero-shot plan made permanent: distil the model with the plan applied (the teacher)
    into the weights (the student, no hook attached), on the prompts of the forget and retain
    facts (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network", at temperature 1):

        L = mean_forget prompt positions KL(p_plan || p_theta) + mean_retain positions KL(p_plan || p_theta)
            [+ mean_text positions KL(p_plan || p_theta)]

    over the next-token distributions at every prompt position (the last one predicts the
    answer). Each set weighs the same, so a few forget prompts are not drowned by many retain
    ones. The teacher is the model as it is before training with `plan` applied (`bottleneck`:
    the plan's, when it is not in the plan); its distributions on these fixed prompts are
    computed once, before the first step.

    The robust form (`codecut finetune --method bake --robust`) follows UNDO (Lee et al. 2025,
    "Distillation Robustifies Unlearning", arXiv 2506.06278): a student that starts from the
    teacher's own weights inherits what the hook only hides, so after the teacher's
    distributions are taken, every trained matrix is moved toward noise,

        W <- (1 - noise) * W + noise * std(W) * eps,   eps ~ N(0, 1) (drawn from `seed`),

    (norm scales and biases are kept), and the student relearns from the teacher what it should
    know. `texts` > 0 adds that many texts the model writes (before training, from the facts'
    subjects, `TEXT_TOKENS` tokens each) as a third set, so the student also relearns to write.
    """
    text = None
    if texts:
        subjects = list(dict.fromkeys(f.subject for f in data.forget_facts + data.retain_facts))
        written = generated_texts(model, texts, TEXT_TOKENS, seed=seed, prompts=subjects)
        text = text_sequences(model, written, TEXT_TOKENS)
    parts = [s for s in (data.forget, data.retain, text) if s is not None]
    with torch.no_grad(), apply(model, plan, bottleneck=bottleneck):
        teachers = [logits(model, s)[s.prompt].float().log_softmax(-1) for s in parts]
    if text is not None:  # float16 is close enough for a target and halves what the texts hold
        teachers[-1] = teachers[-1].half()
    indices = [positions(s.prompt) for s in parts]
    if noise:
        toward_noise(weights, noise, seed)

    def loss(batch: Batch) -> torch.Tensor:
        total = torch.zeros((), device=model.device)
        for seqs, teacher, index in zip(parts, teachers, indices):
            rows = batch.rows(seqs)
            some = take(seqs, rows)
            student = logits(model, some)[some.prompt].float().log_softmax(-1)
            fixed = teacher[index[rows][some.prompt]].float()
            total = total + F.kl_div(student, fixed, log_target=True, reduction="batchmean")
        return total

    return loss


TEXT_TOKENS = 48  # tokens of each text the robust bake distils on


@torch.no_grad()
def toward_noise(weights: list[nn.Parameter], noise: float, seed: int) -> None:
    """UNDO's perturbation, in place: each matrix W <- (1 - noise) W + noise std(W) eps."""
    gen = torch.Generator().manual_seed(seed)
    for w in weights:
        if w.dim() >= 2:
            scale = noise * w.float().std().item()
            eps = torch.randn(w.shape, generator=gen).to(w.device, w.dtype)
            w.mul_(1 - noise).add_(eps * scale)


def _with_answer(model: Model, facts: list[Fact], answer: str) -> Sequences:
    """The facts' prompts followed by `answer` instead of theirs, row for row with
    `sequences(model, facts)`."""
    return sequences(
        model, [Fact(f.subject, f.relation, f.prompt, answer, f.paraphrases) for f in facts]
    )


def _mean_token_p(model: Model, seqs: Sequences) -> torch.Tensor:
    """[N]: each answer's mean token probability, (1/|y|) sum_t p_theta(y_t | x, y_<t)."""
    token, where = token_logprobs(model, seqs)
    return (token.exp() * where).sum(1) / where.sum(1)


# FLAT's f-divergences in their variational form (the table of f-GAN, Nowozin et al. 2016):
# name -> (g*, the activation a score passes through; f*(g*(.)), the conjugate after it).
DIVERGENCES: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "tv": (lambda v: torch.tanh(v) / 2, lambda v: torch.tanh(v) / 2),
    "kl": (lambda v: v, lambda v: torch.exp(v - 1)),
    "js": (lambda v: math.log(2) + F.logsigmoid(v), lambda v: F.softplus(v) - math.log(2)),
    "pearson": (lambda v: v, lambda v: v * v / 4 + v),
}


def flat(model: Model, data: Data, *, template: str = TEMPLATE, divergence: str = "tv") -> Loss:
    """Loss adjustment with only forget data (Wang et al. 2025, "LLM Unlearning via Loss
    Adjustment with Only Forget Data", arXiv 2410.11143): maximise an f-divergence between the
    template answer e ("I don't know") and the forget answer y on the forget prompts, through
    its variational form, with the model's own scores as the variational function:

        L = - mean_x g*(P_theta(e | x)) + mean_x f*(g*(P_theta(y | x)))

    P_theta(y | x) = (1/|y|) sum_t p_theta(y_t | x, y_<t), the answer's mean token probability
    (as the paper); g* and f* the activation and conjugate of the divergence (f-GAN's table):
    tv (its code's default) g*(v) = tanh(v)/2, f*(t) = t; kl g*(v) = v, f*(t) = exp(t - 1);
    js g*(v) = log 2 - log(1 + exp(-v)), f*(t) = -log(2 - exp(t)); pearson g*(v) = v,
    f*(t) = t^2/4 + t. Minimising raises the template's probability and lowers the answer's,
    each weighed by the divergence's slope; no retain data.
    """
    activation, conjugate = DIVERGENCES[divergence]
    templates = _with_answer(model, data.forget_facts, template)  # row for row with forget

    def loss(batch: Batch) -> torch.Tensor:
        rows = batch.rows(data.forget)
        good = _mean_token_p(model, take(templates, rows))
        bad = _mean_token_p(model, take(data.forget, rows))
        return (conjugate(bad) - activation(good)).mean()

    return loss


def snap(
    model: Model,
    data: Data,
    *,
    template: str = TEMPLATE,
    alpha: float = 1.0,
    penalty: float = 0.01,
    weights: list[nn.Parameter],
) -> Loss:
    """Negative instructions, hard positives and a weight penalty (Choi et al. 2024, "SNAP:
    Unlearning Selective Knowledge in Large Language Models with Negative Instructions",
    arXiv 2406.12329):

        L = - mean over the forget prompts' template tokens log p_theta(e_t | x, e_<t)
            - alpha * mean over R's answer tokens log p_theta(y_t | x, y_<t)
            + penalty * sum_i (theta_i - theta0_i)^2

    The negative instructions are the forget prompts answered with the obliterated `template`
    ("I don't know"; the paper has GPT-4 write varied questions and refusals); the hard
    positives are the retain facts with their own answers (the paper generates questions near
    the forget target; pass the neighbours as retain facts). The paper's Wasserstein
    regulariser between the initial and current weights is replaced here by the squared L2
    distance between them, the squared 2-Wasserstein distance between the point masses at
    theta0 and theta, summed over the trained weights (for LoRA: the adapters' weights).
    """
    negatives = _with_answer(model, data.forget_facts, template)
    initial = [w.detach().clone() for w in weights]

    def loss(batch: Batch) -> torch.Tensor:
        refuse = _mean_logprob(model, batch.take(negatives))
        keep = _mean_logprob(model, batch.take(data.retain))
        drift = sum(((w - w0) ** 2).sum() for w, w0 in zip(weights, initial))
        return -refuse - alpha * keep + penalty * drift

    return loss


def antisample(
    model: Model,
    data: Data,
    *,
    n_wrong: int = 4,
    rationales: bool = True,
    alpha: float = 0.0,
    seed: int = 0,
) -> Loss:
    """Training on anti-samples (Sinha et al. 2024, "UnSTAR: Unlearning with Self-Taught
    Anti-Sample Reasoning for LLMs", arXiv 2410.17050): raise the likelihood of misleading
    answers to the fact's questions,

        L = - mean over the anti-samples' answer tokens log p_theta(a_t | x~, a_<t)
            - alpha * mean over R's answer tokens log p_theta(y_t | x, y_<t)

    The anti-samples are codecut's own (`make_antisamples`, computed once): each forget prompt
    and paraphrase x with `n_wrong` wrong answers a of the same relation (drawn from the forget
    and retain facts, else the model's own next guesses; `seed` picks them), and, with
    `rationales`, x behind a misleading rationale for a (x~ = the rationale then x); only
    the answer's tokens are trained. UnSTAR has an LLM write the rationales and trains on
    them too; alpha = 0 is its forget-only form, alpha > 0 adds the retain facts' NLL.
    """
    pool = data.forget_facts + data.retain_facts
    samples = []
    for f in data.forget_facts:
        samples += make_antisamples(
            model, f, pool, n_counterfactual=n_wrong, rationales=rationales, paraphrases=False,
            seed=seed,
        )  # fmt: skip
    if not samples:
        raise BadInput("no anti-samples: no wrong answer found for the forget facts")
    anti = sequences(
        model, [Fact(s.fact.subject, s.fact.relation, s.prompt, s.answer) for s in samples]
    )

    def loss(batch: Batch) -> torch.Tensor:
        total = -_mean_logprob(model, batch.take(anti))
        if alpha and data.retain is not None:
            total = total - alpha * _mean_logprob(model, batch.take(data.retain))
        return total

    return loss


METHODS: dict[str, Callable[..., Loss]] = {
    "ga": ga,
    "graddiff": graddiff,
    "npo": npo,
    "simnpo": simnpo,
    "rmu": rmu,
    "flat": flat,
    "snap": snap,
    "antisample": antisample,
    "bake": bake,
}
NEEDS_RETAIN = {"graddiff", "rmu", "snap"}  # their loss has a retain term
FROM_RUN = {"plan", "bottleneck", "seed", "weights"}  # keyword arguments that are not options


def check_options(method: str, options: dict) -> None:
    """A one-line error for an option value the method cannot use."""
    noise = options.get("noise", 0.0)
    if not (isinstance(noise, (int, float)) and 0 <= noise < 1):
        raise BadInput(f"method {method}: noise must be a number in [0, 1), got {noise!r}")
    texts = options.get("texts", 0)
    if not (isinstance(texts, int) and not isinstance(texts, bool) and texts >= 0):
        raise BadInput(f"method {method}: texts must be a whole number >= 0, got {texts!r}")
    if "divergence" in options and options["divergence"] not in DIVERGENCES:
        raise BadInput(f"divergence {options['divergence']!r}: use one of {', '.join(DIVERGENCES)}")
    if "template" in options and not (
        isinstance(options["template"], str) and options["template"].strip()
    ):
        raise BadInput(f"method {method}: template must be a non-empty answer")
    if "n_wrong" in options and not (
        isinstance(options["n_wrong"], int) and options["n_wrong"] >= 1
    ):
        raise BadInput(f"method {method}: n_wrong must be a whole number >= 1")
