"""Uplift models: for every person and every action, the expected revenue in the label horizon and the
purchase probability, learned with xgboost from the logged campaign decisions (gold ``training_decisions``).

Three learners, compared against the simulator's truth (``benchmarks/uplift_learners.py``):

- ``s_learner`` (the default): one purchase classifier for all actions, with the action as a native
  categorical feature, trained on the decisions of randomised campaigns, times one order-value regressor (the
  revenue in the horizon of the decisions that led to a purchase, all campaigns, the action again a feature).
  Pooling the actions lets every decision inform the shared baseline, and splitting the revenue into whether a
  person buys and how much they spend when they do keeps the heavy-tailed basket value out of the noisy
  comparison of the actions. On the 200,000-person benchmark it is the only learner that captures more than
  half of the personalisation headroom (0.82 of it on the out-of-time decisions, with the seeds 7 and 1
  alike).
- ``t_learner``: one revenue regressor and one purchase classifier per action, each trained on the decisions
  that logged that action, weighted by the inverse of the logged propensity (clipped), so that each action's
  model learns on the population the logging policy sampled rather than on the policy's own choices.
- ``dr_learner``: the doubly robust learner. The per-action revenue models of the T-learner are the nuisance
  models; on the decisions of randomised campaigns (those that logged every action) the doubly robust
  pseudo-outcome of each action against ``no_action`` is regressed on the features, and the expected revenue
  of an action is the no-action revenue plus that effect. The propensity of an action in such a campaign is
  its share of the campaign's decisions (the campaign draws the action at random, whatever the channel);
  decisions that had no choice (logged with propensity 1: no channel could reach the person) are left out.

Out-of-time validation: the latest ``validation_days`` decision dates validate (early stopping, metrics); the
earlier ones train. Leaves are sized to the data: unless ``min_child_weight`` is fixed, every booster's
minimum leaf weight is ``min_child_share`` of its training rows' total hessian weight
(:func:`min_child_weight`), so a leaf holds the same share of the data at 10,000 persons as at 1,000,000.
Fixed seeds; categorical features and missing values are left to xgboost (``enable_categorical``, pandas
``category`` dtype, NaN).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import xgboost as xgb

from ml.features import CATEGORICAL_COLUMNS, CATEGORY_VALUES, model_frame

ACTIONS = ("no_action", "discount_10", "free_shipping", "cart_reminder", "loyalty_offer")
"""The action catalogue (``no_action`` first), as the policy file names it."""
BASELINE = "no_action"
METHODS = ("s_learner", "t_learner", "dr_learner")
"""The learners, the default first."""
DECISION_COLUMNS = (
    "activity_id", "person_id", "contact_id", "campaign_id", "activity_type", "action", "channel",
    "propensity", "offer_value", "decision_at", "decision_date", "feature_snapshot_date", "snapshot_date",
    "label_window_end_at", "converted", "order_count_in_horizon", "revenue_in_horizon", "first_order_at",
)  # fmt: skip
"""Columns of the training set that are not features: the decision, its logging and its labels."""
NOT_MODEL_FEATURES = ("has_profiling_consent",)
"""Feature columns the models leave out: an objection to profiling decides whether a person is scored at
all."""
METADATA_FILE = "uplift_model.json"
ACTION_FEATURE = "action"
"""The column of the model frame that names the action (``s_learner``), a native categorical feature."""


def training_feature_columns(columns: Sequence[str]) -> list[str]:
    """The model's feature columns among the columns of a training set or of ``person_features_daily``."""
    return [c for c in columns if c not in DECISION_COLUMNS and c not in NOT_MODEL_FEATURES]


@dataclass(frozen=True)
class TrainingConfig:
    """How a model is trained: the out-of-time split, the learner, the seed and the xgboost parameters."""

    validation_days: int = 7
    """The latest ``validation_days`` decision dates validate; the earlier ones train."""
    seed: int = 7
    max_rounds: int = 400
    early_stopping_rounds: int = 200
    """Patient: on a noisy revenue outcome the validation loss wanders long before the heterogeneity shows."""
    learning_rate: float = 0.05
    max_depth: int = 3
    min_child_weight: float | None = None
    """A fixed minimum hessian weight of a leaf; ``None``: ``min_child_share`` of each booster's training
    weight."""
    min_child_share: float = 0.05
    """Large leaves, whatever the scale: revenue within a week is zero for most decisions and the effects are
    a few percent of it, so a leaf holds at least this share of the booster's total hessian weight."""
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 10.0
    max_weight: float = 50.0
    """Inverse-propensity weights are clipped at this value."""
    method: str = METHODS[0]
    actions: tuple[str, ...] = ACTIONS

    def xgboost_params(self, objective: str, min_child_weight: float | None = None) -> dict:
        """The xgboost parameters of one booster with ``objective`` (``min_child_weight``: the one worked out
        for its training rows when the configuration does not fix it)."""
        return {
            "objective": objective,
            "eta": self.learning_rate,
            "max_depth": self.max_depth,
            "min_child_weight": self.min_child_weight
            if self.min_child_weight is not None
            else min_child_weight,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "lambda": self.reg_lambda,
            "tree_method": "hist",
            "seed": self.seed,
            "nthread": 2,
        }


class UpliftModel:
    """The trained boosters of one learner and how they combine into the expected revenue and purchase
    probability of every action: what is saved, logged to MLflow and served."""

    def __init__(
        self,
        actions: Sequence[str],
        feature_columns: Sequence[str],
        method: str,
        params: dict,
        boosters: dict[str, xgb.Booster],
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: expected one of {METHODS}")
        self.actions = tuple(actions)
        self.feature_columns = tuple(feature_columns)
        self.method = method
        self.params = dict(params)
        self.boosters = dict(boosters)

    def _predict(self, name: str, frame: pd.DataFrame) -> np.ndarray:
        booster = self.boosters[name]
        return np.asarray(booster.inplace_predict(frame), dtype=np.float64)

    def predict(self, features: pl.DataFrame | pd.DataFrame) -> pl.DataFrame:
        """One row per input row: ``expected_revenue__<action>`` (EUR) and ``purchase_probability__<action>``
        for every action."""
        frame = model_frame(features, self.feature_columns)
        revenue = {}
        if self.method == "s_learner":
            purchase = {}
            with_action = action_frame(frame, self.actions[0], self.actions)
            for code, action in enumerate(self.actions):  # one frame, its action column set in place
                with_action[ACTION_FEATURE] = pd.Categorical.from_codes(
                    np.full(len(frame), code, dtype=np.int8), categories=list(self.actions)
                )
                purchase[action] = self._predict("purchase", with_action)
                revenue[action] = purchase[action] * self._predict("order_value", with_action)
            columns = {f"expected_revenue__{a}": revenue[a] for a in self.actions}
            columns |= {f"purchase_probability__{a}": purchase[a] for a in self.actions}
            return pl.DataFrame(columns)
        if self.method == "t_learner":
            for action in self.actions:
                revenue[action] = self._predict(f"revenue__{action}", frame)
        else:
            baseline = self._predict(f"revenue__{BASELINE}", frame)
            for action in self.actions:
                effect = 0.0 if action == BASELINE else self._predict(f"effect__{action}", frame)
                revenue[action] = baseline + effect
        columns = {f"expected_revenue__{a}": revenue[a] for a in self.actions}
        columns |= {
            f"purchase_probability__{a}": self._predict(f"purchase__{a}", frame) for a in self.actions
        }
        return pl.DataFrame(columns)

    def save(self, directory: Path) -> None:
        """Write every booster as xgboost JSON and the model's description as ``uplift_model.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, booster in self.boosters.items():
            booster.save_model(directory / f"{name}.json")
        metadata = {
            "actions": list(self.actions),
            "feature_columns": list(self.feature_columns),
            "method": self.method,
            "params": self.params,
            "boosters": sorted(self.boosters),
            "categories": {
                c: list(CATEGORY_VALUES[c]) for c in CATEGORICAL_COLUMNS if c in self.feature_columns
            },
        }
        (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: Path) -> UpliftModel:
        """The model saved under ``directory`` by :meth:`save`."""
        directory = Path(directory)
        metadata = json.loads((directory / METADATA_FILE).read_text())
        boosters = {}
        for name in metadata["boosters"]:
            booster = xgb.Booster()
            booster.load_model(directory / f"{name}.json")
            boosters[name] = booster
        return cls(
            metadata["actions"], metadata["feature_columns"], metadata["method"], metadata["params"], boosters
        )

    @property
    def trees_and_depth(self) -> dict:
        """Boosters, trees in all and the trees' maximum depth (for the benchmark report)."""
        trees = sum(b.num_boosted_rounds() for b in self.boosters.values())
        return {"boosters": len(self.boosters), "trees": trees, "max_depth": self.params.get("max_depth")}


@dataclass
class TrainingResult:
    """A trained model with its out-of-time split, validation predictions, metrics and feature importance."""

    model: UpliftModel
    train: pl.DataFrame
    validation: pl.DataFrame
    validation_predictions: pl.DataFrame
    metrics: dict[str, float]
    importance: dict[str, dict[str, float]]
    split: dict[str, str]
    rounds: dict[str, int] = field(default_factory=dict)


def out_of_time_split(training: pl.DataFrame, validation_days: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The decisions of the latest ``validation_days`` decision dates (validation) and the earlier ones
    (train)."""
    dates = training["decision_date"].unique().sort()
    if validation_days < 1 or len(dates) <= validation_days:
        raise ValueError(
            f"{len(dates)} decision dates cannot be split into training dates and {validation_days} "
            "validation dates"
        )
    first_validation = dates[len(dates) - validation_days]
    return (
        training.filter(pl.col("decision_date") < first_validation),
        training.filter(pl.col("decision_date") >= first_validation),
    )


def campaign_action_shares(decisions: pl.DataFrame, actions: Sequence[str]) -> pl.DataFrame:
    """Per campaign and action, the action's share of the campaign's decisions; ``randomised``: the campaign
    logged every action."""
    counts = decisions.group_by("campaign_id", "action").agg(pl.len().alias("n"))
    return counts.with_columns(
        (pl.col("n") / pl.col("n").sum().over("campaign_id")).alias("share"),
        (
            pl.col("action").filter(pl.col("action").is_in(list(actions))).n_unique().over("campaign_id")
            == len(actions)
        ).alias("randomised"),
    ).drop("n")


def action_frame(frame: pd.DataFrame, action: str | np.ndarray, actions: Sequence[str]) -> pd.DataFrame:
    """``frame`` (a :func:`ml.features.model_frame`) with the column ``action``: ``action`` for every row (or
    one per row), a ``category`` over ``actions``."""
    values = np.full(len(frame), action, dtype=object) if isinstance(action, str) else action
    return frame.assign(**{ACTION_FEATURE: pd.Categorical(values, categories=list(actions))})


def min_child_weight(objective: str, label: np.ndarray, weight: np.ndarray, share: float) -> float:
    """``share`` of the total hessian weight of the rows at the starting prediction (their weighted mean): the
    sum of the weights for squared error, times ``p (1 - p)`` for the logistic loss."""
    total = float(weight.sum())
    if objective == "binary:logistic" and total > 0:
        p = float(np.dot(weight, label) / total)
        total *= p * (1.0 - p)
    return share * total


def _weights(frame: pl.DataFrame, config: TrainingConfig) -> np.ndarray:
    return np.minimum(1.0 / frame["propensity"].to_numpy(), config.max_weight)


def _fit(
    config: TrainingConfig,
    objective: str,
    train: tuple[pd.DataFrame, np.ndarray, np.ndarray],
    validation: tuple[pd.DataFrame, np.ndarray, np.ndarray],
) -> xgb.Booster:
    """One booster with early stopping on the validation rows (a fixed ``max_rounds`` when there are none)."""
    x, y, w = train
    leaf = min_child_weight(objective, y, w, config.min_child_share)
    dtrain = xgb.DMatrix(x, label=y, weight=w, enable_categorical=True)
    evals, stopping = [], None
    if len(validation[1]):
        vx, vy, vw = validation
        evals = [(xgb.DMatrix(vx, label=vy, weight=vw, enable_categorical=True), "validation")]
        stopping = config.early_stopping_rounds
    booster = xgb.train(
        config.xgboost_params(objective, leaf),
        dtrain,
        num_boost_round=config.max_rounds,
        evals=evals,
        early_stopping_rounds=stopping,
        verbose_eval=False,
    )
    if stopping is not None:
        booster = booster[: booster.best_iteration + 1]
    return booster


def train_uplift(training: pl.DataFrame, config: TrainingConfig = TrainingConfig()) -> TrainingResult:
    """Train the uplift model of ``config.method`` on the logged decisions ``training`` (gold
    ``training_decisions``), out of time: earlier decision dates train, the latest ``validation_days``
    validate."""
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}: expected one of {METHODS}")
    training = training.filter(pl.col("action").is_in(list(config.actions)))
    train, validation = out_of_time_split(training, config.validation_days)
    features = training_feature_columns(training.columns)
    missing = [a for a in config.actions if train.filter(pl.col("action") == a).is_empty()]
    if missing:
        raise ValueError(f"no training decisions for the actions {missing}")
    boosters = _fit_all(config, booster_rows(train, validation, features, config))
    if config.method == "dr_learner":
        boosters |= _fit_all(config, effect_rows(train, validation, features, boosters, config))
    params = asdict(config) | {"features": len(features)}
    params["actions"] = list(config.actions)
    model = UpliftModel(config.actions, features, config.method, params, boosters)
    predictions = model.predict(validation)
    split = {
        "train_from": str(train["decision_date"].min()),
        "train_until": str(train["decision_date"].max()),
        "validation_from": str(validation["decision_date"].min()),
        "validation_until": str(validation["decision_date"].max()),
    }
    importance = {
        name: {k: float(v) for k, v in booster.get_score(importance_type="gain").items()}
        for name, booster in boosters.items()
    }
    return TrainingResult(
        model=model,
        train=train,
        validation=validation,
        validation_predictions=predictions,
        metrics=validation_metrics(validation, predictions, config.actions),
        importance=importance,
        split=split,
        rounds={name: b.num_boosted_rounds() for name, b in boosters.items()},
    )


def randomised_decisions(
    frame: pl.DataFrame, decisions: pl.DataFrame, actions: Sequence[str]
) -> pl.DataFrame:
    """The rows of ``frame`` that randomised campaigns (campaigns that logged every action in ``decisions``)
    decided with a choice: a decision logged with certainty (``no_action`` for a person no channel could
    reach) is left out."""
    shares = campaign_action_shares(decisions.filter(pl.col("propensity") < 1), actions)
    randomised = shares.filter("randomised").select("campaign_id").unique()
    return frame.filter(pl.col("propensity") < 1).join(randomised, on="campaign_id", how="semi")


Rows = tuple[pd.DataFrame, np.ndarray, np.ndarray]
"""The rows a booster learns from or validates on: the feature matrix, the label and the weights."""


def booster_rows(
    train: pl.DataFrame, validation: pl.DataFrame, features: Sequence[str], config: TrainingConfig
) -> dict[str, tuple[str, Rows, Rows]]:
    """Per booster of ``config``'s learner (but the ``dr_learner``'s effect boosters, :func:`effect_rows`):
    its objective and its training and validation rows.

    The ``s_learner``'s two boosters take the action as a categorical feature: ``purchase`` (whether the
    person buys in the horizon) on the randomised campaigns' decisions, unweighted (the campaign drew the
    action at random), and ``order_value`` (the revenue in the horizon of the decisions followed by a
    purchase) on every campaign's decisions, since how much a buyer spends depends on the action only through
    the shop's rules. The other learners have a revenue and a purchase booster per action, on the decisions
    that logged it, weighted by the inverse of the logged propensity."""
    if config.method == "s_learner":
        decisions = pl.concat([train, validation])

        def pooled(frame: pl.DataFrame, target: str) -> Rows:
            x = action_frame(model_frame(frame, features), frame["action"].to_numpy(), config.actions)
            return x, frame[target].cast(pl.Float64).to_numpy(), np.ones(frame.height)

        tr, va = (randomised_decisions(f, decisions, config.actions) for f in (train, validation))
        if tr.is_empty():
            raise ValueError("no decisions of a randomised campaign to train the purchase model on")
        bought = [f.filter(pl.col("converted")) for f in (train, validation)]
        return {
            "purchase": ("binary:logistic", pooled(tr, "converted"), pooled(va, "converted")),
            "order_value": (
                "reg:squarederror",
                pooled(bought[0], "revenue_in_horizon"),
                pooled(bought[1], "revenue_in_horizon"),
            ),
        }

    def rows(frame: pl.DataFrame, target: str) -> Rows:
        return (
            model_frame(frame, features),
            frame[target].cast(pl.Float64).to_numpy(),
            _weights(frame, config),
        )

    out = {}
    for action in config.actions:
        tr, va = (f.filter(pl.col("action") == action) for f in (train, validation))
        out[f"revenue__{action}"] = (
            "reg:squarederror",
            rows(tr, "revenue_in_horizon"),
            rows(va, "revenue_in_horizon"),
        )
        out[f"purchase__{action}"] = ("binary:logistic", rows(tr, "converted"), rows(va, "converted"))
    return out


def _fit_all(config: TrainingConfig, rows: dict[str, tuple[str, Rows, Rows]]) -> dict[str, xgb.Booster]:
    return {name: _fit(config, objective, tr, va) for name, (objective, tr, va) in rows.items()}


def effect_rows(
    train: pl.DataFrame,
    validation: pl.DataFrame,
    features: Sequence[str],
    boosters: dict[str, xgb.Booster],
    config: TrainingConfig,
) -> dict[str, tuple[str, Rows, Rows]]:
    """The rows of the ``dr_learner``'s effect booster of every action against ``no_action``: the randomised
    campaigns' decisions, labelled with the doubly robust pseudo-outcome of the fitted revenue
    ``boosters``."""
    # a decision logged with certainty (no_action for a person no channel could reach) had no choice: left out
    train, validation = (f.filter(pl.col("propensity") < 1) for f in (train, validation))
    shares = campaign_action_shares(pl.concat([train, validation]), config.actions)
    randomised = shares.filter("randomised").select("campaign_id", "action", "share")

    def pseudo_outcomes(frame: pl.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
        frame = frame.join(randomised.select("campaign_id").unique(), on="campaign_id")
        x = model_frame(frame, features)
        y = frame["revenue_in_horizon"].cast(pl.Float64).to_numpy()
        logged = frame["action"].to_numpy()
        share = {
            a: frame.select("campaign_id")
            .join(randomised.filter(pl.col("action") == a), on="campaign_id", how="left")["share"]
            .to_numpy()
            for a in config.actions
        }
        mu = {a: np.asarray(boosters[f"revenue__{a}"].inplace_predict(x)) for a in config.actions}
        base = (logged == BASELINE) / share[BASELINE] * (y - mu[BASELINE])
        phi = {
            a: mu[a] - mu[BASELINE] + (logged == a) / share[a] * (y - mu[a]) - base
            for a in config.actions
            if a != BASELINE
        }
        return x, phi

    train_x, train_phi = pseudo_outcomes(train)
    validation_x, validation_phi = pseudo_outcomes(validation)
    ones = np.ones
    return {
        f"effect__{a}": (
            "reg:squarederror",
            (train_x, train_phi[a], ones(len(train_x))),
            (validation_x, validation_phi[a], ones(len(validation_x))),
        )
        for a in train_phi
    }


def validation_metrics(
    validation: pl.DataFrame, predictions: pl.DataFrame, actions: Sequence[str]
) -> dict[str, float]:
    """Per action, on the validation decisions: the purchase classifier's AUC, PR-AUC, Brier score and
    calibration error on the decisions that logged the action, and the revenue uplift ranking's Qini
    coefficient and uplift AUC against ``no_action`` (inverse-propensity weighted)."""
    from ml import metrics as m

    action = validation["action"].to_numpy()
    converted = validation["converted"].cast(pl.Float64).to_numpy()
    revenue = validation["revenue_in_horizon"].cast(pl.Float64).to_numpy()
    weight = 1.0 / validation["propensity"].to_numpy()
    out: dict[str, float] = {}
    for a in actions:
        rows = action == a
        y, p, w = converted[rows], predictions[f"purchase_probability__{a}"].to_numpy()[rows], weight[rows]
        if rows.sum() and 0 < y.sum() < rows.sum():
            out[f"auc__{a}"] = m.roc_auc(y, p, w)
            out[f"pr_auc__{a}"] = m.pr_auc(y, p, w)
        if rows.sum():
            out[f"brier__{a}"] = m.brier_score(y, p, w)
            out[f"calibration_error__{a}"] = m.calibration_error(y, p, weight=w)
        if a == BASELINE:
            continue
        pair = (action == a) | (action == BASELINE)
        if (action == a).sum() and (action == BASELINE).sum():
            score = (
                predictions[f"expected_revenue__{a}"].to_numpy()
                - predictions[f"expected_revenue__{BASELINE}"].to_numpy()
            )[pair]
            treated = action[pair] == a
            out[f"qini__{a}"] = m.qini_coefficient(revenue[pair], treated, score, weight[pair])
            out[f"uplift_auc__{a}"] = m.uplift_auc(revenue[pair], treated, score, weight[pair])
    return {k: float(v) for k, v in out.items()}
