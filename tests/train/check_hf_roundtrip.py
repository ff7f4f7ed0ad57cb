#!/usr/bin/env python3
"""Hugging Face interop against real transformers (CPU, f32), both directions:

(a) a random tiny LlamaForCausalLM made by transformers (tied and untied, GQA, norm weights
    randomized so that a swapped tensor shows) is saved, read by `infllm logits hf:DIR` and by
    `infllm import` + `infllm logits CKPT`; the logits of every position must match
    transformers' own;
(b) a checkpoint trained for a few CPU steps (tests/train/recipes/tiny.yaml) is exported with
    `infllm export`, loaded by AutoModelForCausalLM with no custom code, and its logits compared
    with `infllm logits CKPT --attention dense`.

RoPE's layout (rotate-half vs interleaved) is what this checks that our own round trip cannot.
Exits 77 (ctest: skipped) when torch or transformers is not importable.

  check_hf_roundtrip.py INFLLM WORK_DIR"""

import json
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOLERANCE = 2e-4  # f32 on both sides; differences come from summation order only

try:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
except ImportError as error:
    print(f"check_hf_roundtrip: skipped, {error}")
    sys.exit(77)


def run(*args):
    result = subprocess.run(list(args), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"FAILED: {' '.join(args)}\n{result.stdout}\n{result.stderr}")
    return result


def ours(infllm, model, tokens, work, extra=()):
    out = os.path.join(work, "logits.json")
    run(infllm, "logits", model, "--tokens", ",".join(map(str, tokens)), "--json", out, *extra)
    with open(out) as f:
        return torch.tensor(json.load(f)["logits"], dtype=torch.float32)


def theirs(model, tokens):
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float()


def compare(what, a, b):
    diff = (a - b).abs().max().item()
    scale = b.abs().max().item()
    print(f"{what}: max |ours - transformers| = {diff:.3g} (logits up to {scale:.3g})")
    if not diff <= TOLERANCE * max(1.0, scale):
        sys.exit(f"FAILED: {what}: logits differ by {diff}")


def hf_to_infllm(infllm, work):
    for tied in (False, True):
        torch.manual_seed(1 + tied)
        config = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             rms_norm_eps=1e-5, rope_theta=50000.0, tie_word_embeddings=tied,
                             max_position_embeddings=256)
        model = LlamaForCausalLM(config).float().eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                # Larger than the 0.02 init, and norms off 1, so a wrong layout moves the logits.
                p.copy_(torch.randn_like(p) * (0.3 if "norm" not in name else 0.5) +
                        (1.0 if "norm" in name else 0.0))
        folder = os.path.join(work, f"hf_tied{int(tied)}")
        model.save_pretrained(folder, safe_serialization=True)
        tokens = [int(t) for t in torch.randint(0, 300, (37,))]
        expected = theirs(model, tokens)
        compare(f"(a) hf:{os.path.basename(folder)}", ours(infllm, "hf:" + folder, tokens, work,
                                                          ["--attention", "dense"]), expected)
        ckpt = os.path.join(work, f"imported_tied{int(tied)}.h5")
        run(infllm, "import", folder, "-o", ckpt)
        compare(f"(a) import -> {os.path.basename(ckpt)}",
                ours(infllm, ckpt, tokens, work, ["--attention", "dense"]), expected)


def infllm_to_hf(infllm, work):
    run_dir = os.path.join(work, "tiny_run")
    run(infllm, "train", os.path.join(REPO, "tests/train/recipes/tiny.yaml"), "train.steps=4",
        f"train.out_dir={run_dir}", "checkpoint.every=4", "train.eval_every=0")
    ckpt = os.path.join(run_dir, "checkpoints", "latest")
    exported = os.path.join(work, "exported")
    run(infllm, "export", ckpt, "-o", exported)
    model = AutoModelForCausalLM.from_pretrained(exported, torch_dtype=torch.float32).eval()
    tokens = list(b"The quick brown fox jumps over the lazy dog, twice.")
    compare("(b) export -> transformers", ours(infllm, ckpt, tokens, work, ["--attention", "dense"]),
            theirs(model, tokens))
    with open(os.path.join(exported, "config.json")) as f:
        assert "infllm_attention" in json.load(f), "config.json lacks infllm_attention"


def main():
    infllm, work = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    hf_to_infllm(infllm, work)
    infllm_to_hf(infllm, work)
    print("check_hf_roundtrip: OK")


if __name__ == "__main__":
    main()
