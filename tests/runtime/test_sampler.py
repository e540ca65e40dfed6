"""The sampler against HF transformers' logits processors, plus seeding and validation."""

import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from workbench.errors import WorkbenchError
from workbench.runtime.sampler import (
    Sampler,
    SamplingConfig,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
)

B, V = 4, 50


def random_logits(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, V, generator=g) * 3).to(dtype)  # [B, V]


def random_history(seed=0, length=12):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, length), generator=g)  # [B, T], with repeats


def hf_process(config: SamplingConfig, ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """HF's logits processors for `config`, applied in the order its generate() applies them."""
    for proc in (
        RepetitionPenaltyLogitsProcessor(config.repetition_penalty),
        TemperatureLogitsWarper(config.temperature),
        TopKLogitsWarper(config.top_k),
        TopPLogitsWarper(config.top_p),
    ):
        scores = proc(ids, scores)
    return scores


# -- each processor against HF's -------------------------------------------------


@pytest.mark.parametrize("penalty", [0.5, 1.3, 2.0])
def test_repetition_penalty_matches_hf(penalty):
    logits, ids = random_logits(1), random_history(1)
    hf = RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
    ours = apply_repetition_penalty(logits, ids.tolist(), penalty)
    assert torch.equal(ours, hf)


def test_repetition_penalty_with_ragged_history():
    logits = random_logits(2)
    history = [[1, 1, 2], [], [3] * 7, list(range(V))]
    ours = apply_repetition_penalty(logits, history, 1.5)
    for row, ids in enumerate(history):
        if not ids:
            assert torch.equal(ours[row], logits[row])
            continue
        hf = RepetitionPenaltyLogitsProcessor(1.5)(torch.tensor([ids]), logits[row : row + 1].clone())
        assert torch.equal(ours[row], hf[0])


@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.5])
def test_temperature_matches_hf(temperature):
    logits = random_logits(3)
    hf = TemperatureLogitsWarper(temperature)(None, logits.clone())
    assert torch.equal(apply_temperature(logits, temperature), hf)


@pytest.mark.parametrize("top_k", [1, 5, 49, 50, 100])
def test_top_k_matches_hf(top_k):
    logits = random_logits(4)
    hf = TopKLogitsWarper(top_k)(None, logits.clone())
    assert torch.equal(apply_top_k(logits, top_k), hf)


def test_top_k_keeps_ties_like_hf():
    logits = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0]])
    hf = TopKLogitsWarper(2)(None, logits.clone())
    ours = apply_top_k(logits, 2)
    assert torch.equal(ours, hf)
    assert torch.isfinite(ours).sum() == 3


@pytest.mark.parametrize("top_p", [0.01, 0.3, 0.9, 0.999])
def test_top_p_matches_hf(top_p):
    logits = random_logits(5)
    hf = TopPLogitsWarper(top_p)(None, logits.clone())
    ours = apply_top_p(logits, top_p)
    assert torch.equal(ours, hf)
    assert (torch.isfinite(ours).sum(dim=-1) >= 1).all()


def test_whole_chain_matches_hf_in_generate_order():
    logits, ids = random_logits(6, torch.bfloat16), random_history(6)
    config = SamplingConfig(temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.2, seed=0)
    assert torch.equal(Sampler(config).process(logits, ids.tolist()), hf_process(config, ids, logits.float()))


def test_sampling_draws_like_hf_multinomial():
    # Same scores, same generator state: the same tokens as HF's sampling step.
    logits, ids = random_logits(7), random_history(7)
    config = SamplingConfig(temperature=0.9, top_k=10, top_p=0.95, repetition_penalty=1.1, seed=123)
    tokens, _ = Sampler(config).sample(logits, ids.tolist())
    probs = hf_process(config, ids, logits).softmax(dim=-1)
    expected = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(123)).squeeze(1)
    assert torch.equal(tokens, expected)


# -- greedy, logprobs, seeds -------------------------------------------------------


def test_greedy_is_argmax():
    logits = random_logits(8, torch.float16)
    tokens, logprobs = Sampler(SamplingConfig()).sample(logits, [[]] * B)
    assert tokens.dtype == torch.int64 and tokens.shape == (B,)
    assert torch.equal(tokens, logits.float().argmax(dim=-1))
    assert logprobs.dtype == torch.float32
    expected = torch.log_softmax(logits.float(), dim=-1).gather(1, tokens[:, None]).squeeze(1)
    assert torch.equal(logprobs, expected)


def test_greedy_applies_repetition_penalty():
    logits = torch.tensor([[2.0, 1.9, -1.0]])
    config = SamplingConfig(repetition_penalty=2.0)
    tokens, logprobs = Sampler(config).sample(logits, [[0]])
    assert tokens.tolist() == [1]  # 2.0 / 2 = 1.0 < 1.9
    # logprobs are of the raw logits, before the penalty.
    assert torch.equal(logprobs, torch.log_softmax(logits, dim=-1)[:, 1])


def test_top_k_1_equals_greedy():
    logits, history = random_logits(9), random_history(9).tolist()
    greedy, _ = Sampler(SamplingConfig(repetition_penalty=1.3)).sample(logits, history)
    for seed in range(3):
        config = SamplingConfig(temperature=1.7, top_k=1, repetition_penalty=1.3, seed=seed)
        tokens, _ = Sampler(config).sample(logits, history)
        assert torch.equal(tokens, greedy)


def draws(seed, steps=5):
    sampler = Sampler(SamplingConfig(temperature=1.0, seed=seed))
    return torch.stack([sampler.sample(random_logits(10), [[]] * B)[0] for _ in range(steps)])


def test_seeded_runs_reproduce_and_seeds_differ():
    assert torch.equal(draws(0), draws(0))
    assert not torch.equal(draws(0), draws(1))


def test_unseeded_sampler_records_its_seed():
    sampler = Sampler(SamplingConfig(temperature=1.0))
    again = Sampler(SamplingConfig(temperature=1.0, seed=sampler.seed))
    logits = random_logits(11)
    assert torch.equal(sampler.sample(logits)[0], again.sample(logits)[0])


def test_penalty_needs_one_history_per_row():
    with pytest.raises(ValueError, match="one history per row"):
        Sampler(SamplingConfig(repetition_penalty=1.2)).sample(random_logits(), [[1]])


# -- validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"repetition_penalty": -1.0}, "repetition_penalty"),
    ],
)
def test_validation_names_the_field(kwargs, field):
    config = SamplingConfig(**kwargs)
    with pytest.raises(WorkbenchError, match=field):
        config.validate()
    with pytest.raises(WorkbenchError, match=field):
        Sampler(config)


def test_defaults_are_valid_and_greedy():
    config = SamplingConfig()
    config.validate()
    assert config.greedy
    assert not SamplingConfig(temperature=0.5).greedy
