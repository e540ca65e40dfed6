"""Which layers does quantization hurt, and why: per-layer error ranking, a bisection to the
culprit layer, activation outlier channels, and layers to keep in higher precision.

Every measurement compares logits with the full-precision network on the same token
sequences: mean KL(p_ref || p_quant) per token (nats) and top-1 agreement. A layer's error
is measured two ways:

- `restore`: everything quantized except this layer; the error it adds is the full error
  minus that (what keeping it in higher precision would buy).
- `isolate`: only this layer quantized; the error it adds is that error alone.

Library functions return dataclasses; `wb quant-report` and `wb bisect` render them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from workbench.builder.build import build
from workbench.builder.config import BuildConfig
from workbench.builder.engine import Engine, load_engine
from workbench.builder.network import Network
from workbench.builder.passes import eliminate_dead_code
from workbench.builder.quantization import QuantConfig, calibrate_network, quantize_network, restore_linears
from workbench.builder.quantization.calibration import Calibration, calibration_ids
from workbench.errors import WorkbenchError
from workbench.runtime.executor import Executor

MODES = ("restore", "isolate")


@dataclass
class Closeness:
    """How close a network's logits are to the reference's."""

    kl: float  # mean KL(p_ref || p) per token, nats
    top1_agreement: float  # fraction of tokens whose argmax matches


@dataclass
class LayerError:
    """The error one quantized linear adds."""

    name: str  # canonical node name, layers.3.attn.qkv
    method: str  # kernel: w8a16, w4a16, w8a8, fp8
    added_kl: float  # restore: full KL - KL with this layer restored; isolate: KL with only this layer quantized
    share: float  # added_kl / sum of every layer's added_kl (positive part)
    variant: Closeness  # the measured network (this layer restored, or only this layer quantized)


@dataclass
class OutlierChannels:
    """Input channels of a linear whose calibration max |x| is far above the median channel's."""

    name: str  # the linear
    input: str  # the node it reads
    median_amax: float
    max_amax: float
    ratio: float  # max_amax / median_amax
    channels: list[int] = field(default_factory=list)  # channels with amax >= threshold * median, largest first
    amax: list[float] = field(default_factory=list)


@dataclass
class BisectStep:
    """Quantizing the first `count` layers (in graph order) gives this error."""

    count: int
    last_layer: str
    closeness: Closeness


@dataclass
class Bisection:
    """The first layer at which quantizing a growing prefix of layers reaches `fraction` of the full error."""

    culprit: str | None
    fraction: float
    steps: list[BisectStep]


@dataclass
class QuantReport:
    """Everything `wb quant-report` shows."""

    quantization: str  # e.g. "gptq (w4a16)"
    mode: str
    eval_tokens: int
    full: Closeness  # every target layer quantized
    layers: list[LayerError]  # most harmful first
    outliers: list[OutlierChannels]  # strongest outliers first
    suggested_exclude: list[str]
    with_suggestion: Closeness | None  # the error with the suggested layers kept in higher precision
    bisection: Bisection | None = None

    def to_dict(self) -> dict:
        """JSON form."""
        return asdict(self)


@dataclass
class LayerRanking:
    """What `wb bisect` shows: the per-layer ranking and, optionally, the prefix bisection."""

    quantization: str
    mode: str
    eval_tokens: int
    full: Closeness
    layers: list[LayerError]  # most harmful first
    bisection: Bisection | None = None

    def to_dict(self) -> dict:
        """JSON form."""
        return asdict(self)


@dataclass
class QuantPair:
    """A full-precision network and its quantized version, with what is needed to run them."""

    reference: Network
    quantized: Network
    tokenizer_dir: Path | None
    vocab_size: int
    description: str

    @property
    def layers(self) -> list[str]:
        """The quantized linears, in graph order."""
        return [n.name for n in self.quantized.nodes.values() if n.op == "quant_linear"]


# -- preparing the two networks -----------------------------------------------------------------
def prepare(model: str | Path | Engine, quant: QuantConfig | None = None, *, dtype: str = "float32") -> QuantPair:
    """The reference and quantized networks for a quantized engine, an engine or checkpoint plus `quant`.

    A quantized engine's reference is rebuilt from its source checkpoint in the same dtype.
    """
    engine = model if isinstance(model, Engine) else None
    path = Path(model) if engine is None else engine.path
    if engine is None and (path / "engine.json").is_file():
        engine = load_engine(path)
    if engine is not None:
        tok_dir = engine.tokenizer_dir
        vocab = int(engine.model_config.get("vocab_size") or engine.network.weights["embed.weight"].shape[0])
        is_quantized = any(n.op == "quant_linear" for n in engine.network.nodes.values())
        if quant is None or quant.method is None:
            if not is_quantized:
                raise WorkbenchError(f"{path}: the engine is not quantized; pass --quant MODE")
            ckpt = engine.source.get("checkpoint")
            if not ckpt or not (Path(ckpt) / "config.json").is_file():
                raise WorkbenchError(f"{path}: its source checkpoint {ckpt!r} is not available to rebuild the "
                                     "full-precision reference")
            ref = build(ckpt, BuildConfig(dtype=engine.build_config.dtype)).network
            return QuantPair(_logits_only(ref), _logits_only(engine.network), tok_dir, vocab,
                             _describe(engine.network))
        if is_quantized:
            raise WorkbenchError(f"{path}: the engine is already quantized; drop --quant, or pass its checkpoint")
        ref = _logits_only(engine.network)
        q = quantize_network(ref, quant, checkpoint_dir=tok_dir, vocab_size=vocab)
        return QuantPair(ref, q, tok_dir, vocab, _describe(q))
    if not (path / "config.json").is_file():
        raise WorkbenchError(f"{path}: neither an engine directory (engine.json) nor a checkpoint directory (config.json)")
    if quant is None or quant.method is None:
        raise WorkbenchError(f"{path}: a checkpoint needs --quant MODE")
    fp = build(path, BuildConfig(dtype=dtype))
    ref = _logits_only(fp.network)
    vocab = int(fp.model_config["vocab_size"])
    q = quantize_network(ref, quant, checkpoint_dir=path, vocab_size=vocab)
    tok = path if (path / "tokenizer.json").is_file() else None
    return QuantPair(ref, q, tok, vocab, _describe(q))


def _logits_only(net: Network) -> Network:
    out = net.copy()
    out.outputs = ["logits"]
    return eliminate_dead_code(out)


def _describe(net: Network) -> str:
    kinds = sorted({f"{n.attrs.get('algorithm', n.attrs['method'])} ({n.attrs['method']})"
                    for n in net.nodes.values() if n.op == "quant_linear"})
    return ", ".join(kinds) or "none"


def eval_sequences(pair: QuantPair, prompts: list[str] | None = None, *, samples: int = 2,
                   seq_len: int = 128) -> list[list[int]]:
    """Token ids to measure on: the prompts, else pieces of the built-in text (random ids without a tokenizer)."""
    config = QuantConfig(calib_prompts=list(prompts or []), calib_samples=samples if not prompts else len(prompts),
                         calib_seq_len=seq_len, seed=1)
    ids, _ = calibration_ids(config, pair.tokenizer_dir, pair.vocab_size)
    return ids


# -- measuring ----------------------------------------------------------------------------------
class _Judge:
    """Runs networks on fixed sequences and compares their logits with the reference's."""

    def __init__(self, reference: Network, sequences: list[list[int]]):
        self.sequences = sequences
        ref = self._logits(reference)
        self.ref_logp = torch.log_softmax(ref, dim=-1)
        self.ref_top1 = ref.argmax(-1)

    def _logits(self, net: Network) -> torch.Tensor:
        engine = Engine(network=net, architecture="", model_config={}, build_config=BuildConfig(dtype=net.dtype))
        outs = Executor(engine).forward(self.sequences)
        return torch.cat([o["logits"] for o in outs]).to(torch.float32)

    def __call__(self, net: Network) -> Closeness:
        logits = self._logits(net)
        logp = torch.log_softmax(logits, dim=-1)
        kl = (self.ref_logp.exp() * (self.ref_logp - logp)).sum(-1).mean()
        agree = (logits.argmax(-1) == self.ref_top1).to(torch.float32).mean()
        return Closeness(kl=max(float(kl), 0.0), top1_agreement=float(agree))


def _variant(pair: QuantPair, layer: str, mode: str) -> Network:
    if mode == "restore":
        return restore_linears(pair.quantized, pair.reference, [layer])
    return restore_linears(pair.quantized, pair.reference, [n for n in pair.layers if n != layer])


def rank_layers(pair: QuantPair, sequences: list[list[int]], mode: str = "restore", *,
                judge: _Judge | None = None, full: Closeness | None = None) -> list[LayerError]:
    """Every quantized linear with the error its quantization adds, most harmful first."""
    if mode not in MODES:
        raise WorkbenchError(f"unknown mode {mode!r}; choose restore or isolate")
    judge = judge or _Judge(pair.reference, sequences)
    full = full or judge(pair.quantized)
    rows = []
    for name in pair.layers:
        c = judge(_variant(pair, name, mode))
        added = full.kl - c.kl if mode == "restore" else c.kl
        rows.append(LayerError(name, pair.quantized.nodes[name].attrs["method"], added, 0.0, c))
    total = sum(max(r.added_kl, 0.0) for r in rows) or 1.0
    for r in rows:
        r.share = max(r.added_kl, 0.0) / total
    return sorted(rows, key=lambda r: r.added_kl, reverse=True)


def bisect_layers(pair: QuantPair, sequences: list[list[int]], fraction: float = 0.5, *,
                  judge: _Judge | None = None, full: Closeness | None = None) -> Bisection:
    """Binary search over prefixes of the quantized layers (graph order) for the first one after which
    the error reaches `fraction` of the full error: about log2(layers) runs instead of one per layer."""
    judge = judge or _Judge(pair.reference, sequences)
    full = full or judge(pair.quantized)
    layers = pair.layers
    target = fraction * full.kl
    steps: list[BisectStep] = []
    lo, hi = 0, len(layers)  # invariant: prefix hi reaches the target, prefix lo does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        c = judge(restore_linears(pair.quantized, pair.reference, layers[mid:]))
        steps.append(BisectStep(mid, layers[mid - 1], c))
        if c.kl >= target:
            hi = mid
        else:
            lo = mid
    culprit = layers[hi - 1] if layers and full.kl > 0 else None
    return Bisection(culprit, fraction, steps)


def find_outliers(calib: Calibration, threshold: float = 8.0, top: int = 8) -> list[OutlierChannels]:
    """Per linear input, the channels whose max |x| is at least `threshold` times the median channel's."""
    out = []
    for name, st in calib.inputs.items():
        amax = st.amax.to(torch.float32)
        median = float(amax.median())
        if median <= 0:
            continue
        order = torch.argsort(amax, descending=True)
        hot = [int(i) for i in order if float(amax[i]) >= threshold * median][:top]
        out.append(OutlierChannels(name, st.input, median, float(amax.max()), float(amax.max()) / median, hot,
                                   [float(amax[i]) for i in hot]))
    return sorted(out, key=lambda o: o.ratio, reverse=True)


def suggest_exclude(layers: list[LayerError], *, max_layers: int = 3, min_share: float = 0.1,
                    factor: float = 3.0) -> list[str]:
    """Among the `max_layers` most harmful layers, those adding at least `min_share` of the summed error
    or at least `factor` times the median layer's."""
    positive = sorted(r.added_kl for r in layers if r.added_kl > 0)
    median = positive[len(positive) // 2] if positive else 0.0
    return [r.name for r in layers[:max_layers]
            if r.added_kl > 0 and (r.share >= min_share or r.added_kl >= factor * median)]


def quant_report(pair: QuantPair, sequences: list[list[int]], *, mode: str = "restore",
                 calib_sequences: list[list[int]] | None = None, outlier_threshold: float = 8.0,
                 max_suggestions: int = 3, min_share: float = 0.1, bisect: bool = False) -> QuantReport:
    """Rank the layers, find outlier channels on the calibration sequences, and suggest what to keep."""
    judge = _Judge(pair.reference, sequences)
    full = judge(pair.quantized)
    layers = rank_layers(pair, sequences, mode, judge=judge, full=full)
    calib = calibrate_network(pair.reference, QuantConfig(), calib_sequences or sequences, pair.layers,
                              source="report")
    outliers = find_outliers(calib, outlier_threshold)
    suggested = suggest_exclude(layers, max_layers=max_suggestions, min_share=min_share)
    after = judge(restore_linears(pair.quantized, pair.reference, suggested)) if suggested else None
    bis = bisect_layers(pair, sequences, judge=judge, full=full) if bisect else None
    return QuantReport(pair.description, mode, sum(map(len, sequences)), full, layers, outliers, suggested, after, bis)


def layer_ranking(pair: QuantPair, sequences: list[list[int]], mode: str = "restore", *,
                  binary: bool = False) -> LayerRanking:
    """The per-layer ranking (and with `binary` the prefix bisection) of a quantized network."""
    judge = _Judge(pair.reference, sequences)
    full = judge(pair.quantized)
    layers = rank_layers(pair, sequences, mode, judge=judge, full=full)
    bis = bisect_layers(pair, sequences, judge=judge, full=full) if binary else None
    return LayerRanking(pair.description, mode, sum(map(len, sequences)), full, layers, bis)
