"""The instance's lifecycle: stopping on signals and Spot notices (read from IMDS), and leaving
the Auto Scaling group when the queue stays empty."""
