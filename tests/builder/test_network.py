"""The graph IR on the printed form of small graphs: dump, validate, marking, dead-code elimination."""

import pytest
import torch

from tests.conftest import random_llama
from workbench.builder import functional as F
from workbench.builder.network import GraphError, Network, Node
from workbench.builder.passes import eliminate_dead_code, mark_outputs
from workbench.errors import PatternError
from workbench.names import canonical_names


def small_net() -> Network:
    """ids -> embed -> logits, plus a branch (`dead`, `dead_act`) that no output reads."""
    net = Network()
    ids = net.input("input_ids", "int64", ["T"])
    with net.scope("embed"):
        h = F.embedding(ids, net.param("embed.weight", torch.randn(16, 4)))
    h = net.name_module_output(h, "embed")
    logits = F.linear(h, net.param("head.weight", torch.randn(8, 4)), name="logits")
    F.silu(F.linear(h, net.param("dead.weight", torch.randn(3, 4)), name="dead"), name="dead_act")
    net.set_outputs(logits)
    return net


SMALL_DUMP = """\
inputs: input_ids
input_ids: int64[T] = input()
embed: float32[T, 4] = embedding(input_ids, embed.weight)
logits: float32[T, 8] = linear(embed, head.weight)
dead: float32[T, 3] = linear(embed, dead.weight)
dead_act: float32[T, 3] = silu(dead)
outputs: logits"""


def test_dump():
    net = small_net()
    net.validate()
    assert net.dump() == SMALL_DUMP


def test_dump_shows_attributes_and_scoped_names():
    net = Network()
    x = net.input("x", "float32", ["T", 4])
    with net.scope("block"):
        y = F.add(F.mul(x, 2.0), 1e-6, name="eps")
        z = F.cast(F.reshape(y, [-1, 2, 2], name="heads"), "float16")
    net.set_outputs(z)
    assert net.dump().splitlines() == [
        "inputs: x",
        "x: float32[T, 4] = input()",
        "block.mul: float32[T, 4] = mul(x) {scalar=2.0}",
        "block.eps: float32[T, 4] = add(block.mul) {scalar=1e-06}",
        "block.heads: float32[T, 2, 2] = reshape(block.eps) {shape=[-1, 2, 2]}",
        "block.cast: float16[T, 2, 2] = cast(block.heads) {dtype=float16}",
        "outputs: block.cast",
    ]


def test_unique_names_within_a_scope():
    net = Network()
    x = net.input("x", "float32", ["T", 4])
    a, b = F.silu(x), F.silu(x)
    assert (a.name, b.name) == ("silu", "silu_1")


def test_dead_code_elimination_removes_the_dead_branch_and_its_weight():
    net = small_net()
    out = eliminate_dead_code(net)
    assert out.dump() == "\n".join(l for l in SMALL_DUMP.splitlines() if not l.startswith("dead"))
    assert sorted(out.weights) == ["embed.weight", "head.weight"]
    assert "dead.weight" not in out.nodes
    assert "dead" in net.nodes and "dead.weight" in net.weights  # a pure pass: the input is untouched


def test_dead_code_elimination_keeps_what_a_marked_output_needs():
    out = eliminate_dead_code(mark_outputs(small_net(), ["dead_act"]))
    assert "dead" in out.nodes and "dead.weight" in out.weights
    assert out.outputs == ["logits", "dead_act"]


def test_dead_code_elimination_keeps_declared_inputs():
    net = small_net()
    net.input("positions", "int64", ["T"])  # unused, but part of the engine's calling convention
    assert "positions" in eliminate_dead_code(net).nodes


def _raw(net: Network, name: str, op: str, inputs: list[str]) -> None:
    net.nodes[name] = Node(name, op, inputs, {}, "float32", ["T", 4])


def test_validate_dangling_input():
    net = small_net()
    _raw(net, "bad", "silu", ["nowhere"])
    with pytest.raises(GraphError, match=r"node 'bad': input 'nowhere' is not defined before it"):
        net.validate()


def test_validate_input_defined_later():
    net = small_net()
    net.nodes = {"early": Node("early", "silu", ["embed"], {}, "float32", ["T", 4]), **net.nodes}
    with pytest.raises(GraphError, match=r"node 'early': input 'embed' is not defined before it"):
        net.validate()


def test_validate_unknown_op():
    net = small_net()
    _raw(net, "weird", "frobnicate", ["embed"])
    with pytest.raises(GraphError, match=r"node 'weird': unknown op 'frobnicate'"):
        net.validate()
    with pytest.raises(GraphError, match=r"unknown op 'frobnicate'; known ops: .*linear"):
        net.add("frobnicate", [], dtype="float32", shape=[1])


def test_validate_duplicate_names():
    net = small_net()
    net.nodes["copy_of_embed"] = Node("embed", "silu", ["embed"], {}, "float32", ["T", 4])
    with pytest.raises(GraphError, match=r"node 'embed' is stored under 'copy_of_embed'"):
        net.validate()
    d = small_net().to_dict()
    d["nodes"].append(dict(d["nodes"][-1]))
    with pytest.raises(GraphError, match=r"duplicate node name 'dead_act'"):
        Network.from_dict(d, small_net().weights)


def test_validate_missing_and_misshapen_weight():
    net = small_net()
    del net.weights["head.weight"]
    with pytest.raises(GraphError, match=r"node 'head.weight': no weight of that name"):
        net.validate()
    net = small_net()
    net.weights["head.weight"] = torch.zeros(8, 5)
    with pytest.raises(GraphError, match=r"weight 'head.weight': shape \[8, 5\] but node says \[8, 4\]"):
        net.validate()


def test_validate_arity_attributes_and_outputs():
    net = small_net()
    net.nodes["m"] = Node("m", "mean", ["embed"], {"dim": -1}, "float32", ["T", 1])
    with pytest.raises(GraphError, match=r"op 'mean' needs attributes \['keepdim'\]"):
        net.validate()
    net = small_net()
    net.nodes["s"] = Node("s", "silu", ["embed", "embed"], {}, "float32", ["T", 4])
    with pytest.raises(GraphError, match=r"op 'silu' takes \(1,\) inputs, got 2"):
        net.validate()
    net = small_net()
    net.outputs.append("ghost")
    with pytest.raises(GraphError, match=r"'ghost' is not a node"):
        net.validate()


def test_graph_json_round_trip():
    net = small_net()
    again = Network.from_dict(net.to_dict(), net.weights)
    again.validate()
    assert again.dump() == net.dump()


# -- marking on a real model graph --------------------------------------------------------------

@pytest.fixture(scope="module")
def llama13() -> Network:
    return random_llama(13).to_network()


def test_model_graph_has_every_canonical_name(llama13):
    assert set(canonical_names(13)) <= set(llama13.markable_names)
    assert llama13.outputs == ["logits"]


@pytest.mark.parametrize("pattern, expected", [
    ("12.attn", ["layers.12.attn"]),
    ("layers.12.attn", ["layers.12.attn"]),
    ("*.mlp", [f"layers.{i}.mlp" for i in range(13)]),
    ("layers.3-7", [f"layers.{i}" for i in range(3, 8)]),
    ("3-4.attn.qkv", ["layers.3.attn.qkv", "layers.4.attn.qkv"]),
])
def test_mark_by_name_and_pattern(llama13, pattern, expected):
    net = mark_outputs(llama13, [pattern])
    assert net.outputs == ["logits"] + expected
    assert net.dump().splitlines()[-1] == "outputs: " + ", ".join(["logits"] + expected)
    assert llama13.outputs == ["logits"]  # mark_outputs is pure


def test_mark_several_patterns(llama13):
    net = llama13.copy()
    assert net.mark("final_norm,embed") == ["embed", "final_norm"]  # a string may list several, comma-separated
    assert net.mark(["1.mlp", "0.mlp"]) == ["layers.0.mlp", "layers.1.mlp"]
    assert net.outputs == ["logits", "embed", "final_norm", "layers.0.mlp", "layers.1.mlp"]


def test_mark_all(llama13):
    net = mark_outputs(llama13, ["all"])
    assert set(net.outputs) == set(llama13.markable_names)
    assert len(net.outputs) == len(set(net.outputs))


def test_mark_unknown_pattern_suggests_close_names(llama13):
    with pytest.raises(PatternError, match=r"unknown layer pattern '12\.atn'.*did you mean layers\.12\.attn"):
        mark_outputs(llama13, ["12.atn"])
    with pytest.raises(PatternError, match=r"range 7-3 is empty"):
        mark_outputs(llama13, ["layers.7-3"])


def test_marked_outputs_survive_dead_code_elimination(llama13):
    net = eliminate_dead_code(mark_outputs(llama13, ["5.mlp"]))
    net.validate()
    assert net.outputs == ["logits", "layers.5.mlp"]
    assert set(net.weights) == set(llama13.weights)  # nothing in a full model is dead
