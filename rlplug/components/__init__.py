"""Built-in shared components: KL estimators and loss aggregations."""
