"""Loading an engine's tokenizer (the checkpoint's files, copied into the engine) and chat prompts."""

from __future__ import annotations

from workbench.builder.engine import Engine
from workbench.errors import WorkbenchError


def load_tokenizer(engine: Engine):
    """The HF tokenizer stored with the engine, or a clear error when it has none."""
    path = engine.tokenizer_dir
    if path is None:
        raise WorkbenchError(f"{engine.path}: the engine has no tokenizer files (its checkpoint had none); "
                             "pass token ids instead")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"{path}: cannot load the tokenizer ({e})") from None


def chat_prompt(tokenizer, user_text: str, system: str | None = None) -> list[int]:
    """Token ids of a one-turn chat with the tokenizer's chat template and the assistant cue."""
    if not getattr(tokenizer, "chat_template", None):
        raise WorkbenchError("--chat: this tokenizer has no chat template")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user_text}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)
