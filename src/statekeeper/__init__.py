"""statekeeper: remote state for Terraform and OpenTofu."""

__version__ = "0.1.0"
