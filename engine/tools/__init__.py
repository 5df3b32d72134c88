"""Tools over a mapping or a run's output: document, diff, alerts, visualize, sync,
preview/coverage/explain (authoring), schedules."""
