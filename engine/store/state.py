"""Incremental state in the store (``etl_state``, schema 4): what ``etl run --store`` reads
before a run and saves after loading it.

The state of an instance is where its data is: a run loaded into the store starts from the
state saved with the last load of that instance, whatever the state file beside the output
says (a run that was not loaded must not move the store's mark). It is saved after the load
committed, in a transaction of its own: a crash in between leaves the older mark, so the next
run fetches some records again - never fewer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import sqlalchemy as sa

from . import schema
from .connect import Store

log = logging.getLogger("etl.store")


class StoreState:
    """The ``etl_state`` rows of one store; ``instance`` (``--instance``) overrides the name a
    run gives itself."""

    def __init__(self, store: Store, instance: str | None = None):
        self.store = store
        self.instance = instance
        self.label = f"store {store.label}"

    def read(self, integration: str, instance: str) -> dict[str, dict]:
        """Step id -> the state saved for ``instance`` ({} when none, or when the instance is
        another integration's)."""
        name = self.instance or instance
        with self.store.read() as conn:
            row = conn.execute(sa.select(schema.instances).where(schema.instances.c.name == name)).first()
            if row is None:
                return {}
            if row.integration != integration:
                log.warning(
                    "instance %s of the store is of integration %s, not %s: no saved state used",
                    name,
                    row.integration,
                    integration,
                )
                return {}
            rows = conn.execute(
                sa.select(schema.state.c.step, schema.state.c.state).where(schema.state.c.instance_id == row.id)
            )
            return {step: value for step, value in rows if isinstance(value, dict)}

    def write(self, integration: str, instance: str, steps: Mapping[str, dict]) -> None:
        """Replace the saved state of ``instance`` (loaded already: its row exists)."""
        name = self.instance or instance
        now = int(time.time() * 1000)
        with self.store.write() as conn:
            self.store.lock_instance(conn, name)
            row = conn.execute(sa.select(schema.instances.c.id).where(schema.instances.c.name == name)).first()
            if row is None:
                return  # nothing of it was loaded: no state to keep
            conn.execute(sa.delete(schema.state).where(schema.state.c.instance_id == row.id))
            if steps:
                conn.execute(
                    sa.insert(schema.state),
                    [
                        {"instance_id": row.id, "step": step, "state": dict(value), "saved_on": now}
                        for step, value in steps.items()
                    ],
                )
