"""DistilBERT as Hugging Face writes it and in the Neural Engine's form: four principles measured.

    .venv/bin/python benchmarks/bench_transformer.py [--layers 6] [--dim 768] [--heads 12]
        [--seq-len 128] [--vocab 30522] [--batch 1] [--samples 1] [--json] [--keep DIR]

A DistilBERT-base-sized ``DistilBertForSequenceClassification`` (6 layers, 768 wide, 12 heads,
hidden 3072, vocabulary 30522; random weights from a config, nothing downloaded) and its ANE form
(``ane_lib.models.to_ane``, same weights) are each exported as an fp16 ML program with two
int32 inputs (``input_ids``, ``attention_mask``) of shape ``(batch, seq_len)``, then measured the
same way:

- export seconds (torch.export + coremltools + save; inflated on a busy machine);
- :func:`ane_lib.coreml.principles.principle_figures`: padded / real activation bytes and layout
  ops (principle 1), the largest tensor and the attention probabilities' bytes (principle 2),
  transposes / reshapes and those touching the last axis (principle 3), weight bytes read per MAC
  (principle 4);
- the package run by ane_lib's executor in fp16 against PyTorch fp32 on random token ids and
  masks (PSNR of the logits, top-1 agreement), and the two forms against each other in PyTorch.

Apple's published figures for its own port (machinelearning.apple.com, "Deploying Transformers on
the Apple Neural Engine", 2022, and the ml-ane-transformers README): up to 10x faster and 14x
lower peak memory than the baseline on an iPhone 13 (sequence length up to 512, batch up to 8),
and 4 of the 606 ops of their exported model on the CPU. They are device measurements, which
this benchmark cannot make; it measures the programs.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from ane_lib.coreml import TensorSpec, export, verify
from ane_lib.coreml.principles import principle_figures
from ane_lib.coreml.program import import_coremltools
from ane_lib.models import to_ane


def build(args: argparse.Namespace) -> torch.nn.Module:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(
        vocab_size=args.vocab,
        dim=args.dim,
        n_heads=args.heads,
        n_layers=args.layers,
        hidden_dim=4 * args.dim,
        max_position_embeddings=max(512, args.seq_len),
    )
    torch.manual_seed(0)
    return DistilBertForSequenceClassification(config).eval()


def measure(
    model: torch.nn.Module, inputs: dict[str, TensorSpec], path: Path, samples: int
) -> dict[str, Any]:
    t0 = time.perf_counter()
    export(model, inputs, path, overwrite=True)
    seconds = time.perf_counter() - t0
    figures = principle_figures(path)
    fp16 = verify(path, model, samples=samples, precision="fp16")
    return {
        "export s": seconds,
        "ops": figures.ops,
        "padded/real": figures.padding_overhead,
        "layout ops": figures.layout_ops,
        "largest tensor B": figures.largest_tensor_bytes,
        "attention B": figures.attention_bytes,
        "largest attn B": figures.largest_attention_bytes,
        "transposes": figures.transposes,
        "reshapes": figures.reshapes,
        "last-axis copies": figures.last_axis_copies,
        "weight MB": figures.weight_bytes / 2**20,
        "weight B/MAC": figures.weight_bytes_per_mac,
        "fp16 PSNR dB": fp16.psnr_db,
        "fp16 top-1": fp16.top1_agreement,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", type=Path, help="folder to keep the packages in")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", FutureWarning)
    import_coremltools()  # its one-off import time is not part of either export

    hf = build(args)
    ane = to_ane(hf).eval()
    shape = (args.batch, args.seq_len)
    inputs = {
        "input_ids": TensorSpec(shape, torch.int32, high=args.vocab),
        "attention_mask": TensorSpec(shape, torch.int32, high=2),
    }
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab, shape, generator=g)
    mask = torch.ones(shape, dtype=torch.long)
    mask[:, args.seq_len // 2 :] = 0  # half of every sequence is padding
    with torch.no_grad():  # the logits and the encoder's last hidden state
        gap = max(
            float((hf(ids, mask).logits - ane(ids, mask).logits).abs().max()),
            float(
                (
                    hf.distilbert(ids, mask).last_hidden_state  # type: ignore[operator]
                    - ane.distilbert(ids, mask).last_hidden_state  # type: ignore[operator]
                )
                .abs()
                .max()
            ),
        )

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_transformer."))
    folder.mkdir(parents=True, exist_ok=True)
    rows = {}
    try:
        for form, model in (("hugging_face", hf), ("ane", ane)):
            print(f"exporting and measuring the {form} form ...", file=sys.stderr, flush=True)
            rows[form] = measure(
                model, inputs, folder / f"distilbert_{form}.mlpackage", args.samples
            )
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)

    config = {k: getattr(args, k) for k in ("layers", "dim", "heads", "seq_len", "vocab", "batch")}
    if args.json:
        clean = {
            form: {
                k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in row.items()
            }
            for form, row in rows.items()
        }
        print(json.dumps({"config": config, "pytorch_max_abs_diff": gap, "forms": clean}, indent=2))
        return 0
    print(
        f"DistilBERT {config}\nHugging Face vs ANE form in PyTorch fp32, logits and last hidden "
        f"state: max |diff| {gap:.2e}"
    )
    print(f"{'':<18}{'hugging_face':>14}{'ane':>14}")
    for key in rows["ane"]:
        cells = []
        for form in ("hugging_face", "ane"):
            v = rows[form][key]
            cells.append(f"{v:>14.4g}" if isinstance(v, float) else f"{v:>14}")
        print(f"{key:<18}{''.join(cells)}")
    print(
        "Apple (their device measurements, iPhone 13): up to 10x faster, 14x lower peak memory; "
        "4 of 606 ops on the CPU"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
