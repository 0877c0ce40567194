"""Where one unlearning request's time goes: seconds per stage and the model work.

    python benchmarks/profile_request.py [SUBJECT RELATION] [--facts FILE] [--warm] [--passes]

One `codecut.unlearn` request on SmolLM2-135M-Instruct with its shipped bottleneck and the
example facts (or `--facts`) as the pool (the demo's request, France capital, by default), run
under cProfile. `--warm` first runs, unprofiled, a request for another subject of the same
relation, as a notebook's earlier request would: what it measured is kept for this one
(`codecut.probes.selector.memo`). Prints the
wall time, the cumulative seconds of each stage of the request (a stage's time includes the
stages it calls), and the model work: tokens through the decoder layers (padding included),
divided by the number of layers, so "full-model token-forwards", with and without gradients.
`--passes` also writes the request's passes through the decoder layers (which layers, rows,
tokens a row with padding, with gradients or not) to benchmarks/results/request_passes.json:
what `benchmarks/gpu.py` replays on a random model of the same shape, where the real weights
cannot go. Run it alone: a second process on the same cores makes every figure meaningless.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections import Counter
from functools import partial

import torch
from common import RESULTS, command_line, machine, write_json

import codecut
from codecut.core.facts import example_facts
from codecut.core.models import decoder_layers

# (label, module path suffix, function name), in the order a request runs them.
STAGES = [
    ("whole request", "probes/selector/unlearn.py", "unlearn"),
    ("default retain set", "probes/selector/retain.py", "default_retain"),
    ("selection (per fact)", "probes/selector/search.py", "select"),
    ("  anti-samples and paraphrases", "probes/antisamples.py", "make_antisamples"),
    ("  setup: prefixes, attributions, conditions", "probes/selector/search.py", "__init__"),
    ("  greedy search over families", "probes/selector/search.py", "family"),
    ("    next code (attributions)", "probes/selector/search.py", "next_code"),
    ("    trials (measuring a cut)", "probes/selector/search.py", "trial"),
    ("results: before and after the plan", "probes/selector/unlearn.py", "_results"),
]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("subject", nargs="?", default="France")
    ap.add_argument("relation", nargs="?", default="capital")
    ap.add_argument("--facts", help="a facts JSONL file for the pool (default: the example facts)")
    ap.add_argument("--warm", action="store_true", help="another request of the relation first")
    ap.add_argument("--passes", action="store_true", help="write request_passes.json")
    args = ap.parse_args()
    subject, relation = args.subject, args.relation
    model = codecut.load_model("smollm2-135m-instruct")
    bn = codecut.load_bottleneck("smollm2-135m-instruct")
    facts = codecut.load_facts(args.facts) if args.facts else example_facts()
    fact = next(f for f in facts if (f.subject, f.relation) == (subject, relation))
    work: Counter[str] = Counter()
    layer_calls: list[tuple[int, int, int, bool]] = []  # (layer, rows, tokens, gradients)

    def count(index, module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        work["with gradients" if torch.is_grad_enabled() else "no gradients"] += hidden.numel()
        layer_calls.append((index, hidden.shape[0], hidden.shape[1], torch.is_grad_enabled()))

    layers = decoder_layers(model.hf)
    for i, layer in enumerate(layers):
        layer.register_forward_pre_hook(partial(count, i), with_kwargs=True)
    if args.warm:  # after the hooks: a hook added later would make what is kept stale
        other = next(f for f in facts if f.relation == relation and f.subject != subject)
        codecut.unlearn(model, bn, [other], pool=facts)
        work.clear()
        layer_calls.clear()
    profile = cProfile.Profile()
    t0 = time.time()
    profile.enable()
    plan = codecut.unlearn(model, bn, [fact], pool=facts)
    profile.disable()
    seconds = time.time() - t0
    selection = plan.results.facts[0].selection
    print(f"{fact.prompt!r} -> {fact.answer!r}: {seconds:.1f} s, success {selection.success}, "
          f"{len(selection.codes)} codes ({selection.family})")  # fmt: skip
    stats = pstats.Stats(profile).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    for label, path, name in STAGES:
        hits = [(v[1], v[3]) for (f, _, n), v in stats.items() if f.endswith(path) and n == name]
        calls, cumulative = (sum(x) for x in zip(*hits)) if hits else (0, 0.0)
        print(f"{label:45s} {cumulative:7.1f} s  {calls:4d} calls")
    per_token = model.hf.config.hidden_size * len(layers)
    for kind, n in sorted(work.items()):
        print(f"full-model token-forwards, {kind}: {n / per_token:,.0f}")
    if args.passes:
        out = RESULTS / "request_passes.json"
        write_json(out, {
            "machine": machine(), "command": command_line(__file__),
            "model": model.name, "request": f"{subject} {relation}", "seconds": round(seconds, 1),
            "layers": len(layers), "d_model": model.d_model, "bottleneck_hook": bn.hook,
            "passes": passes(layer_calls),
        })  # fmt: skip
        print(f"{len(passes(layer_calls))} passes written to {out}")


def passes(calls: list[tuple[int, int, int, bool]]) -> list[dict]:
    """Layer calls grouped into passes: a pass runs layers in order with one batch shape; a
    lower layer, another shape or another gradient mode starts the next."""
    out: list[dict] = []
    for layer, rows, tokens, grad in calls:
        last = out[-1] if out else None
        same = last and (last["rows"], last["tokens"], last["grad"]) == (rows, tokens, grad)
        if same and layer == last["last"] + 1:
            last["last"] = layer
        else:
            out.append({"first": layer, "last": layer, "rows": rows, "tokens": tokens,
                        "grad": grad})  # fmt: skip
    return out


if __name__ == "__main__":
    main()
