"""The campaigns domain: which contacts get which action through which channel (the always-on randomised
campaign and the rule-based cart reminders), the activities that record it, and the e-mail click-throughs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from simulator import catalog as cat
from simulator.company.browsing import Browsing
from simulator.company.common import HOUR_US, Day, DayChanges, People, constant, labels
from simulator.company.crm import GRANTED, Crm
from simulator.config import US_PER_DAY
from simulator.world import World

EFFECT_US = 7 * US_PER_DAY
"""How long an action changes a person's purchase probability after it was sent."""
EXPLORATION_SHARE = 0.03
"""Share of the contacts not under an action's effect that the always-on randomised campaign picks each
day."""
NO_ACTION = 0


@dataclass
class CampaignState:
    """What carries from day to day in the campaigns: the action each person is under (arrays indexed by
    person) and the next activity id."""

    active_action: np.ndarray
    active_until: np.ndarray
    """Until when (epoch us) ``active_action`` changes the person's purchases."""
    next_activity_id: int

    @classmethod
    def initial(cls, world: World) -> CampaignState:
        """Before the first day: nobody under any action."""
        n = world.persons.height
        return cls(
            active_action=np.zeros(n, dtype=np.int64),
            active_until=np.zeros(n, dtype=np.int64),
            next_activity_id=1,
        )

    def action_on(self, instant: int) -> tuple[np.ndarray, np.ndarray]:
        """Per person: whether an action is in effect at ``instant``, and that action (``NO_ACTION`` if
        none)."""
        active = self.active_until > instant
        return active, np.where(active, self.active_action, NO_ACTION)


class Campaigns:
    """The campaigns, advanced one day at a time by :meth:`step`: they read the CRM's contacts and consents
    and browsing's abandoned carts, and send e-mail clicks through browsing."""

    def __init__(
        self,
        people: People,
        rng: np.random.Generator,
        state: CampaignState,
        crm: Crm,
        browsing: Browsing,
    ) -> None:
        self.people, self.rng, self.state = people, rng, state
        self.crm, self.browsing = crm, browsing

    def step(self, day: Day, out: DayChanges) -> None:
        """The always-on randomised campaign and the daily rule-based cart reminders."""
        rng, crm, contacts_state, state = self.rng, self.crm, self.crm.state, self.state
        start = day.start
        decisions = []
        # a random share of the contacts whose person is under no action's effect gets an action drawn
        # uniformly (no_action included), through a channel drawn uniformly among the consented ones
        eligible = np.flatnonzero(
            contacts_state.alive & (crm.created < start) & (state.active_until[crm.person] <= start)
        )
        chosen = eligible[rng.random(len(eligible)) < EXPLORATION_SHARE]
        granted = contacts_state.consent[chosen, : len(cat.CHANNELS)] == GRANTED
        granted[:, 2] &= self.people.has_app[crm.person[chosen]]
        n_channels = granted.sum(axis=1)
        action = np.where(n_channels > 0, rng.integers(0, len(cat.ACTIONS), len(chosen)), NO_ACTION)
        # channel: uniform among the granted ones
        pick = (rng.random(len(chosen)) * np.maximum(n_channels, 1)).astype(np.int64)
        channel = np.argmax(np.cumsum(granted, axis=1) > pick[:, None], axis=1)
        channel = np.where(action == NO_ACTION, -1, channel)
        propensity = np.where(n_channels > 0, 1.0 / len(cat.ACTIONS), 1.0)
        propensity = np.where(action == NO_ACTION, propensity, propensity / np.maximum(n_channels, 1))
        ts = start + 10 * HOUR_US + (rng.random(len(chosen)) * 2 * HOUR_US).astype(np.int64)
        label = day.start_date.isoformat()
        decisions.append((chosen, action, channel, propensity, ts, f"explore-{label}"))
        # cart reminders to yesterday's abandoners who accept e-mail, 80% of them (the rest is a holdout)
        persons = np.flatnonzero(self.browsing.state.abandoned_on == day.number - 1)
        contacts = crm.primary_contact[persons]
        ok = contacts >= 0
        contacts = contacts[ok]
        ok = contacts_state.alive[contacts] & (contacts_state.consent[contacts, 0] == GRANTED)
        contacts = contacts[ok]
        contacts = contacts[rng.random(len(contacts)) < 0.8]
        if len(contacts):
            n = len(contacts)
            decisions.append(
                (
                    contacts,
                    np.full(n, cat.ACTIONS.index("cart_reminder")),
                    np.zeros(n, np.int64),
                    np.full(n, 0.8),
                    start + 9 * HOUR_US + (rng.random(n) * HOUR_US).astype(np.int64),
                    "bau-cart-reminder",
                )
            )
        for contacts, action, channel, propensity, ts, campaign in decisions:
            if not len(contacts):
                continue
            ids = state.next_activity_id + np.arange(len(contacts))
            state.next_activity_id += len(contacts)
            offer = np.asarray([cat.OFFER_VALUE_CENTS[a] for a in cat.ACTIONS])[action]
            out.crm["activities"].append(
                pl.DataFrame(
                    {
                        "_ts": ts,
                        "_op": constant("c", len(contacts)),
                        "activity_id": ids,
                        "contact_id": crm.contact_id[contacts],
                        "campaign_id": constant(campaign, len(contacts)),
                        "activity_type": labels(
                            (action == NO_ACTION).astype(np.int64), ("campaign_touch", "control")
                        ),
                        "action": labels(action, cat.ACTIONS),
                        "channel": labels(channel, cat.CHANNELS),
                        "propensity": propensity,
                        "offer_value": offer,
                        "sent_at": ts,
                    }
                )
            )
            treated = action != NO_ACTION
            persons = crm.person[contacts[treated]]
            state.active_action[persons] = action[treated]
            state.active_until[persons] = ts[treated] + EFFECT_US
            if day.observed:
                emailed = treated & (channel == 0)
                who = crm.person[contacts[emailed]]
                clicked = rng.random(len(who)) < 0.04 + 0.08 * np.clip(self.people.engagement[who] / 2, 0, 1)
                when = ts[emailed][clicked] + (rng.exponential(3 * HOUR_US, clicked.sum())).astype(np.int64)
                out.clicks.append(
                    self.browsing.click_frame(
                        self.browsing.pick_links(who[clicked]),
                        when,
                        "track",
                        "Email Link Clicked",
                        campaign_id=constant(campaign, int(clicked.sum())),
                        activity_id=ids[emailed][clicked],
                    )
                )
