"""The application: ``rlplug train`` and ``rlplug train-rm`` (config, model and data loading, evaluation, report) and ``rlplug new-plugin``."""
