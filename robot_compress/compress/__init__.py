"""Offline compression toolkit (torch/torchvision; install the `compress` extra). Never imported by the robot."""
