"""The catalog's hyperparameter defaults, hard-coded from spec/hyperparameters.md in OCI's wire order:
what the catalog must give and what `tuneforge plan` must print."""

LORA_DEFAULTS = {
    "trainingConfigType": "LORA_TRAINING_CONFIG",
    "totalTrainingEpochs": 3,
    "learningRate": 0.0002,
    "trainingBatchSize": 8,
    "earlyStoppingPatience": 15,
    "earlyStoppingThreshold": 0.0001,
    "logModelMetricsIntervalInSteps": 10,
    "loraR": 8,
    "loraAlpha": 8,
    "loraDropout": 0.1,
}
TFEW_DEFAULTS = {
    "trainingConfigType": "TFEW_TRAINING_CONFIG",
    "totalTrainingEpochs": 1,
    "learningRate": 0.01,
    "trainingBatchSize": 16,
    "earlyStoppingPatience": 10,
    "earlyStoppingThreshold": 0.001,
    "logModelMetricsIntervalInSteps": 1,
}
