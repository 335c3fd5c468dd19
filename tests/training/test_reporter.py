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
