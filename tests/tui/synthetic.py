"""A deterministic session for the TUI tests: made-up tensors with a planted fault, and fixed timings.

HF's tensors are seeded random values; the engine's are HF's plus tiny noise, except that
`layers.1.mlp` is wrong in one channel (and everything after it carries that error in
accumulated mode), and at step 2 the engine's logits prefer another token. Nothing here
depends on a model or on timing, so screenshots of it are the same on every run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from workbench.builder.config import BuildConfig
from workbench.inspect.diff import DiffReport, DiffRow
from workbench.inspect.profiler import NameRow, PhaseProfile, ProfileConfig, ProfileReport, Row, Stat
from workbench.inspect.session_file import Session, save_session
from workbench.inspect.tolerances import Tolerances, check
from workbench.names import canonical_names, layer_index

SPEC = {"architecture": "LlamaForCausalLM", "seed": 3,
        "config": dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2)}
PROMPT = [1, 5, 9, 33, 2, 70, 11]
NAMES = canonical_names(2)
STEPS = [0, 1, 2]
MODES = ["accumulated", "local"]
FAULT = "layers.1.mlp"
FAULT_CHANNEL = 5
TOKEN_STEP = 2  # the step whose engine token differs
TOL = Tolerances.parse(["1e-4"], ["1e-4"])


def _width(name: str) -> int:
    return {"attn.qkv": 64}.get(name.split(".", 2)[-1], 96 if name == "logits" else 32)


def _tensors(gen: torch.Generator) -> tuple[dict, dict]:
    """name -> step -> (engine by mode, hf) tensors [positions, width]."""
    hf, eng = {}, {}
    fault_index = NAMES.index(FAULT)
    for step in STEPS:
        rows = len(PROMPT) if step == 0 else 1
        for i, name in enumerate(NAMES):
            ref = torch.randn(rows, _width(name), generator=gen)
            if name == "logits":
                ref[-1, 7 + step] = 6.0  # a clear greedy choice per step
            noise = 1e-7 * torch.randn(rows, _width(name), generator=gen)
            acc, local = ref + noise, ref + noise
            if i >= fault_index:
                carried = 3e-3 * torch.randn(rows, _width(name), generator=gen)
                acc = acc + carried
            if name == FAULT:
                acc[:, FAULT_CHANNEL] += 0.05
                local = local.clone()
                local[:, FAULT_CHANNEL] += 0.05
            if name == "logits" and step == TOKEN_STEP:
                acc[-1, 40] = 6.5  # the engine prefers token 40
            hf[(step, name)] = ref
            eng[("accumulated", step, name)] = acc
            eng[("local", step, name)] = local
    return hf, eng


def fixed_profile() -> ProfileReport:
    """Timings with round numbers, both phases."""
    phases = {}
    for phase, scale, tokens in (("context", 1.0, len(PROMPT)), ("generation", 0.25, 1)):
        own = {name: scale * (0.01 + 0.002 * (i % 7) + (0.05 if name.endswith("attn.core") else 0.0))
               for i, name in enumerate(NAMES)}
        attributed = sum(own.values())
        names = {}
        for name in NAMES:
            members = [n for n in NAMES if n == name or n.startswith(name + ".")] if name.startswith("layers.") \
                and name.count(".") == 1 else [name]
            total = sum(own[n] for n in members)
            names[name] = NameRow(name, Stat(total, total, total, 3), Stat(own[name], own[name], own[name], 3),
                                  total / attributed)
        layers = {}
        for group in ("embed", "layers.0", "layers.1", "final_norm", "logits"):
            ms = sum(v for n, v in own.items() if (n == group) or (layer_index(n) is not None and
                                                                   f"layers.{layer_index(n)}" == group))
            layers[group] = Row(group, Stat(ms, ms, ms, 3), ms / attributed)
        kinds = {k: Row(k, Stat(attributed * f, attributed * f, attributed * f, 3), f)
                 for k, f in (("attention", 0.4), ("gemm", 0.3), ("norm", 0.2), ("elementwise", 0.1))}
        step = attributed / 0.9
        phases[phase] = PhaseProfile(phase=phase, num_tokens=tokens, past_lens=[0] if phase == "context" else [7, 8],
                                     step_time=Stat(step, step, step, 3), hooked_step_time=Stat(step, step, step, 3),
                                     nodes={}, layers=layers, kinds=kinds, names=names)
    return ProfileReport(model="tiny", architecture="LlamaForCausalLM", dtype="float32", device="cpu",
                         device_name="test CPU", config=ProfileConfig(prompt_len=len(PROMPT), steps=2, repeats=3),
                         phases=phases, nvtx="off", torch_version="test", threads=1)


def make_session(*, tensors: bool = True, profile: bool = True) -> Session:
    """The synthetic session (tiny-model source, so `r` can rerun it with the real model)."""
    gen = torch.Generator().manual_seed(0)
    hf, eng = _tensors(gen)
    hf_tokens = [int(hf[(s, "logits")][-1].argmax()) for s in STEPS]
    reports = []
    for step in STEPS:
        positions = list(range(len(PROMPT))) if step == 0 else [len(PROMPT) - 1 + step]
        for mode in MODES:
            rows = [DiffRow(n, *check(n, eng[(mode, step, n)], hf[(step, n)], TOL)) for n in NAMES]
            reports.append(DiffReport(mode=mode, step=step, rows=rows, token_ids=PROMPT + hf_tokens[:step],
                                      positions=positions, model={"checkpoint": "tiny", "num_layers": 2,
                                                                  "architecture": "LlamaForCausalLM",
                                                                  "dtype": "float32"},
                                      engine={"dtype": "float32", "backend": "torch", "device": "cpu"},
                                      tolerances=TOL.to_dict()))
    saved = None
    if tensors:
        saved = {f"{m}/{s}/{n}": eng[(m, s, n)] for m in MODES for s in STEPS for n in NAMES}
        saved.update({f"hf/{s}/{n}": hf[(s, n)] for s in STEPS for n in NAMES})
    return Session(model={"source": "tiny", "spec": SPEC}, build=BuildConfig(max_seq_len=32).to_dict(),
                   token_ids=list(PROMPT), names=list(NAMES), modes=list(MODES), steps=list(STEPS),
                   tolerances=TOL.to_dict(), reports=[r.to_dict() for r in reports],
                   expected_failures={f"{r.mode}/{r.step}": [x.name for x in r.failures] for r in reports},
                   environment={"device": "cpu"}, profile=fixed_profile().to_dict() if profile else None,
                   title="synthetic", tensors=saved)


def write_session(path: Path, **kwargs) -> Path:
    """make_session(**kwargs) saved at `path`."""
    return save_session(make_session(**kwargs), path)
