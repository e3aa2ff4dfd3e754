"""``instseg serve``: an HTTP API and a web page over any model (FastAPI; ``pip install
'instseg[serve]'``). :func:`create_app` builds the application for a :class:`Predictor`;
the page's files are under ``static/`` (no CDN: it works offline)."""

from instseg.serve.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
