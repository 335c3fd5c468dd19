"""What ``./dev.sh main`` left behind, in words: ``python -m crawl2serve.pipelines.summary --partition DAY --hour H``.

Read from the Dagster instance (``$DAGSTER_HOME``) and the data root, nothing restated: the ``main`` run of the
crawl day (its status, the assets it materialized, its checks passed / failed), the monitoring hour's drift
verdict (``drift_report``'s metadata), one completion the gateway served in that hour (a row of the compacted
inference log: a real request of ``python -m crawl2serve.serving demo``), the processes still running, and where
to look next: the gateway, an API key, the Dagster UI, the MLflow UI, Feast.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass, field

import dagster as dg

DAGSTER_UI = "http://127.0.0.1:3000"
MLFLOW_UI = "http://127.0.0.1:5000"  # `mlflow ui`'s default
FEAST_SERVE = "http://127.0.0.1:6566"  # `feast serve`'s default port
FEAST_UI = "http://127.0.0.1:8888"  # `feast ui`'s default port


@dataclass
class RunFacts:
    """One run: its job, status, the assets it materialized and its asset checks by outcome."""

    run_id: str
    job: str
    status: str
    partition: str | None
    materialized: list[str] = field(default_factory=list)
    checks_passed: list[str] = field(default_factory=list)
    checks_warned: list[str] = field(default_factory=list)  # failed, severity WARN
    checks_failed: list[str] = field(default_factory=list)  # failed, severity ERROR


def run_facts(instance: dg.DagsterInstance, run_id: str) -> RunFacts:
    """The materializations and check evaluations of ``run_id``, from its event log."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ValueError(f"no run {run_id!r} in the instance at {instance.root_directory}")
    facts = RunFacts(run_id, run.job_name, run.status.value, run.tags.get("dagster/partition"))
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            facts.materialized.append(event.asset_key.to_user_string())
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            if evaluation.passed:
                facts.checks_passed.append(name)
            elif evaluation.severity == dg.AssetCheckSeverity.WARN:
                facts.checks_warned.append(name)
            else:
                facts.checks_failed.append(name)
    facts.materialized = sorted(set(facts.materialized), key=facts.materialized.index)
    return facts


def latest_run(instance: dg.DagsterInstance, job: str, partition: str) -> str | None:
    """The newest run of ``job`` for ``partition``, or None."""
    runs = instance.get_runs(dg.RunsFilter(job_name=job, tags={"dagster/partition": partition}), limit=1)
    return runs[0].run_id if runs else None


def latest_materialization(instance: dg.DagsterInstance, asset: str, partition: str):
    """The newest materialization event of ``asset``'s ``partition`` (an EventLogEntry), or None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return records[0].event_log_entry if records else None


def drift_facts(instance: dg.DagsterInstance, hour: str) -> dict | None:
    """The drift verdict of the monitoring ``hour`` as ``drift_report`` recorded it, or None."""
    entry = latest_materialization(instance, "drift_report", hour)
    if entry is None:
        return None
    meta = {k: v.value for k, v in entry.asset_materialization.metadata.items()}
    return {
        "run_id": entry.run_id,
        "verdict": meta.get("verdict"),
        "requests": meta.get("requests"),
        "tested_columns": meta.get("tested_columns"),
        "drifted_columns": meta.get("drifted_columns") or [],
        "reference": _facts(meta.get("reference")),
        "report": meta.get("report_url") or meta.get("report"),
    }


def _facts(value) -> dict:
    """A facts table (rows of name, value) or a JSON object of them, as a dict."""
    if value is None:
        return {}
    if isinstance(value, str):
        return json.loads(value)
    rows = [list(record.data.values()) for record in value.records]
    return {name: fact for name, fact, *_ in rows}


def sample_completion(resources: dict, hour: str) -> dict | None:
    """One client request the gateway answered (status 200, not a shadow or feedback row; one with a non-blank output if any) in the monitoring
    ``hour``: a row of the compacted inference log (``inference_log``'s partition), or None."""
    data_root = resources["data_root"]
    path = data_root.path("inference_log", hour, "data.parquet")
    if not data_root.exists(path):
        return None
    rows = data_root.read_parquet(path)
    answered = [
        r for r in rows.iter_rows(named=True) if r["status"] == 200 and (r.get("role") or "primary") == "primary"
    ]
    if not answered:
        return None
    row = next((r for r in answered if (r["output"] or "").strip()), answered[0])  # one with visible text if any
    return {k: row[k] for k in ("endpoint", "model_version", "prompt", "output", "latency_ms", "completion_tokens")}


def _clip(text: str, n: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _names(items: list[str], limit: int = 8) -> str:
    return ", ".join(items[:limit]) + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def render(
    main: RunFacts | None,
    monitoring: RunFacts | None,
    drift: dict | None,
    sample: dict | None,
    resources: dict,
    processes: dict[str, str],
) -> str:
    """The summary's text (see the module docstring)."""
    data_root = resources["data_root"]
    engine = resources["serving_engine"]
    settings = engine.gateway_settings()
    gateway = processes.get("gateway")
    lines = ["", "What ran:"]
    for facts in (main, monitoring):
        if facts is None:
            continue
        checks = f"{len(facts.checks_passed)} checks passed"
        if facts.checks_warned:
            checks += f", {len(facts.checks_warned)} warned ({_names(facts.checks_warned)})"
        if facts.checks_failed:
            checks += f", {len(facts.checks_failed)} FAILED ({_names(facts.checks_failed)})"
        lines.append(
            f"  {facts.job} [{facts.partition}]: {facts.status}, {len(facts.materialized)} assets materialized; "
            f"{checks}  (run {facts.run_id[:8]})"
        )
        lines.append(f"      {_names(facts.materialized, 20)}")
    if main is None:
        lines.append("  no run of main for this partition in the instance")
    if drift is None:
        lines.append("  no drift report for this hour")
    else:
        ref = drift["reference"]
        drifted = f": {', '.join(drift['drifted_columns'])}" if drift["drifted_columns"] else ""
        lines.append(
            f"  drift report [{monitoring.partition if monitoring else ''}]: {drift['verdict']} "
            f"({len(drift['drifted_columns'])} of {drift['tested_columns']} tested columns drifted{drifted}; "
            f"{drift['requests']} requests against {ref.get('corpus_snippets', 0)} corpus snippets and "
            f"{ref.get('baseline_requests', 0)} earlier requests)"
        )
        lines.append(f"      {drift['report']}")
    if sample:
        lines += [
            "",
            f"A completion the gateway served ({sample['endpoint']}, model version {sample['model_version']}, "
            f"{sample['latency_ms']:.0f} ms):",
            f"  prompt  {_clip(sample['prompt'])!r}",
            f"  output  {_clip(sample['output'])!r}",
        ]
    lines += ["", "Running:"]
    lines += [f"  {name:<9} {state}" for name, state in processes.items()] or ["  nothing"]
    keys = shlex.quote(settings.keys_file)
    gateway_url = gateway.split()[0] if gateway else f"http://{settings.host}:{settings.port}"
    mlflow_uri = shlex.quote(resources["mlflow_tracking"].uri)
    lines += [
        "",
        "Where to look:",
        f"  gateway (OpenAI API)  {gateway_url}/v1    metrics {gateway_url}/metrics",
        f"  an API key            .venv/bin/python -m crawl2serve.serving keys add --keys-file {keys} --tenant me --tier pro",
        f"  Dagster UI            ./dev.sh ui    then {DAGSTER_UI}",
        f"  MLflow UI             .venv/bin/mlflow ui --backend-store-uri {mlflow_uri}    then {MLFLOW_UI}",
        f"  Feast                 ./dev.sh feast serve    ({FEAST_SERVE}, online features)",
        f"                        ./dev.sh feast ui -h 127.0.0.1    then {FEAST_UI}",
        f"  stop engine + gateway .venv/bin/python -m crawl2serve.serving stop --data-root {shlex.quote(data_root.url)}",
    ]
    return "\n".join(lines)


def processes(resources: dict) -> dict[str, str]:
    """``name -> "URL healthy|DOWN (pid N)"`` of the engines and the gateway the serving asset started."""
    from crawl2serve.serving.engines import healthy

    found = resources["serving_engine"].deployment(log=lambda message: None).processes()
    return {
        name: f"{p['url']} {'healthy' if healthy(p['url']) else 'DOWN'} (pid {p.get('pid')})"
        for name, p in found.items()
    }


def summary(instance: dg.DagsterInstance, resources: dict, partition: str, hour: str) -> str:
    """The summary of the ``main`` run of ``partition`` and the monitoring of ``hour`` (module docstring)."""
    main_id = latest_run(instance, "main", partition)
    drift = drift_facts(instance, hour)
    return render(
        run_facts(instance, main_id) if main_id else None,
        run_facts(instance, drift["run_id"]) if drift else None,
        drift,
        sample_completion(resources, hour),
        resources,
        processes(resources),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crawl2serve.pipelines.summary", description=__doc__)
    parser.add_argument("--partition", required=True, help="the crawl day main ran for (YYYY-MM-DD)")
    parser.add_argument("--hour", required=True, help="the monitoring partition (YYYY-MM-DD-HH:00)")
    args = parser.parse_args(argv)
    from crawl2serve.resources import build_resources

    with dg.DagsterInstance.get() as instance:
        print(summary(instance, build_resources(), args.partition, args.hour))
    return 0


if __name__ == "__main__":
    sys.exit(main())
