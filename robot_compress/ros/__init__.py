"""Thin rclpy adapters around robot_compress.runtime."""
