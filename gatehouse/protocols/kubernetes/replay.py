"""
Replay and export recorded Kubernetes sessions: the HTTP request timeline
(L{gatehouse.protocols.http.replay}) and the asciicast export of an
exec's terminal (L{gatehouse.protocols.kubernetes.asciicast}), registered
for C{kubernetes}.
"""

from __future__ import annotations

from gatehouse.protocols.http.replay import render_http
from gatehouse.protocols.kubernetes.asciicast import export_asciicast
from gatehouse.recording.render import register_exporter, register_renderer

__all__ = ["export_asciicast", "render_kubernetes"]

render_kubernetes = render_http

register_renderer("kubernetes", render_kubernetes)
register_exporter("kubernetes", "asciicast", export_asciicast)
