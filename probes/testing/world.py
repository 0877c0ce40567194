"""A synthetic world of fictitious facts and a tiny transformer trained to know them.

Tests and benchmarks stand on it: it is small enough to train in under a minute on two CPU
cores, yet it has what unlearning needs — entities with several relations each, several prompt
templates per relation, and held-out paraphrase templates the model never saw in training.

    model, world = build_world(seed=0)      # trained once, then loaded from the cache
    model, world, bns = fixture("world-0")  # the committed copy the tests use, with bottlenecks
    world.facts()                           # list[Fact]: prompt = first template, paraphrases = the rest

Everything is deterministic by seed on one processor, but another processor trains another
world from the same seed (its float kernels round differently): whatever must be the same
everywhere loads a committed fixture. The trained model is a plain HF Llama directory (a
word-level tokenizer built in code, no download), cached under `cache_dir()/worlds/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean

import torch
from codecut.codebook import Bottleneck, load_bottleneck, train_bottleneck
from codecut.probes.evaluate import fact_accuracy
from tqdm.auto import tqdm

from codecut.core.errors import BadInput, NotFound
from codecut.core.facts import Fact
from codecut.core.io import atomic_directory
from codecut.core.models import Model, cache_dir, load_model

log = logging.getLogger(__name__)

# The committed test worlds: see fixtures/README.md.
FIXTURES = Path(__file__).parent / "fixtures"

# Bump when the world's text or the training recipe changes: it invalidates cached worlds.
VERSION = 1

# Relation -> (values, training templates, held-out paraphrase templates). "{s}" is the subject;
# the answer follows the template after one space.
RELATIONS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "city": (
        ["Velmora", "Quenby", "Ostrava", "Pellin", "Durnsk", "Halvik", "Sorrent", "Brisca"],
        [
            "{s} lives in the city of",
            "the home city of {s} is",
            "{s} has a house in the city of",
            "every day {s} walks around the city of",
        ],
        ["people say that the city {s} lives in is", "{s} was born and raised in the city of"],
    ),
    "job": (
        ["baker", "pilot", "lawyer", "farmer", "painter", "surgeon", "plumber", "teacher"],
        [
            "{s} works as a",
            "the job of {s} is",
            "by profession {s} is a",
            "every morning {s} goes to work as a",
        ],
        ["people say that the job {s} has is", "{s} earns a living as a"],
    ),
    "pet": (
        ["parrot", "hamster", "lizard", "rabbit", "turtle", "ferret", "goldfish", "pony"],
        [
            "{s} owns a pet",
            "the pet of {s} is a",
            "at home {s} feeds a pet",
            "every evening {s} plays with a pet",
        ],
        ["people say that the pet {s} has is a", "{s} takes care of a pet"],
    ),
    "color": (
        ["crimson", "teal", "amber", "violet", "olive", "indigo", "silver", "scarlet"],
        [
            "the favourite colour of {s} is",
            "{s} likes the colour",
            "{s} paints everything in the colour",
            "every day {s} wears the colour",
        ],
        ["people say that the colour {s} likes is", "{s} was born loving the colour"],
    ),
}

_SYLLABLES = ["ka", "lo", "mi", "ren", "tas", "vo", "zel", "dar", "fin", "gu", "hol", "nia"]


@dataclass
class World:
    """The fictitious facts: `table[subject][relation] = answer`, plus the templates."""

    seed: int
    table: dict[str, dict[str, str]]
    relations: dict[str, tuple[list[str], list[str], list[str]]] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)  # filled in after training

    @property
    def subjects(self) -> list[str]:
        return list(self.table)

    def facts(self, split: str = "train") -> list[Fact]:
        """One Fact per (subject, relation). `split` picks the templates behind the prompts:
        "train" (seen in training), "heldout" (never seen), or "all"."""
        out = []
        for s, row in self.table.items():
            for rel, answer in row.items():
                _, train, held = self.relations[rel]
                templates = {"train": train, "heldout": held, "all": train + held}[split]
                prompts = [t.format(s=s) for t in templates]
                out.append(Fact(s, rel, prompts[0], answer, paraphrases=prompts[1:]))
        return out

    def sentences(self) -> list[str]:
        """The training corpus: every training template of every fact, completed."""
        return [f"{p} {f.answer}" for f in self.facts("train") for p in f.prompts]

    def corpus(self, shuffled: int = 2) -> list[str]:
        """Text to train a bottleneck on: the sentences, plus `shuffled` copies of each with its
        words in random order. The shuffles show every word in varied contexts, as a real corpus
        does; trained on the templates alone, the codes learn templates and no code marks a
        subject (the selector then finds nothing to condition a cut on)."""
        rng = random.Random(self.seed)
        sentences = self.sentences()
        mixed = []
        for text in sentences:
            for _ in range(shuffled):
                words = text.split()
                rng.shuffle(words)
                mixed.append(" ".join(words))
        return sentences + mixed


def make_world(n_subjects: int = 24, seed: int = 0) -> World:
    """Invent `n_subjects` people and draw one value per relation for each."""
    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < n_subjects:
        names.add("".join(rng.sample(_SYLLABLES, 2)).capitalize())
    table = {s: {r: rng.choice(v[0]) for r, v in RELATIONS.items()} for s in sorted(names)}
    return World(seed=seed, table=table, relations=RELATIONS)


def make_tokenizer(world: World):
    """A word-level tokenizer over the world's vocabulary that prepends <bos>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = {w for f in world.facts("all") for p in f.prompts for w in p.split()}
    words |= {v for values, _, _ in world.relations.values() for v in values}
    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *sorted(words)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=True,
    )


@dataclass
class WorldConfig:
    """The tiny Llama and its training run."""

    n_subjects: int = 24
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3


def build_world(
    seed: int = 0, config: WorldConfig | None = None, cache: bool = True
) -> tuple[Model, World]:
    """The trained world model and its World, from the cache when this seed/config was built.

    Training is deterministic on one processor but not across processors (their float kernels
    round differently and 600 steps amplify it): tests use the committed `fixture` worlds."""
    config = config or WorldConfig()
    key = hashlib.sha256(
        json.dumps([VERSION, seed, asdict(config), torch.__version__]).encode()
    ).hexdigest()[:12]
    path = cache_dir() / "worlds" / f"world-{seed}-{key}"
    if not (cache and (path / "world.json").exists()):
        with atomic_directory(path) as tmp:
            _train(seed, config, tmp)
    return load_world(path)


def load_world(path: str | Path) -> tuple[Model, World]:
    """A world model directory written by `build_world` (an HF Llama with its world.json)."""
    path = Path(path)
    if not (path / "world.json").is_file():
        raise NotFound(f"{path} holds no world model (no world.json)")
    data = json.loads((path / "world.json").read_text())
    world = World(
        seed=data["seed"], table=data["table"], relations=RELATIONS, accuracy=data["accuracy"]
    )
    return load_model(path), world


def fixture(name: str = "world-0") -> tuple[Model, World, dict[str, Bottleneck]]:
    """A committed test world: (model, World, {hook: bottleneck}), loaded in seconds.

    The fixtures were trained once by `fixtures/build.py` (its command and the content hashes
    are in each fixture's recipe.json); the model's weights are checked against that hash."""
    root = FIXTURES / name
    if not (root / "recipe.json").is_file():
        names = ", ".join(sorted(p.name for p in FIXTURES.glob("*/recipe.json")))
        raise NotFound(f"no world fixture {name!r}: use one of {names}")
    recipe = json.loads((root / "recipe.json").read_text())
    digest = file_hash(root / "model" / "model.safetensors")
    if digest != recipe["model_hash"]:
        raise BadInput(
            f"{root / 'model'}: weights hash {digest}, recipe says {recipe['model_hash']}"
        )
    model, world = load_world(root / "model")
    bottlenecks = {
        hook: load_bottleneck(root / folder) for hook, folder in recipe["bottlenecks"].items()
    }
    return model, world, bottlenecks


def file_hash(path: Path) -> str:
    """16 hex digits of a file's SHA-256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _train(seed: int, config: WorldConfig, out: Path) -> None:
    """Train the tiny Llama on the world's sentences and save model, tokenizer, world.json."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    world = make_world(config.n_subjects, seed)
    tok = make_tokenizer(world)
    hf = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=config.d_model,
            intermediate_size=4 * config.d_model,
            num_hidden_layers=config.n_layers,
            num_attention_heads=config.n_heads,
            num_key_value_heads=config.n_heads,
            max_position_embeddings=64,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=True,
        )
    )
    enc = tok(world.sentences(), return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(hf.parameters(), lr=config.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.steps)
    gen = torch.Generator().manual_seed(seed)
    hf.train()
    losses = []
    bar = tqdm(range(config.steps), desc="training world model", leave=False)
    for _ in bar:
        idx = torch.randint(len(ids), (config.batch_size,), generator=gen)
        loss = hf(input_ids=ids[idx], attention_mask=mask[idx], labels=labels[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    hf.eval()
    tenth = max(len(losses) // 10, 1)
    hf.save_pretrained(out)
    tok.save_pretrained(out)
    model = Model(hf, tok)
    world.accuracy = {
        split: fact_accuracy(model, world.facts(split)) for split in ("train", "heldout")
    }
    log.info("world model: accuracy %s", world.accuracy)
    data = {
        "seed": seed,
        "table": world.table,
        "accuracy": world.accuracy,
        "config": asdict(config),
        # The mean loss of the first and the last tenth of the steps: that it fell is what a
        # test may check of a training run (its exact bits differ from processor to processor).
        "loss": [fmean(losses[:tenth]), fmean(losses[-tenth:])],
    }
    (out / "world.json").write_text(json.dumps(data, indent=1))


def world_bottleneck(model: Model, world: World, seed: int = 0, hook: str = "blocks.2.hook_out"):
    """The tests' and benchmarks' bottleneck for a world: TopK, 1024 codes, k=16, at layer 2
    (or `hook`), trained on 200k activations of the world's corpus (seconds on a CPU)."""
    return train_bottleneck(
        model, hook=hook, kind="topk", n_codes=1024, k=16, tokens=200_000,
        texts=world.corpus(), batch_size=512, seed=seed,
    )  # fmt: skip
