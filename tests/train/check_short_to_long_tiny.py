#!/usr/bin/env python3
"""CI check of the short-to-long pipeline: runs `scripts/experiment short_to_long --scale tiny`
into a fresh folder and checks that every stage finished (the nsa variant too when its recipe
exists; when it does not, that the report marks it missing), that every report file exists and
is not empty, that every number in the evaluation and bench results is finite, that the
attention recall of each evaluation comes from the path it ran (InfLLM-V2's selection, or NSA's
own for nsa) for every layer, and that the attention-core timings ran each variant's path.

  check_short_to_long_tiny.py INFLLM OUT_DIR"""

import json
import math
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/train/..
REPORT_FILES = ["report.md", "switch.png", "loss_by_position.png", "tasks.png", "recall.png",
                "step_time.png", "attention_time.png"]
LAYERS = 2  # the tiny model's (scripts/experiment SCALES["tiny"])
# Evaluation -> the selection its recall must measure; variant -> its attention-core path.
RECALL_SELECTION = {"pretrain-dense": "infllm_v2", "zero-shot": "infllm_v2", "dense": "infllm_v2",
                    "infllmv2": "infllm_v2", "nsa": "nsa"}
CORE_PATH = {"dense": "dense", "infllmv2": "infllm_v2", "nsa": "nsa"}


def numbers(value, path="$"):
    """Yields (path, number) for every number inside a JSON value."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from numbers(v, f"{path}[{i}]")


def check_recall(name, recall):
    """Every layer has a recall from the selection of the path the evaluation ran; the union of
    the keys read one by one holds at least the selected blocks (equal for InfLLM-V2)."""
    problems = []
    want = RECALL_SELECTION.get(name)
    if recall.get("selection") != want:
        problems.append(f"eval/{name}: recall selection {recall.get('selection')!r}, want {want!r}")
    by_layer, union = recall.get("by_layer", []), recall.get("union_by_layer", [])
    if len(by_layer) != LAYERS or len(union) != LAYERS:
        problems.append(f"eval/{name}: recall of {len(by_layer)} / {len(union)} layers, want {LAYERS}")
    for i, (x, u) in enumerate(zip(by_layer, union)):
        if not (0 < x <= 1 + 1e-9 and x - 1e-9 <= u <= 1 + 1e-9):
            problems.append(f"eval/{name}: layer {i} recall {x}, union {u} out of (0, 1]")
        if want == "infllm_v2" and abs(u - x) > 1e-12:
            problems.append(f"eval/{name}: layer {i} union {u} != recall {x} for InfLLM-V2")
    return problems


def check_core(variant, rows):
    """Each length's attention core ran the variant's path and took a positive time."""
    problems = []
    for row in rows:
        if row.get("path") != CORE_PATH.get(variant):
            problems.append(f"bench/attention-{variant}.json: T={row.get('T')} ran path "
                            f"{row.get('path')!r}, want {CORE_PATH.get(variant)!r}")
        for key in ("forward_ms", "forward_backward_ms"):
            if not row.get(key, 0) > 0:
                problems.append(f"bench/attention-{variant}.json: T={row.get('T')} {key} = "
                                f"{row.get(key)}")
    return problems


def main():
    infllm, out = sys.argv[1], sys.argv[2]
    shutil.rmtree(out, ignore_errors=True)
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "experiment"),
                             "short_to_long", "--scale", "tiny", "--out", out, "--infllm", infllm])
    problems = []
    if result.returncode != 0:
        problems.append(f"scripts/experiment exited {result.returncode}")
    has_nsa = os.path.exists(os.path.join(REPO, "recipes/experiments/short_to_long/nsa.yaml"))
    stages = ["pretrain", "dense", "infllmv2", "eval-pretrain-dense", "eval-zero-shot",
              "eval-dense", "eval-infllmv2", "bench-dense", "bench-infllmv2", "attention-dense",
              "attention-infllmv2"]
    nsa_stages = ["nsa", "eval-nsa", "bench-nsa", "attention-nsa"]
    for stage in stages + (nsa_stages if has_nsa else []):
        if not os.path.exists(os.path.join(out, "stages", f"{stage}.done")):
            problems.append(f"stage {stage} did not finish (see {out}/logs)")
    for name in REPORT_FILES:
        path = os.path.join(out, "report", name)
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            problems.append(f"report file {name} is missing or empty")
    report = os.path.join(out, "report", "report.md")
    if not has_nsa and os.path.exists(report) and "Variant `nsa` is missing" not in open(report).read():
        problems.append("nsa.yaml does not exist but the report does not mark nsa missing")
    for folder in ("eval", "bench"):
        for name in sorted(os.listdir(os.path.join(out, folder))):
            data = json.load(open(os.path.join(out, folder, name)))
            for path, x in numbers(data):
                if not math.isfinite(x):
                    problems.append(f"{folder}/{name}: {path} = {x}")
            if folder == "bench" and any("error" in row for row in data):
                problems.append(f"bench/{name}: a length failed: {data}")
            if folder == "eval":
                problems += check_recall(name[:-len(".json")], data["recall"])
            if folder == "bench" and name.startswith("attention-"):
                problems += check_core(name[len("attention-"):-len(".json")], data)
    for run in ["pretrain", "dense", "infllmv2"] + (["nsa"] if has_nsa else []):
        path = os.path.join(out, "runs", run, "metrics.jsonl")
        for line in open(path) if os.path.exists(path) else []:
            row = json.loads(line)
            if "loss" in row and (row["loss"] is None or not math.isfinite(row["loss"])):
                problems.append(f"runs/{run}: non-finite loss at step {row['step']}")
    for problem in problems:
        print("FAIL:", problem)
    print(f"{0 if problems else 1} passed, {1 if problems else 0} failed")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
