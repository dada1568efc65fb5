"""Running the pipeline: one cycle, the interval loop and its signals, status publishing, leader election,
health and metrics, logs."""
