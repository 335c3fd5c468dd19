"""The trainer's Reporter under Dagster Pipes: each line reaches the console once (through Dagster), not twice."""

import sys
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
from crawl2serve.assets.training.trainer import Reporter

reporter = Reporter(rank=0)
reporter.log("step 1/2 loss 8.3 lr 2.00e-03")
reporter.result({"steps": 2})
reporter.close()
"""


def test_under_pipes_lines_go_through_dagster_only(capfd):
    """main printed each trainer line to stdout and relayed it through Pipes: two console lines per step."""

    @dg.asset
    def trained(context: dg.AssetExecutionContext, pipes: dg.PipesSubprocessClient):
        return pipes.run(context=context, command=[sys.executable, "-c", SCRIPT]).get_materialize_result()

    instance = dg.DagsterInstance.ephemeral()
    capfd.readouterr()
    result = dg.materialize([trained], resources={"pipes": dg.PipesSubprocessClient(cwd=str(REPO))}, instance=instance)
    out = capfd.readouterr().out
    assert result.success
    assert "step 1/2" not in out and '{"result"' not in out  # the subprocess printed nothing itself
    messages = [r.user_message for r in instance.all_logs(result.run_id)]
    assert messages.count("step 1/2 loss 8.3 lr 2.00e-03") == 1  # the Pipes log, once, in the run's log
    assert result.asset_materializations_for_node("trained")[0].metadata["steps"].value == 2


def test_without_pipes_lines_go_to_stdout(capsys, monkeypatch):
    from crawl2serve.assets.training.trainer import Reporter

    monkeypatch.delenv("DAGSTER_PIPES_CONTEXT", raising=False)
    reporter = Reporter(rank=0)
    reporter.log("step 1/2 loss 8.3")
    reporter.result({"steps": 2})
    reporter.close()
    assert capsys.readouterr().out == 'step 1/2 loss 8.3\n{"result": {"steps": 2}}\n'


ATTEMPT = """
import os
from crawl2serve.assets.training.trainer import Reporter

first = os.environ["TORCHELASTIC_RESTART_COUNT"] == "0"
reporter = Reporter(rank=0)
error = None
try:
    reporter.metrics({"step": 1, "loss": 9.0 if first else 8.0})
    if first:
        raise RuntimeError("node 1 was lost")
    reporter.metrics({"step": 2, "loss": 7.0})
    reporter.result({"steps": 2})
except BaseException as exc:
    error = exc
    raise
finally:
    reporter.close(error)
"""


def test_a_failure_torchrun_restarts_keeps_the_pipes_session_open(tmp_path):
    """Under ``--max-restarts`` (multi-node training) the first attempt's failure is logged, not reported as the
    end of the session: the second attempt reports on and closes it; the steps it reported again count once."""
    from crawl2serve.assets.training.tracking import metric_rows

    script = tmp_path / "attempt.py"
    script.write_text(ATTEMPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1"]
    command += ["--max-restarts=1", str(script)]
    seen = {}

    @dg.asset
    def trained(context: dg.AssetExecutionContext, pipes: dg.PipesSubprocessClient):
        invocation = pipes.run(context=context, command=command, env={"PYTHONPATH": str(REPO)})
        seen["messages"] = invocation.get_custom_messages()
        return invocation.get_materialize_result()

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([trained], resources={"pipes": dg.PipesSubprocessClient(cwd=str(REPO))}, instance=instance)
    assert result.success
    assert result.asset_materializations_for_node("trained")[0].metadata["steps"].value == 2
    assert [m["step"] for m in seen["messages"]] == [1, 1, 2]
    assert [(r["step"], r["loss"]) for r in metric_rows(seen["messages"])] == [(1, 8.0), (2, 7.0)]
    logs = [r.user_message for r in instance.all_logs(result.run_id)]
    assert "this attempt failed (RuntimeError: node 1 was lost); torchrun restarts it (1 left)" in logs
    assert not [m for m in logs if "closed with exception" in m or "after closed" in m]
