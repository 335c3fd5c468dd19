"""What the gateway spends per request before the engine call, and per streamed token, on one CPU core: the
input screen and token count of a random-token prompt (the prompts ``bench_serving.py gateway`` sends), the
output check it runs every ``STREAM_CHECK_EVERY`` tokens, and one token event's encoding.

    python bench/bench_gateway_steps.py --tokenizer <folder with tokenizer.json>
"""

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crawl2serve.serving.gateway import jsonio
from crawl2serve.serving.gateway.guardrails import Guardrails
from crawl2serve.serving.gateway.settings import GuardrailSettings
from crawl2serve.serving.gateway.tokens import TokenCounter


def per_call_us(fn, repeat: int = 200) -> float:
    """Median of 5 batches of ``repeat`` calls, in microseconds per call."""
    fn()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(repeat):
            fn()
        times.append((time.perf_counter() - t) / repeat * 1e6)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    g = GuardrailSettings()
    guardrails = Guardrails(g.blocked_patterns, g.injection_threshold, g.max_output_chars)
    counter = TokenCounter()
    rng = random.Random(1)
    for n in (128, 256):
        text = tok.decode([rng.randrange(100, len(tok)) for _ in range(n)])
        screen = per_call_us(lambda text=text: guardrails.screen_prompt(text), 50)
        count = per_call_us(lambda text=text: counter.count(args.tokenizer, prompt=text), 50)
        print(f"prompt of {n} random tokens ({len(text)} chars): screen_prompt {screen:.0f} us, count {count:.0f} us")
    tail = tok.decode([rng.randrange(100, len(tok)) for _ in range(64)])[:264]
    check = per_call_us(lambda: guardrails.check_output(tail))
    print(f"check_output on a {len(tail)}-char tail: {check:.1f} us (every 8 tokens: {check / 8:.1f} us per token)")
    head = jsonio.dumpb({"id": "req-" + "0" * 32, "object": "text_completion", "created": 1, "model": "crawl2serve"})
    prefix, suffix = (
        b'data: %b,"choices":[{"index":0,"finish_reason":null,"text":' % head[:-1],
        b',"logprobs":null}]}\n\n',
    )

    def whole():
        choice = {"index": 0, "finish_reason": None, "text": " tok", "logprobs": None}
        body = {"id": "req-" + "0" * 32, "object": "text_completion", "created": 1, "model": "crawl2serve"}
        return "data: " + jsonio.dumps({**body, "choices": [choice]}) + "\n\n"

    print(
        f"token event: whole event encoded {per_call_us(whole, 20000):.2f} us, "
        f"text only {per_call_us(lambda: prefix + jsonio.dumpb(' tok') + suffix, 20000):.2f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
