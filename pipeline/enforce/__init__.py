"""Enforcement: an agent that applies signed actions from the action topic to a gateway.

``state`` keeps the decision in force per subject, ``agent`` reads the
topic and sends receipts, ``renderers`` turn decisions into gateway
configuration (NGINX today), and ``receipts`` stores and summarizes
receipts in the audit store.
"""
