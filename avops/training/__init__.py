"""Training, evaluation on ODD slices and the safety gates."""
