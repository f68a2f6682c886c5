"""The campaigns domain: which contacts get which action through which channel (the always-on randomised
campaign and the rule-based cart reminders), the activities that record it, and the e-mail click-throughs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

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
NBA_CAMPAIGN = "nba"
"""The campaign of the activities the campaign tool sends for the next-best-action recommendations; it logs
propensity 1 for them (it executes the decision it was given: not a randomised assignment)."""
RECOMMENDATION_VALID_DAYS = 7
"""Days from its decision date within which the campaign tool still executes a recommendation."""


@dataclass
class CampaignState:
    """What carries from day to day in the campaigns: the action each person is under (arrays indexed by
    person) and the next activity id."""

    active_action: np.ndarray
    active_until: np.ndarray
    """Until when (epoch us) ``active_action`` changes the person's purchases."""
    next_activity_id: int
    executed_decisions: set[str] = field(default_factory=set)
    """Decision ids of the recommendations the campaign tool already handled (executed or refused)."""

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
            self._send(day, out, contacts, action, channel, propensity, ts, campaign)

    def _send(
        self,
        day: Day,
        out: DayChanges,
        contacts: np.ndarray,
        action: np.ndarray,
        channel: np.ndarray,
        propensity: np.ndarray | pl.Series,
        ts: np.ndarray,
        campaign: str,
        decision_id: pl.Series | None = None,
    ) -> np.ndarray:
        """Record the activities of one campaign's decisions (with the decision behind each when given),
        put the treated people under their action's effect and draw the e-mail click-throughs; returns the
        activity ids."""
        rng, crm, state = self.rng, self.crm, self.state
        if not len(contacts):
            return np.zeros(0, np.int64)
        ids = state.next_activity_id + np.arange(len(contacts))
        state.next_activity_id += len(contacts)
        offer = np.asarray([cat.OFFER_VALUE_CENTS[a] for a in cat.ACTIONS])[action]
        extra = {} if decision_id is None else {"decision_id": decision_id}
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
                    **extra,
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
        return ids

    def execute(self, day: Day, out: DayChanges, recommendations: pl.DataFrame) -> pl.DataFrame:
        """The CRM's campaign tool executes the recommendations it received (``contact_id``, ``decision_id``,
        ``decision_date``, ``action``, ``channel``, ``policy_version``) that are due: each decision once, on
        the first day from its decision date and within ``RECOMMENDATION_VALID_DAYS``, through its channel
        only while the contact exists and still consents to it (push also needs the app). Returns one row
        per recommendation looked at today: the decision, the contact position, ``executed`` and, when
        not executed, ``skipped`` (the reason), plus the ``activity_id`` and ``sent_at`` of executed ones."""
        state, crm, contacts_state = self.state, self.crm, self.crm.state
        today = day.start_date
        due = recommendations.filter(
            pl.col("decision_date").is_null()
            | (
                (pl.col("decision_date") <= today)
                & (pl.col("decision_date") > today - timedelta(days=RECOMMENDATION_VALID_DAYS))
            ),
            ~pl.col("decision_id").is_in(list(state.executed_decisions)),
        ).sort("contact_id", "decision_id")
        contact_id = due["contact_id"].to_numpy()
        position = np.searchsorted(crm.contact_id, contact_id)
        position = np.minimum(position, len(crm.contact_id) - 1)
        known = crm.contact_id[position] == contact_id
        action = due["action"].replace_strict(cat.ACTIONS, range(len(cat.ACTIONS)), default=-1).to_numpy()
        channel = due["channel"].replace_strict(cat.CHANNELS, range(len(cat.CHANNELS)), default=-1)
        channel = channel.fill_null(-1).to_numpy()
        alive = known & contacts_state.alive[position] & (crm.created[position] < day.end)
        sendable = (action > NO_ACTION) & (channel >= 0)
        column = np.maximum(channel, 0)
        consented = contacts_state.consent[position, column] == GRANTED
        consented &= (channel != cat.CHANNELS.index("push")) | self.people.has_app[crm.person[position]]
        skipped = np.select(
            [~known, ~alive, ~sendable, ~consented],
            ["unknown_contact", "contact_deleted", "not_an_action", "no_consent"],
            default="",
        )
        go = np.flatnonzero(skipped == "")
        n = len(go)
        ts = day.start + 10 * HOUR_US + (self.rng.random(n) * 2 * HOUR_US).astype(np.int64)
        ids = self._send(
            day,
            out,
            position[go],
            action[go],
            channel[go],
            np.ones(n),  # the tool executes the decision as given (the policy's own odds are in gold)
            ts,
            NBA_CAMPAIGN,
            due["decision_id"].gather(go),
        )
        # every decision looked at is settled: executed now, or never (its channel's consent may come back,
        # but the campaign tool does not send a stale decision later)
        state.executed_decisions.update(due["decision_id"].to_list())
        activity = np.full(len(due), -1, np.int64)
        sent = np.full(len(due), -1, np.int64)
        activity[go], sent[go] = ids, ts
        return due.with_columns(
            pl.Series("contact", position),
            pl.Series("executed", skipped == ""),
            pl.Series("skipped", skipped).replace("", None),
            pl.Series("activity_id", activity).replace(-1, None),
            pl.Series("sent_at_us", sent).replace(-1, None),
        )
