"""The attack suite: is a forgotten fact really gone, or only hidden from the plain prompt?

    card = attack(model, facts, plan=plan, pool=other_facts)
    card.table()                       # a row per probe, variant, fact group and metric
    card.row("format", "few-shot")     # one number on the clean model, the bare bottleneck, the plan

Each probe is one file: format.py (questions, chat, few-shot, context sentences, filler and a
long unrelated context), generation.py (the answer anywhere in greedy and sampled
continuations), probing.py (linear probes on activations before, at and after the cut),
relearn.py (a few fine-tuning steps on other facts, or on half of the forgotten ones),
unhooked.py (the plan's hook removed: the weights alone), quantize.py (rounded weights) and
fluency.py (loss on held-out text). suite.py
runs them; card.py holds what they report and draws it (`card.plot()`), plots.py where the cut
codes fire (`plot_code_activations`).
"""

from codecut.probes.attacks.card import AttackCard, Row
from codecut.probes.attacks.plots import code_activations, plot_code_activations
from codecut.probes.attacks.suite import AttackConfig, attack

__all__ = [
    "AttackCard",
    "AttackConfig",
    "Row",
    "attack",
    "code_activations",
    "plot_code_activations",
]
