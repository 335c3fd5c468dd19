"""Kubernetes settings per stage: what each step's pod asks for when a run executes on a cluster.

Dagster reads a ``dagster-k8s/config`` dict (container, pod spec, pod metadata, job spec; snake_case keys as in
the ``kubernetes`` Python client) from three places: the job's tags (the run pod, started by the
``K8sRunLauncher``), each op's tags (a step pod of the ``k8s_job_executor``), and the executor's own config
(``step_k8s_config`` for every step, ``per_step_k8s_config`` by op name). The assets carry no Kubernetes tags:
this module holds all of it, keyed by op name, and hands it to the executor, so the asset code stays the same on
one machine and on a cluster.

How a production ``Definitions`` applies it (``CRAWL2SERVE_ENV=production``)::

    from crawl2serve.pipelines.k8s import RUN_POD_TAGS, k8s_executor

    main = dg.define_asset_job("main", selection=LINEAGE, partitions_def=crawl_partitions,
                               tags=RUN_POD_TAGS)                       # the run pod: a small orchestrator
    defs = dg.Definitions(assets=crawl2serve.definitions.defs.assets, jobs=[main, rollback_model], schedules=schedules,
                          resources=build_resources("production"),
                          executor=k8s_executor())                      # one pod per step, sized per stage

(``main`` there without embedded.yaml's run config: its ``documentation`` corpus profile is for the pydoc site.)
Each step then runs in its own pod (``STEP_PODS``): crawl, corpus and feature steps on CPU nodes with the
requests below, ``model_evaluation`` on a GPU node. ``lora_adapter`` itself is a small pod: with
``TrainingLauncher(mode="k8s")`` it starts the trainer as a separate GPU pod through Pipes (sized by the
launcher's own ``gpus``/``cpu``/``memory``; with ``nnodes`` > 1 that pod is node 0 and an Indexed Job runs the
other nodes, assets/training/multinode.py); pass ``trainer_in_step_pod=True`` when the launcher runs torchrun
inside the step pod instead (``mode="local"``), and the step pod gets the GPUs. Volumes, env ConfigMaps and
Secrets come from the code location's Helm values (``includeConfigInLaunchedRuns``), not from here.
"""

import copy
from collections.abc import Mapping

from crawl2serve.serving.k8s import GPU_TOLERATIONS

K8S_CONFIG_TAG = "dagster-k8s/config"
POD_LABEL = "crawl2serve/pod"  # the pod kind below: crawl, corpus, ..., gpu
JOB_TTL_S = 24 * 3600  # finished step Jobs (and their pods, with their logs) are kept a day


def pod_config(
    kind: str, *, cpu: str, memory: str, gpus: int = 0, node_selector: Mapping[str, str] | None = None, tolerations=None
) -> dict:
    """A ``dagster-k8s/config`` dict: CPU/memory requests (memory also as the limit: a step over it is
    OOM-killed rather than starving its node), ``gpus`` as ``nvidia.com/gpu`` requests and limits, the pod kind
    as a label, and GPU placement."""
    requests = {"cpu": cpu, "memory": memory}
    limits = {"memory": memory}
    if gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(gpus)
    config: dict = {
        "container_config": {"resources": {"requests": requests, "limits": limits}},
        "pod_template_spec_metadata": {"labels": {POD_LABEL: kind}},
        "job_spec_config": {"ttl_seconds_after_finished": JOB_TTL_S},
    }
    pod_spec = {}
    if node_selector:
        pod_spec["node_selector"] = dict(node_selector)
    if gpus:
        pod_spec["tolerations"] = [dict(t) for t in (GPU_TOLERATIONS if tolerations is None else tolerations)]
    if pod_spec:
        config["pod_spec_config"] = pod_spec
    return config


# Pod kinds. The crawl is I/O-bound (async fetches); extraction, filtering and MinHash dedup hold a crawl day in
# memory; tokenizer training, the base model and dataset packing want memory; the Pipes launcher of the trainer
# only waits; registering loads the adapter; the serving step merges the anchor model on CPU; monitoring reads an
# hour of logs and runs Evidently.
POD_CONFIGS: dict[str, dict] = {
    "crawl": pod_config("crawl", cpu="1", memory="2Gi"),
    "corpus": pod_config("corpus", cpu="4", memory="16Gi"),
    "features": pod_config("features", cpu="2", memory="8Gi"),
    "training": pod_config("training", cpu="4", memory="32Gi"),
    "launcher": pod_config("launcher", cpu="500m", memory="2Gi"),
    "gpu": pod_config("gpu", cpu="8", memory="64Gi", gpus=1),
    "release": pod_config("release", cpu="2", memory="16Gi"),
    "serving": pod_config("serving", cpu="4", memory="32Gi"),
    "monitoring": pod_config("monitoring", cpu="2", memory="8Gi"),
}
CPU_POD_CONFIG = POD_CONFIGS["corpus"]
GPU_POD_CONFIG = POD_CONFIGS["gpu"]
DEFAULT_STEP_CONFIG = pod_config("other", cpu="1", memory="4Gi")

# The same dicts as op/job tags, for code that tags its own ops: ``@dg.asset(op_tags=CPU_POD_TAGS)``.
CPU_POD_TAGS = {K8S_CONFIG_TAG: CPU_POD_CONFIG}
GPU_POD_TAGS = {K8S_CONFIG_TAG: GPU_POD_CONFIG}
# The run pod only orchestrates (the k8s_job_executor starts one pod per step): a small one.
RUN_POD_TAGS = {
    K8S_CONFIG_TAG: {
        "container_config": {"resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}},
        "pod_template_spec_metadata": {"labels": {POD_LABEL: "run"}},
    }
}

# Op name -> pod kind (tests/deploy checks that every op of the code location has one).
STEP_PODS: dict[str, str] = {
    "raw_crawl": "crawl",
    "extracted_pages": "corpus",
    "clean_documents": "corpus",
    "deduplicated_documents": "corpus",
    "document_features": "features",
    "feast_registry": "features",
    "feast_online_store": "features",
    "tokenizer": "training",
    "base_model": "training",
    "training_dataset": "training",
    "lora_adapter": "launcher",
    "model_evaluation": "gpu",
    "registered_model": "release",
    "sglang_deployment": "serving",
    "inference_log": "monitoring",
    "drift_report": "monitoring",
    "shadow_report": "monitoring",
    "ab_report": "monitoring",
    "batch_generations": "launcher",  # sends the prompt set to the serving engines and waits: HTTP only
    "retrieval_index": "corpus",  # chunks, BM25 and the embedder over every crawl's documents
    "retrieval_eval": "features",
    "served_retrieval_index": "launcher",  # switches live.json (or the server's alias): a pointer
}


def k8s_executor_config(
    *,
    trainer_in_step_pod: bool = False,
    gpus: int = 1,
    gpu_node_selector: Mapping[str, str] | None = None,
    job_namespace: str | None = None,
    max_concurrent: int | None = 4,
) -> dict:
    """Config of ``dagster_k8s.k8s_job_executor``: a default pod for every step and a per-op pod by stage.

    ``gpus``/``gpu_node_selector``: the GPU steps' pods (``model_evaluation``, and ``lora_adapter`` with
    ``trainer_in_step_pod``). ``job_namespace``: default, the run launcher's. ``max_concurrent``: step pods of one
    run at a time (a crawl day's corpus steps are a chain; this bounds fan-out when several partitions run).
    """
    gpu = pod_config("gpu", cpu="8", memory="64Gi", gpus=gpus, node_selector=gpu_node_selector)
    per_step = {}
    for op, kind in STEP_PODS.items():
        if kind == "gpu" or (op == "lora_adapter" and trainer_in_step_pod):
            per_step[op] = copy.deepcopy(gpu)
        else:
            per_step[op] = copy.deepcopy(POD_CONFIGS[kind])
    config: dict = {"step_k8s_config": copy.deepcopy(DEFAULT_STEP_CONFIG), "per_step_k8s_config": per_step}
    if job_namespace:
        config["job_namespace"] = job_namespace
    if max_concurrent:
        config["max_concurrent"] = max_concurrent
    return config


def k8s_executor(**kwargs):
    """``k8s_job_executor`` configured with :func:`k8s_executor_config` (``kwargs`` go to it)."""
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(k8s_executor_config(**kwargs), name="k8s_per_stage")
