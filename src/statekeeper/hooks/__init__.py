"""Webhooks on state events: subscriptions, a durable outbox, signed CloudEvents deliveries.

``model.py`` (subscriptions, event types, CloudEvents payloads), ``signing.py``
(the ``Statekeeper-Signature`` header), ``outbox.py`` (subscriptions, outbox and
delivery log in the embedded database), ``guard.py`` (where deliveries may go),
``delivery.py`` (the sender: leases, retries, dead letters), ``worker.py`` (the
process of its own that ``serve`` delivers from) and ``service.py`` (the
event-stream subscriber and the operator's commands).
"""
