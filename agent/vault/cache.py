"""The agent's state as it persists it: sealed, type-checked, backed by marks outside the data directory,
and the freshness rule for tokens coming back from the server.

- `SealedCache.load()` reads `state.json` (`agent.vault.store`), checks its seal (`agent.vault.seal`) and
every
  field's type (`agent.vault.statefields`), reads the marks (`agent.vault.marks`) and merges them the cautious
  way: the later high-water mark and newest token time, any rollback latch. It never raises: an edited,
  damaged or type-confused state loses what it cannot prove and says "re-sync needed".
- `SealedCache.save(data)` seals and writes the state, then writes the marks when they changed.
- `check_fresh(claims, nonce, newest_iat)` is the rule for a token the agent just fetched: it must carry the
  nonce of the request just sent (`rn`) and must not be older than the newest token seen.

The seal key comes from the machine key (`agent.vault.seal.seal_key`); before the machine key exists nothing
licensing is stored, and the state is written unsealed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import Error, TokenInvalid
from agent.vault import marks as marks_mod
from agent.vault import statefields, store
from agent.vault.marks import Marks, MarkStore
from agent.vault.seal import Seal, seal_key, seal_state, unseal_state
from pospal_protocol.tokens import Claims

log = logging.getLogger(__name__)

# Server instances behind a load balancer may disagree this much about the time (the request window).
IAT_LEEWAY_S = 300


@dataclass(frozen=True)
class CacheLoad:
    """What `SealedCache.load` found: usable `data`, the file's `status`, whether the seal verified, the
    fields it had to drop, and the marks read."""

    status: store.LoadStatus
    data: dict[str, Any] = field(default_factory=dict)
    sealed: bool = False
    dropped: tuple[str, ...] = ()
    marks: Marks = field(default_factory=Marks)

    @property
    def resync_needed(self) -> bool:
        """True when something was damaged or could not be proven, so a sync should refresh it."""
        return self.status in (store.LoadStatus.RECOVERED, store.LoadStatus.RESYNC_NEEDED) or bool(
            self.dropped
        )


class SealedCache:
    """`state.json` plus its marks (see the module docstring). Not thread-safe: the service serialises."""

    def __init__(self, data_dir: Path, key_store: Any, mark_store: MarkStore | None = None) -> None:
        self.state_store = store.StateStore(data_dir)
        self.key_store = key_store
        self.mark_store = mark_store if mark_store is not None else marks_mod.default_store(data_dir)
        self.marks = Marks()
        self._seal: Seal | None = None
        self._marks_doc: str | None = None

    def seal(self) -> Seal | None:
        """The seal of this machine's key, or None while there is no (readable) machine key."""
        if self._seal is None:
            try:
                key = self.key_store.load()
            except Error as exc:
                log.warning("machine key unreadable, state cannot be sealed: %s", exc.message)
                return None
            if key is not None:
                self._seal = Seal(seal_key(key))
        return self._seal

    def forget_seal(self) -> None:
        """Drop the cached seal (after the machine key changed)."""
        self._seal = None

    def load(self) -> CacheLoad:
        """Read, unseal, type-check and merge with the marks; never raises."""
        loaded = self.state_store.load()
        seal = self.seal()
        body, sealed = unseal_state(loaded.data, seal)
        data, dropped = statefields.clean(body, sealed)
        if loaded.data and not sealed:
            log.warning(
                "state.json is not sealed by this machine (edited, or copied from elsewhere): "
                "its license data is ignored until the next sync"
            )
        if dropped:
            log.warning("state fields dropped: %s", ", ".join(dropped))
        marks = marks_mod.read_marks(self.mark_store, seal)
        self.marks = marks
        data["high_water"] = marks_mod.later(data.get("high_water"), marks.high_water)
        data["token_iat"] = marks_mod.later(data.get("token_iat"), marks.token_iat)
        if marks.rolled_back:
            data["clock_rolled_back"] = True
        if data.get("provisional_trial_started") is not None:
            # The one provisional trial started when the marks say, however the state came to say later.
            recorded = (
                marks.provisional_trial
                if marks.provisional_trial is not None
                else (0 if marks.provisional_seen else None)
            )
            data["provisional_trial_started"] = marks_mod.earlier(data["provisional_trial_started"], recorded)
        for name in ("high_water", "token_iat"):
            if data[name] is None:
                del data[name]
        status = loaded.status
        return CacheLoad(status, data, sealed, tuple(dropped), marks)

    def save(self, data: dict[str, Any]) -> None:
        """Seal and write `data`, then the marks if they changed. Raises `StoreError` for the state file;
        a mark store that refuses is logged (the state is still written)."""
        seal = self.seal()
        self.state_store.save(seal_state(data, seal))
        if seal is None:
            return
        provisional = marks_mod.earlier(
            self.marks.provisional_trial, _int(data.get("provisional_trial_started"))
        )
        if provisional is None and self.marks.provisional_seen:
            provisional = 0  # recorded but unreadable: used, long ago
        new = Marks(
            high_water=_int(data.get("high_water")),
            token_iat=_int(data.get("token_iat")),
            provisional_trial=provisional,
            rolled_back=data.get("clock_rolled_back") is True,
            provisional_seen=self.marks.provisional_seen or provisional is not None,
        )
        doc = new.document(seal)
        if doc == self._marks_doc:
            return
        try:
            self.mark_store.write(doc)
        except Error as exc:
            log.warning("could not write the tamper marks: %s", exc.message)
            return
        self._marks_doc, self.marks = doc, new


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def check_fresh(claims: Claims, nonce: str | None, newest_iat: int | None) -> None:
    """Refuse a fetched token that does not answer the request just sent, or is older than the newest token
    seen: raises `TokenInvalid` ("replay" or "stale"). `nonce` None skips the nonce check (a token not
    fetched by a signed request, such as an offline license file, which has its own rules)."""
    if nonce is not None and claims.raw.get("rn") != nonce:
        raise TokenInvalid("replay", "The server's answer does not answer this request (a replayed token?).")
    if newest_iat is not None and claims.iat < newest_iat - IAT_LEEWAY_S:
        raise TokenInvalid("stale", "The server's answer is older than the license this PC already has.")
