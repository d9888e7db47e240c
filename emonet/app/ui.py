"""The Gradio page: Image, Video and Live tabs over :class:`emonet.app.core.AppCore`.

Import this module only after :func:`emonet.app.server.prepare_environment` (Gradio reads its temporary
folder and analytics setting from the environment when it is imported).
"""

from __future__ import annotations

import gradio as gr
import numpy as np

from emonet.app.core import AppCore, LiveSession, Options, crop_choices, public_message
from emonet.errors import UserError
from emonet.inference.backends import PRECISIONS, backend_names
from emonet.samples import FACE_SAMPLES, sample_image, write_sample_video

SMOOTHING = ["one-euro", "ema", "emonet", "none"]
INTRO = ("**EmoNet**: valence, arousal and expression of every face. Drop a photo, a clip, or use your webcam. "
         "Everything runs on this machine; nothing is uploaded elsewhere.")
CSS = """
#status-image, #status-video, #status-live {min-height: 1.5em}
"""


def _fail(exc: Exception):
    """A user mistake or a refused upload becomes a message on the page, never a traceback."""
    # File names, never server folders; no traceback in the server's log either (the user's file, not a bug).
    raise gr.Error(public_message(str(exc)), duration=None, print_exception=False) from None


def _path_only(image: gr.Image) -> gr.Image:
    """Hand the handler the uploaded file's path without Gradio opening it (PIL would decode a bomb or fail on
    a damaged file before the app's reader checks the header and says what is wrong). Gradio has already
    checked that the file is one of its uploads."""
    gradio_preprocess = image.preprocess

    def preprocess(payload):
        if payload is None or payload.path is None or (payload.url or "").startswith("data:"):
            return gradio_preprocess(payload)
        return str(payload.path)

    image.preprocess = preprocess
    return image


def _options(weights, smoothing, landmarks, flip, backend, precision, crop) -> Options:
    """The option row's values (in :func:`_option_row`'s order) as the core's :class:`Options`."""
    return Options(weights=weights, smoothing=smoothing, landmarks=bool(landmarks), flip_tta=bool(flip),
                   backend=backend, precision=precision, crop=crop or None)


def _option_row(core: AppCore) -> list[gr.components.Component]:
    """The options shared by the three tabs, in :func:`_options`'s argument order."""
    names = [p.name for p in core.checkpoints]
    crops = crop_choices()
    start = core.defaults
    with gr.Row(elem_id="options"):
        weights = gr.Dropdown(names, value=names[0], label="Checkpoint", elem_id="opt-weights")
        smoothing = gr.Dropdown(SMOOTHING, value="one-euro", label="Smoothing (video, live)", elem_id="opt-smoothing")
        landmarks = gr.Checkbox(value=True, label="Landmarks", elem_id="opt-landmarks")
        flip = gr.Checkbox(value=False, label="Flip TTA (2x cost)", elem_id="opt-flip")
        # auto (the library's default) picks the fastest backend verified on this machine.
        backend = gr.Dropdown(list(backend_names()), value=start.backend, label="Backend", elem_id="opt-backend")
        precision = gr.Dropdown(list(PRECISIONS), value=start.precision, label="Precision", elem_id="opt-precision")
        crop = gr.Dropdown(crops, value=start.crop, label="Face crop", visible=bool(crops), elem_id="opt-crop")
    return [weights, smoothing, landmarks, flip, backend, precision, crop]


def _image_tab(core: AppCore, option_inputs: list) -> None:
    with gr.Tab("Image", id="image", elem_id="tab-image"):
        with gr.Row():
            image_in = _path_only(gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", image_mode=None,
                                           label="Photo", elem_id="image-input", height=420))
            image_out = gr.Image(label="Faces", elem_id="image-output", interactive=False, height=420, format="png")
        with gr.Row():
            gr.Markdown("Samples (real photos shipped with scikit-image and matplotlib):")
            sample_buttons = [gr.Button(n.replace("_", " "), size="sm", elem_id=f"sample-{n}") for n in FACE_SAMPLES]
        image_status = gr.Markdown(elem_id="status-image")
        image_table = gr.Dataframe(label="Faces (box in pixels, valence/arousal in [-1, 1])",
                                   interactive=False, elem_id="image-table", wrap=True)
        with gr.Row():
            image_plane = gr.Image(label="Valence-arousal plane", interactive=False, elem_id="image-plane", height=360)
            image_csv = gr.File(label="CSV (the predict command's columns)", elem_id="image-csv")

        def run_image(path, *opts):
            if path is None:
                return None, None, None, None, ""
            try:
                result = core.analyze_image_file(path, _options(*opts))
            except UserError as exc:
                _fail(exc)
            n = int((result.table["error"] == "").sum()) if len(result.table) else 0
            status = f"{n} face(s) found" if n else "no face found in this image"
            return result.annotated, result.table, str(result.circumplex), str(result.csv), status

        image_in.change(run_image, [image_in, *option_inputs],
                        [image_out, image_table, image_plane, image_csv, image_status])
        for name, button in zip(FACE_SAMPLES, sample_buttons):
            button.click(lambda n=name: sample_image(n), None, image_in)


def _video_tab(core: AppCore, option_inputs: list) -> None:
    with gr.Tab("Video", id="video", elem_id="tab-video"):
        with gr.Row():
            # A file box, not a video player: browsers cannot play mp4v clips (older tools' .mp4) and
            # Gradio's player would call such a clip "not playable"; any file OpenCV opens is analysed.
            video_in = gr.File(label="Clip (.mp4, .avi, .webm, .mov, .mkv ...)", file_count="single",
                               file_types=["video", ".avi", ".mkv", ".mp4", ".webm", ".mov"], type="filepath",
                               elem_id="video-input", height=360)
            video_out = gr.Video(label="Annotated (WebM)", elem_id="video-output", interactive=False, height=360)
        with gr.Row():
            sample_video = gr.Button("Load the sample clip", size="sm", elem_id="sample-video")
            run_button = gr.Button("Analyse the clip", variant="primary", elem_id="run-video")
        video_status = gr.Markdown(elem_id="status-video")
        with gr.Row():
            video_plot = gr.Image(label="Valence and arousal over time, per face", interactive=False,
                                  elem_id="video-plot", height=440)
            video_csv = gr.File(label="Per-frame CSV (the video command's columns)", elem_id="video-csv")

        def load_sample_video():
            return str(write_sample_video(core.workdir / "sample_clip.mp4", seconds=4.0, fps=10.0))

        def run_video(path, *opts, progress=gr.Progress()):
            if not path:
                _fail(UserError("no video: upload a clip (or load the sample clip)"))

            def report(done: int, total: int | None) -> None:
                progress((done, total) if total else None, desc="frames", unit="frames")

            try:
                result = core.analyze_video(path, _options(*opts), report)
            except UserError as exc:
                _fail(exc)
            return str(result.video), str(result.plot), str(result.csv), result.summary

        sample_video.click(load_sample_video, None, video_in)
        run_button.click(run_video, [video_in, *option_inputs], [video_out, video_plot, video_csv, video_status])


def _live_tab(core: AppCore, option_inputs: list) -> None:
    with gr.Tab("Live", id="live", elem_id="tab-live"):
        gr.Markdown("Start the webcam below: each frame goes through face tracking, the model and "
                    "smoothing, and comes back with the overlay.")
        with gr.Row():
            cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam",
                           elem_id="live-input", height=360)
            live_out = gr.Image(label="Live overlay", interactive=False, elem_id="live-output", height=360,
                                format="jpeg")
        live_status = gr.Markdown(elem_id="status-live")
        session = gr.State(None)

        def run_live(frame, state: LiveSession | None, *opts):
            if frame is None:
                return None, "", state
            chosen = _options(*opts)
            try:
                if state is None or state.options != chosen:  # new options: fresh tracks and smoothing
                    state = core.live_session(chosen)
                canvas, faces = state.process(np.asarray(frame))
            except UserError as exc:
                _fail(exc)
            listed = "; ".join(f"#{f['face_id']} {f['expression']} V {f['valence']:+.2f} A {f['arousal']:+.2f}"
                               for f in faces if not f["error"])
            text = (f"{len(faces)} face(s) · {state.fps:.1f} frames/s shown · {state.compute_fps:.1f} frames/s "
                    "processed" + (f" · {listed}" if listed else ""))
            return canvas, text, state

        cam.stream(run_live, [cam, session, *option_inputs], [live_out, live_status, session],
                   stream_every=0.1, concurrency_limit=1, show_progress="hidden")


def build_ui(core: AppCore) -> gr.Blocks:
    """The page. Every handler goes through ``core`` (the library's Predictor, VideoEngine and overlay)."""
    with gr.Blocks(title="EmoNet: faces, valence and arousal", analytics_enabled=False) as page:
        gr.Markdown(INTRO)
        option_inputs = _option_row(core)
        with gr.Tabs():
            _image_tab(core, option_inputs)
            _video_tab(core, option_inputs)
            _live_tab(core, option_inputs)
    return page
