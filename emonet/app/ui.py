"""The Gradio page: Image, Video and Live tabs over :class:`emonet.app.core.AppCore`.

Import this module only after :func:`emonet.app.server.prepare_environment` (Gradio reads its temporary
folder and analytics setting from the environment when it is imported).
"""

from __future__ import annotations

import cv2
import gradio as gr
import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from emonet.app.core import TABLE_DECIMALS, AppCore, LiveSession, Options, crop_choices, public_message
from emonet.errors import UserError
from emonet.inference.backends import PRECISIONS, backend_names
from emonet.samples import FACE_SAMPLES, sample_image, write_sample_video

SMOOTHING = ["one-euro", "ema", "emonet", "none"]
INTRO = ("**EmoNet**: valence, arousal and expression of every face. Drop a photo, a clip, or use your webcam. "
         "Everything runs on this machine; nothing is uploaded elsewhere.")
NO_FACES_YET = "No faces yet: upload a photo, take a webcam snapshot or pick a sample."
# Headers are whole words on one line (the table scrolls sideways on a narrow window rather than break them).
CSS = """
#status-image, #status-video, #status-live {min-height: 1.5em}
#image-table th, #image-table th * {white-space: nowrap; word-break: keep-all; overflow-wrap: normal}
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


def _styled(table: pd.DataFrame) -> Styler:
    """The face table as the page shows it: every number with :data:`TABLE_DECIMALS` decimals, boxes whole,
    missing values (a row without a face) empty."""
    return table.style.format(precision=TABLE_DECIMALS, na_rep="").hide(axis="index")


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
        landmarks = gr.Checkbox(value=start.landmarks, label="Landmarks", elem_id="opt-landmarks")
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
        image_status = gr.Markdown(NO_FACES_YET, elem_id="status-image")
        empty_table = _styled(core.empty_table())
        image_table = gr.Dataframe(empty_table, label="Faces: box in pixels, valence and arousal in [-1, 1], "
                                   "then the probability of each expression", interactive=False,
                                   elem_id="image-table", wrap=False, buttons=["copy"])
        with gr.Row():
            image_plane = gr.Image(label="Valence-arousal plane", interactive=False, elem_id="image-plane", height=360)
            image_csv = gr.File(label="CSV (the predict command's columns)", elem_id="image-csv")

        def run_image(path, *opts):
            if path is None:  # the photo was removed
                return None, empty_table, None, None, NO_FACES_YET
            try:
                result = core.analyze_image_file(path, _options(*opts))
            except UserError as exc:
                _fail(exc)
            status = f"{result.found} face(s) found" if result.found else "no face found in this image"
            status += f" · model: {result.model}"  # which checkpoint ran (name, backbone, input size)
            return str(result.annotated_file), _styled(result.table), str(result.circumplex), str(result.csv), status

        image_outputs = [image_out, image_table, image_plane, image_csv, image_status]
        image_in.change(run_image, [image_in, *option_inputs], image_outputs)
        # An option that changes the picture (not the smoothing, which is for clips) redraws the current photo.
        for option in option_inputs[:1] + option_inputs[2:]:
            option.change(run_image, [image_in, *option_inputs], image_outputs)

        def load_sample(name: str) -> str:
            """The sample as a file named after it, so that the downloads are too (``astronaut_emonet.csv``)."""
            path = core.workdir / "samples" / f"{name}.png"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), cv2.cvtColor(sample_image(name), cv2.COLOR_RGB2BGR))
            return str(path)

        for name, button in zip(FACE_SAMPLES, sample_buttons):
            button.click(lambda n=name: load_sample(n), None, image_in)


def _video_tab(core: AppCore, option_inputs: list) -> None:
    with gr.Tab("Video", id="video", elem_id="tab-video"):
        with gr.Row():
            # A file box, not a video player: browsers cannot play mp4v clips (older tools' .mp4) and
            # Gradio's player would call such a clip "not playable"; any file OpenCV opens is analysed.
            video_in = gr.File(label="Clip (.mp4, .avi, .webm, .mov, .mkv ...)", file_count="single",
                               file_types=["video", ".avi", ".mkv", ".mp4", ".webm", ".mov"], type="filepath",
                               elem_id="video-input", height=360)
            video_out = gr.Video(label="Annotated (MP4)", elem_id="video-output", interactive=False, height=360)
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
