#!/usr/bin/env python3
"""Checks a `quest export --hf DIR --hf-reference-tokens N` directory with transformers.

LlamaForCausalLM must load DIR (config.json + model.safetensors) with no missing or unexpected
weights and reproduce quest's logits for the reference tokens (DIR/quest_reference.safetensors,
"logits": quest's forward of the exported weights with full-precision layer inputs). Runs in fp32
on the CPU by default (--device cuda to use the GPU; TF32 stays off). Prints the differences and
exits non-zero when the largest absolute difference exceeds --tol.

Needs torch, transformers and safetensors (the device machine has them):
    python3 scripts/check_hf_export.py DIR [--tol 2e-3] [--device cpu]
"""
import argparse
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--tol", type=float, default=2e-3, help="largest allowed |logit difference|")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    config = json.load(open(f"{args.dir}/config.json"))
    model, info = LlamaForCausalLM.from_pretrained(
        args.dir, torch_dtype=torch.float32, output_loading_info=True, attn_implementation="eager")
    problems = {k: v for k, v in info.items() if v}
    if problems:
        print(f"FAIL: loading reported {problems}")
        return 1
    model = model.to(args.device).eval()
    ref = load_file(f"{args.dir}/quest_reference.safetensors")
    ids = ref["input_ids"].to(args.device)
    quest = ref["logits"].double()
    quantized = ref["logits_quantized"].double()
    vocab = quest.shape[1]
    with torch.no_grad():
        hf = model(input_ids=ids).logits[0, :, :vocab].double().cpu()
    diff = (hf - quest).abs()
    scale = quest.abs().max().item()
    agree = (hf.argmax(-1) == quest.argmax(-1)).float().mean().item()
    print(f"model: {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
          f"{config['num_attention_heads']} heads of {config.get('head_dim')}, vocab {config['vocab_size']} "
          f"(quest's real vocabulary {vocab}); {ids.shape[1]} reference tokens")
    print(f"transformers vs quest (full-precision inputs): max |diff| {diff.max().item():.3e}, "
          f"mean {diff.mean().item():.3e}, max |logit| {scale:.3f}, argmax agreement {agree:.3f}")
    qd = (hf - quantized).abs()
    print(f"transformers vs quest's quantized forward (for information; activations are not "
          f"quantized in transformers): max |diff| {qd.max().item():.3e}, mean {qd.mean().item():.3e}")
    ok = diff.max().item() <= args.tol
    print("PASS" if ok else f"FAIL: the logits differ by more than {args.tol}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
