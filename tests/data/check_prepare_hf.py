#!/usr/bin/env python3
"""Hugging Face tokenizers end to end, against the `tokenizers` library itself:

(a) scripts/prepare-hf with two tokenizers the test trains - byte-level BPE (GPT-2/Llama-3
    style) and SentencePiece-style BPE with byte fallback (Llama-2/Mistral style) - writes
    token files that the C++ reader validates (decode_token_file), whose ids are the library's
    own encoding wrapped in the model's BOS/EOS, whose documents fall into the same splits as
    `infllm prepare` puts them, and which data::HfTokenizer decodes to exactly the library's
    decode (and the original text);
(b) `infllm train` runs 2 steps on such a file (model.vocab_size >= the tokenizer's);
(c) tokenizer files travel: export --tokenizer DIR, import (sidecar), export of the imported
    checkpoint, of a finetune from hf:DIR and of one from the imported checkpoint all hand back
    the same files; a finetune on data of another tokenizer is refused before step 1;
(d) the byte tokenizer's exported tokenizer.json encodes text to exactly our byte ids (with
    transformers' AutoTokenizer too, where transformers is installed);
(e) `infllm generate --prompt-ids` decodes with the imported tokenizer; --prompt is refused.

Exits 77 (ctest: skipped) when tokenizers, h5py or numpy is not importable.

  check_prepare_hf.py INFLLM DECODE_TOKEN_FILE WORK_DIR"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREPARE_HF = os.path.join(REPO, "scripts", "prepare-hf")
TINY = os.path.join(REPO, "tests", "train", "recipes", "tiny.yaml")

try:
    import h5py  # noqa: F401  (prepare-hf needs it)
    import numpy  # noqa: F401
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
except ImportError as error:
    print(f"check_prepare_hf: skipped, {error} (pip install tokenizers h5py)")
    sys.exit(77)

TEXTS = {
    "a/01.txt": "The quick brown fox jumps over the lazy dog.\nSecond line, with  two spaces.",
    "a/02.txt": " Leading space, trailing space \n\n\ttabbed line",
    "a/sub/03.txt": "Accents: café, naïve, Übermaß. Greek: αβγδ. Cyrillic: привет.",
    "a/sub/04.txt": "CJK 中文字符 and emoji 😀🚀 mixed with text 👍🏽.",
    "a-b/05.txt": "Literal special names: <s> </s> <|begin_of_text|> <|end_of_text|> <0x41>",
    "a-b/06.txt": "Numbers 1234567890 and symbols !@#$%^&*()_+-=[]{};':\",./<>?",
    "c.txt": "A single file given directly. " * 20,
}
UNSEEN = {"a/sub/unseen.txt": "Characters no tokenizer was trained on: ☃ 🦀 ∮ ẞ."}
FILLER = ("Long-context models read whole books; sparse attention picks the blocks that "
          "matter. ") * 12


def run(*args, expect_fail=False):
    # errors="replace": generate streams the bytes of each token, a random model's need not
    # form UTF-8.
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                            errors="replace")
    if (result.returncode != 0) != expect_fail:
        sys.exit(f"FAILED ({'no error' if expect_fail else result.returncode}): "
                 f"{' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}")
    return result


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def write_corpus(root):
    for i in range(12):  # enough tokens for seq_len 64 windows
        TEXTS[f"a/filler/{i:02d}.txt"] = f"Filler document {i}. " + FILLER
    for name, text in {**TEXTS, **UNSEEN}.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    open(os.path.join(root, "a", "empty.txt"), "w").close()
    return [os.path.join(root, "a"), os.path.join(root, "a-b"), os.path.join(root, "c.txt")]


def byte_level_tokenizer(folder, corpus):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|begin_of_text|>", "<|end_of_text|>"]))
    os.makedirs(folder)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>",
                   "eos_token": {"content": "<|end_of_text|>", "special": True}}, f)
    ids = {"bos_token_id": tok.token_to_id("<|begin_of_text|>"),
           "eos_token_id": [tok.token_to_id("<|end_of_text|>")]}
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump(ids, f)
    return Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))


def sentencepiece_tokenizer(folder, corpus):
    """transformers' conversion of Llama-2's tokenizer, trained small: characters outside its
    alphabet (UNSEEN's, and rare ones) come out as <0xNN> byte tokens."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                           normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=500, limit_alphabet=60, special_tokens=["<unk>", "<s>", "</s>"]))
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):  # byte tokens are ordinary vocabulary entries, as in Llama-2
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    os.makedirs(folder)
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=True)  # \uXXXX escapes, surrogate pairs: C++ must cope
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>"}, f)
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    check(any(t.startswith("<0x") for t in tok.encode(UNSEEN["a/sub/unseen.txt"]).tokens),
          "sentencepiece-style tokenizer falls back to byte tokens")
    return tok


def sha_name(path):
    with open(path, "rb") as f:
        return "hf-tokenizer:" + hashlib.sha256(f.read()).hexdigest()[:16]


def decode_cpp(decoder, folder, token_file):
    out = run(decoder, os.path.join(folder, "tokenizer.json"), token_file).stdout
    return json.loads(out)


def byte_split_texts(token_file):
    """The documents of an `infllm prepare` (byte) file, as text."""
    import h5py
    with h5py.File(token_file) as f:
        tokens, offsets = f["tokens"][:], list(f["doc_offsets"][:]) + [f["tokens"].shape[0]]
    return [bytes(int(t) for t in tokens[a:b] if t < 256).decode("utf-8")
            for a, b in zip(offsets, offsets[1:])]


def prepare_and_check(kind, tok, folder, inputs, infllm, decoder, work):
    out = os.path.join(work, f"{kind}.h5")
    result = run(PREPARE_HF, "--tokenizer", folder, "-o", out, "--val-docs", "3", "--quiet",
                 *inputs)
    print(result.stdout.strip())
    tok.encode_special_tokens = True  # as prepare-hf: text that spells a special is text
    name = sha_name(os.path.join(folder, "tokenizer.json"))
    vocab_size = max(tok.get_vocab(with_added_tokens=True).values()) + 1
    bos = tok.token_to_id("<|begin_of_text|>" if kind == "bytelevel" else "<s>")
    eos = tok.token_to_id("<|end_of_text|>" if kind == "bytelevel" else "</s>")
    # infllm prepare (byte tokenizer) on the same inputs: the same documents in each split.
    byte_out = os.path.join(work, f"{kind}-byte.h5")
    run(infllm, "prepare", "-o", byte_out, "--val-docs", "3", "--quiet", *inputs)
    for split, byte_split in ((out, byte_out), (out.replace(".h5", ".val.h5"),
                                                byte_out.replace(".h5", ".val.h5"))):
        result = decode_cpp(decoder, folder, split)
        check(result["file_tokenizer"] == name == result["tokenizer_id"],
              f"{kind}: {os.path.basename(split)} names the tokenizer {name} (C++ agrees)")
        check(result["file_vocab_size"] == vocab_size,
              f"{kind}: vocab_size attribute {result['file_vocab_size']} == {vocab_size}")
        texts = byte_split_texts(byte_split)
        docs = result["documents"]
        check(len(docs) == len(texts), f"{kind}: {len(docs)} documents, as infllm prepare")
        for doc, text in zip(docs, texts):
            ids = doc["ids"]
            expected = [bos] + tok.encode(text, add_special_tokens=False).ids + [eos]
            if ids != expected:
                sys.exit(f"FAILED: {kind}: ids of {text[:40]!r} differ from the library's")
            if not (doc["text"] == tok.decode(ids) == text):
                sys.exit(f"FAILED: {kind}: C++ decode {doc['text'][:60]!r}, library "
                         f"{tok.decode(ids)[:60]!r}, text {text[:60]!r}")
            streamed = doc["streamed"] if kind == "bytelevel" else doc["streamed"][1:]
            if streamed != text:
                sys.exit(f"FAILED: {kind}: token_bytes concatenate to {doc['streamed'][:60]!r}")
        print(f"ok: {kind}: {os.path.basename(split)}: every document's ids are the library's "
              f"encoding in BOS/EOS, and C++ decodes them to the library's text")
    return out, vocab_size


def train(infllm, work, name, *overrides):
    run_dir = os.path.join(work, name)
    run(infllm, "train", TINY, "train.steps=2", f"train.out_dir={run_dir}", "checkpoint.every=2",
        "train.eval_every=0", *overrides)
    return os.path.join(run_dir, "checkpoints", "latest")


def same_files(a, b, names):
    for name in names:
        with open(os.path.join(a, name), "rb") as f, open(os.path.join(b, name), "rb") as g:
            if f.read() != g.read():
                return False
    return True


def tokenizer_travels(infllm, folder, data, vocab_size, byte_data, work):
    files = ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]
    model = [f"model.vocab_size={vocab_size}", f"data.train={data}",
             f"data.val={data.replace('.h5', '.val.h5')}"]
    scratch = train(infllm, work, "run_scratch", *model)
    result = run(infllm, "export", scratch, "-o", os.path.join(work, "e0"))
    check(not os.path.exists(os.path.join(work, "e0", "tokenizer.json")) and
          "hf-tokenizer:" in result.stderr and "--tokenizer" in result.stderr,
          "export of a model trained from scratch on hf data writes no tokenizer, says why")
    e1 = os.path.join(work, "e1")
    run(infllm, "export", scratch, "-o", e1, "--tokenizer", folder)
    check(same_files(folder, e1, files), "export --tokenizer DIR copies the tokenizer files")
    with open(os.path.join(e1, "config.json")) as f, \
            open(os.path.join(folder, "generation_config.json")) as g:
        config, ids = json.load(f), json.load(g)
    check(config["bos_token_id"] == ids["bos_token_id"] and
          config["eos_token_id"] == ids["eos_token_id"], "config.json takes the tokenizer's ids")
    imported = os.path.join(work, "imported.h5")
    run(infllm, "import", e1, "-o", imported)
    check(same_files(folder, os.path.join(work, "imported.tokenizer"), files),
          "import copies the tokenizer files beside the checkpoint")
    run(infllm, "export", imported, "-o", os.path.join(work, "e2"))
    check(same_files(folder, os.path.join(work, "e2"), files),
          "export of the imported checkpoint hands the same tokenizer back")
    for name, init in (("run_hf", f"hf:{e1}"), ("run_ckpt", imported)):
        ckpt = train(infllm, work, name, *model, f"train.init_from={init}")
        result = run(infllm, "export", ckpt, "-o", os.path.join(work, f"e_{name}"))
        check(same_files(folder, os.path.join(work, f"e_{name}"), files) and
              "train.init_from=" in result.stderr,
              f"export of a finetune from {init} hands the same tokenizer back")
    result = run(infllm, "train", TINY, "train.steps=2",
                 f"train.out_dir={os.path.join(work, 'run_mixed')}", "train.eval_every=0",
                 *model[:1], f"train.init_from=hf:{e1}", f"data.train={byte_data}", "data.val=",
                 expect_fail=True)
    check("holds ids of tokenizer byte" in result.stderr and "hf-tokenizer:" in result.stderr and
          f"scripts/prepare-hf --tokenizer {e1}" in result.stderr,
          "train refuses a finetune from hf:DIR on data of another tokenizer, naming both")
    return imported


def byte_tokenizer_export(infllm, work):
    ckpt = train(infllm, work, "run_byte")
    exported = os.path.join(work, "e_byte")
    run(infllm, "export", ckpt, "-o", exported)
    tok = Tokenizer.from_file(os.path.join(exported, "tokenizer.json"))
    texts = ["hello world", "  two  spaces\n\nnewline\ttab", "é中文😀 \x00\x01\x7f", " leading",
             "<s> and </s> literal", "".join(chr(c) for c in range(1, 0x800, 7))]
    for text in texts:
        want = list(text.encode("utf-8"))
        if tok.encode(text, add_special_tokens=False).ids != want:
            sys.exit(f"FAILED: exported tokenizer.json encodes {text!r} to other ids")
        if tok.encode(text).ids != [256] + want or tok.decode([256] + want + [257]) != text:
            sys.exit(f"FAILED: exported tokenizer.json: BOS or decode of {text!r}")
    print("ok: the byte tokenizer's tokenizer.json encodes text to exactly our byte ids")
    with open(os.path.join(exported, "config.json")) as f:
        config = json.load(f)
    check(config["bos_token_id"] == 256 and config["eos_token_id"] == 257,
          "config.json of a byte model: BOS 256, EOS 257")
    try:
        from transformers import AutoTokenizer
    except ImportError as error:
        print(f"check_prepare_hf: AutoTokenizer part skipped, {error}")
        return
    auto = AutoTokenizer.from_pretrained(exported)
    for text in texts + ["<|begin_of_document|> spelled out <|end_of_document|>"]:
        want = list(text.encode("utf-8"))
        if auto(text, add_special_tokens=False)["input_ids"] != want:
            sys.exit(f"FAILED: AutoTokenizer encodes {text!r} to other ids")
        if auto(text)["input_ids"] != [256] + want or \
                auto.decode([256] + want + [257], skip_special_tokens=True) != text:
            sys.exit(f"FAILED: AutoTokenizer: BOS or decode of {text!r}")
    check(auto.bos_token_id == 256 and auto.eos_token_id == 257,
          "AutoTokenizer loads the byte tokenizer: exact byte ids, BOS 256, EOS 257")


def generate_with_ids(infllm, imported, folder):
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    ids = ",".join(map(str, tok.encode("The quick brown").ids))
    result = run(infllm, "generate", imported, "--prompt-ids", ids, "--tokens", "8",
                 "--temperature", "0", "--device", "cpu")
    check(result.stdout.startswith("The quick brown"),
          f"generate --prompt-ids decodes with the imported tokenizer: {result.stdout[:60]!r}")
    result = run(infllm, "generate", imported, "--prompt", "The", "--device", "cpu",
                 expect_fail=True)
    check("--prompt-ids" in result.stderr, "generate --prompt with an HF tokenizer says to use "
          "--prompt-ids")


def main():
    infllm, decoder, work = (os.path.abspath(a) for a in sys.argv[1:4])
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    inputs = write_corpus(os.path.join(work, "corpus"))
    corpus = list(TEXTS.values())
    bl_folder = os.path.join(work, "bytelevel")
    bl = byte_level_tokenizer(bl_folder, corpus)
    sp_folder = os.path.join(work, "sentencepiece")
    sp = sentencepiece_tokenizer(sp_folder, corpus)
    data, vocab_size = prepare_and_check("bytelevel", bl, bl_folder, inputs, infllm, decoder,
                                         work)
    prepare_and_check("sentencepiece", sp, sp_folder, inputs, infllm, decoder, work)
    result = run(PREPARE_HF, "--tokenizer", bl_folder, "-o", os.path.join(work, "x.h5"),
                 "--quiet", os.path.join(work, "missing"), expect_fail=True)
    check("missing" in result.stderr and not os.path.exists(os.path.join(work, "x.h5")),
          "prepare-hf: a missing input is one message, no file")
    imported = tokenizer_travels(infllm, bl_folder, data, (vocab_size + 63) // 64 * 64,
                                 os.path.join(work, "bytelevel-byte.h5"), work)
    byte_tokenizer_export(infllm, work)
    generate_with_ids(infllm, imported, bl_folder)
    print("check_prepare_hf: OK")


if __name__ == "__main__":
    main()
