#!/usr/bin/env python3
"""scripts/profile-table on a two-step ncu report (tests/bench/ncu_two_steps.csv: rows of a real
bench200m profile, the program's own output lines among them) and a peer profile: the step is the
second one, each kernel lands in its kind, and bad inputs are refused with a message."""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLE = os.path.join(ROOT, "scripts", "profile-table")
REPORT = os.path.join(ROOT, "tests", "bench", "ncu_two_steps.csv")


def run(*args):
    done = subprocess.run([sys.executable, TABLE, *args], capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr


def rows(text):
    """{kind: [cells]} of a markdown table."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) >= 2 and cells[1] != "---":
            out[cells[0]] = cells[1:]
    return out


def main():
    code, out, err = run(REPORT)
    assert code == 0, err
    table = rows(out)
    # The second step's kernels, in ms from the report's nanoseconds: the forward and the dK/dV
    # pass, and the optimizer kernel that ends the step; not the first step's fill or forward.
    assert table["attention"] == ["2.65 (2)"], table
    assert table["optimizer and gradient norm"] == ["2.07 (1)"], table
    assert table["RoPE"] == ["0.06 (1)"] and table["cross-entropy"] == ["0.18 (1)"], table
    assert table["elementwise and the rest"] == ["0.06 (1)"], table  # the residual add
    assert table["all kernels"] == ["5.25 (9)"], table

    with tempfile.TemporaryDirectory() as tmp:
        peer = os.path.join(tmp, "peer.jsonl")
        with open(peer, "w") as f:
            f.write(json.dumps({"peer": "torch_compile", "step_ms": 116.0}) + "\n")
            for name, ms, calls in [
                    ("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma", 21.4, 12),
                    ("triton_poi_fused__to_copy_add_arange_cat_cos_sin_transpose_10", 7.3, 12),
                    ("triton_per_fused__fused_rms_norm_backward__to_copy_add_view_7", 3.5, 22),
                    ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", 10.8, 37),
                    ("void attention::<unnamed>::score_blocks_kernel<128, 1>", 2.5, 2)]:
                f.write(json.dumps({"peer_kernel": name, "ms_per_step": ms,
                                    "calls_per_step": calls}) + "\n")
        code, out, err = run(REPORT, peer)
        assert code == 0, err
        table = rows(out)
        assert table["attention"] == ["2.65 (2)", "21.40 (12)"], table
        assert table["RoPE"] == ["0.06 (1)", "7.30 (12)"], table  # cos and sin: RoPE, not norm
        assert table["RMSNorm"] == ["0.05 (1)", "3.50 (22)"], table
        assert table["matmuls (cuBLAS)"] == ["0.13 (1)", "10.80 (37)"], table
        # The selection's kernels share the attention's namespace but are a kind of their own.
        assert table["block selection (InfLLM-V2 stage 1)"] == ["0.00 (0)", "2.50 (2)"], table
        assert table["all kernels"] == ["5.25 (9)", "45.50 (85)"], table

        # One optimizer step only: no whole step to show without the warm-up.
        one = os.path.join(tmp, "one.csv")
        with open(REPORT) as f:
            lines = f.read().splitlines()
        last_adamw = max(i for i, line in enumerate(lines) if "adamw_kernel" in line)
        with open(one, "w") as f:
            f.write("\n".join(lines[:last_adamw]) + "\n")
        code, _, err = run(one)
        assert code != 0 and "1 optimizer step(s)" in err, err
        # A peer file without kernel lines, an ncu file without the metric.
        code, _, err = run(REPORT, REPORT)
        assert code != 0 and "no peer_kernel lines" in err, err
        code, _, err = run(peer)
        assert code != 0 and "no gpu__time_duration.sum rows" in err, err
    print("profile-table: ok")


if __name__ == "__main__":
    main()
