"""Tasks beyond classification: each is data, a model, an objective and (for black-box) an oracle
that plug into the same attack engine."""
