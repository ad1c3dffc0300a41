"""Robot runtime: no torch, no rclpy. Inference engine, image conversion, post-processing,
edge client and failover policy. Everything here must import on a robot with only numpy,
onnxruntime and opencv-python-headless installed."""
