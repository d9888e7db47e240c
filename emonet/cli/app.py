"""``python -m emonet app``: the browser app (Gradio) with Image, Video and Live tabs. See docs/app.md."""

from __future__ import annotations

import argparse
import sys

from emonet.cli.options import add_inference, add_progress, port, positive_float
from emonet.errors import UserError

HELP = "browser app: photos, clips and a live webcam with the overlay, table, CSV and plots (Gradio)"
DESCRIPTION = (
    "Serve a local web page (Gradio) where a photo, a clip or the browser's webcam is analysed with the "
    "library's predictor, video engine and overlay. Binds to 127.0.0.1 unless --host and --allow-remote are "
    "given; no public link unless --share. Uploads live in a temporary folder removed on exit. "
    "Needs the app extra: pip install -e .[app]"
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", nargs="+", required=True, metavar="W",
                   help="checkpoint(s) offered first (official names emonet_8 / emonet_5, downloaded on first use, "
                   "or checkpoint files); "
                   "the .pth/.pt files of --weights-dir are offered too")
    p.add_argument("--weights-dir", default="weights", help="folder whose checkpoints the page also offers (default weights)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port, default=7860, help="port (default 7860; 0 picks a free one)")
    p.add_argument("--allow-remote", nargs="?", const="", default=None, metavar="HOST[,HOST]",
                   help="allow a --host other than a loopback address (prints a warning); the names browsers "
                   "use to reach the app (the Host header) may follow: loopback names, the --host address and, "
                   "for 0.0.0.0 without names, this machine's names are accepted; any other Host is refused")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link (needs the internet)")
    p.add_argument("--max-upload-mb", type=positive_float, default=50.0, help="largest upload accepted, MB (default 50)")
    p.add_argument("--max-total-upload-mb", type=positive_float, default=500.0,
                   help="bytes kept across all uploads and results, MB (default 500): older results are removed, "
                   "then uploads refused")
    p.add_argument("--max-video-seconds", type=positive_float, default=60.0, help="longest clip accepted, seconds (default 60)")
    add_inference(p)  # the page's starting backend/precision (it can switch); --device for every model
    p.set_defaults(backend="auto")  # the library's default: the fastest backend verified on this machine
    add_progress(p, has_bar=False)


def run(args: argparse.Namespace) -> int:
    from emonet.app.server import (
        ServerConfig,
        check_host,
        free_port,
        make_workdir,
        parse_host_list,
        prepare_environment,
    )

    allow_remote = args.allow_remote is not None  # `--allow-remote` alone, or with host names
    remote_hosts = parse_host_list(args.allow_remote)
    check_host(args.host, allow_remote)  # before loading anything
    for name in ("max_upload_mb", "max_video_seconds", "max_total_upload_mb"):
        if not getattr(args, name) > 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.max_total_upload_mb < args.max_upload_mb:
        raise UserError(f"--max-total-upload-mb {args.max_total_upload_mb:g} is below --max-upload-mb "
                        f"{args.max_upload_mb:g}: one upload would not fit")
    try:
        import gradio  # noqa: F401 - only to say how to install it when missing
    except ImportError:
        raise UserError("the app needs Gradio: pip install -e .[app] (or pip install gradio)") from None
    workdir = make_workdir()
    prepare_environment(workdir)  # before Gradio is imported by emonet.app.ui
    # imported when the command runs (PyTorch, MediaPipe, Gradio): --help stays fast
    from emonet.app.core import AppCore, Limits, find_checkpoints
    from emonet.app.server import cleanup, serve

    try:
        checkpoints = find_checkpoints(args.weights, args.weights_dir)
        core = AppCore(checkpoints, workdir, Limits(args.max_upload_mb, args.max_video_seconds), device=args.device,
                       backend=args.backend, precision=args.precision, batch_size=args.batch_size)
        core.predictor(core.defaults)  # load the first model now: errors show here, not in the page
        port = free_port(args.host) if args.port == 0 else args.port
        print(f"EmoNet app on http://{'[' + args.host + ']' if ':' in args.host else args.host}:{port} "
              f"(Ctrl-C stops it); uploads and outputs in {workdir} (removed on exit)", flush=True)
        ended = serve(core, ServerConfig(args.host, port, args.share, allow_remote, args.max_upload_mb,
                                         remote_hosts, args.max_total_upload_mb))
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM while the model loads): the shell's 130
        print("EmoNet app stopped (Ctrl-C); temporary folder removed", file=sys.stderr)
        return 130
    except OSError as exc:  # a port in use, an unwritable temporary folder
        raise UserError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    finally:
        cleanup(workdir)
    # SIGTERM (kill, a service manager, a container stop) is the normal way to stop a server: exit status 0.
    print(f"EmoNet app stopped ({ended}); temporary folder removed", file=sys.stderr)
    return 0

