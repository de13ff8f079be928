"""Built-in shared components: KL estimators, loss aggregations, KL placement and control, rewards, process supervision and rollout assembly."""
