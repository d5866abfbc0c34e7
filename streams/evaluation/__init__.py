"""Causal next-item evaluation of recommenders on a time-ordered event log. No Kafka here.

``streamrec evaluate`` (``streamrec.commands.evaluate``) is the entry point; this package does the work:

* :mod:`.data` -- the event log: the built-in MovieLens-100K, or the user's JSON Lines files of events
  and items in our message schemas, in time order;
* :mod:`.scoring` -- the evaluation points, HR@K, MRR@K, NDCG@K, catalogue coverage, and the paired
  bootstrap over users;
* :mod:`.baselines` -- the simple causal baselines (plain and decayed popularity, last-item transition,
  co-occurrence in the user's recent items), all with the same exclusions;
* :mod:`.offline` -- replays the log through each recommender, scores every one on the same points;
* :mod:`.report` -- the JSON document, the PNG and the console table.

The Kafka path (events replayed into a real worker, recommendation messages consumed and scored the same
way) is :mod:`.live`.
"""

from streamrec.streams.evaluation.baselines import (
    BASELINES,
    CoOccurrence,
    DecayedPopularity,
    ItemSpace,
    Popularity,
    Transition,
    make_baseline,
)
from streamrec.streams.evaluation.data import EvaluationDataError, EventLog, jsonl_log, movielens_log
from streamrec.streams.evaluation.scoring import (
    BootstrapInterval,
    EvalPoint,
    PointScores,
    coverage,
    eval_points,
    paired_bootstrap,
    score_lists,
)

__all__ = [
    "BASELINES",
    "BootstrapInterval",
    "CoOccurrence",
    "DecayedPopularity",
    "EvalPoint",
    "EvaluationDataError",
    "EventLog",
    "ItemSpace",
    "PointScores",
    "Popularity",
    "Transition",
    "coverage",
    "eval_points",
    "jsonl_log",
    "make_baseline",
    "movielens_log",
    "paired_bootstrap",
    "score_lists",
]
