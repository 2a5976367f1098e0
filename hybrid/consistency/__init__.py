"""The factual-consistency classifier: FactCC-style corruptions of real sentences (corruptions, documents, pairs),
the network (model), its training (training, `hybrid consistency train`), held-out figures (evaluation) and the
scorer `hybrid eval` uses (classifier). Importing it does not import torch.
"""

from hybrid.consistency.classifier import ConsistencyClassifier, ConsistencyResult
from hybrid.consistency.evaluation import ConsistencyEvaluation, evaluate_predictions, held_out_pairs

__all__ = ["ConsistencyClassifier", "ConsistencyEvaluation", "ConsistencyResult", "evaluate_predictions", "held_out_pairs"]
