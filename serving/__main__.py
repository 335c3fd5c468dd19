"""``python -m crawl2serve.serving``: run the gateway, manage API keys, stop what the serving asset started.

python -m crawl2serve.serving gateway --config data/sglang_deployment/_/gateway.yaml
python -m crawl2serve.serving keys add --keys-file data/sglang_deployment/_/api_keys.json --tenant acme --tier pro
python -m crawl2serve.serving keys list --keys-file ...
python -m crawl2serve.serving demo --data-root data     # a few real requests (corpus snippets) through the gateway
python -m crawl2serve.serving status --data-root data
python -m crawl2serve.serving rollout status --data-root data   # the progressive canary (abort | promote: by hand)
python -m crawl2serve.serving stop --data-root data
python -m crawl2serve.serving supervise --name primary --backend cpu --url URL --state-file F -- ENGINE COMMAND...
"""

import argparse
import json
import os
import sys
from pathlib import Path

from .deploy import Deployment
from .engines import healthy, stop_process
from .gateway.routing import read_routing

STATE_DIR = "sglang_deployment/_"


def _deployment(data_root: str) -> Deployment:
    return Deployment(str(Path(data_root) / STATE_DIR), log=lambda message: None)


# prometheus_client reads these when it is imported (which value class its metrics use); `import feast` sets
# two of them process-wide, so a gateway started by a process that had imported Feast would inherit them.
PROMETHEUS_ENV = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR", "prometheus_multiproc_dir")


def cmd_gateway(args) -> int:
    import tempfile

    from .gateway.settings import GatewaySettings

    try:
        settings = GatewaySettings.load(args.config)
    except FileNotFoundError:
        print(f"gateway config {args.config} does not exist (materialize sglang_deployment first)", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"gateway config {args.config} is invalid:\n{exc}", file=sys.stderr)
        return 2
    # The metrics environment of this process tree, set once, here, before prometheus_client is imported and
    # before any thread runs: one worker keeps its samples in memory; several share a folder of their own.
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the gateway configured its metrics environment")
    for name in PROMETHEUS_ENV:
        os.environ.pop(name, None)
    metrics_dir = tempfile.mkdtemp(prefix="c2s-gateway-metrics-") if settings.workers > 1 else None
    if metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["PROMETHEUS_MULTIPROCESS_DIR"] = metrics_dir
    import uvicorn

    host, port = args.host or settings.host, args.port or settings.port
    options = dict(
        host=host,
        port=port,
        http=settings.http,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    if settings.workers == 1:
        from .gateway.app import create_app

        uvicorn.run(create_app(settings), **options)
        return 0
    # Several worker processes on one port: each loads the app from the config named in the environment.
    os.environ["CRAWL2SERVE_GATEWAY_CONFIG"] = os.path.abspath(args.config)
    uvicorn.run("crawl2serve.serving.gateway.asgi:app", workers=settings.workers, **options)
    return 0


def cmd_keys(args) -> int:
    from .gateway.auth import KeyStore

    store = KeyStore.load(args.keys_file)
    if args.action == "add":
        if not args.tenant:
            print("keys add needs --tenant", file=sys.stderr)
            return 2
        key, api_key = store.add(args.tenant, args.tier)
        print(json.dumps({"key": key, "key_id": api_key.key_id, "tenant": api_key.tenant, "tier": api_key.tier}))
        print("store the key now: only its hash is kept", file=sys.stderr)
    elif args.action == "revoke":
        if not store.revoke(args.key_id):
            print(f"no key with id {args.key_id!r}", file=sys.stderr)
            return 1
    else:
        for k in store:
            print(json.dumps({"key_id": k.key_id, "tenant": k.tenant, "tier": k.tier}))
    return 0


def cmd_status(args) -> int:
    for name, proc in _deployment(args.data_root).processes().items():
        line = f"{name}: pid {proc.get('pid')} {proc['url']} {'healthy' if healthy(proc['url']) else 'DOWN'}"
        sup = proc.get("supervision")
        if sup:
            last = sup.get("last_exit") or {}
            how = f"signal {last['signal']}" if last.get("signal") else f"exit code {last.get('code')}"
            line += (
                f"; supervisor {sup.get('state')}, engine pid {sup.get('engine_pid')}, "
                f"{sup.get('restarts', 0)} restarts"
                + (f", last exit {how} ({last.get('reason')}) at {last.get('at')}" if last else "")
                + (f", last restart {sup['last_restart_at']}" if sup.get("last_restart_at") else "")
            )
        elif "supervision" in proc:
            line += "; supervisor has written no state"
        print(line)
    return 0


def cmd_supervise(args) -> int:
    from .supervisor import main as supervise

    return supervise(args)


def cmd_stop(args) -> int:
    stopped = 0
    for name, proc in _deployment(args.data_root).processes().items():
        if stop_process(proc.get("pid")):
            stopped += 1
            print(f"stopped {name} (pid {proc.get('pid')})")
    if not stopped:
        print("nothing running")
    return 0


def cmd_rollout(args) -> int:
    """The progressive rollout in the routing table: show it, or end it by hand (``abort``: all traffic back to
    the stable version; ``promote``: the canary takes all traffic now). The registry's alias is not touched: after
    an abort, move it back with the ``rollback_model`` job."""
    deployment = _deployment(args.data_root)
    table = read_routing(deployment.routing_file) or {}
    rollout, canary = table.get("rollout"), table.get("canary")
    if args.action == "status":
        if rollout and canary:
            stages = rollout["policy"]["stages"]
            print(
                f"canary v{canary} at {table['canary_share']:.0%} (stages {', '.join(f'{s:.0%}' for s in stages)}), "
                f"stable v{table['stable']}; rollout started {rollout['started']}, stage started "
                f"{rollout['stage_started']}"
            )
        else:
            print(f"no rollout in progress; stable v{table.get('stable')}")
        if table.get("last_rollout"):
            last = table["last_rollout"]
            print(f"last rollout: v{last['version']} {last['verdict']} at {last['ended']}: {last['reason']}")
        return 0
    if not (rollout and canary):
        print("no rollout in progress", file=sys.stderr)
        return 1
    verdict = "rollback" if args.action == "abort" else "promote"
    deployment.apply_decision(canary, verdict, 0.0 if verdict == "rollback" else 1.0, f"{args.action} by hand")
    print(
        f"v{canary}: {verdict}"
        + ("; the champion alias is unchanged (rollback_model moves it)" if verdict == "rollback" else "")
    )
    return 0


DEMO_REQUESTS = 6
DEMO_SEED = 1  # the drift report's corpus reference is drawn with seed 0


def demo_prompts(data_root: str, n: int, seed: int = DEMO_SEED) -> list[str]:
    """``n`` prompts as traffic from the training distribution looks: prompt-sized snippets of the newest
    deduplicated corpus under ``data_root`` (``assets.monitoring.drift.corpus_snippets``, what the drift report's
    prompt reference is made of, another seed). Hand-written prompts unlike the corpus made the first run's drift
    report say "drift". FileNotFoundError when no corpus was materialized."""
    import polars as pl

    from crawl2serve.assets.monitoring.drift import corpus_snippets

    files = sorted(Path(data_root).glob("deduplicated_documents/*/data.parquet"))
    if not files:
        raise FileNotFoundError(f"no deduplicated_documents under {data_root}: materialize the main job first")
    return corpus_snippets(pl.read_parquet(files[-1]), n, seed=seed)["text"].to_list()


def cmd_demo(args) -> int:
    """Send a few real OpenAI-client requests (:func:`demo_prompts`) through the gateway with a temporary key
    (revoked after)."""
    import time

    import openai

    from .gateway.auth import KeyStore

    deployment = _deployment(args.data_root)
    try:
        prompts = demo_prompts(args.data_root, args.requests)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    gateway = deployment.gateway_state()
    if not gateway:
        print("no gateway: materialize sglang_deployment first", file=sys.stderr)
        return 2
    if not healthy(gateway["url"]):
        print(f"the gateway at {gateway['url']} is not answering", file=sys.stderr)
        return 1
    keys = KeyStore.load(deployment.dir / "api_keys.json")
    key, api_key = keys.add("demo", "pro")
    time.sleep(1.1)  # the gateway re-reads its keys within a second
    client = openai.OpenAI(base_url=gateway["url"] + "/v1", api_key=key, max_retries=1)
    try:
        for i, prompt in enumerate(prompts):
            start = time.perf_counter()
            if i % 2:
                stream = client.chat.completions.create(
                    model="crawl2serve",
                    max_tokens=16,
                    stream=i % 4 == 1,
                    messages=[{"role": "user", "content": prompt}],
                )
                text = (
                    "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
                    if i % 4 == 1
                    else stream.choices[0].message.content
                )
            else:
                text = client.completions.create(model="crawl2serve", prompt=prompt, max_tokens=16).choices[0].text
            shown = prompt if len(prompt) <= 60 else prompt[:59] + "…"
            print(f"{time.perf_counter() - start:6.2f}s  {shown!r} -> {text!r}")
    finally:
        keys.revoke(api_key.key_id)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crawl2serve.serving", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gateway", help="run the OpenAI-compatible gateway")
    g.add_argument("--config", required=True)
    g.add_argument("--host")
    g.add_argument("--port", type=int)
    g.add_argument("--log-level", default="warning")
    g.set_defaults(fn=cmd_gateway)
    k = sub.add_parser("keys", help="manage API keys (stored hashed)")
    k.add_argument("action", choices=["add", "list", "revoke"])
    k.add_argument("--keys-file", required=True)
    k.add_argument("--tenant")
    k.add_argument("--tier", default="free")
    k.add_argument("--key-id")
    k.set_defaults(fn=cmd_keys)
    default_root = os.environ.get("CRAWL2SERVE_DATA_ROOT", "data")
    d = sub.add_parser("demo", help="send a few real requests through the running gateway")
    d.add_argument("--data-root", default=default_root)
    d.add_argument("--requests", type=int, default=DEMO_REQUESTS)
    d.set_defaults(fn=cmd_demo)
    s = sub.add_parser(
        "supervise",
        help="run an engine command, restarting it when it dies (the serving asset starts engines this way)",
    )
    from .supervisor import add_arguments

    add_arguments(s)
    s.set_defaults(fn=cmd_supervise)
    r = sub.add_parser("rollout", help="show the progressive rollout, or end it by hand")
    r.add_argument("action", choices=["status", "abort", "promote"])
    r.add_argument("--data-root", default=default_root)
    r.set_defaults(fn=cmd_rollout)
    for name, fn, text in (
        ("status", cmd_status, "engines and gateway the serving asset started"),
        ("stop", cmd_stop, "stop the engines and the gateway the serving asset started"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--data-root", default=default_root)
        p.set_defaults(fn=fn)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
