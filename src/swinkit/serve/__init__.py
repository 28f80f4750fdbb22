"""``swinkit serve``: a Swin model as a real-time HTTP endpoint with the Azure ML scoring schema."""

from swinkit.serve.app import create_app
from swinkit.serve.server import run_server
from swinkit.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "run_server"]
