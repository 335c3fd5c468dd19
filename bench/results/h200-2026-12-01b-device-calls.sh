# The device calls of 2026-12-01, second session (issue 20), verbatim, in order; run from the session checkout's root (/work/main) with
# .gpu/ (the SGLang kit, ../shared/gpu/prepare-sglang-carry.sh) and .gpuwork/ carried: repo/ = branch gpu20
# (git archive HEAD), base/ = main before it (d566566), whl/ = liger_kernel-0.8.5 and multipart-2.0.1 wheels, callN.sh.
# Device time: 1,644 s of the session's 1,800 (starting the machine included). The machine stayed warm between calls.

### call 0 (command: bash .gpuwork/call1.sh 2>&1 | tail -60; carry .gpu/whl1 .gpu/kit .gpuwork) — the first call1.sh,
### without the multipart lines: the gateway of main's code failed to import `multipart` (the kit's /tmp/site holds
### python-multipart's package of that name); only the gateway_steps figures of that call are kept.

### call 1 (command: bash .gpuwork/call1.sh 2>&1 | grep -v '^+ ' | tail -40; carry .gpu/whl1 .gpu/kit .gpuwork)
# call 1 (carry .gpu/whl1 .gpu/kit .gpuwork): the kit's first step, the gateway's steps unprofiled, the fake-engine gateway bench
set -x
bash .gpu/kit/install.sh whl1 >/dev/null || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-mp .gpuwork/whl/multipart-*.whl  # the gateway's multipart (the kit's /tmp/site has python-multipart's)
. .gpu/kit/env.sh
export PYTHONPATH=/tmp/site-mp:$PYTHONPATH
rm -rf /tmp/gpuwork && cp -r .gpuwork /tmp/gpuwork && cp -r .gpu/kit /tmp/gpuwork/kit
cd /tmp/gpuwork/repo || exit 1
nproc; nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
python3 -c "import aiohttp, uvicorn, orjson; print('aiohttp', aiohttp.__version__, 'uvicorn', uvicorn.__version__)"
[ -f /tmp/bench-serving/base/config.json ] || python3 bench/bench_serving.py prepare --no-adapters --tokenizer /tmp/gpuwork/kit/tokenizer --out $OUT 2>&1 | grep -v Warning
python3 bench/bench_gateway_steps.py --tokenizer /tmp/bench-serving/base 2>&1 | tee $OUT/gateway_steps.txt
mkdir -p $OUT/fake && PYTHONPATH=.:$PYTHONPATH timeout 300 python3 bench/bench_serving.py gateway --engine fake --rounds 3 --base-tree /tmp/gpuwork/base --out $OUT/fake 2>&1 | grep -v '^{' | tee $OUT/gateway_fake.txt

### call 2 (command: bash /tmp/gpuwork/call2.sh 2>&1 | tail -40; carry .gpu/whl2 .gpu/kit)
# call 2 (carry .gpu/whl2 .gpu/kit .gpuwork; within 30 s of call 1): SGLang, one fresh engine, direct / before / after in 5 rounds
bash .gpu/kit/install.sh whl2 >/dev/null || exit 1
. .gpu/kit/env.sh
cd /tmp/gpuwork/repo || exit 1
export PYTHONPATH=.:/tmp/site-mp:/tmp/site-bench:$PYTHONPATH
timeout -s INT -k 30 540 python3 bench/bench_serving.py gateway --rounds 5 --base-tree /tmp/gpuwork/base --out $OUT 2>&1 | grep -v '^{' | tee $OUT/gateway_sglang.txt
nvidia-smi --query-gpu=memory.used --format=csv

### call 3 (command: bash .gpuwork/call3.sh 2>&1 | tail -30; carry .gpuwork) — its two liger variants failed: bench_train.py replaced PYTHONPATH, so the trainer could not import liger_kernel (fixed in this branch)
# call 3 (carry .gpuwork; the same warm machine): training, ours (compiled) vs ours with Liger's kernels vs HF Trainer + peft
[ -d /tmp/gpuwork/repo ] || cp -r .gpuwork /tmp/gpuwork
cd /tmp/gpuwork/repo || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-liger /tmp/gpuwork/whl/liger_kernel-*.whl
export PYTHONPATH=/tmp/site-liger
python3 -c "import torch, triton, transformers, liger_kernel.transformers as lt; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__, 'liger ok')"
timeout -s INT -k 20 560 python3 bench/bench_train.py --variants ours_compile,ours_compile_liger,hf,ours_liger 2>&1 | tee $OUT/train.txt

### call 4 (command: bash .gpuwork/call4.sh 2>&1 | tail -25; carry .gpuwork)
# call 4 (carry .gpuwork; a fresh machine): training with Liger's kernels (call 3's runs lost liger: bench_train replaced PYTHONPATH)
cd .gpuwork/repo || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-liger ../whl/liger_kernel-*.whl
export PYTHONPATH=/tmp/site-liger
python3 -c "import torch, triton, transformers, liger_kernel.transformers as lt; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__, 'liger ok')"
timeout -s INT -k 20 450 python3 bench/bench_train.py --variants ours_liger,ours_compile_liger,ours_compile 2>&1 | tee $OUT/train.txt

### call 5 (carry .gpuwork), the command:
cd .gpuwork/repo && export PYTHONPATH=/tmp/site-liger && (timeout -s INT -k 20 300 python3 bench/bench_train.py --variants ours_compile,ours_compile_liger,hf --micro 16 2>&1 | grep -v Writing | tail -6; timeout -s INT 100 python3 bench/bench_train.py --variants ours 2>&1 | tail -2) | tee $OUT/train_micro16.txt
