"""Compatibility: the drawing moved to :mod:`emonet.drawing` (below both the predictor and the video engine,
so that still images are no longer drawn by the video package). Import from there."""

from emonet.drawing import (
    PALETTE,
    OverlayRenderer,
    PanelStyle,
    Rect,
    circumplex_rect,
    draw_circumplex,
    draw_face,
    draw_faces,
    draw_hud,
    draw_predictions,
    draw_signed_bar,
    hud_rect,
    panel_size,
    place_panels,
    put_text,
    rects_intersect,
    scale_faces,
    scale_result,
    track_color,
)

__all__ = [
    "PALETTE", "OverlayRenderer", "PanelStyle", "Rect", "circumplex_rect", "draw_circumplex", "draw_face",
    "draw_faces", "draw_hud", "draw_predictions", "draw_signed_bar", "hud_rect", "panel_size", "place_panels",
    "put_text", "rects_intersect", "scale_faces", "scale_result", "track_color",
]
