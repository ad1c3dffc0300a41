"""robot_compress: compressed on-robot vision with edge offload and local failover.

Layers (dependencies point inward):
  compress/  offline torch toolkit (never imported by runtime or ros)
  runtime/   inference engine, image conversion, edge client, failover policy (no torch, no ROS)
  ros/       thin rclpy adapters around runtime
"""
__version__ = "0.1.0"
