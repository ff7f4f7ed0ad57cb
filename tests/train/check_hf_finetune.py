#!/usr/bin/env python3
"""A finetune that starts from a model someone else made, end to end, in dense and sparse mode:

1. transformers makes a random LlamaForCausalLM (GQA, untied head, RoPE theta 5e5) and a
   byte-level BPE tokenizer trained here by the `tokenizers` library, saved as one folder the
   way a model hub hands it out (safetensors, config.json, tokenizer.json,
   tokenizer_config.json);
2. scripts/prepare-hf tokenizes the repository's own docs with that tokenizer;
3. `infllm train ... train.init_from=hf:DIR` finetunes it twice, `attention.mode=dense` and
   `attention.mode=sparse` (selection settings that leave most blocks out at this length): every
   loss must be finite, the metrics must say which attention ran, and the loss must fall;
4. both runs start from the same weights, so their first losses must be close (the switch
   InfLLM-V2 is about: the sparse path needs no new parameters);
5. the sparse finetune is exported (`infllm export`), loaded by transformers with no custom code,
   and its logits compared with `infllm logits --attention dense` on the same tokens.

--scale cpu (the test: head_dim 16, T 512, CPU) or gpu (head_dim 64, T 8192, bf16 on the GPU;
run on a GPU host as `check_hf_finetune.py build-gpu/infllm WORK --scale gpu`). Prints one
summary line per run. Exits 77 (ctest: skipped) when torch, transformers or tokenizers is
missing.

  check_hf_finetune.py INFLLM WORK_DIR [--scale cpu|gpu]"""

import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
    import h5py  # noqa: F401  (prepare-hf needs it)
except ImportError as error:
    print(f"check_hf_finetune: skipped, {error}")
    sys.exit(77)

# Model, data and selection shapes per scale. The sparse settings choose topk of the
# T / block_size blocks (init block + window + the chosen rest), so most keys are left out.
SCALES = {
    "cpu": dict(vocab=512, d_model=64, layers=2, heads=4, kv_heads=2, ffn=128, seq_len=512,
                batch=2, steps=24, lr=3e-3, device="cpu", precision="f32",
                sparse=dict(kernel_size=16, kernel_stride=8, block_size=32, init_blocks=1,
                            window_size=64, topk=6),
                logits_tolerance=2e-4),
    "gpu": dict(vocab=2048, d_model=512, layers=4, heads=8, kv_heads=2, ffn=1408, seq_len=8192,
                batch=2, steps=40, lr=2e-3, device="cuda", precision="bf16",
                sparse=dict(kernel_size=32, kernel_stride=16, block_size=64, init_blocks=1,
                            window_size=1024, topk=32),
                # bf16 activations on our side, f32 in transformers
                logits_tolerance=5e-2),
}


def run(*args):
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                            errors="replace")
    if result.returncode != 0:
        sys.exit(f"FAILED: {' '.join(map(str, args))}\n{result.stdout[-3000:]}\n"
                 f"{result.stderr[-3000:]}")
    return result


def corpus_files():
    files = sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
    files += [os.path.join(REPO, "README.md")]
    return files


def make_model_folder(folder, s):
    """A random Llama and a BPE tokenizer trained on the docs, saved as a hub folder."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=s["vocab"], special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train(corpus_files(), trainer)
    vocab = tokenizer.get_vocab_size()
    torch.manual_seed(7)
    config = LlamaConfig(vocab_size=vocab, hidden_size=s["d_model"],
                         intermediate_size=s["ffn"], num_hidden_layers=s["layers"],
                         num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
                         rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
                         max_position_embeddings=s["seq_len"], bos_token_id=0, eos_token_id=1)
    LlamaForCausalLM(config).float().save_pretrained(folder, safe_serialization=True)
    tokenizer.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>"}, f)
    return vocab


def write_recipe(path, s, vocab, data, mode, out_dir, folder):
    """The run's recipe: the model section as config.json says, the attention `mode`."""
    sparse = "\n".join(f"  {k}: {v}" for k, v in s["sparse"].items())
    text = f"""model:
  vocab_size: {vocab}
  d_model: {s['d_model']}
  n_layers: {s['layers']}
  n_heads: {s['heads']}
  n_kv_heads: {s['kv_heads']}
  ffn_hidden: {s['ffn']}
  rope_theta: 500000.0
attention:
  mode: {mode}
  dense_len: 0
{sparse}
data:
  train: {data}
  seq_len: {s['seq_len']}
  batch_size: {s['batch']}
optim:
  lr: {s['lr']}
schedule:
  kind: constant
  warmup_steps: 2
train:
  device: {s['device']}
  precision: {s['precision']}
  steps: {s['steps']}
  out_dir: {out_dir}
  init_from: hf:{folder}
  eval_every: 0
checkpoint:
  every: {s['steps']}
log:
  every: 1
  progress: false
"""
    with open(path, "w") as f:
        f.write(text)


def finetune(infllm, work, s, vocab, data, folder, mode):
    out_dir = os.path.join(work, f"run_{mode}")
    recipe = os.path.join(work, f"finetune_{mode}.yaml")
    write_recipe(recipe, s, vocab, data, mode, out_dir, folder)
    run(infllm, "train", recipe, "--overwrite")
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if '"loss"' in line]
    steps = [r for r in rows if "step" in r and "attention" in r]
    if len(steps) != s["steps"]:
        sys.exit(f"FAILED: {mode}: {len(steps)} step records in metrics.jsonl, expected "
                 f"{s['steps']}")
    losses = [r["loss"] for r in steps]
    if not all(math.isfinite(x) for x in losses):
        sys.exit(f"FAILED: {mode}: a non-finite loss: {losses}")
    ran = {r["attention"] for r in steps}
    if ran != {mode}:
        sys.exit(f"FAILED: {mode}: metrics.jsonl says the attention was {sorted(ran)}")
    first, last = losses[0], sum(losses[-4:]) / len(losses[-4:])
    tokens_per_s = sum(r["tokens_per_s"] for r in steps[1:]) / max(1, len(steps) - 1)
    print(f"{mode:6s} finetune from hf: loss {first:.3f} -> {last:.3f} (mean of the last 4 of "
          f"{len(losses)} steps), {tokens_per_s:,.0f} tokens/s")
    # A random model starts near ln(vocab); a few steps on real text learn at least its token
    # frequencies, which is well over half a nat at these vocabularies.
    if not last < first - 0.5:
        sys.exit(f"FAILED: {mode}: the loss did not fall: {losses}")
    return losses, os.path.join(out_dir, "checkpoints", "latest")


def check_export(infllm, work, s, checkpoint):
    exported = os.path.join(work, "exported")
    run(infllm, "export", checkpoint, "-o", exported)
    model = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    tokens = [int(t) for t in torch.randint(2, s["vocab"], (61,), generator=torch.Generator()
                                             .manual_seed(3))]
    out = os.path.join(work, "logits.json")
    run(infllm, "logits", checkpoint, "--tokens", ",".join(map(str, tokens)), "--json", out,
        "--attention", "dense")
    with open(out) as f:
        ours = torch.tensor(json.load(f)["logits"], dtype=torch.float32)
    with torch.no_grad():
        theirs = model(torch.tensor([tokens])).logits[0].float()
    diff = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    print(f"export of the sparse finetune -> transformers: max |ours - theirs| = {diff:.3g} "
          f"(logits up to {scale:.3g})")
    if not diff <= s["logits_tolerance"] * max(1.0, scale):
        sys.exit(f"FAILED: exported logits differ by {diff}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("infllm")
    parser.add_argument("work")
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    args = parser.parse_args()
    s = SCALES[args.scale]
    infllm, work = os.path.abspath(args.infllm), os.path.abspath(args.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    torch.set_num_threads(2)

    folder = os.path.join(work, "hf_model")
    vocab = make_model_folder(folder, s)
    data = os.path.join(work, "docs.h5")
    run(sys.executable, os.path.join(REPO, "scripts", "prepare-hf"), "--tokenizer", folder,
        "-o", data, "--val-docs", "1", "--quiet", *corpus_files())

    dense, _ = finetune(infllm, work, s, vocab, data, folder, "dense")
    sparse, checkpoint = finetune(infllm, work, s, vocab, data, folder, "sparse")
    # Same weights, same first batch: the sparse path leaves out keys that a random model
    # attends to almost uniformly, which moves the loss by little at step 1.
    print(f"step 1 loss: dense {dense[0]:.4f}, sparse {sparse[0]:.4f}")
    if not abs(dense[0] - sparse[0]) < 0.05 * dense[0]:
        sys.exit(f"FAILED: the first losses differ: dense {dense[0]}, sparse {sparse[0]}")
    check_export(infllm, work, s, checkpoint)
    print("check_hf_finetune: OK")


if __name__ == "__main__":
    main()
