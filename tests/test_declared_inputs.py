"""Every data edge is a dependency edge: each asset, materialized on its own under a Python audit hook, opens files
under the data root only in its own folder or in the folders of its parents in the asset graph.

The lineage runs one asset at a time in topological order (a small crawl, a 2-step LoRA), from ``raw_crawl`` to
``registered_model``, then the monitoring assets (``inference_log``, ``drift_report``, ``shadow_report``, ``ab_report``) on an hour of gateway spool written here.
``sglang_deployment`` is left out: it starts an engine (tests/test_lineage.py serves one) and reads the registry,
not the data root; so is ``batch_generations``, which needs that engine (tests/serving/test_batch_generations.py). The hook sees ``open`` (Python file opens: JSON, tokenizers, model configs), directory
listings and globs, and ``DataRoot.read_parquet`` (polars reads a local file natively, without an ``open``
event); folders under the data root that no asset owns belong to resources (MLflow, Feast).
"""

import ast
import json
import sys
from pathlib import Path

import dagster as dg
import pytest

from crawl2serve.assets.partitions import monitoring_partitions
from crawl2serve.definitions import defs as loaded
from crawl2serve.resources.serving import ServingEngine
from crawl2serve.resources.storage import READ_EVENT
from crawl2serve.resources.tracking import MlflowTracking
from crawl2serve.resources.training import TrainingLauncher
from tests.monitoring.monitoring_traffic import log_frame
from tests.support import PARTITION, UNDERTRAINED_DEGENERATE_SHARE, all_resources, run_config

HOUR = "2026-11-23-06:00"  # log_frame's timestamps
SPOOL_HOUR = "2026-11-23T06"
RESOURCE_FOLDERS = {"mlflow", "feast"}  # MlflowTracking's store and FeastStore's repo (registry, online, offline)
SKIPPED = {"sglang_deployment", "batch_generations"}
EVENTS = {"open", "os.scandir", "os.listdir", "glob.glob", READ_EVENT}
ASSET_MODULES = Path(__file__).resolve().parents[1] / "assets"


class Recorder:
    """Paths under ``root`` that audit events name while ``asset`` runs."""

    def __init__(self, root: Path):
        self.root = str(root)
        self.asset: str | None = None
        self.seen: dict[str, set[str]] = {}
        self.steps: dict[str, list[str]] = {}  # the asset a step is recorded under -> every asset the step makes

    def __call__(self, event: str, args: tuple) -> None:
        if self.asset is None or event not in EVENTS or not args:
            return
        path = args[0]
        if isinstance(path, bytes):
            path = path.decode(errors="replace")
        if not isinstance(path, str) or not path.startswith(self.root):
            return
        self.seen.setdefault(self.asset, set()).add(path[len(self.root) :].lstrip("/"))


_recorder: list[Recorder] = []  # audit hooks cannot be removed: one hook per process, pointing at the active recorder


def _hook(event: str, args: tuple) -> None:
    if _recorder:
        _recorder[-1](event, args)


def _owner(relative: str, assets: set[str]) -> str | None:
    top = relative.split("/", 1)[0]
    return top if top in assets else None


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("audited")
    res = all_resources(root)
    res.update(
        training_launcher=TrainingLauncher(mode="local", nproc_per_node=1),
        mlflow_tracking=MlflowTracking(data_root=res["data_root"]),
        serving_engine=ServingEngine(data_root=res["data_root"], feast_store=res["feast_store"], backend="cpu"),
    )
    spool = Path(res["serving_engine"].gateway_settings().log_dir) / SPOOL_HOUR
    spool.mkdir(parents=True)
    prompts = [f"The json module can serialize object number {i} to a string." for i in range(20)]
    (spool / "gateway.jsonl").write_text(
        "".join(json.dumps(r, default=lambda t: t.isoformat()) + "\n" for r in log_frame(prompts).to_dicts())
    )
    config = run_config(40)
    config["ops"].update(
        training_dataset={"config": {"seq_len": 64}},
        lora_adapter={"config": {"max_steps": 2, "eval_every": 2, "checkpoint_every": 100, "learning_rate": 5e-3}},
        model_evaluation={
            "config": {
                "max_sequences": 4,
                "max_new_tokens": 4,
                "min_improvement": -1.0,
                "max_degenerate_share": UNDERTRAINED_DEGENERATE_SHARE,
            }
        },
    )
    graph = loaded.resolve_asset_graph()
    steps = []  # one step per asset definition (a multi-asset's tables come from one computation), in graph order
    for key in graph.toposorted_asset_keys:
        keys = sorted(graph.get(key).assets_def.keys, key=lambda k: k.to_user_string())
        if key.to_user_string() not in SKIPPED and keys not in steps:
            steps.append(keys)
    recorder = Recorder(root)
    if not _recorder:
        sys.addaudithook(_hook)
    _recorder.append(recorder)
    instance = dg.DagsterInstance.ephemeral()
    results = {}
    try:
        for keys in steps:
            names = [k.to_user_string() for k in keys]
            partitioned = graph.get(keys[0]).partitions_def is not None
            monitoring = graph.get(keys[0]).partitions_def == monitoring_partitions
            recorder.asset = names[0]
            result = dg.materialize(
                loaded.assets,
                selection=keys,
                resources=res,
                instance=instance,
                partition_key=(HOUR if monitoring else PARTITION) if partitioned else None,
                run_config={"ops": {k: v for k, v in config["ops"].items() if k in names}},
                raise_on_error=False,
            )
            recorder.asset = None
            results.update(dict.fromkeys(names, result))
            recorder.steps[names[0]] = names
    finally:
        _recorder.remove(recorder)
    return graph, recorder, results


def test_every_asset_of_the_lineage_materializes_one_at_a_time(audited):
    graph, _, results = audited
    failed = [name for name, r in results.items() if not r.success]
    assert not failed
    assert set(results) == {k.to_user_string() for k in graph.get_all_asset_keys()} - SKIPPED


def test_each_asset_opens_only_its_own_and_its_parents_files(audited):
    graph, recorder, _ = audited
    assets = {k.to_user_string() for k in graph.get_all_asset_keys()}
    undeclared, unowned = {}, set()
    for name, paths in recorder.seen.items():
        made = recorder.steps[name]
        allowed = {*made} | {p.to_user_string() for m in made for p in graph.get(dg.AssetKey(m)).parent_keys}
        for path in paths:
            owner = _owner(path, assets)
            if owner is None:
                unowned.add(path.split("/", 1)[0])
            elif owner not in allowed:
                undeclared.setdefault(name, set()).add(path)
    assert not undeclared, {k: sorted(v)[:5] for k, v in undeclared.items()}
    assert unowned <= RESOURCE_FOLDERS | {""}, unowned
    # the hook saw the inputs at all: the folders each consumer loads
    assert any(p.startswith("tokenizer/") for p in recorder.seen["drift_report"])
    assert any(p.startswith("deduplicated_documents/") for p in recorder.seen["drift_report"])
    assert any(p.startswith("base_model/") for p in recorder.seen["model_evaluation"])


def _other_asset_paths(tree: ast.AST, own: set[str], assets: set[str]) -> list[str]:
    """``*.path("<asset>", ...)`` calls in a module that name an asset it does not define."""
    return [
        f"line {node.lineno}: path({node.args[0].value!r})"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "path"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value in assets - own
    ]


def test_no_asset_module_names_another_assets_folder():
    """The static companion: no ``data_root.path("<other asset>")`` in the asset modules."""
    graph = loaded.resolve_asset_graph()
    assets = {k.to_user_string() for k in graph.get_all_asset_keys()}
    defined: dict[str, set[str]] = {}
    for key in graph.get_all_asset_keys():
        module = sys.modules[graph.get(key).assets_def.op.compute_fn.decorated_fn.__module__]
        defined.setdefault(module.__file__, set()).add(key.to_user_string())
    found = {}
    for module in ASSET_MODULES.rglob("*.py"):
        hits = _other_asset_paths(ast.parse(module.read_text()), defined.get(str(module), set()), assets)
        if hits:
            found[str(module.relative_to(ASSET_MODULES))] = hits
    assert not found
