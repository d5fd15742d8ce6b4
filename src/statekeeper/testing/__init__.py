"""Test support that ships with the package: driver contracts and real-process harnesses.

Nothing here is imported by the server or the CLI.
"""
