"""Functional-token tree search: MCTS over reasoning steps, its policies, rewards, data export and viewer."""

from rftt.search.export import ExportConfig, export_training_data
from rftt.search.mcts import SearchConfig, SearchStatistics, TreeSearch
from rftt.search.policies import PromptedPolicy, TokenGuidedPolicy, WrittenStep
from rftt.search.scoring import OutcomeScorer, ScoredTerminal, SelfConsistencyScorer
from rftt.search.tree import Node, Tree, puct_score, uct_score

__all__ = [
    "ExportConfig",
    "Node",
    "OutcomeScorer",
    "PromptedPolicy",
    "ScoredTerminal",
    "SearchConfig",
    "SearchStatistics",
    "SelfConsistencyScorer",
    "TokenGuidedPolicy",
    "Tree",
    "TreeSearch",
    "WrittenStep",
    "export_training_data",
    "puct_score",
    "uct_score",
]
