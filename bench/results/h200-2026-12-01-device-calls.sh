# The four device calls of 2026-12-01 (issue 20), verbatim; run from the session checkout's root with .gpu/ (the SGLang kit,
# ../shared/gpu/prepare-sglang-carry.sh) and .gpuwork/ (repo/: this branch; base/: main before it; whl/: httptools 0.9.0) carried.
# Call 3 began by trying to stop call 2's leftover engine with ss, which the machine lacks: the engine stayed (see README).

### call 1 (carry .gpu/whl1 .gpu/kit .gpuwork)
set -x
bash .gpu/kit/install.sh whl1 || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpuwork/whl/*.whl
rm -rf /tmp/gpuwork && cp -r .gpuwork /tmp/gpuwork && cp -r .gpu/kit/tokenizer /tmp/gpuwork/tokenizer && cp -r .gpu/kit /tmp/gpuwork/kit
. .gpu/kit/env.sh
cd /tmp/gpuwork/repo
nproc; nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv
python3 -c "import httptools, uvicorn, fastapi, starlette, aiohttp, orjson, uvloop; print('httptools', httptools.__version__, 'uvicorn', uvicorn.__version__, 'fastapi', fastapi.__version__, 'aiohttp', aiohttp.__version__, 'uvloop', uvloop.__version__)"
python3 bench/bench_serving.py prepare --no-adapters --tokenizer /tmp/gpuwork/tokenizer --out $OUT 2>&1 | grep -v Warning
python3 bench/bench_gateway_steps.py --tokenizer /tmp/bench-serving/base 2>&1 | tee $OUT/gateway_steps.txt
PYTHONPATH=.:$PYTHONPATH timeout 200 python3 bench/bench_serving.py gateway --engine fake --rounds 2 --base-tree /tmp/gpuwork/base --out $OUT 2>&1 | grep -v '^{' | tee $OUT/gateway_fake.txt
ls /tmp/bench-serving

### call 2 (carry .gpu/whl2 .gpu/kit; ran as bash /tmp/gpuwork/call2.sh)
bash .gpu/kit/install.sh whl2 || exit 1
. .gpu/kit/env.sh
cd /tmp/gpuwork/repo || exit 1
export PYTHONPATH=.:/tmp/site-bench:$PYTHONPATH
timeout 545 python3 bench/bench_serving.py gateway --rounds 5 --base-tree /tmp/gpuwork/base --out $OUT 2>&1 | grep -v '^{' | tee $OUT/gateway_sglang.txt
nvidia-smi --query-gpu=memory.used --format=csv

### call 3 (the command was this line, then call3.sh, then a copy of the results)
# for p in $(ss -ltnpH | grep -E ':(31000|871[0-3]) ' | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do g=$(ps -o pgid= -p $p | tr -d ' '); kill -TERM -- -$g; done; sleep 8
. /tmp/gpuwork/kit/env.sh
cd /tmp/gpuwork/repo || exit 1
export PYTHONPATH=.:/tmp/site-bench:$PYTHONPATH
timeout 520 python3 bench/bench_serving.py base hf --concurrency 64 128 256 64 128 256 --batch 64 128 256 --out $OUT 2>&1 | tee $OUT/lead.txt

### call 4 (a fresh machine; carry .gpu/whl1 .gpu/kit .gpuwork)
bash .gpu/kit/install.sh whl1 >/dev/null || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpuwork/whl/*.whl
. .gpu/kit/env.sh
cd .gpuwork/repo
python3 -c "import uvloop, httptools; print('uvloop', uvloop.__version__)"
timeout 240 python3 bench/profile_gateway.py --tokenizer ../../.gpu/kit/tokenizer --concurrency 1 64 128 --top 30 2>&1 | tee $OUT/profile_gateway.txt | grep -E '===|profiled'
timeout 200 python3 bench/profile_gateway.py --tokenizer ../../.gpu/kit/tokenizer --concurrency 1 128 --http httptools --top 30 > $OUT/profile_gateway_httptools.txt 2>&1; grep -E '===|profiled' $OUT/profile_gateway_httptools.txt
