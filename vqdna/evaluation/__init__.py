"""How a model is scored, and the floors it is scored against: metrics, the k-mer baseline, the linear probe."""
