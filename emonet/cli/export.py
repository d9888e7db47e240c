"""``python -m emonet export``: write a checkpoint as an ONNX file checked against PyTorch."""

from __future__ import annotations

import argparse
import sys

from emonet.cli.options import add_output, add_progress, add_weights, positive_float, positive_int
from emonet.fileio import check_output, write_json_atomic
from emonet.inference.backends import backend_precisions, tolerance_verdict

HELP = "export a checkpoint to ONNX (dynamic batch, named outputs), checked with ONNX Runtime"
DESCRIPTION = (
    "Export EmoNet or a dual-head ResNet checkpoint to ONNX. Input 'input' (B, 3, S, S): RGB "
    "pixels / 255 (then ImageNet mean/std for the ResNet models); outputs 'expression' (logits), 'valence', "
    "'arousal' and, for a model that provides landmarks (EmoNet), 'heatmap'. The file is run with ONNX Runtime on batches of 1 and 3 and "
    "compared with PyTorch: the max abs difference is reported and the export fails above --tolerance."
)


def add_options(p: argparse.ArgumentParser) -> None:
    add_weights(p)
    p.add_argument("--format", choices=["onnx"], default="onnx", help="output format (onnx)")
    add_output(p, "output file, e.g. emonet_8.onnx (never the checkpoint itself)", deprecated=("--out",))
    p.add_argument("--opset", type=positive_int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--precision", choices=list(backend_precisions("onnxruntime")), default="fp32",
                   help="fp32 (default) or int8: static quantisation calibrated on the sample faces (needs MediaPipe)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="compare the file with PyTorch through ONNX Runtime (default on; fp32 only)")
    p.add_argument("--tolerance", type=positive_float, default=None, help="max abs difference allowed by --check (default 1e-4)")
    p.add_argument("--no-heatmap", action="store_true", help="models with landmarks (EmoNet): leave the heatmap output out of the graph outputs")
    p.add_argument("--summary-json", metavar="FILE", default=None,
                   help="also write the export report (paths, timings, check and int8 accuracy figures) as JSON")
    add_progress(p)  # the int8 export's bar: calibration and evaluation take minutes on a CPU


def run(args: argparse.Namespace) -> int:
    if not args.no_progress:  # first words before the imports below, which take seconds
        print(f"export: loading PyTorch, ONNX and {args.weights}...", file=sys.stderr, flush=True)
    # imported when the command runs (PyTorch, ONNX): building the parser for --help stays fast
    from emonet.checkpoint import load_model
    from emonet.inference.onnx import (
        DEFAULT_OPSET,
        EXPORT_TOLERANCE,
        ExportError,
        export_onnx,
        onnxruntime_status,
        quantize_int8,
    )

    try:
        import onnx  # noqa: F401
    except ImportError:
        print("error: the onnx package is not installed (pip install onnx onnxruntime)")
        return 2
    ok, why = onnxruntime_status()
    if not ok and (args.check or args.precision == "int8"):
        print(f"error: {why}; it is needed to check the export (pass --no-check to export without it)")
        return 2
    # Before the (minutes-long) export: the ONNX file must not replace the checkpoint or a folder.
    check_output(args.output, [args.weights], kind="file", option="--output")
    if args.summary_json:
        check_output(args.summary_json, [args.weights, args.output], kind="file", option="--summary-json")
    model = load_model(args.weights, device="cpu")
    opset = args.opset or DEFAULT_OPSET
    try:
        if args.precision == "int8":
            report = quantize_int8(model, args.output, opset=opset, with_heatmap=not args.no_heatmap,
                                   progress=not args.no_progress)
        else:
            report = export_onnx(model, args.output, opset=opset, check=args.check,
                                 tolerance=args.tolerance if args.tolerance is not None else EXPORT_TOLERANCE,
                                 with_heatmap=not args.no_heatmap)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"exported {getattr(model, 'arch', 'model')} ({args.precision}, opset {opset}) to {report.path} "
          f"in {report.seconds:.1f} s; outputs: {', '.join(report.outputs)}; dynamic batch axis")
    if report.max_abs_diff:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in report.max_abs_diff.items())
        print(f"check against PyTorch (ONNX Runtime, batches {report.checked_batch_sizes}): max abs diff {diffs} "
              f"(max {max(report.max_abs_diff.values()):.2e})")
    if report.accuracy:
        print(int8_summary(report.accuracy))
    if args.summary_json:
        write_json_atomic(args.summary_json, report.to_dict())
        print(f"report written to {args.summary_json}")
    return 0


def int8_summary(accuracy: dict) -> str:
    """One readable paragraph on the int8 file against fp32 PyTorch (the figures of ``agreement``)."""
    ok, words = tolerance_verdict("int8", accuracy)
    worst = f"largest valence/arousal difference {accuracy['va_max_abs']:.3f}"
    if "heatmap_max_abs" in accuracy:
        worst += f", largest landmark-heatmap difference {accuracy['heatmap_max_abs']:.3f}"
    verdict = ("--backend auto may use it for this checkpoint." if ok
               else "--backend auto will not use int8 for this checkpoint.")
    return f"int8 {words}; {worst}. {verdict}"
