"""Which GEMV config each linear layer of a decode step runs, chosen from shapes alone (`GemvPolicy`), and the
table of configs measured on an H100 (`H100_GEMV`)."""

from __future__ import annotations

from workbench.errors import WorkbenchError

# (rows bucket, N, K[, method][, "swiglu"]) -> GEMV config: the winners of bench/gemv_sweep.py on an H100
# (bench/results/gemv_sweep_h100.json, then the int8/int4 winners of gemv_sweep_quant_h100.json over it, then
# the one-row int8 winners of gemv_sweep_prmt_h100.json (byte-permute unpacking; with the quantized logits layer
# of --quant-logits) and gemv_sweep_prefetch_h100.json (8B, register prefetch), as bench/decode_quant.py merges
# them, then the one-row winners of gemv_sweep_tma_h100.json (TMA-pipelined tiles against these configs); 20 calls
# in one CUDA graph, weights rotated past L2), then TMA configs for every one-row int8 GEMV and the 8B bf16 qkv and
# logits, measured in whole decode steps under the PDL prefetch mode (gemv_table_all_tma.json, call 8: 8B int8 +
# logits 307.1 -> 308.9 tok/s, 1B int8 + logits 1295 -> 1319; not the 1B bf16 ones, 945 -> 907), then the one-row
# int8 winners of gemv_sweep_xtma_h100.json (TMA tiles with x by TMA too), then the one-row int4 winners of
# gemv_sweep_w4tma_h100.json (int4 TMA tiles: 8B int4 at batch 1 165 -> 256.5 tok/s, fifth session's call 11) and
# the 8-row ones of gemv_sweep_w4dot_h100.json (the same tiles for several rows on the tensor cores, call 17: 8B
# int4 at batch 8 1036 -> 1444 tok/s; by multiply-adds, gemv_sweep_w4rows_h100.json, call 14, 993).
# Float keys are listed only where the GEMV beat cuBLAS; rows bucket 1 is one row, 8 covers 2..8 rows; a config of
# six entries ends with its kind (False: fp32 multiply-adds for one row, "tma": the same from TMA-pipelined tiles,
# "tma_prmt": those unpacking int8 by byte permutes, measured faster for the 1B int8 shapes and slower for the 8B
# ones in whole decode steps; "tma_dot": int4 tiles for several rows on the tensor cores; see plugins/gemv.py).
H100_GEMV = {
    # Llama-3.2-1B, bf16
    (1, 3072, 2048): (8, 512, 1, 4, 4, False),  # qkv
    (1, 2048, 2048): (16, 1024, 1, 8, 2, False),  # o
    (1, 16384, 2048): (8, 512, 1, 4, 4, False),  # gate_up
    (1, 16384, 2048, "swiglu"): (32, 256, 1, 8, 3, False),  # gate_up
    (8, 16384, 2048): (64, 128, 1, 4, 4),  # gate_up
    (8, 16384, 2048, "swiglu"): (64, 128, 1, 4, 4),  # gate_up
    (1, 2048, 8192): (16, 1024, 1, 8, 2, False),  # down
    (1, 128256, 2048): (8, 512, 1, 4, 4, False),  # logits
    (8, 128256, 2048): (32, 256, 1, 4, 4),  # logits
    # Llama-3.2-1B, w8a16
    (1, 3072, 2048, "w8a16"): (8, 1024, 1, 4, 4, "tma_prmt"),  # qkv
    (8, 3072, 2048, "w8a16"): (32, 256, 1, 4, 4),  # qkv
    (1, 2048, 2048, "w8a16"): (8, 1024, 1, 4, 4, "tma_prmt"),  # o
    (8, 2048, 2048, "w8a16"): (16, 512, 1, 4, 3),  # o
    (1, 16384, 2048, "w8a16"): (32, 256, 1, 4, 4, "tma_prmt"),  # gate_up
    (1, 16384, 2048, "w8a16", "swiglu"): (32, 256, 1, 4, 4, "tma_prmt"),  # gate_up
    (8, 16384, 2048, "w8a16"): (64, 256, 1, 8, 3),  # gate_up
    (8, 16384, 2048, "w8a16", "swiglu"): (64, 256, 1, 8, 3),  # gate_up
    (1, 2048, 8192, "w8a16"): (8, 1024, 1, 4, 4, "tma_prmt"),  # down
    (8, 2048, 8192, "w8a16"): (32, 256, 4, 4, 4),  # down
    (1, 128256, 2048, "w8a16"): (8, 1024, 1, 4, 4, "tma_prmt"),  # logits
    # Llama-3.2-1B, w4a16
    (1, 3072, 2048, "w4a16"): (16, 128, 2, 4, 4, "tma"),  # qkv
    (8, 3072, 2048, "w4a16"): (32, 128, 2, 4, 4, "tma_dot"),  # qkv
    (1, 2048, 2048, "w4a16"): (32, 128, 2, 4, 4, "tma"),  # o
    (8, 2048, 2048, "w4a16"): (16, 128, 2, 4, 4, "tma_dot"),  # o
    (1, 16384, 2048, "w4a16"): (64, 128, 1, 4, 4, "tma"),  # gate_up
    (1, 16384, 2048, "w4a16", "swiglu"): (64, 128, 1, 8, 4, "tma"),  # gate_up
    (8, 16384, 2048, "w4a16"): (64, 128, 1, 4, 4, "tma_dot"),  # gate_up
    (8, 16384, 2048, "w4a16", "swiglu"): (32, 128, 1, 4, 4, "tma_dot"),  # gate_up
    (1, 2048, 8192, "w4a16"): (32, 128, 2, 4, 4, "tma"),  # down
    (8, 2048, 8192, "w4a16"): (16, 128, 2, 4, 4, "tma_dot"),  # down
    (1, 128256, 2048, "w4a16"): (64, 128, 1, 4, 4, "tma"),  # logits
    (8, 128256, 2048, "w4a16"): (64, 128, 1, 4, 4, "tma_dot"),  # logits
    # Llama-3-8B, bf16
    (1, 6144, 4096): (8, 256, 1, 4, 4, "tma"),  # qkv
    (8, 6144, 4096): (64, 256, 1, 8, 3),  # qkv
    (1, 4096, 4096): (8, 256, 1, 4, 4, "tma"),  # o
    (8, 4096, 4096): (32, 256, 1, 4, 4),  # o
    (1, 28672, 4096): (8, 512, 1, 4, 4, False),  # gate_up
    (1, 28672, 4096, "swiglu"): (4, 256, 1, 2, 6, "tma"),  # gate_up
    (8, 28672, 4096): (64, 256, 1, 8, 3),  # gate_up
    (8, 28672, 4096, "swiglu"): (64, 256, 1, 8, 3),  # gate_up
    (1, 4096, 14336): (8, 256, 1, 4, 4, "tma"),  # down
    (8, 4096, 14336): (16, 256, 1, 4, 4),  # down
    (1, 128256, 4096): (8, 256, 1, 4, 4, "tma"),  # logits
    (8, 128256, 4096): (32, 256, 1, 4, 4),  # logits
    # Llama-3-8B, w8a16
    (1, 6144, 4096, "w8a16"): (16, 512, 1, 4, 4, "tma"),  # qkv
    (8, 6144, 4096, "w8a16"): (32, 256, 1, 4, 4),  # qkv
    (1, 4096, 4096, "w8a16"): (16, 512, 1, 4, 4, "tma"),  # o
    (8, 4096, 4096, "w8a16"): (32, 256, 1, 4, 4),  # o
    (1, 28672, 4096, "w8a16"): (8, 1024, 1, 4, 4, "tma"),  # gate_up
    (1, 28672, 4096, "w8a16", "swiglu"): (8, 1024, 1, 4, 4, "tma"),  # gate_up
    (8, 28672, 4096, "w8a16"): (32, 256, 1, 4, 4),  # gate_up
    (1, 4096, 14336, "w8a16"): (16, 512, 1, 4, 4, "tma"),  # down
    (8, 4096, 14336, "w8a16"): (32, 256, 4, 4, 4),  # down
    (1, 128256, 4096, "w8a16"): (8, 1024, 1, 4, 6, "tma"),  # logits
    # Llama-3-8B, w4a16
    (1, 6144, 4096, "w4a16"): (32, 128, 2, 4, 4, "tma"),  # qkv
    (8, 6144, 4096, "w4a16"): (32, 128, 2, 4, 4, "tma_dot"),  # qkv
    (1, 4096, 4096, "w4a16"): (32, 128, 2, 4, 4, "tma"),  # o
    (8, 4096, 4096, "w4a16"): (32, 128, 2, 4, 4, "tma_dot"),  # o
    (1, 28672, 4096, "w4a16"): (64, 128, 1, 4, 4, "tma"),  # gate_up
    (1, 28672, 4096, "w4a16", "swiglu"): (64, 128, 1, 8, 4, "tma"),  # gate_up
    (8, 28672, 4096, "w4a16"): (64, 128, 1, 4, 4, "tma_dot"),  # gate_up (then the activation kernel: faster)
    (1, 4096, 14336, "w4a16"): (32, 128, 2, 4, 4, "tma"),  # down
    (8, 4096, 14336, "w4a16"): (32, 128, 2, 4, 4, "tma_dot"),  # down
    (1, 128256, 4096, "w4a16"): (64, 128, 1, 4, 4, "tma"),  # logits
    (8, 128256, 4096, "w4a16"): (64, 128, 1, 4, 4, "tma_dot"),  # logits
}


class GemvPolicy:
    """Which linear layers of few rows (decode) run the Triton GEMV, and with which config.

    Float weights: mode "table" runs the configs in `table` (default H100_GEMV) and cuBLAS elsewhere;
    "triton" runs every such layer on the GEMV (the table's config or the default one); "cublas"
    none. Weight-only quantized layers (w8a16, w4a16) have no cuBLAS: they always take the GEMV for
    few rows, the table's config or the default one. Table keys are (rows bucket, N, K) for float
    weights and (rows bucket, N, K, method) for quantized ones; rows bucket 1 is one row, 8 covers
    2..8 rows; a key ending in "swiglu" is the config of the MLP's gate_up projection writing
    silu(gate) * up. The choice depends on shapes only, so a debug engine makes the same choices as
    its plain engine.

    `swiglu`: None (default) fuses the activation into the gate_up GEMV where the table has a swiglu
    config (where the sweep measured it faster than the GEMV and the activation kernel); True
    wherever a GEMV runs the projection; False never.
    """

    def __init__(self, mode: str = "table", table: dict | None = None, max_rows: int = 8, swiglu: bool | None = None):
        if mode not in ("cublas", "triton", "table"):
            raise WorkbenchError(f"gemv mode must be cublas, triton or table, got {mode!r}")
        self.mode = mode
        self.table = dict(H100_GEMV if table is None else table)
        self.max_rows = max_rows
        self.swiglu = swiglu

    @classmethod
    def parse(cls, spec: str, table: dict | None = None) -> "GemvPolicy":
        """`table`, `triton`, `cublas`, optionally with `-swiglu` or `-noswiglu` (benchmark option strings)."""
        mode, _, extra = spec.partition("-")
        if extra not in ("", "swiglu", "noswiglu"):
            raise WorkbenchError(f"gemv policy {spec!r}: the suffix must be -swiglu or -noswiglu")
        return cls(mode, table, swiglu={"swiglu": True, "noswiglu": False}.get(extra))

    @staticmethod
    def table_from_sweep(entries: list[dict]) -> dict:
        """A table from bench/gemv_sweep.py's `table` entries (format, rows, n, k, config[, swiglu])."""
        out = {}
        for e in entries:
            key = (e["rows"], e["n"], e["k"]) + (() if e["format"] == "bf16" else (e["format"],))
            out[key + (("swiglu",) if e.get("swiglu") else ())] = tuple(e["config"])
        return out

    def config(self, rows: int, n: int, k: int, method: str | None = None):
        """The GEMV config for a layer of `rows` rows, or None: cuBLAS (float weights), the GEMM kernel (quantized)."""
        from workbench.plugins.gemv import DEFAULT, DEFAULT_QUANT

        if rows > self.max_rows:
            return None
        key = (1 if rows == 1 else 8, n, k) + ((method,) if method else ())
        if method:
            return self.table.get(key, DEFAULT_QUANT)
        if self.mode == "cublas":
            return None
        return self.table.get(key, DEFAULT if self.mode == "triton" else None)

    def swiglu_config(self, rows: int, n: int, k: int, method: str | None = None):
        """The config of the gate_up projection [n = 2I, k] writing silu(gate) * up, or None: projection, then
        the activation kernel."""
        if self.swiglu is False or rows > self.max_rows or (self.mode == "cublas" and not method):
            return None
        if self.swiglu:
            return self.config(rows, n, k, method)
        return self.table.get((1 if rows == 1 else 8, n, k) + ((method,) if method else ()) + ("swiglu",))

    def quant_config(self, method: str, rows: int, n: int, k: int):
        """`config` in the argument order of plugins.quant_gemm.quant_linear's `gemv_config`."""
        return self.config(rows, n, k, method)
