"""emonet: valence, arousal and expression estimation from faces (EmoNet and a ResNet dual-head model).

Common case::

    import emonet
    predictor = emonet.Predictor("weights/emonet_8.pth")
    faces = predictor.predict("photo.jpg")   # one FacePrediction per detected face
"""

from emonet.checkpoint import CheckpointError, load_model, save_checkpoint
from emonet.classes import EMONET_5_CLASSES, EMONET_8_CLASSES, EMOTIC_CATEGORIES
from emonet.models import EmoNet, create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "EMONET_5_CLASSES", "EMONET_8_CLASSES", "EMOTIC_CATEGORIES", "CheckpointError", "EmoNet",
    "create_model", "list_models", "load_model", "save_checkpoint",
]


def __getattr__(name: str):
    # Lazy imports keep `import emonet` light (MediaPipe/OpenCV load only when used).
    if name in ("Predictor", "FacePrediction"):
        from emonet import predictor

        return getattr(predictor, name)
    if name in ("FaceDetector", "Face", "crop_face"):
        from emonet import faces

        return getattr(faces, name)
    raise AttributeError(f"module 'emonet' has no attribute {name!r}")
