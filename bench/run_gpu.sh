#!/usr/bin/env bash
# The GPU runs behind bench/results/*_h100.json, one device call each:
#   bash bench/run_gpu.sh check   # GPU tests, GEMV sweep, engine-only decode and prefill
#   bash bench/run_gpu.sh full    # GPU tests, decode and prefill with the HF peers, the profiler's benchmark
#   bash bench/run_gpu.sh final   # GPU tests, engine-only decode: table GEMVs (not gated) against cuBLAS
#   bash bench/run_gpu.sh quant   # GPU tests incl. quantized GEMV/engines, GEMV sweep of every format, quantized decode
#   bash bench/run_gpu.sh swiglu  # the same after the gate_up GEMV writes the activation, and bf16 decode + debug
#                                 # engines with the sweep's table, against the table without that fusion
#   bash bench/run_gpu.sh pdl     # GPU tests; decode (bf16, int8, int4) with programmatic dependent launch
#                                 # against plain launches, with the sweep's table; bf16 decode + debug engines
#   bash bench/run_gpu.sh defaults # every GPU test; decode, debug engines and prefill with the built-in defaults
#                                 # (GEMV table, PDL chosen per captured step)
#   bash bench/run_gpu.sh peers8b # every GPU test; 8B decode at batch 1 beside HF eager and HF compiled
#   bash bench/run_gpu.sh words   # GPU tests; sweep of the int8/int4 GEMVs (word tiles with tensor cores for
#                                 # several rows); quantized decode with that table
#   bash bench/run_gpu.sh prmt    # GEMV + quantized-engine tests; one-row int8 sweep with byte-permute unpacking;
#                                 # 8B decode bf16 / int8 / int8 with the logits layer too, and the old unpacking;
#                                 # the decode step's kernels (bench/decode_kernels.py)
#   bash bench/run_gpu.sh prefetch # the same with the register prefetch of the one-row word tiles and the
#                                 # two-kernel greedy argmax
#   bash bench/run_gpu.sh pdlmode # decode with the GEMVs' PDL trigger at their start, after their loop, and after
#                                 # the loop with the first weight tile read before waiting (WB_GEMV_PDL)
#   bash bench/run_gpu.sh final3  # every GPU test; decode (bf16, int8, int8 + logits, int4), debug engines and
#                                 # prefill with the built-in defaults
#   bash bench/run_gpu.sh peers8b8 # 8B batch 8 beside HF eager and compiled; the decode step's kernels
#   bash bench/run_gpu.sh final3b # final3 again at the end of the session, and the step's kernels
#   bash bench/run_gpu.sh tma     # GEMV tests; one-row bf16/int8 sweep of TMA-pipelined tiles against the built-in
#                                 # configs; decode with the built-in table, then with the sweep's (PDL late, prefetch)
#   bash bench/run_gpu.sh norm    # GPU tests; decode with the add + norm in the projection GEMV's prologue (PDL
#                                 # trigger late, prefetch); the step's kernels
#   bash bench/run_gpu.sh epi     # (the add + norm in the last program of the GEMV whose output it adds: measured
#                                 # slower in call 3 and removed; the stage needs commit e8d0455)
#   bash bench/run_gpu.sh pro     # decode with the norm in the prologue of GEMVs of at most 512 ... all programs
#   bash bench/run_gpu.sh kvpre   # GPU tests; decode with attention's first key/value block read before its wait
#                                 # (measured no faster and removed)
#   bash bench/run_gpu.sh final4  # every GPU test; decode (all formats), debug engines, prefill, the step's kernels
#                                 # with the built-in defaults
#   bash bench/run_gpu.sh final4b # final4's GPU tests, decode and kernels with this session's last defaults
#   bash bench/run_gpu.sh mma     # the one-row int8 GEMV on the tensor cores (bench/gemv_mma_w8.py, an experiment): its
#                                 # tests, its configs against the table's (slower: not used by the engines)
#   bash bench/run_gpu.sh xtma    # int8 TMA GEMVs with x by TMA too: tests, sweep, decode with the built-in table
#                                 # and with the sweep's
#   bash bench/run_gpu.sh final4c # final4b again after the int8 TMA tiles took x by TMA too (the last defaults)
#   bash bench/run_gpu.sh alltma  # decode with every one-row GEMV on TMA tiles (gemv_table_all_tma.json), PDL late
#                                 # and prefetch, against the built-in table
#   bash bench/run_gpu.sh ropeattn # GPU tests; decode with rope inside the paged attention kernel, partitions of
#                                 # at least 128 or 64 tokens (WB_DECODE_MIN_PART); the step's kernels
#   bash bench/run_gpu.sh magic   # GEMV tests; int8 TMA tiles unpacked by byte permutes under 2^23 against integer
#                                 # operations: 8B int8 sweep and decode both ways; what each kernel kind costs the
#                                 # captured step (bench/decode_ablate.py)
#   bash bench/run_gpu.sh early   # attention and GEMV tests; decode with the GEMVs' PDL modes prefetch and early (the
#                                 # next kernel launches right after the wait: attention reads its pages before its own)
#   bash bench/run_gpu.sh first   # attention, merge (and norm) kernels let the next kernel launch before they wait
#                                 # (WB_PDL_FIRST); o_proj GEMVs with deep pipelines (bench/data/gemv_o_deep_*.json)
#                                 # (WB_PDL_FIRST gained nothing at batch 1, lost at 8, and is gone: first and first2
#                                 # need commit 1404608)
#   bash bench/run_gpu.sh first2  # attention tests; decode with the key/value loads bounded by the table, then
#                                 # trigger-first attention (and norm) kernels with deep 8B o_proj pipelines
#   bash bench/run_gpu.sh attn    # the decode attention kernel alone: partition sizes and warps (bench/attn_sweep.py)
#   bash bench/run_gpu.sh ncu     # Nsight Compute on the 8B o_proj GEMVs, int8 gate_up and decode attention
#   bash bench/run_gpu.sh part    # decode with attention partitions of at least 64, 32 or 16 tokens; attention sweep
#   bash bench/run_gpu.sh final5  # fifth session's final run: every GPU test; decode (all formats), debug engines,
#                                 # prefill, the step's kernels and what each kind costs it, at the built-in defaults
#   bash bench/run_gpu.sh prmt2   # 8B and 1B int8 decode with the TMA tiles' byte permutes on and off, alternated
#   bash bench/run_gpu.sh kinds   # GEMV tests; decode with the table's int8 kinds (1B tma_prmt, 8B tma)
#   bash bench/run_gpu.sh w4tma   # GEMV tests; one-row int4 sweep with TMA tiles; int4 decode with the sweep's table
#   bash bench/run_gpu.sh w4final # GEMV and quantized-engine tests; decode (bf16, int8 + logits, int4) at the built-in
#                                 # table with the int4 TMA configs
#   bash bench/run_gpu.sh w4rows  # GEMV tests; int4 sweep at 8 rows with TMA tiles for several rows; int4 decode
#   bash bench/run_gpu.sh final5b # the fifth session's last defaults: GPU tests, decode (all formats), the step's kernels
#   bash bench/run_gpu.sh l2      # (GEMV programs prefetching their first weight bytes into L2 before their PDL wait:
#                                 # measured slower at every size and removed; the stage needs commit 9643edb)
#   bash bench/run_gpu.sh persist # every layer's projections in one persistent kernel with device-wide barriers, against
#                                 # the plugin's GEMV launches in a CUDA graph (bench/persistent_probe.py)
#   bash bench/run_gpu.sh final6  # every GPU test; decode (all formats) with the sixth session's defaults, int8 also with
#                                 # x by loads instead of TMA (WB_GEMV_XTMA=0); engine-only decode and debug engines
#   bash bench/run_gpu.sh resweep # the one-row bf16 and int8 GEMV sweep with the fixed tiles, then decode with its table
#                                 # against the built-in one
#   bash bench/run_gpu.sh tail    # (GEMVs letting the next kernel launch WB_GEMV_TAIL iterations before their loop ends,
#                                 # float register tiles reading their first tile before their wait: measured slower
#                                 # and removed; the stage needs commit 3b7f1c3)
#   bash bench/run_gpu.sh loop    # (one-row GEMVs whose programs loop over row tiles, kind tma_loop: no faster than the
#                                 # table's tiles at any size, and removed; the stage needs commit 3d64626; a second
#                                 # call swept 3-8 programs an SM from it: gemv_sweep_loop2_h100.json)
#   bash bench/run_gpu.sh ws      # the layers' projections in one warp-specialised kernel whose producer warp streams
#                                 # the weights past the stages' waits (bench/ws_chain_probe.py), against launches
#   bash bench/run_gpu.sh block   # the layer block after attention as one persistent kernel: GPU tests, every layer
#                                 # chained against the plugins' launches (bench/decode_block.py)
#   bash bench/run_gpu.sh block4  # (the block with its stage input a plain copy, int8 splitting x's columns in the
#                                 # consumers: no faster for the 8B int8 and reverted; the stage needs commit bed0007)
#   bash bench/run_gpu.sh free    # the int8 chains (probe, blocks) with the consumers' unpacking skipped (wrong values),
#                                 # against the real unpacking: what a faster consumer could gain
#   bash bench/run_gpu.sh terms   # (needs commit 558c2af) plugin tests; decode with the GEMVs' int8 scales loaded before their loops against
#                                 # after (WB_GEMV_TERMS=late); the int8 blocks with theirs first too
#   bash bench/run_gpu.sh lblock  # the engines' GPU tests with the layer block fusion; 8B decode without and with it
#   bash bench/run_gpu.sh lblock2 # the block's tests, chains and decode after its stage inputs shrank to their K and
#                                 # its norm operands came before the waits; decode with every layer block fused too
#   bash bench/run_gpu.sh lblock3 # the block's int8 x split by every stage input (columns) against by the consumers
#                                 # (words): tests, chains, decode (1B int8 with the block too)
#   bash bench/run_gpu.sh free2   # the 8B int8 block chain, probe and decode with the unpacking skipped (wrong values)
#   bash bench/run_gpu.sh merge   # tests; decode with the attention's partitions merged by its last program against by
#                                 # the merge kernel (WB_DECODE_MERGE=kernel)
#   bash bench/run_gpu.sh merge2  # tests; decode with the merge fused where a layer block follows; 8B with partitions of
#                                 # at least 64 and 16 tokens
#   bash bench/run_gpu.sh last    # 8B decode with the last layer's block too, with partitions of 64; the 1B with 64
#   bash bench/run_gpu.sh battn   # (the decode attention inside the layer block kernel, WB_BLOCK_ATTENTION: slower in
#                                 # every version and removed; the stage needs commit 027ea13, or 53cd78c, fa69cc6
#                                 # for calls 1-3's versions)
#   bash bench/run_gpu.sh tune9   # 1B bf16 by launches against layer blocks, alternated, and their partitions; the
#                                 # block's ring (WB_BLOCK_RING_KIB) and int8 tile rows (WB_BLOCK_ROWS_INT8, which
#                                 # needs commit 77cc814) on the 8B
#   bash bench/run_gpu.sh ring    # the block's ring of 128, 96, 64 and 112 KiB on the 8B, alternated; the 1B bf16
#                                 # by launches against layer blocks; the 1B int8 at rings of 128 and 96 KiB
#   bash bench/run_gpu.sh ring2   # rings of 64 KiB and less: the 8B int8, the 1B bf16 with layer blocks, the 1B int8
#   bash bench/run_gpu.sh ring3   # rings around 64 KiB (two block programs fit an SM up to about 76 KiB)
#   bash bench/run_gpu.sh ahead   # (a ring of 128 KiB that lets a stage's tiles past WB_BLOCK_AHEAD_KIB wait for the
#                                 # stage before to end everywhere: slower in every case and removed; the stage needs
#                                 # commit 362f9c0)
#   bash bench/run_gpu.sh attn9   # the table's rings; the decode attention's warps, stages and partitions around them
#   bash bench/run_gpu.sh final9  # final8 with the ninth session's defaults (the block's ring by shape, the 1B bf16
#                                 # by layer blocks)
#   bash bench/run_gpu.sh nreg    # the block's registers at launch (WB_BLOCK_MAXNREG) and attention letting the next
#                                 # kernel launch before its wait (WB_DECODE_TRIGGER=first): tests, decode, rings
#   bash bench/run_gpu.sh warps   # tests at the new defaults (MAXNREG, trigger first); 8 consumer warps a block
#                                 # (WB_BLOCK_WARPS=8); the 8B int8's ring of 128 again; what attention costs the 1B
#   bash bench/run_gpu.sh trace   # the decode step's attention and layer blocks traced by the global timer
#                                 # (bench/block_trace.py): the defaults, a ring of 128, the ninth session's launches
#   bash bench/run_gpu.sh fence   # the block's consumers without the proxy fence before a slot's release
#                                 # (WB_BLOCK_FENCE=0) and taking tiles two at a time (WB_BLOCK_PAIR=1): tests, decode
#   bash bench/run_gpu.sh pair    # no fence: the engines' GPU tests; the ring's slots paired on shared barriers
#                                 # (WB_BLOCK_PAIR=1): tests, decode at rings of 64-128 KiB, the 1B's trace
#   bash bench/run_gpu.sh tests10 # every GPU test at the tenth session's defaults; int8 blocks with paired slots at
#                                 # rings of 64-128 KiB; the 1B's trace
#   bash bench/run_gpu.sh final10 # decode in every format and batch, with the tenth session's defaults; decode.py
#   bash bench/run_gpu.sh confirm10 # final10's batch-1 decode again on another machine: decode.py twice, the 1B by
#                                 # decode_quant
#   bash bench/run_gpu.sh final8  # every GPU test; decode in every format and batch, the debug engines, with the eighth
#                                 # session's defaults (layer blocks, the merge in attention, partitions by head size)
#   bash bench/run_gpu.sh w4dot   # GEMV tests; int4 sweep at 8 rows with TMA tiles on the tensor cores; int4 decode
# Logs and JSON go to $OUT (the device tool brings them back) and bench/results/ there.
set -o pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
stage=${1:-check}
{ nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv; python -c \
  "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"; } 2>&1 | tee "$LOG"
step() {  # step <seconds> <command...>: run with a time limit, keep going on failure
  local limit=$1; shift
  echo "=== $* (limit ${limit}s)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  echo "=== rc=$? after $((SECONDS - t0))s" | tee -a "$LOG"
}
dq1() {  # dq1 <seconds> <models> <modes> <name>: decode_quant at batch 1, the built-in table, 3 repeats
  step "$1" python bench/decode_quant.py --models "$2" --batches 1 --modes "$3" --plain-modes "" --repeats 3 \
    --sweep "" --name "$4"
}
if [ "$stage" = check ]; then
  step 150 python -m pytest tests/gpu/test_cuda_backend.py -q -x -n 4 -p no:cacheprovider
  step 90 python bench/gemv_sweep.py
  step 150 python bench/decode.py --peers none --repeats 2 --name decode_engine_h100
  step 90 python bench/prefill.py --repeats 3
elif [ "$stage" = quant ]; then
  step 120 python -m pytest tests/gpu/test_cuda_backend.py tests/plugins/test_gemv.py tests/plugins/test_quant_gemm.py \
    tests/runtime/test_cuda_executor_quant.py -q -n 4 -p no:cacheprovider -rA
  if [ -n "$QUANT_ONLY" ]; then  # bf16 configs from an earlier sweep (bench/results/gemv_sweep_h100.json)
    step 200 python bench/gemv_sweep.py --formats w8a16,w4a16 --name gemv_sweep_quant_h100
    step 200 python bench/decode_quant.py --repeats 3 \
      --sweep bench/results/gemv_sweep_h100.json,bench/results/gemv_sweep_quant_h100.json
    step 80 python bench/prefill.py --repeats 3 --name prefill_h100_call4
  else
    step 200 python bench/gemv_sweep.py
    step 240 python bench/decode_quant.py --repeats 3
  fi
elif [ "$stage" = swiglu ]; then
  step 90 python -m pytest tests/gpu/test_cuda_backend.py tests/plugins/test_gemv.py tests/plugins/test_quant_gemm.py \
    tests/runtime/test_cuda_executor_quant.py -q -n 4 -p no:cacheprovider -rA
  step 170 python bench/gemv_sweep.py
  step 140 python bench/decode_quant.py --repeats 3
  step 150 python bench/decode.py --peers none --repeats 2 --gemv table,table-noswiglu \
    --sweep bench/results/gemv_sweep_h100.json --name decode_engine_h100
elif [ "$stage" = pdl ]; then
  step 80 python -m pytest tests/gpu/test_cuda_backend.py tests/plugins/test_gemv.py -q -n 4 -p no:cacheprovider -rA
  step 300 python bench/decode_quant.py --repeats 3
  step 100 python bench/decode.py --peers none --repeats 2 --gemv table --sweep bench/results/gemv_sweep_h100.json \
    --name decode_engine_h100
elif [ "$stage" = defaults ]; then
  step 120 python -m pytest tests/gpu tests/plugins tests/runtime/test_cuda_executor.py \
    tests/runtime/test_cuda_executor_quant.py -q -n 4 -p no:cacheprovider -rA
  step 230 python bench/decode_quant.py --repeats 3 --sweep ""
  step 60 python bench/decode.py --peers none --repeats 2 --gemv table --name decode_engine_h100
  step 60 python bench/prefill.py --repeats 3 --name prefill_h100_defaults
elif [ "$stage" = peers8b ]; then
  step 100 python -m pytest tests/gpu tests/plugins tests/runtime/test_cuda_executor.py \
    tests/runtime/test_cuda_executor_quant.py -q -n 4 -p no:cacheprovider -rA
  step 430 python bench/decode.py --models llama-3-8b --batches 1 --repeats 2 --gemv table \
    --compile-models llama-3-8b --budget-s 400 --name decode_8b_peers_h100
elif [ "$stage" = words ]; then
  step 90 python -m pytest tests/gpu/test_cuda_backend.py tests/plugins tests/runtime/test_cuda_executor_quant.py \
    -q -n 4 -p no:cacheprovider -rA
  step 150 python bench/gemv_sweep.py --formats w8a16,w4a16 --name gemv_sweep_quant_h100
  step 170 python bench/decode_quant.py --repeats 3 --plain-modes "" \
    --sweep bench/results/gemv_sweep_h100.json,bench/results/gemv_sweep_quant_h100.json
elif [ "$stage" = prmt ]; then
  step 100 python -m pytest tests/plugins/test_gemv.py tests/runtime/test_cuda_executor_quant.py -q -n 4 \
    -p no:cacheprovider -rA
  step 150 python bench/gemv_sweep.py --formats w8a16 --rows 1 --name gemv_sweep_prmt_h100
  old=bench/results/gemv_sweep_h100.json,bench/results/gemv_sweep_quant_h100.json
  step 150 python bench/decode_quant.py --models llama-3-8b --batches 1 --modes bf16,int8_wo,int8_wo_logits \
    --plain-modes "" --repeats 3 --sweep $old,$OUT/gemv_sweep_prmt_h100.json --name decode_quant_prmt_h100
  WB_GEMV_PRMT=0 step 90 python bench/decode_quant.py --models llama-3-8b --batches 1 --modes int8_wo \
    --plain-modes "" --repeats 3 --sweep $old --name decode_quant_noprmt_h100
  step 120 python bench/decode_kernels.py --sweep $old,$OUT/gemv_sweep_prmt_h100.json \
    --runs llama-3-8b:bf16,llama-3-8b:int8_wo_logits,llama-3.2-1b:bf16
elif [ "$stage" = prefetch ]; then
  step 120 python -m pytest tests/plugins tests/runtime/test_cuda_executor_quant.py tests/runtime/test_cuda_executor.py \
    -q -n 4 -p no:cacheprovider -rA
  step 150 python bench/gemv_sweep.py --formats w8a16 --rows 1 --models 8b --name gemv_sweep_prefetch_h100
  old=bench/results/gemv_sweep_h100.json,bench/results/gemv_sweep_quant_h100.json,bench/results/gemv_sweep_prmt_h100.json
  step 150 python bench/decode_quant.py --models llama-3-8b --batches 1 --modes bf16,int8_wo,int8_wo_logits \
    --plain-modes "" --repeats 3 --sweep $old,$OUT/gemv_sweep_prefetch_h100.json --name decode_quant_prefetch_h100
  step 120 python bench/decode_kernels.py --sweep $old,$OUT/gemv_sweep_prefetch_h100.json \
    --runs llama-3-8b:bf16,llama-3-8b:int8_wo_logits --name decode_kernels_prefetch_h100
elif [ "$stage" = pdlmode ]; then
  step 100 python -m pytest tests/plugins/test_gemv.py tests/runtime/test_cuda_executor_quant.py -q -n 4 \
    -p no:cacheprovider -rA
  sw=bench/results/gemv_sweep_h100.json,bench/results/gemv_sweep_quant_h100.json,bench/results/gemv_sweep_prmt_h100.json,bench/results/gemv_sweep_prefetch_h100.json
  for mode in start late prefetch; do
    WB_GEMV_PDL=$mode step 170 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
      --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep $sw --name decode_quant_pdl_$mode
  done
elif [ "$stage" = final3 ]; then  # third session: every GPU test, then the built-in defaults
  step 150 python -m pytest tests/gpu tests/plugins tests/runtime/test_cuda_executor.py \
    tests/runtime/test_cuda_executor_quant.py -q -n 4 -p no:cacheprovider -rA
  step 200 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
    --modes bf16,int8_wo,int8_wo_logits,int4_wo --plain-modes "" --repeats 3 --sweep ""
  step 80 python bench/decode.py --peers none --repeats 2 --gemv table --name decode_engine_h100
  step 70 python bench/prefill.py --repeats 3 --name prefill_h100_defaults
elif [ "$stage" = final3b ] || [ "$stage" = final4 ]; then  # the committed state at the end of the third session (final3b)
  # and of this fourth session before call 8's defaults (final4; call 6 also ran decode_quant.py --batches 1 --modes
  # bf16,int8_wo_logits with WB_ATTN_KV_EARLY=0, then a switch: decode_quant_kvlate_h100.json)
  step 160 python -m pytest tests/gpu tests/plugins tests/runtime/test_cuda_executor.py \
    tests/runtime/test_cuda_executor_quant.py tests/runtime/test_kv_cache.py -q -n 4 -p no:cacheprovider -rA
  step 200 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
    --modes bf16,int8_wo,int8_wo_logits,int4_wo --plain-modes "" --repeats 3 --sweep ""
  step 80 python bench/decode.py --peers none --repeats 2 --gemv table --name decode_engine_h100
  step 70 python bench/prefill.py --repeats 3 --name prefill_h100_defaults
  step 60 python bench/decode_kernels.py --runs llama-3-8b:bf16,llama-3-8b:int8_wo_logits,llama-3.2-1b:bf16
elif [ "$stage" = alltma ]; then  # every one-row GEMV on TMA tiles, PDL late or prefetch, against the built-in table
  for mode in late prefetch; do
    WB_GEMV_PDL=$mode step 80 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
      --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_builtin_${mode}_h100
    WB_GEMV_PDL=$mode step 80 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
      --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep builtin,bench/results/gemv_table_all_tma.json \
      --name decode_quant_alltma_${mode}_h100
  done
elif [ "$stage" = final4b ] || [ "$stage" = final4c ]; then  # final4 with later defaults (4b: PDL prefetch, TMA int8
  # tiles; 4c: those taking x by TMA too)
  step 160 python -m pytest tests/gpu tests/plugins tests/runtime/test_cuda_executor.py \
    tests/runtime/test_cuda_executor_quant.py tests/runtime/test_kv_cache.py -q -n 4 -p no:cacheprovider
  step 200 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
    --modes bf16,int8_wo,int8_wo_logits,int4_wo --plain-modes "" --repeats 3 --sweep ""
  step 80 python bench/decode.py --peers none --repeats 2 --gemv table --name decode_engine_h100
  step 60 python bench/decode_kernels.py --runs llama-3-8b:bf16,llama-3-8b:int8_wo_logits,llama-3.2-1b:bf16
elif [ "$stage" = xtma ]; then  # one-row int8 TMA GEMVs with x's chunks by TMA too: sweep, then decode
  step 100 python -m pytest tests/plugins/test_gemv.py tests/runtime/test_cuda_executor_quant.py -q -n 4 -p no:cacheprovider
  step 120 python bench/gemv_sweep.py --formats w8a16 --rows 1 --families tma,table --name gemv_sweep_xtma_h100
  step 80 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 --modes bf16,int8_wo_logits \
    --plain-modes "" --repeats 3 --sweep "" --name decode_quant_xtma_builtin_h100
  step 80 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 --modes bf16,int8_wo_logits \
    --plain-modes "" --repeats 3 --sweep builtin,bench/results/gemv_sweep_xtma_h100.json --name decode_quant_xtma_sweep_h100
elif [ "$stage" = peers8b8 ]; then  # 8B batch 8 beside HF eager and HF compiled; the step's kernels
  step 380 python bench/decode.py --models llama-3-8b --batches 8 --repeats 2 --gemv table \
    --compile-models llama-3-8b --budget-s 360 --name decode_8b_b8_peers_h100
  step 120 python bench/decode_kernels.py --runs llama-3-8b:bf16,llama-3-8b:int8_wo,llama-3-8b:int8_wo_logits,llama-3.2-1b:bf16
elif [ "$stage" = ropeattn ]; then  # rope inside the decode attention kernel; decode partitions of 64 or 128
  step 120 python -m pytest tests/plugins/test_kernels.py tests/gpu/test_cuda_backend.py tests/runtime/test_cuda_executor.py \
    tests/runtime/test_cuda_executor_quant.py -q -n 4 -p no:cacheprovider -rA
  for p in 128 64; do
    WB_DECODE_MIN_PART=$p step 150 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
      --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_ropeattn_part$p
  done
  step 100 python bench/decode_kernels.py --runs llama-3-8b:bf16,llama-3.2-1b:bf16 --name decode_kernels_ropeattn_h100
elif [ "$stage" = tma ]; then  # one-row GEMVs with TMA-pipelined weight tiles: sweep, then decode against built-in
  step 100 python -m pytest tests/plugins/test_gemv.py -q -n 4 -p no:cacheprovider
  step 260 python bench/gemv_sweep.py --formats bf16,w8a16 --rows 1 --families tma,table --name gemv_sweep_tma_h100
  step 70 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 --modes bf16,int8_wo_logits \
    --plain-modes "" --repeats 3 --sweep builtin --name decode_quant_base_h100
  for mode in late prefetch; do
    WB_GEMV_PDL=$mode step 70 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
      --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep builtin,bench/results/gemv_sweep_tma_h100.json \
      --name decode_quant_tma_${mode}_h100
  done
  step 60 python bench/decode_kernels.py --runs llama-3-8b:bf16,llama-3-8b:int8_wo_logits,llama-3.2-1b:bf16 \
    --sweep builtin,bench/results/gemv_sweep_tma_h100.json --name decode_kernels_tma_h100
elif [ "$stage" = norm ]; then  # the add + norm in the projection's GEMV prologue; PDL trigger late or prefetch
  step 150 python -m pytest tests/gpu tests/plugins tests/runtime/test_cuda_executor.py \
    tests/runtime/test_cuda_executor_quant.py -q -n 4 -p no:cacheprovider
  for mode in late prefetch; do
    WB_GEMV_PDL=$mode step 80 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
      --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_norm_${mode}_h100
  done
  step 60 python bench/decode_kernels.py --runs llama-3-8b:bf16,llama-3-8b:int8_wo_logits,llama-3.2-1b:bf16 \
    --name decode_kernels_norm_h100
elif [ "$stage" = pro ]; then  # the norm in the prologue of the GEMVs of at most WB_NORM_MAX_PROGRAMS programs
  step 80 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 --modes bf16,int8_wo_logits \
    --plain-modes "" --repeats 3 --sweep "" --name decode_quant_pro_off_h100
  for most in 512 1024 4096 100000; do
    WB_NORM_FUSION=prologue WB_NORM_MAX_PROGRAMS=$most step 80 python bench/decode_quant.py \
      --models llama-3-8b,llama-3.2-1b --batches 1 --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 \
      --sweep "" --name decode_quant_pro_${most}_h100
  done
  WB_NORM_FUSION=prologue WB_GEMV_PDL=prefetch step 80 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b \
    --batches 1 --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_pro_prefetch_h100
elif [ "$stage" = kvpre ]; then  # attention reads its first key/value block before waiting; norm prologue default
  step 150 python -m pytest tests/gpu tests/plugins tests/runtime/test_cuda_executor.py \
    tests/runtime/test_cuda_executor_quant.py -q -n 4 -p no:cacheprovider
  step 80 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 --modes bf16,int8_wo_logits \
    --plain-modes "" --repeats 3 --sweep "" --name decode_quant_kvpre_h100
  step 60 python bench/decode_kernels.py --runs llama-3-8b:bf16,llama-3-8b:int8_wo_logits,llama-3.2-1b:bf16 \
    --name decode_kernels_kvpre_h100
elif [ "$stage" = magic ]; then  # int8 TMA tiles: byte permutes under 2^23 (WB_GEMV_PRMT=1) or integer unpacking
  step 120 python -m pytest tests/plugins/test_gemv.py -q -n 4 -p no:cacheprovider
  for p in 1 0; do
    WB_GEMV_PRMT=$p step 100 python bench/gemv_sweep.py --formats w8a16 --rows 1 --models 8b --families tma,table \
      --name gemv_sweep_magic${p}_h100
    WB_GEMV_PRMT=$p step 90 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
      --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_magic${p}_h100
  done
  step 200 python bench/decode_ablate.py
elif [ "$stage" = early ]; then  # decode attention reads all but q, k, v before its wait; GEMV PDL prefetch or early
  step 150 python -m pytest tests/plugins/test_kernels.py tests/plugins/test_gemv.py tests/gpu/test_cuda_backend.py \
    tests/runtime/test_cuda_executor.py -q -n 4 -p no:cacheprovider
  for mode in prefetch early; do
    WB_GEMV_PDL=$mode step 90 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
      --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_early_${mode}_h100
  done
  WB_GEMV_PDL=early step 120 python bench/decode_ablate.py --cuts none,attn,merge,norm --name decode_ablate_early_h100
elif [ "$stage" = first ]; then  # trigger-first PDL for attention (and norm) kernels; deep o_proj pipelines
  step 150 python -m pytest tests/plugins/test_kernels.py tests/plugins/test_gemv.py tests/gpu/test_cuda_backend.py \
    tests/runtime/test_cuda_executor.py -q -n 4 -p no:cacheprovider
  dq() { step 80 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 --modes bf16,int8_wo_logits \
    --plain-modes "" --repeats 3 "$@"; }
  dq --sweep "" --name decode_quant_first_base_h100
  WB_PDL_FIRST=attention dq --sweep "" --name decode_quant_first_attn_h100
  WB_PDL_FIRST=attention,norm dq --sweep "" --name decode_quant_first_attnnorm_h100
  dq --sweep builtin,bench/data/gemv_o_deep_a.json --name decode_quant_first_deepa_h100
  WB_PDL_FIRST=attention,norm dq --sweep builtin,bench/data/gemv_o_deep_a.json --name decode_quant_first_attnnorm_deepa_h100
  WB_PDL_FIRST=attention,norm dq --sweep builtin,bench/data/gemv_o_deep_b.json --name decode_quant_first_attnnorm_deepb_h100
elif [ "$stage" = first2 ]; then  # attention loads bounded by the table's capacity; trigger-first with deep 8B o_proj
  step 150 python -m pytest tests/plugins/test_kernels.py tests/gpu/test_cuda_backend.py tests/runtime/test_cuda_executor.py \
    -q -n 4 -p no:cacheprovider
  dq() { step 100 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 --modes bf16,int8_wo_logits \
    --plain-modes "" --repeats 3 "$@"; }
  dq --sweep "" --name decode_quant_first2_base_h100
  WB_PDL_FIRST=attention dq --sweep builtin,bench/data/gemv_o_deep_8b.json --name decode_quant_first2_attn_deep_h100
  WB_PDL_FIRST=attention,norm dq --sweep builtin,bench/data/gemv_o_deep_8b.json --name decode_quant_first2_attnnorm_deep_h100
  dq --sweep "" --name decode_quant_first2_base2_h100
elif [ "$stage" = attn ]; then  # the decode attention kernel alone, several partition sizes and warps
  step 200 python bench/attn_sweep.py --ctx 128,256,384
  (which ncu nsys; ls /usr/local/cuda*/bin 2>/dev/null | grep -i -E "ncu|nsys|nsight") 2>&1 | tee -a "$LOG"
elif [ "$stage" = ncu ]; then  # Nsight Compute on single decode-step kernels (bench/ncu_probe.py)
  WB_PDL=0 step 300 /usr/local/cuda/bin/ncu --target-processes all -k regex:"_gemv|_paged" -s 5 -c 5 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis python bench/ncu_probe.py
elif [ "$stage" = part ]; then  # decode attention partitions of at least 64, 32 or 16 tokens (WB_DECODE_MIN_PART)
  step 120 python -m pytest tests/plugins/test_kernels.py tests/gpu/test_cuda_backend.py -q -n 4 -p no:cacheprovider
  step 60 python bench/attn_sweep.py --ctx 256 --name attn_sweep_part_h100
  for p in 64 32 16; do
    WB_DECODE_MIN_PART=$p step 100 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
      --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_part${p}_h100
  done
elif [ "$stage" = final5 ]; then  # the fifth session's last defaults
  step 170 python -m pytest tests/gpu tests/plugins tests/runtime/test_cuda_executor.py \
    tests/runtime/test_cuda_executor_quant.py tests/runtime/test_kv_cache.py -q -n 4 -p no:cacheprovider
  step 150 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
    --modes bf16,int8_wo,int8_wo_logits,int4_wo --plain-modes "" --repeats 3 --sweep ""
  step 60 python bench/decode.py --peers none --repeats 2 --gemv table --name decode_engine_h100
  step 60 python bench/prefill.py --repeats 3 --name prefill_h100_defaults
  step 40 python bench/decode_kernels.py --runs llama-3-8b:bf16,llama-3-8b:int8_wo_logits,llama-3.2-1b:bf16
  step 90 python bench/decode_ablate.py --cuts none,norm,attn,merge --name decode_ablate_final_h100
elif [ "$stage" = prmt2 ]; then  # byte permutes (WB_GEMV_PRMT=1) against integer unpacking, alternated twice
  for p in 1 0 1 0; do
    WB_GEMV_PRMT=$p step 60 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
      --modes bf16,int8_wo_logits --plain-modes "" --repeats 5 --sweep "" --name decode_quant_prmt2_${p}_h100
  done
elif [ "$stage" = kinds ]; then  # the built-in table with the 1B int8 tiles unpacking by byte permutes
  step 120 python -m pytest tests/plugins/test_gemv.py tests/runtime/test_cuda_executor_quant.py -q -n 4 -p no:cacheprovider
  step 120 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
    --modes bf16,int8_wo,int8_wo_logits --plain-modes "" --repeats 5 --sweep "" --name decode_quant_h100
elif [ "$stage" = w4tma ]; then  # one-row int4 GEMVs from TMA tiles: tests, sweep, decode
  step 120 python -m pytest tests/plugins/test_gemv.py tests/runtime/test_cuda_executor_quant.py -q -n 4 -p no:cacheprovider
  step 150 python bench/gemv_sweep.py --formats w4a16 --rows 1 --families tma,table --name gemv_sweep_w4tma_h100
  step 100 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 --modes bf16,int4_wo \
    --plain-modes "" --repeats 3 --sweep builtin,$OUT/gemv_sweep_w4tma_h100.json --name decode_quant_w4tma_h100
elif [ "$stage" = w4final ]; then  # after the int4 TMA configs joined the built-in table
  step 150 python -m pytest tests/plugins tests/runtime/test_cuda_executor_quant.py tests/runtime/test_cuda_executor.py \
    -q -n 4 -p no:cacheprovider
  step 150 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
    --modes bf16,int8_wo,int8_wo_logits,int4_wo --plain-modes "" --repeats 3 --sweep ""
elif [ "$stage" = w4rows ]; then  # int4 TMA tiles for 2..16 rows: tests, sweep at 8 rows, decode at batch 1 and 8
  step 120 python -m pytest tests/plugins/test_gemv.py tests/runtime/test_cuda_executor_quant.py -q -n 4 -p no:cacheprovider
  step 150 python bench/gemv_sweep.py --formats w4a16 --rows 8 --families tma,table --name gemv_sweep_w4rows_h100
  step 100 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 --modes bf16,int4_wo \
    --plain-modes "" --repeats 3 --sweep builtin,$OUT/gemv_sweep_w4rows_h100.json --name decode_quant_w4rows_h100
elif [ "$stage" = final5b ]; then  # after the int4 TMA tiles for one and several rows joined the built-in table
  step 170 python -m pytest tests/gpu tests/plugins tests/runtime/test_cuda_executor.py \
    tests/runtime/test_cuda_executor_quant.py tests/runtime/test_kv_cache.py -q -n 4 -p no:cacheprovider
  step 150 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
    --modes bf16,int8_wo,int8_wo_logits,int4_wo --plain-modes "" --repeats 3 --sweep ""
elif [ "$stage" = w4dot ]; then  # int4 TMA tiles for several rows on the tensor cores (kind tma_dot)
  step 120 python -m pytest tests/plugins/test_gemv.py tests/runtime/test_cuda_executor_quant.py -q -n 4 -p no:cacheprovider
  step 150 python bench/gemv_sweep.py --formats w4a16 --rows 8 --families tma,table --name gemv_sweep_w4dot_h100
  step 100 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 8 --modes bf16,int4_wo \
    --plain-modes "" --repeats 3 --sweep builtin,$OUT/gemv_sweep_w4dot_h100.json --name decode_quant_w4dot_h100
elif [ "$stage" = persist ]; then  # the layers' projections in one persistent kernel against the GEMV launches
  step 300 python bench/persistent_probe.py --models 1b,8b --programs 2,3
elif [ "$stage" = final6 ]; then  # after the TMA tiles' x reads moved after their PDL wait (the sixth session's defaults)
  step 170 python -m pytest tests/gpu tests/plugins tests/runtime/test_cuda_executor.py \
    tests/runtime/test_cuda_executor_quant.py tests/runtime/test_kv_cache.py -q -n 4 -p no:cacheprovider
  step 150 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
    --modes bf16,int8_wo,int8_wo_logits,int4_wo --plain-modes "" --repeats 3 --sweep ""
  WB_GEMV_XTMA=0 step 120 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
    --modes bf16,int8_wo,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_noxtma_h100
  step 90 python bench/decode.py --peers none --repeats 2 --gemv table --name decode_engine_h100
elif [ "$stage" = resweep ]; then  # the one-row sweep again with the fixed GEMVs (the table's winners were timed with
  # tiles that read x before their PDL wait), then decode with its table against the built-in one
  step 330 python bench/gemv_sweep.py --formats bf16,w8a16 --rows 1 --families fma,tma,table \
    --name gemv_sweep_fixed_h100
  step 180 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep builtin,$OUT/gemv_sweep_fixed_h100.json \
    --name decode_quant_resweep_h100
elif [ "$stage" = ws ]; then  # the projections' chain with a warp-specialised weight stream (bench/ws_chain_probe.py)
  step 300 python bench/ws_chain_probe.py --models 1b,8b --rows 8,16 --warps 4
elif [ "$stage" = block ]; then  # the layer block after attention as one persistent kernel (plugins/decode_block.py)
  step 200 python -m pytest tests/plugins/test_decode_block.py -q -p no:cacheprovider -rA
  step 240 python bench/decode_block.py --models 8b,1b --formats int8,bf16
elif [ "$stage" = block2 ]; then  # the two benchmarks' int8 baselines side by side
  step 200 python bench/decode_block.py --models 8b --formats int8,bf16 --name decode_block2_h100
  step 200 python bench/ws_chain_probe.py --models 8b --formats int8 --rows 16 --warps 4 --name ws_chain_probe2_h100
elif [ "$stage" = block3 ]; then  # after the block's buffers moved into one helper and the probe took its stages
  step 200 python -m pytest tests/plugins/test_decode_block.py tests/bench/test_ws_chain_probe.py -q -p no:cacheprovider
  step 120 python bench/ws_chain_probe.py --models 1b --rows 8,16 --warps 4 --name ws_chain_probe3_h100
elif [ "$stage" = mma ]; then  # the one-row int8 GEMV on the tensor cores (bench/gemv_mma_w8.py) against the table's
  step 150 python -m pytest tests/bench/test_gemv_mma_w8.py -q -p no:cacheprovider -rA
  step 330 python bench/gemv_mma_probe.py --models 8b,1b --fp16
elif [ "$stage" = block4 ]; then  # after the block's stage input became a plain copy (int8 x split in the consumers)
  step 200 python -m pytest tests/plugins/test_decode_block.py tests/bench/test_ws_chain_probe.py -q -p no:cacheprovider
  step 200 python bench/decode_block.py --models 8b,1b --formats int8,bf16 --name decode_block4_h100
  step 150 python bench/ws_chain_probe.py --models 8b --formats int8 --rows 16 --warps 4 --name ws_chain_probe4_h100
elif [ "$stage" = free ]; then  # what the int8 consumers' unpacking costs the chains: the same with words taken as
  # floats (wrong values, WB_PROBE_FREE_UNPACK=1), against the real unpacking
  step 120 python bench/ws_chain_probe.py --models 8b --formats int8 --rows 16 --warps 4,8 --name ws_chain_probe5_h100
  WB_PROBE_FREE_UNPACK=1 step 120 python bench/ws_chain_probe.py --models 8b --formats int8 --rows 16 --warps 4,8 \
    --name ws_chain_probe_free_h100
  step 120 python bench/decode_block.py --models 8b --formats int8 --name decode_block5_h100
  WB_PROBE_FREE_UNPACK=1 step 120 python bench/decode_block.py --models 8b --formats int8 --name decode_block_free_h100
elif [ "$stage" = terms ]; then  # int8 scales (and biases) loaded before the GEMVs' loops, against after (WB_GEMV_TERMS)
  step 200 python -m pytest tests/plugins -q -p no:cacheprovider
  WB_GEMV_TERMS=late step 120 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_terms_late_h100
  step 120 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_terms_early_h100
  step 100 python bench/decode_block.py --models 8b,1b --formats int8 --name decode_block_terms_h100
elif [ "$stage" = lblock ]; then  # the engines with the layer block (runtime/layer_block.py) against without it
  step 330 python -m pytest tests/runtime/test_layer_block.py tests/runtime/test_cuda_executor.py \
    tests/runtime/test_cuda_executor_quant.py tests/gpu/test_cuda_backend.py -q -n 4 -p no:cacheprovider -x
  WB_LAYER_BLOCK=off step 100 python bench/decode_quant.py --models llama-3-8b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_noblock_h100
  step 100 python bench/decode_quant.py --models llama-3-8b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_block_h100
elif [ "$stage" = lblock2 ]; then  # after the block's stage inputs shrank to their K and its norm operands came early
  step 200 python -m pytest tests/plugins/test_decode_block.py tests/runtime/test_layer_block.py -q -p no:cacheprovider
  step 120 python bench/decode_block.py --models 8b,1b --formats int8,bf16 --name decode_block6_h100
  step 100 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_block2_h100
  WB_LAYER_BLOCK=on step 100 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_blockon_h100
elif [ "$stage" = lblock3 ]; then  # the block's int8 x by columns (default) against by words (WB_BLOCK_INT8_X=words)
  WB_BLOCK_INT8_X=words step 200 python -m pytest tests/plugins/test_decode_block.py tests/runtime/test_layer_block.py \
    -q -p no:cacheprovider
  step 60 python bench/decode_block.py --models 8b,1b --formats int8 --name decode_block7_h100
  WB_BLOCK_INT8_X=words step 60 python bench/decode_block.py --models 8b,1b --formats int8 --name decode_block_words_h100
  step 100 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_block3_h100
  WB_BLOCK_INT8_X=words step 100 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
    --modes int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_block_words_h100
elif [ "$stage" = free2 ]; then  # what the int8 unpacking costs now that the block's boundaries are cheaper
  WB_BLOCK_INT8_X=words step 60 python bench/decode_block.py --models 8b --formats int8 --name decode_block8_h100
  WB_BLOCK_INT8_X=words WB_PROBE_FREE_UNPACK=1 step 60 python bench/decode_block.py --models 8b --formats int8 \
    --name decode_block_free2_h100
  WB_BLOCK_INT8_X=words step 90 python bench/ws_chain_probe.py --models 8b --formats int8 --rows 16 --warps 4 \
    --name ws_chain_probe6_h100
  WB_BLOCK_INT8_X=words WB_PROBE_FREE_UNPACK=1 step 100 python bench/decode_quant.py --models llama-3-8b --batches 1 \
    --modes int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_free_h100
elif [ "$stage" = merge ]; then  # decode attention merging its partitions in its last program against the merge kernel
  step 200 python -m pytest tests/plugins/test_kernels.py tests/plugins/test_gemv_pdl.py tests/gpu/test_cuda_backend.py \
    tests/runtime/test_cuda_executor.py tests/runtime/test_layer_block.py -q -n 4 -p no:cacheprovider -x
  WB_DECODE_MERGE=kernel step 100 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_mergekernel_h100
  step 100 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_mergefused_h100
elif [ "$stage" = merge2 ]; then  # the merge fused where a layer block follows; partitions of 64 and 16 tokens
  step 200 python -m pytest tests/plugins/test_kernels.py tests/gpu/test_cuda_backend.py tests/runtime/test_cuda_executor.py \
    tests/runtime/test_layer_block.py -q -n 4 -p no:cacheprovider -x
  step 100 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_merge2_h100
  WB_DECODE_MIN_PART=64 step 100 python bench/decode_quant.py --models llama-3-8b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_part64_h100
  WB_DECODE_MIN_PART=16 step 100 python bench/decode_quant.py --models llama-3-8b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_part16_h100
elif [ "$stage" = last ]; then  # 8B with the last layer's block too (through the logits), and partitions of 64
  WB_LAYER_BLOCK=on step 100 python bench/decode_quant.py --models llama-3-8b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_lastblock_h100
  WB_LAYER_BLOCK=on WB_DECODE_MIN_PART=64 step 100 python bench/decode_quant.py --models llama-3-8b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_lastblock64_h100
  WB_DECODE_MIN_PART=64 step 100 python bench/decode_quant.py --models llama-3.2-1b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_1b_part64_h100
elif [ "$stage" = final8 ]; then  # the eighth session's defaults: every GPU test, decode in every format, debug engines
  step 300 python -m pytest tests/gpu tests/plugins tests/runtime tests/bench -q -n 4 -p no:cacheprovider
  step 170 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
    --modes bf16,int8_wo,int8_wo_logits,int4_wo --plain-modes "" --repeats 3 --sweep "" --name decode_quant_final8_h100
  step 110 python bench/decode.py --peers none --repeats 2 --gemv table --name decode_engine_final8_h100
elif [ "$stage" = battn ]; then  # the decode attention inside the layer block kernel against its own kernel
  step 200 python -m pytest tests/plugins/test_decode_block.py tests/runtime/test_layer_block.py \
    ${BATTN_TESTS:-tests/gpu/test_pdl_full_shapes.py} -q -p no:cacheprovider -x
  WB_BLOCK_ATTENTION=off step 100 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_battn_off_h100
  step 100 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1 \
    --modes bf16,int8_wo_logits --plain-modes "" --repeats 3 --sweep "" --name decode_quant_battn_on_h100
  WB_LAYER_BLOCK=on step 60 python bench/decode_quant.py --models llama-3.2-1b --batches 1 \
    --modes bf16 --plain-modes "" --repeats 3 --sweep "" --name decode_quant_battn_1b_h100
elif [ "$stage" = tune9 ]; then  # 1B bf16 by launches against layer blocks (alternated), partitions; the block's ring
  # and int8 tile rows on the 8B
  for r in a b; do
    dq1 60 llama-3.2-1b bf16 decode_quant_1b_launch_${r}_h100
    WB_LAYER_BLOCK=on dq1 60 llama-3.2-1b bf16 decode_quant_1b_block_${r}_h100
  done
  for p in 64 16; do
    WB_LAYER_BLOCK=on WB_DECODE_MIN_PART=$p dq1 60 llama-3.2-1b bf16 decode_quant_1b_block_part${p}_h100
  done
  dq1 100 llama-3-8b bf16,int8_wo_logits decode_quant_8b_ring128_h100
  for k in 160 96; do
    WB_BLOCK_RING_KIB=$k dq1 100 llama-3-8b bf16,int8_wo_logits decode_quant_8b_ring${k}_h100
  done
  # int8 tiles of 8 rows: slower (call 5) and gone; this line needs commit 77cc814
  WB_BLOCK_ROWS_INT8=8 dq1 100 llama-3-8b int8_wo_logits decode_quant_8b_rows8_h100
elif [ "$stage" = ring ]; then  # the block's ring of 128, 96, 64, 112 KiB on the 8B (alternated); 1B launches against
  # blocks in bf16; the 1B int8 at 128 and 96
  for k in 128 96 64 112 96 128; do
    WB_BLOCK_RING_KIB=$k dq1 100 llama-3-8b bf16,int8_wo_logits decode_quant_8b_ring${k}_h100
  done
  for r in a b; do
    dq1 60 llama-3.2-1b bf16 decode_quant_1b_launch_${r}_h100
    WB_LAYER_BLOCK=on dq1 60 llama-3.2-1b bf16 decode_quant_1b_block_${r}_h100
  done
  for k in 128 96; do
    WB_BLOCK_RING_KIB=$k dq1 60 llama-3.2-1b int8_wo_logits decode_quant_1b_int8_ring${k}_h100
  done
elif [ "$stage" = ring2 ]; then  # smaller rings: the 8B int8, the 1B bf16 blocks and the 1B int8
  for k in 64 48 32 64; do
    WB_BLOCK_RING_KIB=$k dq1 60 llama-3-8b int8_wo_logits decode_quant_8b_int8_ring${k}_h100
  done
  dq1 60 llama-3.2-1b bf16 decode_quant_1b_launch_c_h100
  for k in 96 64 48 32; do
    WB_LAYER_BLOCK=on WB_BLOCK_RING_KIB=$k dq1 60 llama-3.2-1b bf16 decode_quant_1b_block_ring${k}_h100
  done
  for k in 64 48 32; do
    WB_BLOCK_RING_KIB=$k dq1 60 llama-3.2-1b int8_wo_logits decode_quant_1b_int8_ring${k}_h100
  done
elif [ "$stage" = ring3 ]; then  # rings around 64 KiB: two block programs fit an SM up to about 76 KiB
  for k in 72 80 56 64; do
    WB_BLOCK_RING_KIB=$k dq1 60 llama-3-8b int8_wo_logits decode_quant_8b_int8_ring${k}_h100
  done
  for k in 72 128; do
    WB_BLOCK_RING_KIB=$k dq1 60 llama-3-8b bf16 decode_quant_8b_bf16_ring${k}_h100
  done
  for k in 72 64; do
    WB_LAYER_BLOCK=on WB_BLOCK_RING_KIB=$k dq1 60 llama-3.2-1b bf16 decode_quant_1b_block_ring${k}_h100
  done
  WB_LAYER_BLOCK=on WB_BLOCK_RING_KIB=64 WB_DECODE_MIN_PART=16 dq1 60 llama-3.2-1b bf16 \
    decode_quant_1b_block_ring64_part16_h100
  WB_BLOCK_RING_KIB=72 dq1 60 llama-3.2-1b int8_wo_logits decode_quant_1b_int8_ring72_h100
elif [ "$stage" = ahead ]; then  # a ring of 128 KiB whose next stage waits for the stage before after AHEAD KiB
  WB_BLOCK_AHEAD_KIB=32 step 120 python -m pytest tests/plugins/test_decode_block.py -q -p no:cacheprovider -x
  for a in 64 32 16; do
    WB_BLOCK_AHEAD_KIB=$a dq1 60 llama-3-8b int8_wo_logits decode_quant_8b_int8_ahead${a}_h100
  done
  WB_BLOCK_RING_KIB=64 dq1 60 llama-3-8b int8_wo_logits decode_quant_8b_int8_ring64b_h100
  for a in 64 32 0; do
    WB_BLOCK_AHEAD_KIB=$a dq1 60 llama-3-8b bf16 decode_quant_8b_bf16_ahead${a}_h100
  done
  for a in 64 32; do
    WB_LAYER_BLOCK=on WB_BLOCK_AHEAD_KIB=$a dq1 60 llama-3.2-1b bf16 decode_quant_1b_block_ahead${a}_h100
  done
  WB_BLOCK_AHEAD_KIB=64 dq1 60 llama-3.2-1b int8_wo_logits decode_quant_1b_int8_ahead64_h100
elif [ "$stage" = attn9 ]; then  # the table's rings; the decode attention's warps, stages and partitions around them
  q8() { dq1 70 llama-3-8b bf16,int8_wo_logits decode_quant_8b_attn_$1_h100; }
  q1() { dq1 60 llama-3.2-1b bf16 decode_quant_1b_attn_$1_h100; }
  q8 base
  WB_DECODE_WARPS=2 q8 warps2
  WB_DECODE_STAGES=2 q8 stages2
  WB_DECODE_MIN_PART=32 q8 part32
  q1 base
  WB_DECODE_MIN_PART=16 q1 part16
  WB_DECODE_WARPS=2 q1 warps2
elif [ "$stage" = nreg ]; then  # a block program that leaves room beside it, and attention that triggers first
  WB_BLOCK_MAXNREG=168 WB_DECODE_TRIGGER=first step 240 python -m pytest tests/plugins/test_decode_block.py \
    tests/runtime/test_layer_block.py tests/gpu/test_cuda_backend.py -q -n 4 -p no:cacheprovider
  q1() { dq1 60 llama-3.2-1b bf16 decode_quant_1b_$1_h100; }
  q8() { dq1 80 llama-3-8b bf16,int8_wo_logits decode_quant_8b_$1_h100; }
  q1 base
  WB_BLOCK_MAXNREG=168 q1 nreg168
  WB_DECODE_TRIGGER=first q1 first
  WB_BLOCK_MAXNREG=168 WB_DECODE_TRIGGER=first q1 both
  WB_BLOCK_MAXNREG=168 WB_DECODE_TRIGGER=first WB_BLOCK_RING_KIB=96 q1 both_ring96
  WB_BLOCK_MAXNREG=168 WB_DECODE_TRIGGER=first WB_BLOCK_RING_KIB=128 q1 both_ring128
  q8 base
  WB_BLOCK_MAXNREG=168 WB_DECODE_TRIGGER=first q8 both
  WB_BLOCK_MAXNREG=168 WB_DECODE_TRIGGER=first WB_BLOCK_RING_KIB=128 q8 both_ring128
  q1 base_b
  WB_BLOCK_MAXNREG=168 WB_DECODE_TRIGGER=first q1 both_b
elif [ "$stage" = warps ]; then  # 8 consumer warps a block program; the int8 ring; attention's cost in the 1B step
  step 240 python -m pytest tests/plugins/test_decode_block.py tests/plugins/test_kernels.py \
    tests/runtime/test_layer_block.py tests/gpu/test_cuda_backend.py -q -n 4 -p no:cacheprovider
  WB_BLOCK_WARPS=8 step 120 python -m pytest tests/plugins/test_decode_block.py -q -n 4 -p no:cacheprovider
  q1() { dq1 60 llama-3.2-1b bf16 decode_quant_1b_$1_h100; }
  q8() { dq1 80 llama-3-8b bf16,int8_wo_logits decode_quant_8b_$1_h100; }
  q1 base
  WB_BLOCK_WARPS=8 q1 warps8
  q8 base
  WB_BLOCK_WARPS=8 q8 warps8
  WB_BLOCK_RING_KIB=128 q8 ring128
  q1 base_b
  WB_BLOCK_WARPS=8 q1 warps8_b
  WB_BLOCK_WARPS=8 WB_BLOCK_RING_KIB=128 q1 warps8_ring128
  q8 base_b
  WB_BLOCK_RING_KIB=128 q8 ring128_b
  step 120 python bench/decode_ablate.py --models llama-3.2-1b --modes bf16 --cuts none,attn --name decode_ablate_1b_h100
elif [ "$stage" = trace ]; then  # where a layer's time goes: global-timer stamps in attention and the blocks
  tr() { step 90 python bench/block_trace.py --models "$1" --modes "$2" --name "block_trace_$3_h100"; }
  tr llama-3.2-1b bf16 1b
  WB_BLOCK_RING_KIB=128 tr llama-3.2-1b bf16 1b_ring128
  WB_BLOCK_MAXNREG=256 WB_DECODE_TRIGGER=wait tr llama-3.2-1b bf16 1b_nine
  tr llama-3-8b bf16,int8_wo_logits 8b
elif [ "$stage" = fence ]; then  # the consumers' proxy fence a tile, and tiles taken two at a time
  WB_BLOCK_FENCE=0 WB_BLOCK_PAIR=1 step 200 python -m pytest tests/plugins/test_decode_block.py \
    tests/runtime/test_layer_block.py tests/gpu/test_cuda_backend.py -q -n 4 -p no:cacheprovider
  WB_BLOCK_FENCE=0 step 100 python -m pytest tests/plugins/test_decode_block.py -q -n 4 -p no:cacheprovider
  q1() { dq1 60 llama-3.2-1b bf16 decode_quant_1b_$1_h100; }
  q8() { dq1 80 llama-3-8b bf16,int8_wo_logits decode_quant_8b_$1_h100; }
  q1 base
  WB_BLOCK_FENCE=0 q1 nofence
  WB_BLOCK_PAIR=1 q1 pair
  WB_BLOCK_FENCE=0 WB_BLOCK_PAIR=1 q1 both
  q8 base
  WB_BLOCK_FENCE=0 q8 nofence
  WB_BLOCK_FENCE=0 WB_BLOCK_PAIR=1 q8 both
  q1 base_b
  WB_BLOCK_FENCE=0 q1 nofence_b
  WB_BLOCK_FENCE=0 WB_BLOCK_PAIR=1 q1 both_b
  WB_BLOCK_FENCE=0 WB_BLOCK_PAIR=1 step 90 python bench/block_trace.py --name block_trace_1b_both_h100
elif [ "$stage" = pair ]; then  # no fence everywhere; paired slots
  export WB_BLOCK_FENCE=0
  step 150 python -m pytest tests/plugins/test_decode_block.py tests/runtime/test_layer_block.py \
    tests/gpu/test_cuda_backend.py -q -n 4 -p no:cacheprovider
  WB_BLOCK_PAIR=1 step 100 python -m pytest tests/plugins/test_decode_block.py tests/runtime/test_layer_block.py \
    -q -n 4 -p no:cacheprovider
  q1() { dq1 60 llama-3.2-1b bf16 decode_quant_1b_$1_h100; }
  q8() { dq1 80 llama-3-8b bf16,int8_wo_logits decode_quant_8b_$1_h100; }
  q1 nofence
  WB_BLOCK_PAIR=1 q1 pair
  WB_BLOCK_PAIR=1 WB_BLOCK_RING_KIB=96 q1 pair_ring96
  WB_BLOCK_PAIR=1 WB_BLOCK_RING_KIB=128 q1 pair_ring128
  q8 nofence
  WB_BLOCK_PAIR=1 q8 pair
  q1 nofence_b
  WB_BLOCK_PAIR=1 q1 pair_b
  WB_BLOCK_PAIR=1 step 60 python bench/block_trace.py --name block_trace_1b_pair_h100
elif [ "$stage" = tests10 ]; then  # the GPU tests at the new defaults; int8 with paired slots
  q8() { dq1 60 llama-3-8b int8_wo_logits decode_quant_8b_int8_$1_h100; }
  q8 base
  WB_BLOCK_PAIR=1 WB_BLOCK_RING_KIB=128 q8 pair128
  WB_BLOCK_PAIR=1 WB_BLOCK_RING_KIB=96 q8 pair96
  step 280 python -m pytest tests/gpu tests/plugins tests/runtime tests/bench -q -n 4 -p no:cacheprovider
  step 60 python bench/block_trace.py --name block_trace_1b_final_h100
elif [ "$stage" = final10 ]; then  # the tenth session's defaults: decode in every format and batch, decode.py
  step 170 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
    --modes bf16,int8_wo,int8_wo_logits,int4_wo --plain-modes "" --repeats 3 --sweep "" --name decode_quant_final10_h100
  step 110 python bench/decode.py --peers none --repeats 2 --gemv table --name decode_engine_final10_h100
elif [ "$stage" = confirm10 ]; then  # batch-1 decode at the tenth session's defaults, again
  for r in a b; do
    step 80 python bench/decode.py --peers none --repeats 2 --gemv table --batches 1 --name decode_engine_confirm10_${r}_h100
  done
  dq1 60 llama-3.2-1b bf16 decode_quant_1b_confirm10_h100
elif [ "$stage" = final9 ]; then  # the ninth session's defaults: every GPU test, decode in every format, debug engines
  step 300 python -m pytest tests/gpu tests/plugins tests/runtime tests/bench -q -n 4 -p no:cacheprovider
  step 170 python bench/decode_quant.py --models llama-3-8b,llama-3.2-1b --batches 1,8 \
    --modes bf16,int8_wo,int8_wo_logits,int4_wo --plain-modes "" --repeats 3 --sweep "" --name decode_quant_final9_h100
  step 110 python bench/decode.py --peers none --repeats 2 --gemv table --name decode_engine_final9_h100
elif [ "$stage" = final ]; then  # after the full run: the GPU tests again and decode's GEMV policies
  step 70 python -m pytest tests/gpu/test_cuda_backend.py -q -n 4 -p no:cacheprovider -rA
  step 110 python bench/decode.py --peers none --repeats 2 --gemv table,cublas --name decode_engine_h100
else
  step 100 python -m pytest tests/gpu/test_cuda_backend.py -q -n 4 -p no:cacheprovider -rA -s
  step 240 python bench/decode.py --budget-s 190 --repeats 2
  step 90 python bench/prefill.py --repeats 3
  if [ -f bench/profile_gpu.py ]; then step 130 python bench/profile_gpu.py; fi
fi
echo "=== done in ${SECONDS}s" | tee -a "$LOG"
grep -E "^(llama|===|rope:)|passed|failed|error|Error|TB/s|TFLOP/s" "$LOG" | grep -v "^PASSED" | tail -45
