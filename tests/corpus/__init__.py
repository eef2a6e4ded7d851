"""Crafted submissions that attack or stress the grader, one library per chapter; see ch01_adversarial.py."""
