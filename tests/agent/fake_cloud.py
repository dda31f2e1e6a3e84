"""FakeCloud: an in-memory `CloudTransport` that mints real signed tokens, for fast service tests.

It follows docs/ARCHITECTURE.md's server API closely enough for the agent's flows (trials keyed by
fingerprint, codes, checkout, activation, refresh, revocation, deactivation, terminals, portal, key-set
updates). `test_e2e.py` runs the same flows against the real server, which keeps this fake honest.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections import Counter
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import Offline, ServerRefused
from pospal_protocol.tokens import Policy, encode_token
from pospal_protocol.trust import jwk_from_public_key, kid_for
from tests.agent.tokenkit import Authority

DAY = 86400


class FakeCloud:
    """The fake server. `online = False` makes every call raise `Offline`; `clock` is the server's time."""

    def __init__(self, clock: Any, policy: Policy | None = None) -> None:
        self.clock = clock
        self.policy = policy or Policy()
        self.key = Ed25519PrivateKey.generate()
        self.kid = kid_for(self.key.public_key())
        self.online = True
        self.calls: Counter[str] = Counter()
        self.trial_bodies: list[dict[str, Any]] = []  # every POST /v1/trials body, in order
        self.codes: dict[str, str] = {}
        self.trials: dict[str, dict[str, Any]] = {}  # by fingerprint hash
        self.machines: dict[str, dict[str, Any]] = {}
        self.licenses: dict[str, dict[str, Any]] = {}
        self.checkouts: dict[str, dict[str, Any]] = {}
        self.pending_keyset: str | None = None
        self.authority = Authority()  # the publisher's offline key-set keys, in the JWKS write_jwks writes
        self.keyset_version = 0
        self.opened: list[str] = []
        self.answers: list[dict[str, Any]] = []  # every token answer, in order (replay tests serve old ones)
        self._ids = itertools.count(1)

    # -- test controls ---------------------------------------------------------------------------------

    def now(self) -> int:
        return int(self.clock.now().timestamp())

    def write_jwks(self, path: Path) -> Path:
        jwks = {"keys": [jwk_from_public_key(self.key.public_key())]}
        path.write_text(json.dumps(self.authority.anchors(jwks)))
        return path

    def rotate(self) -> None:
        """New signing key; the next answer carries the offline authority's key-set document for it."""
        new = Ed25519PrivateKey.generate()
        self.keyset_version += 1
        jwks = [jwk_from_public_key(k.public_key()) for k in (self.key, new)]
        doc = self.authority.keyset(self.keyset_version, jwks, iat=self.now())
        self.key, self.kid, self.pending_keyset = new, kid_for(new.public_key()), doc

    def pay(self, checkout_id: str) -> None:
        co = self.checkouts[checkout_id]
        lic = self._license(co["email"])
        lic["status"] = "active"
        lic["period_end"] = self.now() + 30 * DAY
        co["status"] = "complete"

    def set_license(self, email: str, **fields: Any) -> None:
        self._license(email).update(fields)

    # -- CloudTransport --------------------------------------------------------------------------------

    def _call(self, name: str) -> None:
        self.calls[name] += 1
        if not self.online:
            raise Offline("The license server cannot be reached.")

    def start_trial(self, identity, body):
        self._call("trials")
        self.trial_bodies.append(dict(body))
        fp = body["fingerprint"]
        trial = next((self.trials[h] for h in fp.values() if h in self.trials), None)
        if trial is None:
            first = self.now()
            if body.get("provisional_started_at"):
                first = min(first, int(body["provisional_started_at"]))
            trial = {"id": f"trial_{next(self._ids)}", "first_seen": first, "mid": f"m_{next(self._ids)}"}
        for h in fp.values():
            self.trials[h] = trial
        self.machines[trial["mid"]] = {
            "license": None,
            "fp": fp,
            "trial": trial,
            "active": True,
            "terminal": body.get("terminal_name"),
        }
        return self._answer(trial["mid"], identity.nonce)

    def request_code(self, email, purpose, locale=None):
        self._call("codes")
        self.codes[email] = f"{secrets.randbelow(10**6):06d}"

    def create_checkout(self, identity, body):
        self._call("checkout")
        cid = f"cs_{next(self._ids)}"
        self.checkouts[cid] = {"status": "open", "email": body["email"], "quantity": body["quantity"]}
        return {"checkout_id": cid, "url": f"http://sandbox.invalid/checkout/{cid}"}

    def checkout_status(self, checkout_id):
        self._call("checkout_status")
        if checkout_id not in self.checkouts:
            raise ServerRefused("not_found", "No such checkout.")
        return self.checkouts[checkout_id]["status"]

    def activate(self, identity, body):
        self._call("activations")
        email = body.get("email")
        if body.get("checkout_id"):
            co = self.checkouts.get(body["checkout_id"])
            if not co or co["status"] != "complete":
                raise ServerRefused("invalid_request", "Checkout not complete.")
            email = co["email"]
        elif self.codes.get(email) != body.get("code"):
            raise ServerRefused("bad_code", "That code is not right.")
        lic = self._license(email)
        active = [m for m, row in self.machines.items() if row["license"] == lic["id"] and row["active"]]
        if len(active) >= lic["seats"]:
            raise ServerRefused("seats_full", "All seats are in use.", {"terminals": active})
        mid = f"m_{next(self._ids)}"
        self.machines[mid] = {
            "license": lic["id"],
            "fp": body["fingerprint"],
            "active": True,
            "terminal": body.get("terminal_name"),
            "trial": None,
        }
        answer = self._answer(mid, identity.nonce)
        answer.update(machine_id=mid, license_id=lic["id"])
        return answer

    def refresh(self, identity, body):
        self._call("refresh")
        if identity.machine_id not in self.machines:
            raise ServerRefused("unknown_machine", "Unknown machine.")
        self.machines[identity.machine_id]["fp"] = body["fingerprint"]
        return self._answer(identity.machine_id, identity.nonce)

    def deactivate(self, identity):
        self._call("deactivate")
        self.machines[identity.machine_id]["active"] = False

    def list_terminals(self, identity, body):
        self._call("terminals")
        if identity:
            lic = self.machines[identity.machine_id]["license"]
        else:
            lic = self._license(body["email"])["id"]
        return [
            {
                "machine_id": m,
                "terminal_name": r["terminal"],
                "activated_at": None,
                "last_seen": None,
                "this_machine": identity is not None and m == identity.machine_id,
            }
            for m, r in self.machines.items()
            if r["license"] == lic and r["active"]
        ]

    def remove_terminal(self, identity, body):
        self._call("terminals_remove")
        self.machines[body["machine_id"]]["active"] = False

    def rename_terminal(self, identity, body):
        self._call("terminals_rename")
        self.machines[body["machine_id"]]["terminal"] = body["terminal_name"]
        return self.list_terminals(identity, body)

    def portal(self, identity, body):
        self._call("portal")
        return "http://sandbox.invalid/portal"

    def keys(self):
        self._call("keys")
        return {"keys": [jwk_from_public_key(self.key.public_key())]}

    # -- internals -------------------------------------------------------------------------------------

    def _license(self, email: str) -> dict[str, Any]:
        for lic in self.licenses.values():
            if lic["email"] == email:
                return lic
        lic = {
            "id": f"lic_{next(self._ids)}",
            "email": email,
            "status": "active",
            "seats": 1,
            "period_end": self.now() + 30 * DAY,
            "payment_grace_end": None,
            "cancel_at": None,
            "sub_status": "active",
        }
        self.licenses[lic["id"]] = lic
        return lic

    def _answer(self, mid: str, nonce: str | None) -> dict[str, Any]:
        m = self.machines[mid]
        now = self.now()
        claims: dict[str, Any] = {
            "iss": "pospal",
            "aud": "pospal-agent",
            "mid": mid,
            "fp": m["fp"],
            "iat": now,
            "nbf": now,
            "exp": now + self.policy.lease_s,
            "srv": now,
            "policy": self.policy.to_claim(),
            "terminal": m["terminal"],
            "features": ["pos"],
            "rn": nonce,
        }
        if m["license"] is None:
            t = m["trial"]
            end = t["first_seen"] + 30 * DAY
            claims.update(
                sub=t["id"], kind="trial", status="trialing", plan="trial", trial_end=end, email=None, seats=1
            )
        else:
            lic = self.licenses[m["license"]]
            status = lic["sub_status"]
            if lic["status"] == "revoked" or not m["active"]:
                status = "revoked"
            claims.update(
                sub=lic["id"],
                kind="license",
                status=status,
                plan="pospal-monthly",
                email=lic["email"],
                seats=lic["seats"],
                period_end=lic["period_end"],
                payment_grace_end=lic["payment_grace_end"],
                cancel_at=lic["cancel_at"],
            )
        answer: dict[str, Any] = {"token": encode_token(self.key, self.kid, claims)}
        self.answers.append(answer)
        if self.pending_keyset:
            answer["keyset"] = self.pending_keyset
        return answer
