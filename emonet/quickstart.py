"""The main job on embedded data: every step of the pipeline at smoke scale, outputs under one folder."""

from __future__ import annotations

from pathlib import Path

import cv2

from emonet.predictor import WEIGHTS_HINT


def faces_step(out: Path, weights: str, device: str) -> None:
    """Detect and crop the faces of the embedded samples; predict them when official weights exist."""
    from emonet.faces import FaceDetector, crop_face
    from emonet.samples import FACE_SAMPLES, NON_FACE_SAMPLES, sample_image, write_samples

    images_dir = out / "sample_images"
    write_samples(images_dir)
    crops_dir = out / "face_crops"
    crops_dir.mkdir(parents=True, exist_ok=True)
    with FaceDetector() as detector:
        for name in FACE_SAMPLES + NON_FACE_SAMPLES:
            image = sample_image(name)
            faces = detector.detect(image)
            print(f"  {name}: {len(faces)} face(s)")
            for i, face in enumerate(faces):
                crop = crop_face(image, face.box)
                cv2.imwrite(str(crops_dir / f"{name}_face{i}.jpg"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    if not Path(weights).exists():
        print(f"  prediction skipped: {weights} not found. {WEIGHTS_HINT}")
        return
    from emonet.cli import main as cli

    cli(["predict", "--weights", str(weights), "--device", device, "--output", str(out / "predictions.csv"),
         str(images_dir)])


def run_quickstart(output_dir: str, weights: str = "weights/emonet_8.pth", device: str = "auto") -> int:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    print("[1] faces: detection, EmoNet-protocol crops, prediction")
    faces_step(out, weights, device)
    print(f"done: outputs in {out.resolve()}")
    return 0
