"""Bootstrap and audit of an S3 bucket + DynamoDB table for Terraform state.

``checks`` holds the one list of settings (each a :class:`Check`) that both
``statekeeper bootstrap`` and ``statekeeper doctor`` walk; ``probes`` holds the
doctor's live tests of the data (conditional puts, digests, locks).
"""
