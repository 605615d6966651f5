"""What a trained model is, shared by training, inference, ensembles and preparation: the networks and
their output encoding (targets), the device and precision they run in, the forward pass to probabilities,
checkpoints, the run folder that holds a model, and loading one to predict."""
