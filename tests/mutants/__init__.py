"""Known-wrong implementations, one library per chapter; see ch01_single_head.py."""
