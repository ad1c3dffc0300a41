"""robot_compress: compressed on-robot vision with edge offload and local failover.

Layers (dependencies point inward; test/test_layering.py enforces them):
  runtime/   on the robot: inference engine, image conversion, edge client, failover policy (no torch, no ROS)
  ros/       on the robot: the perception node, thin rclpy adapters around runtime
  tools/     replay, scoring, demo, edge server, fault proxy (may use ros and runtime; never used by them)
  compress/  offline torch toolkit (never imported by runtime or ros)
  paths.py   the package root and the share-directory lookup, for everyone
"""
__version__ = "0.1.0"
