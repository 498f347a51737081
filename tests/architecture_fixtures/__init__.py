"""Small modules that break one architecture rule each, so tests/test_architecture.py can
show that its checks catch a violation. Never imported by the code."""
