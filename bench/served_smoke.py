"""The served champion on the smoke prompts: what a user gets from the gateway, judged like the gate judges.

    .venv/bin/python bench/served_smoke.py --base-url http://127.0.0.1:8700/v1 --api-key KEY [--model crawl2serve]

After ``./dev.sh main`` (the gateway and its engine stay up; an API key: ``python -m crawl2serve.serving keys
add ...``, as the run's summary prints). Sends each of ``evaluate.FIXED_PROMPTS`` once as a completion with
only ``max_tokens`` set (so the engine decodes with the model's own defaults: greedy, and the embedded model's
recommended repetition penalty from its generation_config.json), through the official ``openai`` client, and
prints every output with the reasons :func:`~crawl2serve.assets.release.degenerate.degeneracy` finds.

Measured 2026-12-01 after a ``./dev.sh main`` on this 2-core machine (960-step base, 240-step adapter, CPU
engine ``transformers serve``): 0 of 8 degenerate. Without the penalty the same kind of candidate looped on
3 of 8 in process (``generate``, greedy), and the random initialization on 8 of 8 with or without it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8700/v1")
    p.add_argument("--api-key", required=True)
    p.add_argument("--model", default="crawl2serve")
    p.add_argument("--max-tokens", type=int, default=32)
    args = p.parse_args()

    from openai import OpenAI

    from crawl2serve.assets.release.degenerate import degeneracy
    from crawl2serve.assets.release.evaluate import FIXED_PROMPTS

    client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0)
    bad = 0
    for prompt in FIXED_PROMPTS:
        out = client.completions.create(model=args.model, prompt=prompt, max_tokens=args.max_tokens)
        text = out.choices[0].text
        reasons = degeneracy(text)
        bad += bool(reasons)
        print(f"{prompt[:40]!r:44} -> {text!r:90} {reasons or ''}")
    print(f"degenerate: {bad} of {len(FIXED_PROMPTS)} (model {out.model})")


if __name__ == "__main__":
    main()
