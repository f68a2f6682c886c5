"""The CRM domain: contacts, their consents per channel, and their life (sign-ups, preference-centre changes,
profile edits, deletions and restores)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from simulator import catalog as cat
from simulator.company.common import Day, DayChanges, People, constant, labels, times
from simulator.world import World

GRANTED, REVOKED = 1, 2
CONTACT_ATTRIBUTES = tuple(
    f'{{"tier":"{tier}","source":"{source}"}}'
    for tier in ("standard", "gold")
    for source in ("signup", "import")
)
"""A contact's ``attributes`` JSON by code: 2 if its person is loyal (gold tier), plus 1 if it was
imported."""


@dataclass
class CrmState:
    """What carries from day to day in the CRM (arrays indexed by contact)."""

    alive: np.ndarray
    deleted: np.ndarray
    consent: np.ndarray
    """Per contact and channel of ``CONSENT_CHANNELS``: 0 never asked, ``GRANTED`` or ``REVOKED``."""

    @classmethod
    def initial(cls, world: World) -> CrmState:
        """Before the first day: no contact exists yet."""
        n = world.contacts.height
        return cls(
            alive=np.zeros(n, dtype=bool),
            deleted=np.zeros(n, dtype=bool),
            consent=np.zeros((n, len(cat.CONSENT_CHANNELS)), dtype=np.int8),
        )


class Crm:
    """The CRM's contacts and consents, advanced one day at a time by :meth:`step`."""

    def __init__(
        self, world: World, people: People, rng: np.random.Generator, state: CrmState, language_from: int
    ) -> None:
        self.people, self.rng, self.state = people, rng, state
        self.language_from = language_from
        """The day the ``preferred_language`` column is added to the contacts table."""
        c = world.contacts
        self.contacts = c.select("contact_id", "email", "phone", pl.col("created_us").alias("created_at"))
        self.contact_id = c["contact_id"].to_numpy()
        self.imported = c["is_duplicate"].to_numpy()
        self.person = c["person"].to_numpy()
        self.created = c["created_us"].to_numpy()
        self.primary_contact = np.full(people.count, -1, dtype=np.int64)
        """Per person, the contact it signed up with (-1 for none)."""
        primary = np.flatnonzero(~self.imported)
        self.primary_contact[self.person[primary]] = primary

    def _contact_rows(self, idx: np.ndarray, ts: np.ndarray, op: str, day: int) -> pl.DataFrame:
        people = self.people
        persons = self.person[idx]
        profile = people.profiles[persons]
        n = len(idx)
        if day < self.language_from:
            language = pl.Series([None] * n, dtype=pl.String)
        else:
            language = labels(people.country[persons], cat.LANGUAGES)
        birth = people.birth_days[persons].astype(np.float64)
        birth[self.contact_id[idx] % 3 == 0] = np.nan
        return pl.concat(
            [
                self.contacts[idx],
                pl.DataFrame(
                    {
                        "_ts": ts,
                        "_op": constant(op, n),
                        "first_name": profile["first_name"],
                        "last_name": profile["last_name"],
                        "country": profile["country"],
                        "birth_date": pl.Series(birth, nan_to_null=True).cast(pl.Int32),
                        "attributes": labels(
                            2 * people.loyal[persons] + self.imported[idx], CONTACT_ATTRIBUTES
                        ),
                        "updated_at": ts,
                        "preferred_language": language,
                    }
                ),
            ],
            how="horizontal",
        )

    def _consent_rows(
        self, contacts: np.ndarray, channels: np.ndarray, ts: np.ndarray, op: str
    ) -> pl.DataFrame:
        status = self.state.consent[contacts, channels]
        return pl.DataFrame(
            {
                "_ts": ts,
                "_op": constant(op, len(contacts)),
                "consent_id": (contacts * len(cat.CONSENT_CHANNELS) + channels + 1).astype(np.int64),
                "contact_id": self.contact_id[contacts],
                "channel": labels(channels, cat.CONSENT_CHANNELS),
                "status": labels(np.where(status == GRANTED, 0, 1), ("granted", "revoked")),
                "source": constant("signup" if op == "c" else "preference_center", len(contacts)),
                "updated_at": ts,
            }
        )

    def step(self, day: Day, out: DayChanges) -> None:
        """One day of the CRM: new contacts with their consents, preference-centre changes, profile edits,
        deletions (with their consents) and restores of deleted contacts."""
        rng, state, people = self.rng, self.state, self.people
        start, end = day.start, day.end
        changes = out.crm
        since = start if not day.first else np.iinfo(np.int64).min
        new = np.flatnonzero((self.created >= since) & (self.created < end))
        if len(new):
            state.alive[new] = True
            new_ts = np.maximum(self.created[new], start)
            changes["contacts"].append(self._contact_rows(new, new_ts, "c", day.number))
            persons = self.person[new]
            wants = np.stack(
                [
                    rng.random(len(new)) < 0.7,
                    people.has_phone[persons] & (rng.random(len(new)) < 0.4),
                    people.has_app[persons] & (rng.random(len(new)) < 0.6),
                    rng.random(len(new)) >= cat.PROFILING_OBJECTION_SHARE,
                ],
                axis=1,
            )
            asked = np.stack(
                [
                    np.ones(len(new), bool),
                    people.has_phone[persons],
                    people.has_app[persons],
                    np.ones(len(new), bool),
                ],
                axis=1,
            )
            for ch in range(len(cat.CONSENT_CHANNELS)):
                rows = new[asked[:, ch]]
                state.consent[rows, ch] = np.where(wants[asked[:, ch], ch], GRANTED, REVOKED)
                ts = np.maximum(self.created[rows], start) + 1_000 * (ch + 1)
                changes["consents"].append(self._consent_rows(rows, np.full(len(rows), ch), ts, "c"))
        alive = np.flatnonzero(state.alive & (self.created < start))
        # preference-centre changes: revoke a granted channel or grant a revoked one
        has = state.consent[alive] > 0
        flip_p = np.where(state.consent[alive] == GRANTED, 0.002, 0.001)
        flips = has & (rng.random(has.shape) < flip_p)
        rows, chans = np.nonzero(flips)
        if len(rows):
            contacts = alive[rows]
            state.consent[contacts, chans] = np.where(
                state.consent[contacts, chans] == GRANTED, REVOKED, GRANTED
            )
            changes["consents"].append(self._consent_rows(contacts, chans, times(rng, start, len(rows)), "u"))
        # profile edits, deletions (with their consents) and restores of deleted contacts
        edited = alive[rng.random(len(alive)) < 0.003]
        if len(edited):
            changes["contacts"].append(
                self._contact_rows(edited, times(rng, start, len(edited)), "u", day.number)
            )
        deleted = alive[rng.random(len(alive)) < 0.0003]
        # a row changed earlier today is not deleted today: no change event may follow a delete the same day
        touched = np.concatenate([edited, alive[rows]]) if len(rows) else edited
        deleted = deleted[~np.isin(deleted, touched)]
        if len(deleted):
            ts = times(rng, start, len(deleted))
            changes["contacts"].append(
                pl.DataFrame(
                    {"_ts": ts, "_op": constant("d", len(deleted)), "contact_id": self.contact_id[deleted]}
                )
            )
            rows, chans = np.nonzero(state.consent[deleted] > 0)
            changes["consents"].append(self._consent_rows(deleted[rows], chans, ts[rows], "d"))
            state.consent[deleted] = 0
            state.alive[deleted] = False
            state.deleted[deleted] = True
        gone = np.flatnonzero(state.deleted & ~np.isin(np.arange(len(state.alive)), deleted))
        restored = gone[rng.random(len(gone)) < 0.05]
        if len(restored):
            state.alive[restored] = True
            state.deleted[restored] = False
            changes["contacts"].append(
                self._contact_rows(restored, times(rng, start, len(restored)), "c", day.number)
            )
