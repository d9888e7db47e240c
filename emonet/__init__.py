"""emonet: valence, arousal and expression estimation from faces (EmoNet and a ResNet dual-head model).

Common case::

    import emonet
    predictor = emonet.Predictor()           # the official "emonet_8", downloaded on first use; or a path
    faces = predictor.predict("photo.jpg")   # one FacePrediction per detected face
"""

from __future__ import annotations

from emonet.lazy import lazy_exports

__version__ = "0.1.0"

# Public names -> defining module. Imports are lazy so that tools which need neither torch nor MediaPipe
# (face_visibility.py, preprocessing.py, spawned workers) start fast.
_EXPORTS = {
    **dict.fromkeys(["CheckpointError", "load_model", "save_checkpoint"], "emonet.checkpoint"),
    **dict.fromkeys(["EMONET_5_CLASSES", "EMONET_8_CLASSES", "EMOTIC_CATEGORIES"], "emonet.classes"),
    **dict.fromkeys(["EmoNet", "create_model", "list_models"], "emonet.models"),
    **dict.fromkeys(["Predictor", "FacePrediction", "to_dataframe"], "emonet.predictor"),
    "FaceRecord": "emonet.records",
    **dict.fromkeys(["FaceDetector", "Face", "crop_face"], "emonet.faces"),
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
