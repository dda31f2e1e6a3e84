"""A small POS on Flask that takes orders only while this PC's POSPal agent proves a license.

    pip install "pospal-client[flask]"          # or, in this repository: bash scripts/install.sh
    source demo-data/env.sh                      # the demo's agent port and development trust file
    flask --app examples/flask_pos/app.py run    # http://127.0.0.1:5000

`/` (the menu, with the license banner) always works; `POST /checkout` and `POST /pay` are guarded by
`pospal_client.flask.PosPalLicense` and answer 402 with the agent's message when the till may not sell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, render_template, request
from pospal_client import AgentClient
from pospal_client.flask import PosPalLicense

MENU = {"espresso": 250, "freddo": 350, "toast": 400}


def create_app(client: AgentClient | None = None, config: dict[str, Any] | None = None) -> Flask:
    """The POS app; `client` replaces the default `AgentClient` (tests point it at their agent)."""
    app = Flask(__name__, root_path=str(Path(__file__).resolve().parent))
    app.config.update(config or {})
    PosPalLicense(app, guard=["checkout", "pay"], client=client)

    @app.get("/")
    def menu() -> str:
        return render_template("menu.html", menu=MENU)

    @app.post("/checkout")
    def checkout() -> dict[str, Any]:
        items = (request.get_json(silent=True) or {}).get("items") or []
        total = sum(MENU.get(item, 0) for item in items)
        return {"ok": True, "total_cents": total}

    @app.post("/pay")
    def pay() -> dict[str, Any]:
        return {"ok": True, "paid": True}

    return app


app = create_app()
