"""The Flower App of `kofin fedlora` for the deployment engine: what `flwr run` points the SuperLink at.

Run as: components of the app `kofin fedlora` writes and submits (deploy.py), loaded by Flower:
    serverapp = "kofin.training.fedlora.app:server_app"   # started by the SuperLink
    clientapp = "kofin.training.fedlora.app:client_app"   # started by each bank's SuperNode

kofin is installed on every host, so the app bundle carries no code of its own and nothing is
installed at run time. The server reads its config from the run config (`kofin-config`); each
bank reads its data path from its own SuperNode's --node-config.
"""

from __future__ import annotations

from kofin.training.fedlora.client import make_client_app
from kofin.training.fedlora.server import make_server_app

server_app = make_server_app()
client_app = make_client_app()
