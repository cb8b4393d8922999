set -u
G=/tmp/bfc; mkdir -p $G && tar -C $G -xJf .gpu-c/bundle.tar.xz
export BLOCKFLASH_TEST_DATA_DIR=$PWD/tests
( export LD_LIBRARY_PATH=$G/lib:/usr/local/cuda/lib64
  timeout 150 $G/bin/test_cuda --gtest_color=no > $OUT/test_cuda.log 2>&1; echo "test_cuda rc=$? $(grep -E '^\[  (PASSED|FAILED)' $OUT/test_cuda.log | tr '\n' ' ')"
  BLOCKFLASH_TEST_DEVICE=cuda BLOCKFLASH_CUDA_DTYPE=f32 timeout 120 $G/bin/test_engine --gtest_filter='DFlash*:Drafters/*' --gtest_color=no > $OUT/dflash_f32.log 2>&1; echo "dflash f32 rc=$? $(grep -E '^\[  (PASSED|FAILED)' $OUT/dflash_f32.log | tr '\n' ' ')"
  timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 $G/bin/test_cuda --gtest_color=no --gtest_filter='CudaOps.GatedDeltaNetDecodeFused:CudaOps.CausalConv1d*' > $OUT/memcheck.log 2>&1; echo "memcheck rc=$? $(grep 'ERROR SUMMARY' $OUT/memcheck.log | tail -1)"
  timeout 100 compute-sanitizer --tool racecheck --error-exitcode 9 $G/bin/test_cuda --gtest_color=no --gtest_filter='CudaOps.GatedDeltaNetDecodeFused' > $OUT/racecheck.log 2>&1; echo "racecheck rc=$? $(grep -E 'RACECHECK SUMMARY' $OUT/racecheck.log | tail -1)"
)
ARMS="n1=.gpu-n:BLOCKFLASH_GDN_DECODE_SPLIT=1;c=.gpu-c;c2=.gpu-c:BLOCKFLASH_GDN_DECODE_SPLIT=2;c4ns=.gpu-c:BLOCKFLASH_GDN_DECODE_SPLIT=4,BLOCKFLASH_SPREAD=router;c2ns=.gpu-c:BLOCKFLASH_GDN_DECODE_SPLIT=2,BLOCKFLASH_SPREAD=router" MODELS="bench/configs/qwen3.5-35b-a3b.json bench/configs/qwen3.5-27b.json" BATCHES="1 2" ROUNDS=2 OUT=/tmp/ab1 bash tools/gpu_ab.sh 2>&1 | tail -12
MODE=spec ARMS="n=.gpu-n;c=.gpu-c" MODELS=bench/configs/qwen3.5-27b.json BATCHES=1 ROUNDS=3 OUT=/tmp/ab2 bash tools/gpu_ab.sh 2>&1 | tail -4
BLOCKFLASH_GDN_DECODE_SPLIT=1 BUNDLE=.gpu-c/bundle.tar.xz OUT=$OUT/trace timeout 200 bash tools/gpu_kernel_trace.sh > /tmp/trace_out.txt 2>&1; head -3 /tmp/trace_out.txt; rm -f $OUT/trace/bench_*.log
python3 tools/kernel_trace/graph_breakdown.py $OUT/trace/trace_*.csv.gz --sequence 8:40 2>/dev/null | tail -40
