"""The HTTP API and the web console (`eventcrm serve --role api`)."""

from adapters.http.app import build_app
from adapters.http.context import ApiContext, Limits

__all__ = ["ApiContext", "Limits", "build_app"]
