"""The contract between a trained model and the operator that serves it.

``model/export.py`` writes these metadata keys into every ONNX file it makes;
:mod:`vigil.adapters.inference` reads and checks them on load. A custom model
in a ConfigMap must follow the same contract (documented in the README).
Pure constants: no I/O.
"""

from __future__ import annotations

#: Name of the single model input: float32 tensor of shape [N, len(names)], where names are
#: the model's META_FEATURE_NAMES: any distinct subset of FEATURE_NAMES, in the model's
#: column order. The operator computes only the feature groups those names need.
INPUT_NAME = "features"

#: Output holding class probabilities, shape [N, 2]; column 1 is P(anomaly).
#: A custom model may instead name a [N] or [N, 1] output in META_SCORE_OUTPUT.
DEFAULT_SCORE_OUTPUT = "probabilities"

# Keys of the ONNX ``metadata_props`` Vigil reads.
META_MODEL_NAME = "vigil.model_name"
META_FEATURE_VERSION = "vigil.feature_version"
META_FEATURE_NAMES = "vigil.feature_names"  # comma-separated subset of FEATURE_NAMES, in input column order
META_WINDOW = "vigil.window"  # points of history one score needs (int)
META_MIN_POINTS = "vigil.min_points"  # fewest non-missing points in the window to score (int)
META_RECOMMENDED_THRESHOLD = "vigil.recommended_threshold"  # float in [0, 1]
#: Optional: "sensitivity:threshold,..." measured in training (see vigil.domain.sensitivity).
META_SENSITIVITY_TABLE = "vigil.sensitivity_table"
#: Optional, linear models only: "name:coefficient,..." of the score's logit and "name:value,..." of the
#: typical feature values (training negatives' mean). Contribution of a feature to a verdict =
#: coefficient * (value - typical): exact for a logistic regression; the operator explains with them.
META_COEFFICIENTS = "vigil.logit_coefficients"
META_TYPICAL = "vigil.typical_features"
META_SCORE_OUTPUT = "vigil.score_output"  # output name; defaults to DEFAULT_SCORE_OUTPUT
META_SCORE_COLUMN = "vigil.score_column"  # column of the score output; defaults to 1

REQUIRED_METADATA = (META_FEATURE_VERSION, META_FEATURE_NAMES, META_WINDOW)
