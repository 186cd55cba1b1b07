"""Pure, deterministic folds of a customer's events into tier, lifecycle and churn state."""
