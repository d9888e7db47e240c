"""Label maps used across the project.

EmoNet's 8-class order follows AffectNet. For the 5-class checkpoint we follow the official *evaluation*
code, which keeps AffectNet labels [0, 1, 2, 3, 6] and maps 6 (Anger) to index 4: index 4 is **Anger**,
not Fear as the official README says. The published 5-class numbers were computed with this mapping.
"""

from __future__ import annotations

EMONET_8_CLASSES: list[str] = [
    "Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt",
]
EMONET_5_CLASSES: list[str] = ["Neutral", "Happy", "Sad", "Surprise", "Anger"]

# AffectNet expression id (8-class order) -> 5-class index, as in the official evaluation loader.
AFFECTNET_TO_5_CLASS: dict[int, int] = {0: 0, 1: 1, 2: 2, 3: 3, 6: 4}

# The 26 EMOTIC categories in the Kaggle CSV column order (not the alphabetical .mat order).
EMOTIC_CATEGORIES: list[str] = [
    "Peace", "Affection", "Esteem", "Anticipation", "Engagement", "Confidence", "Happiness",
    "Pleasure", "Excitement", "Surprise", "Sympathy", "Doubt/Confusion", "Disconnection", "Fatigue",
    "Embarrassment", "Yearning", "Disapproval", "Aversion", "Annoyance", "Anger", "Sensitivity",
    "Sadness", "Disquietment", "Fear", "Pain", "Suffering",
]


def expression_classes(n_expression: int) -> list[str]:
    """Class names for an EmoNet head with ``n_expression`` outputs (5 or 8)."""
    if n_expression == 8:
        return list(EMONET_8_CLASSES)
    if n_expression == 5:
        return list(EMONET_5_CLASSES)
    return [f"class_{i}" for i in range(n_expression)]
