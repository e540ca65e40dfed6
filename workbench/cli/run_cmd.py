"""`wb run`: generate text with an engine, streaming it to the terminal."""

from __future__ import annotations

import sys

import click

from workbench.cli.common import console, out, resolve_engine
from workbench.errors import WorkbenchError
from workbench.runtime.backends import BACKEND_NAMES, make_executor, resolve_device
from workbench.runtime.sampler import SamplingConfig
from workbench.runtime.session import GenerationConfig, GenerationSession
from workbench.tokenizer import chat_prompt, load_tokenizer


@click.command("run")
@click.argument("model", required=False)
@click.option("-p", "--prompt", "prompts", multiple=True, help="Prompt text; repeat for a batch.")
@click.option("--chat", is_flag=True, help="Wrap each prompt in the model's chat template.")
@click.option("--system", default=None, help="System message for --chat.")
@click.option("--max-new-tokens", default=64, show_default=True, type=int)
@click.option("--temperature", default=0.0, show_default=True, type=float, help="0 is greedy.")
@click.option("--top-k", default=0, show_default=True, type=int)
@click.option("--top-p", default=1.0, show_default=True, type=float)
@click.option("--repetition-penalty", default=1.0, show_default=True, type=float)
@click.option("--seed", default=None, type=int, help="Seed for sampling (reproducible runs).")
@click.option("--stop", "stops", multiple=True, help="Stop when this text appears (repeatable).")
@click.option("--dtype", default="fp32", show_default=True, help="dtype when building from a checkpoint.")
@click.option("--unpaged", is_flag=True, help="Use the contiguous KV cache instead of the paged one.")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="torch", show_default=True,
              help="torch: the reference executor; cuda: Triton plugins and CUDA-graph decode (needs a GPU, or "
                   "TRITON_INTERPRET=1 with --device cpu).")
@click.option("--device", default=None, help="cpu or cuda (default: cuda for --backend cuda, else cpu).")
def run_command(model, prompts, chat, system, max_new_tokens, temperature, top_k, top_p, repetition_penalty,
                seed, stops, dtype, unpaged, backend, device):
    """Generate with MODEL (an engine dir or a checkpoint dir; default: SmolLM2-135M-Instruct)."""
    if not prompts:
        raise click.UsageError("give at least one --prompt")
    device = resolve_device(backend, device)
    if backend == "cuda" and unpaged:
        raise WorkbenchError("--backend cuda runs with the paged KV cache (drop --unpaged)")
    engine = resolve_engine(model, dtype)
    tokenizer = load_tokenizer(engine)
    ids = [chat_prompt(tokenizer, p, system) if chat else tokenizer.encode(p) for p in prompts]
    executor = make_executor(engine, device, backend) if backend == "cuda" else None
    session = GenerationSession(engine, device=device, tokenizer=tokenizer, paged=not unpaged, executor=executor)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, stop_strings=list(stops),
        sampling=SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p,
                                repetition_penalty=repetition_penalty, seed=seed))
    stream = len(ids) == 1

    def on_token(i: int, token: int, piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    if stream and not chat:
        sys.stdout.write(prompts[0])
    result = session.generate(ids, config, on_token=on_token if stream else None)
    if stream:
        sys.stdout.write("\n")
        sys.stdout.flush()
    else:
        for p, text in zip(prompts, result.texts):
            out.rule(p[:60], style="dim")
            out.print(text, markup=False, highlight=False)
    t = result.timings
    console.print(f"[dim]{t.generated_tokens} tokens ({', '.join(result.finish_reasons)}); first token "
                  f"{t.time_to_first_token_s * 1000:.0f} ms; decode {t.decode_tokens_per_s:.1f} tokens/s[/]")


COMMANDS = [run_command]
